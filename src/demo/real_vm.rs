//! `nightcast demo --real-vm [IMAGE]`: one site, one NUC, and a real guest. A controller, a relay
//! and a NUC agent as real processes on loopback, on the real clock; the master is a bootable
//! Debian disk image (IMAGE, or one built here as the tests build theirs: root and network
//! needed). The DSI imports it, gives it its machine profile (UEFI, the accelerator asked for),
//! plans a session tomorrow; the NUC fetches it and, as with every new master, boots it once to
//! check it: the demo says when its guest is up (the health signal: the guest's marker on its
//! serial port and the QEMU guest agent answering), under which accelerator (KVM where it runs the
//! guest, else TCG, reported), and how much memory the agent used meanwhile.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{status, Demo};

const MASTER: &str = "debian";
const SITE: &str = "lyon";
/// The build script of the tests' Debian master (`node-agent/tests/guest`).
const BUILD_SCRIPT: &str = include_str!("../../node-agent/tests/guest/build-debian.sh");
/// The firmware files of Debian's `ovmf` package, as the agent uses them.
const OVMF: [&str; 2] = [
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
];

/// What the NUC needs to run a guest, with the package that brings each.
pub fn check_tools() -> Result<()> {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("qemu-system-x86_64") {
        bail!("qemu-system-x86_64 is missing: the real VM needs it (apt-get install qemu-system-x86 qemu-utils ovmf, in one command)");
    }
    for f in OVMF {
        if !Path::new(f).is_file() {
            bail!("{f} is missing: the master boots under UEFI (apt-get install ovmf)");
        }
    }
    Ok(())
}

/// The image to use: `image` if given, else one built into `dir` by the tests' build script.
fn master_image(dir: &Path, image: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(image) = image {
        if !image.is_file() {
            bail!("{}: no such disk image", image.display());
        }
        return Ok(image);
    }
    if !rustix::process::geteuid().is_root() {
        bail!("building the Debian master needs root (mmdebstrap in root mode, chroot): run as root, or give a bootable raw disk image: --real-vm IMAGE");
    }
    for tool in [
        "mmdebstrap",
        "mkfs.ext4",
        "mkfs.vfat",
        "mcopy",
        "sgdisk",
        "grub-mkimage",
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            bail!("building the Debian master needs {tool} (apt-get install mmdebstrap e2fsprogs dosfstools mtools gdisk grub-pc-bin grub-efi-amd64-bin), and network access to deb.debian.org; or give a bootable raw disk image: --real-vm IMAGE");
        }
    }
    let script = dir.join("build-debian.sh");
    std::fs::write(&script, BUILD_SCRIPT)?;
    let out = dir.join("debian.raw");
    let log = dir.join("build-debian.log");
    println!(
        "    building a small Debian master from the Debian archive (a few minutes; log in {})",
        log.display()
    );
    let log_file = std::fs::File::create(&log)?;
    let ok = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("cannot run bash")?
        .success();
    if !ok || !out.is_file() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "building the Debian master failed (network? see {}):\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(out)
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

impl Demo {
    pub(super) fn play_real_vm(&mut self, image: Option<PathBuf>, accel: &str) -> Result<()> {
        let dir = self.dir.clone();
        println!(
            "nightcast demo --real-vm: a controller, a relay and one NUC with a real guest, on this machine (files in {})\n",
            dir.display()
        );
        println!("[1/4] the DSI imports a bootable master: {MASTER} version 1");
        let image = master_image(&dir, image)?;
        let ctl = dir.join("controller");
        let cs = ctl.to_str().context("utf-8 path")?.to_owned();
        self.run(&self.bins.controller.clone(), &["init", "--data", &cs])?;
        let m = self.build_named(&image, MASTER, "1")?;
        println!(
            "    imported {} ({} of chunks)",
            image.display(),
            image_tools::cli::human(m.summary().unique_stored_bytes)
        );
        let quic = self.serve_controller(&cs)?;

        println!("[2/4] its machine: UEFI, accelerator {accel}, 1 GiB, 1 vCPU; a site, a seat, a session tomorrow");
        self.nightcast(&[
            "site",
            "add",
            SITE,
            "--tz",
            "Europe/Paris",
            "--windows",
            "00:00-23:59",
            "--cap-mbit",
            "1000",
        ])?;
        self.nightcast(&["room", "add", SITE, "salle-1"])?;
        self.nightcast(&["seat", "add", SITE, "salle-1", "pc-1"])?;
        self.nightcast(&[
            "master",
            "profile",
            "set",
            MASTER,
            "--firmware",
            "uefi",
            "--accel",
            accel,
            "--memory",
            "1024",
            "--vcpus",
            "1",
            "--within",
            "600",
        ])?;
        let tz = jiff::tz::TimeZone::get("Europe/Paris")?;
        let tomorrow = tz
            .to_datetime(jiff::Timestamp::from_second(self.clock.now())?)
            .date()
            .tomorrow()?;
        self.nightcast(&[
            "session",
            "add",
            "--site",
            SITE,
            "--room",
            "salle-1",
            "--master",
            MASTER,
            "--version",
            "1",
            "--start",
            &format!("{tomorrow} 08:00"),
            "--end",
            &format!("{tomorrow} 09:00"),
        ])?;

        println!("[3/4] the site's relay and the NUC (hypervisor: QEMU) enrol");
        let relay = self.start_relay(SITE, &quic)?;
        self.nightcast(&["site", "accept-new", SITE, "--for", "1h"])?;
        let nuc = self.start_agent_with(SITE, 1, &relay, "hypervisor = \"qemu\"\n")?;
        self.wait_until(
            "the NUC to enrol",
            60,
            |_| status(&nuc)["site"] == SITE,
            |_| "the NUC enrols".into(),
        )?;
        self.nightcast(&[
            "seat",
            "assign",
            SITE,
            "salle-1",
            "pc-1",
            &format!("{SITE}-nuc-1"),
        ])?;

        println!("[4/4] the NUC fetches the master and boots it once to check it comes up");
        let agent_pid = self
            .procs
            .iter()
            .find(|p| p.name == format!("agent-{SITE}-nuc-1"))
            .map(|p| p.child.id())
            .context("the agent process")?;
        let peak = std::cell::Cell::new(0.0f64);
        let up = |_: &Demo| {
            let s = status(&nuc);
            if s["vm"] == "Running" {
                if let Some(r) = rss_mib(agent_pid) {
                    peak.set(peak.get().max(r));
                }
            }
            s["current"] == format!("{MASTER} 1") && s["boot_secs"].is_number()
        };
        let failed = |_: &Demo| !status(&nuc)["failed"].as_array().is_none_or(Vec::is_empty);
        self.wait_until(
            "the guest to come up",
            1200,
            |d| up(d) || failed(d),
            |_| {
                let s = status(&nuc);
                let state = s["state"].as_str().unwrap_or("starting").to_owned();
                match s["boot"].as_str() {
                    Some(b) if !b.is_empty() => format!("{state}; guest: {b}"),
                    _ => state,
                }
            },
        )?;
        let s = status(&nuc);
        if !s["failed"].as_array().is_none_or(Vec::is_empty) {
            bail!("the guest did not come up: {}", s["failed"]);
        }
        let accel_used = s["accel"].as_str().unwrap_or("?");
        println!(
            "    the guest is up: healthy {:.1} s after its start (serial marker and guest agent), accelerator {accel_used}",
            s["boot_secs"].as_f64().unwrap_or(0.0)
        );
        if peak.get() > 0.0 {
            println!(
                "    the agent uses {:.1} MiB of memory (RSS, the most seen while the guest ran)",
                peak.get()
            );
        }
        println!("demo complete: the NUC fetched the master, booted it under its profile and saw its guest come up");
        Ok(())
    }
}

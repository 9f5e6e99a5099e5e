//! Where a workstation's boot time goes, as the agent's hypervisor code runs it (`Qemu` with a
//! machine profile), for the Debian test master under the BIOS and the UEFI profile:
//!
//! - cold boot: QEMU start to the health signal (serial marker and `guest-ping`), split into
//!   firmware + boot loader (to the guest's first serial byte), the guest's own kernel / initrd /
//!   userspace times (`systemd-analyze` through the guest agent), and what the agent adds after
//!   the marker (its polling);
//! - reset + boot: the session's end as the agent does it (ACPI power-off, fresh overlay) and the
//!   next boot to the health signal;
//! - with `QemuConfig::resume`: the cold boot that saves the guest's state once, and a reset that
//!   restores it (QEMU `-incoming`) to the health signal (`guest-ping`);
//! - this process's RSS with a guest running.
//!
//! `cargo run -p nightcast-agent --example boot_bench -- IMAGE [bios|uefi]...` (TCG by default;
//! `NIGHTCAST_BENCH_ACCEL=kvm` on a NUC). Prints one markdown table row per measure;
//! `bench/boot.sh` runs it next to plain QEMU and prints the whole table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nightcast_agent::health::{read_serial, Health};
use nightcast_agent::hypervisor::{host_facts, Hypervisor, Machine, Qemu, QemuConfig};
use nightcast_agent::profile::{
    Accel, Amount, DiskModel, Firmware, HealthCheck, Network, NicModel, Profile, Seat,
};
use nightcast_agent::qmp::GuestAgent;

#[allow(clippy::disallowed_methods)] // a bench measures wall time
fn now() -> Instant {
    Instant::now()
}

fn profile(firmware: Firmware, accel: Accel) -> Profile {
    let (disk, nic) = match firmware {
        Firmware::Bios => (DiskModel::Sata, NicModel::E1000),
        Firmware::Uefi => (DiskModel::Virtio, NicModel::Virtio),
    };
    Profile {
        firmware,
        accel,
        disk,
        nic: Some(nic),
        memory: Amount::Fixed(1024),
        vcpus: Amount::Fixed(1),
        health: HealthCheck {
            serial_marker: true,
            guest_agent: true,
            within_secs: 600,
        },
        ..Profile::default()
    }
}

/// Times (since `t0`) of the guest's first serial byte and of its ready marker, watched every
/// 20 ms in a thread while the caller waits as the agent does.
struct SerialWatch {
    first: Arc<Mutex<Option<Duration>>>,
    marker: Arc<Mutex<Option<Duration>>>,
    done: Arc<AtomicBool>,
}

impl SerialWatch {
    fn start(path: PathBuf, t0: Instant) -> SerialWatch {
        let w = SerialWatch {
            first: Arc::default(),
            marker: Arc::default(),
            done: Arc::default(),
        };
        let (first, marker, done) = (w.first.clone(), w.marker.clone(), w.done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let bytes = fs::read(&path).unwrap_or_default();
                let mut f = first.lock().unwrap();
                if f.is_none() && !bytes.is_empty() {
                    *f = Some(t0.elapsed());
                }
                let mut m = marker.lock().unwrap();
                if m.is_none() && read_serial(&bytes).ready.is_some() {
                    *m = Some(t0.elapsed());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        w
    }

    fn stop(self) -> (Option<Duration>, Option<Duration>) {
        self.done.store(true, Ordering::SeqCst);
        let f = *self.first.lock().unwrap();
        let m = *self.marker.lock().unwrap();
        (f, m)
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

fn rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The guest's own account of its boot: `systemd-analyze`'s first line.
fn systemd_analyze(qga: &mut GuestAgent) -> String {
    let out = qga
        .exec(
            "/usr/bin/systemd-analyze",
            &[],
            Duration::from_millis(200),
            150,
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("systemd-analyze failed: {e}"));
    out.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("Startup finished in ")
        .to_owned()
}

/// The total of `systemd-analyze`'s line ("1.2s (kernel) + 1min 3.4s (userspace) = 1min 4.6s"):
/// from the kernel's start to the end of the guest's boot.
fn analyzed_total(line: &str) -> Option<Duration> {
    let total = line.rsplit('=').next()?;
    if total.trim().is_empty() {
        return None;
    }
    let mut secs = 0.0;
    for word in total.split_whitespace() {
        let (n, unit) = word.split_at(word.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = n.parse().ok()?;
        secs += n * match unit {
            "h" => 3600.0,
            "min" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    Some(Duration::from_secs_f64(secs))
}

/// Boots to the health signal as the agent waits for it (`wait_healthy`), with the serial
/// console's times beside it.
fn boot(vm: &mut Qemu, master: &Path) -> (Duration, Option<Duration>, Option<Duration>) {
    let serial = vm.paths().unwrap().serial.clone();
    let _ = fs::remove_file(&serial);
    let t0 = now();
    let watch = SerialWatch::start(serial, t0);
    vm.start(master).unwrap();
    let health = vm.wait_healthy().unwrap();
    let healthy = t0.elapsed();
    assert_eq!(health, Health::Healthy, "the guest did not come up");
    let (first, marker) = watch.stop();
    (healthy, first, marker)
}

fn row(what: &str, firmware: &str, total: Duration, detail: &str) {
    println!(
        "| {what} | {firmware} | {:.1} s | {detail} |",
        total.as_secs_f64()
    );
}

fn bench(master: &Path, firmware: Firmware, accel: Accel) {
    let fw = format!("{firmware:?}").to_lowercase();
    let dir = tempfile::tempdir().unwrap();
    let seat = Seat::derive("lyon", "salle-1", "poste-01").unwrap();
    let machine = Machine {
        profile: profile(firmware, accel),
        seat,
        host: host_facts(Network::Nat),
    };
    let overlay = dir.path().join("overlay.qcow2");
    let mut config = QemuConfig::with_machine("bench", &overlay, machine.clone());
    config.powerdown_grace = Duration::from_secs(120);
    let mut vm = Qemu::new(config).unwrap();

    // Cold boot.
    let (healthy, first, marker) = boot(&mut vm, master);
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    let analyze = systemd_analyze(&mut qga);
    drop(qga);
    let rss = rss_mib();
    let after_marker = marker.map(|m| healthy.saturating_sub(m));
    row(
        "agent: cold boot to health signal",
        &fw,
        healthy,
        &format!(
            "firmware + boot loader (GRUB loading the kernel and initramfs) {} s (first serial byte at {} s); \
             guest (systemd-analyze): {analyze}; marker at {} s, health seen {} s after it; \
             this process's RSS with the guest running {rss:.0} MiB",
            secs(marker.zip(analyzed_total(&analyze)).map(|(m, a)| m.saturating_sub(a))),
            secs(first),
            secs(marker),
            secs(after_marker)
        ),
    );

    // Reset + boot, as at a session's end.
    let t = now();
    vm.stop().unwrap();
    let powered_off = t.elapsed();
    let t = now();
    vm.prepare(master).unwrap();
    let fresh = t.elapsed();
    let (healthy, first, marker) = boot(&mut vm, master);
    row(
        "agent: reset + boot to health signal",
        &fw,
        powered_off + fresh + healthy,
        &format!(
            "ACPI power-off {:.1} s, fresh overlay {:.3} s, boot {:.1} s (firmware + boot loader {} s, marker at {} s)",
            powered_off.as_secs_f64(),
            fresh.as_secs_f64(),
            healthy.as_secs_f64(),
            secs(first),
            secs(marker)
        ),
    );

    vm.stop_now().unwrap();
    drop(vm);

    // Resets that resume the saved state (`QemuConfig::resume`), on the same overlay path.
    let mut config = QemuConfig::with_machine("bench", &overlay, machine);
    config.powerdown_grace = Duration::from_secs(120);
    config.resume = true;
    let mut vm = Qemu::new(config).unwrap();
    vm.prepare(master).unwrap();
    let (healthy, _, marker) = boot(&mut vm, master);
    let state_mib = fs::metadata(dir.path().join("pristine.state")).map_or(0, |m| m.len() >> 20);
    row(
        "agent, resume on: cold boot + saving the state (once)",
        &fw,
        healthy,
        &format!(
            "marker at {} s, healthy and saved {:.1} s after it; state file {state_mib} MiB; {}",
            secs(marker),
            marker.map_or(0.0, |m| healthy.saturating_sub(m).as_secs_f64()),
            vm.accel_text().unwrap_or_default()
        ),
    );
    let t = now();
    vm.stop().unwrap();
    let powered_off = t.elapsed();
    let t = now();
    vm.prepare(master).unwrap();
    let fresh = t.elapsed();
    let t = now();
    vm.start(master).unwrap();
    let health = vm.wait_healthy().unwrap();
    let restored = t.elapsed();
    assert_eq!(health, Health::Healthy);
    row(
        "agent, resume on: reset + restore to health signal",
        &fw,
        powered_off + fresh + restored,
        &format!(
            "ACPI power-off {:.1} s, fresh overlay {:.3} s, restore to guest-ping {:.1} s; {}",
            powered_off.as_secs_f64(),
            fresh.as_secs_f64(),
            restored.as_secs_f64(),
            vm.accel_text().unwrap_or_default()
        ),
    );
    vm.stop_now().unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let master = PathBuf::from(args.next().expect("usage: boot_bench IMAGE [bios|uefi]..."));
    let accel = match std::env::var("NIGHTCAST_BENCH_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("auto") => Accel::Auto,
        _ => Accel::Tcg,
    };
    let mut firmwares: Vec<Firmware> = args
        .map(|a| match a.as_str() {
            "bios" => Firmware::Bios,
            "uefi" => Firmware::Uefi,
            other => panic!("unknown firmware {other}: bios or uefi"),
        })
        .collect();
    if firmwares.is_empty() {
        firmwares = vec![Firmware::Bios, Firmware::Uefi];
    }
    for firmware in firmwares {
        bench(&master, firmware, accel);
    }
}

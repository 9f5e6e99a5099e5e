//! `nightcast demo`: a whole fleet on this machine, as real processes on loopback, through one
//! accelerated night: a controller, two site relays and three NUC agents per site, each with its own
//! data directory under a temp dir. It builds a master, schedules it for tomorrow 08:00 at both
//! sites, lets the night pass (the relays fetch in their window, the NUCs from their relay), shows
//! the fleet, ends a session (the reset), then pushes version 2 in the daytime with an override and
//! shows that only its new chunks move. It stops everything and cleans up at the end or on Ctrl-C.
//!
//! It runs the real programs: `nightcast-controller`, `nightcast-relay`, `nightcast-agent` and
//! `nightcast-image`, found next to this one (under `cargo run` they are built first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use image_tools::cli::human;
use image_tools::clock::Clock;
use image_tools::{testimage, Manifest};
use serde_json::Value;

mod real_vm;

const SITES: [&str; 2] = ["lyon", "nantes"];
const NUCS: usize = 3;
const MASTER: &str = "win10-bureautique";
/// Virtual seconds per real second: a night passes in under a minute.
const SPEED: u32 = 1200;

pub fn run(dir: Option<PathBuf>, size_mib: u64) -> Result<()> {
    if !(8..=4096).contains(&size_mib) {
        bail!("--size-mib must be between 8 and 4096");
    }
    with_demo(dir, |demo| demo.play(size_mib))
}

/// `nightcast demo --real-vm`: see `real_vm`.
pub fn run_real_vm(dir: Option<PathBuf>, image: Option<PathBuf>, accel: &str) -> Result<()> {
    real_vm::check_tools()?;
    with_demo(dir, |demo| demo.play_real_vm(image, accel))
}

/// Runs `play` with a demo in `dir` (or a temp dir), then stops every program it started.
fn with_demo(dir: Option<PathBuf>, play: impl FnOnce(&mut Demo) -> Result<()>) -> Result<()> {
    let stop = interrupt_flag();
    let bins = Bins::find()?;
    for tool in ["qemu-img", "qemu-io"] {
        if !Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            bail!("{tool} is missing: the NUCs' session disks are qcow2 overlays (apt-get install qemu-utils)");
        }
    }
    let temp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
        None => {
            temp = tempfile::TempDir::with_prefix("nightcast-demo-")?;
            temp.path().to_owned()
        }
    };
    let mut demo = Demo {
        dir: dir.clone(),
        bins,
        stop,
        procs: Vec::new(),
        clock: Clock::system(),
        clock_spec: String::new(),
        api: String::new(),
    };
    let result = play(&mut demo);
    demo.stop_all();
    if let Err(e) = &result {
        eprintln!("\nthe demo stopped: {e:#}\nlogs are in {}", dir.display());
    }
    result
}

/// Ctrl-C sets the flag; every wait checks it, and everything is stopped and removed on the way out.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            f.store(true, Ordering::SeqCst);
        }
    });
    flag
}

struct Bins {
    /// This program, by the path it was started from: building the others may replace its file
    /// (cargo relinks it), after which the running process's own path reads "... (deleted)".
    nightcast: PathBuf,
    controller: PathBuf,
    relay: PathBuf,
    agent: PathBuf,
    image: PathBuf,
}

impl Bins {
    /// The programs next to this one; under `cargo run`, built first (cargo does nothing if they
    /// are up to date), so that the demo never runs programs older than the sources.
    fn find() -> Result<Bins> {
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .context("no directory for this program")?
            .to_owned();
        let names = [
            "nightcast-controller",
            "nightcast-relay",
            "nightcast-agent",
            "nightcast-image",
        ];
        let missing = || names.iter().any(|n| !dir.join(n).exists());
        if let Ok(cargo) = std::env::var("CARGO") {
            println!(
                "building the other nightcast programs if needed (controller, relay, agent)..."
            );
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--workspace", "--bins", "--quiet"]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status()?;
            if !status.success() {
                bail!("building the nightcast programs failed");
            }
        }
        if missing() {
            bail!(
                "the demo needs {} next to {} (cargo build --release --workspace)",
                names.join(", "),
                exe.display()
            );
        }
        Ok(Bins {
            nightcast: exe,
            controller: dir.join(names[0]),
            relay: dir.join(names[1]),
            agent: dir.join(names[2]),
            image: dir.join(names[3]),
        })
    }
}

/// A child process, killed when the demo ends.
struct Proc {
    name: String,
    child: Child,
}

struct Demo {
    dir: PathBuf,
    bins: Bins,
    stop: Arc<AtomicBool>,
    procs: Vec<Proc>,
    clock: Clock,
    clock_spec: String,
    api: String,
}

struct RelayInfo {
    data: PathBuf,
    discovery: String,
}

impl Demo {
    fn stop_all(&mut self) {
        for p in &mut self.procs {
            // SIGTERM first (they stop cleanly), then kill.
            let _ = Command::new("kill")
                .arg(p.child.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(300));
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.clear();
    }

    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Fails if one of the demo's programs stopped by itself.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} stopped unexpectedly ({status}); see {}.log",
                    p.name,
                    p.name
                );
            }
        }
        Ok(())
    }

    /// Runs a program to completion; its output, or an error with its stderr.
    fn run(&self, program: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .env("NIGHTCAST_CLOCK", &self.clock_spec)
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The DSI's command against the demo's controller.
    fn nightcast(&self, args: &[&str]) -> Result<String> {
        let token = self.dir.join("controller/admin.token");
        let mut all = vec!["--api", &self.api, "--token-file"];
        let token = token.to_str().context("utf-8 path")?.to_owned();
        all.push(&token);
        all.extend_from_slice(args);
        self.run(&self.bins.nightcast, &all)
    }

    /// Starts a long-running program; its log goes to DIR/NAME.log; returns its first stdout lines.
    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[&str],
        lines: usize,
    ) -> Result<Vec<String>> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut child = Command::new(program)
            .args(args)
            .env("NIGHTCAST_CLOCK", &self.clock_spec)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut out = Vec::new();
        if lines > 0 {
            let mut reader = BufReader::new(child.stdout.take().context("stdout")?);
            for _ in 0..lines {
                let mut l = String::new();
                reader.read_line(&mut l)?;
                out.push(l.trim().to_owned());
            }
            // Keep reading (and dropping) so that the program never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                    sink.clear();
                }
            });
        }
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        Ok(out)
    }

    fn sleep(&self, d: Duration) -> Result<()> {
        let step = Duration::from_millis(100);
        let mut left = d;
        while !left.is_zero() {
            self.check_stop()?;
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        Ok(())
    }

    /// Waits (real seconds) until `cond`, printing `progress` every two seconds.
    fn wait_until(
        &mut self,
        what: &str,
        secs: u64,
        cond: impl Fn(&Demo) -> bool,
        progress: impl Fn(&Demo) -> String,
    ) -> Result<()> {
        for i in 0..secs * 10 {
            if cond(self) {
                return Ok(());
            }
            if i % 20 == 0 {
                self.check_alive()?;
                println!("    {}  {}", self.local_time(), progress(self));
            }
            self.sleep(Duration::from_millis(100))?;
        }
        bail!("timed out waiting for {what}")
    }

    fn local_time(&self) -> String {
        let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap_or(jiff::tz::TimeZone::UTC);
        jiff::Timestamp::from_second(self.clock.now())
            .map(|t| tz.to_datetime(t).strftime("%a %H:%M").to_string())
            .unwrap_or_default()
    }

    fn play(&mut self, size_mib: u64) -> Result<()> {
        let dir = self.dir.clone();
        // Tonight, 21:50 in Paris, at 1200x.
        let tz = jiff::tz::TimeZone::get("Europe/Paris")?;
        let today = tz
            .to_datetime(jiff::Timestamp::from_second(Clock::system().now())?)
            .date();
        let start = tz.to_timestamp(today.at(21, 50, 0, 0))?;
        let tomorrow = today.tomorrow()?;
        self.clock = Clock::parse_now(&format!("start={start} speed={SPEED}"))?;
        self.clock_spec = self.clock.spec();
        println!(
            "nightcast demo: a controller, {} sites, {} NUCs each, on this machine (files in {})",
            SITES.len(),
            NUCS,
            dir.display()
        );
        println!("the clock runs {SPEED}x: a night lasts about 40 seconds\n");

        println!("[1/7] the DSI prepares a master: {MASTER} version 1 ({size_mib} MiB), and its version 2");
        let v1 = testimage::image_bytes(size_mib << 20, 1);
        let v2 = testimage::evolve(&v1, 0.03, 2);
        let (v1_img, v2_img) = (dir.join("master-v1.img"), dir.join("master-v2.img"));
        testimage::write_sparse(&v1_img, &v1)?;
        testimage::write_sparse(&v2_img, &v2)?;
        drop(v2);
        let ctl = dir.join("controller");
        let cs = ctl.to_str().context("utf-8 path")?.to_owned();
        self.run(&self.bins.controller.clone(), &["init", "--data", &cs])?;
        let m1 = self.build(&v1_img, "1")?;
        println!(
            "    imported: {} of image -> {} of chunks ({} unique chunks, zero runs not stored)",
            human(v1.len() as u64),
            human(m1.summary().unique_stored_bytes),
            m1.summary().unique_chunks
        );
        let quic = self.serve_controller(&cs)?;

        println!(
            "[2/7] two sites, a room of {NUCS} seats each, and a session tomorrow 08:00 at both"
        );
        let mut calendar = String::from("site,room,master,version,start,end\n");
        for site in SITES {
            self.nightcast(&[
                "site",
                "add",
                site,
                "--tz",
                "Europe/Paris",
                "--windows",
                "22:00-06:00",
                "--cap-mbit",
                "20",
            ])?;
            self.nightcast(&["room", "add", site, "salle-1"])?;
            for n in 1..=NUCS {
                self.nightcast(&["seat", "add", site, "salle-1", &format!("pc-{n}")])?;
            }
            calendar.push_str(&format!(
                "{site},salle-1,{MASTER},1,{tomorrow} 08:00,{tomorrow} 09:00\n"
            ));
        }
        std::fs::write(dir.join("calendar.csv"), calendar)?;
        self.nightcast(&[
            "calendar",
            "import",
            dir.join("calendar.csv").to_str().context("path")?,
        ])?;
        print!("{}", indent(&self.nightcast(&["plan"])?));

        println!("[3/7] each site's relay is installed and enrolled; the DSI lets each site's new NUCs in for the night (`site accept-new`), and each NUC is plugged in and enrols through its relay");
        let mut relays = Vec::new();
        for site in SITES {
            relays.push(self.start_relay(site, &quic)?);
            self.nightcast(&["site", "accept-new", site, "--for", "12h"])?;
        }
        for (site, relay) in SITES.iter().zip(&relays) {
            for n in 1..=NUCS {
                self.start_agent(site, n, relay)?;
            }
        }
        for site in SITES {
            for n in 1..=NUCS {
                let node = format!("{site}-nuc-{n}");
                let data = dir.join(format!("agent-{node}"));
                self.wait_until(
                    &format!("{node} to enrol"),
                    60,
                    |_| status(&data)["site"] == site,
                    |_| format!("{node} enrolling"),
                )?;
                self.nightcast(&["seat", "assign", site, "salle-1", &format!("pc-{n}"), &node])?;
            }
        }

        println!("[4/7] the night: relays fetch in their window (22:00-06:00, 20 Mbit/s), NUCs from their relay");
        let agents: Vec<PathBuf> = SITES
            .iter()
            .flat_map(|s| (1..=NUCS).map(move |n| format!("agent-{s}-nuc-{n}")))
            .map(|a| dir.join(a))
            .collect();
        let version = |v: &'static str| {
            let agents = agents.clone();
            move |_: &Demo| {
                agents
                    .iter()
                    .all(|a| status(a)["current"] == format!("{MASTER} {v}"))
            }
        };
        let progress = |relays: &[RelayInfo], agents: &[PathBuf]| {
            let r: Vec<String> = SITES
                .iter()
                .zip(relays)
                .map(|(s, r)| {
                    let st = status(&r.data);
                    format!(
                        "{s} relay {} fetched",
                        human(st["fetched_bytes"].as_u64().unwrap_or(0))
                    )
                })
                .collect();
            let ready = agents
                .iter()
                .filter(|a| {
                    status(a)["current"]
                        .as_str()
                        .is_some_and(|c| c.starts_with(MASTER))
                })
                .count();
            format!(
                "{}; NUCs with a master: {ready}/{}",
                r.join(", "),
                agents.len()
            )
        };
        let session = jiff::tz::TimeZone::get("Europe/Paris")?
            .to_timestamp(tomorrow.at(8, 0, 0, 0))?
            .as_second();
        self.wait_until("every NUC to hold version 1", 120, version("1"), |_| {
            progress(&relays, &agents)
        })?;
        if self.clock.now() >= session {
            bail!("the NUCs were not ready before the session");
        }
        println!(
            "    every NUC verified version 1 and is ready, before the 08:00 session ({})",
            self.local_time()
        );
        // Reports reach the controller through the relays within a couple of seconds.
        self.sleep(Duration::from_millis(2500))?;
        println!("\n{}", indent(&self.nightcast(&["fleet"])?));
        let mut wan_v1 = Vec::new();
        for (site, r) in SITES.iter().zip(&relays) {
            let st = status(&r.data);
            let fetched = st["fetched_bytes"].as_u64().unwrap_or(0);
            wan_v1.push(fetched);
            println!(
                "    {site}: WAN carried {} of chunks (+{} of protocol) for {NUCS} NUCs x {} of image: {:.0}x less than copying the image to each NUC",
                human(fetched),
                human(st["wan_bytes_open"].as_u64().unwrap_or(0).saturating_sub(fetched)),
                human(v1.len() as u64),
                (NUCS as f64 * v1.len() as f64) / fetched.max(1) as f64
            );
        }

        println!("\n[5/7] the 08:00 session runs; at its end (09:00) every NUC is reset to the pristine master");
        let resets: Vec<u64> = agents
            .iter()
            .map(|a| status(a)["resets"].as_u64().unwrap_or(0))
            .collect();
        let trainee = agents[0].join("vm/overlay.qcow2");
        self.wait_until(
            "the session to start",
            60,
            |_| status(&agents[0])["session"].is_string(),
            |_| "waiting for 08:00".into(),
        )?;
        let _ = self.run(
            Path::new("qemu-io"),
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x42 0 1M",
                trainee.to_str().context("path")?,
            ],
        );
        println!(
            "    {}  a trainee on lyon pc-1 writes 1 MiB to the disk",
            self.local_time()
        );
        self.wait_until(
            "the resets after the session",
            60,
            |_| {
                agents
                    .iter()
                    .zip(&resets)
                    .all(|(a, r)| status(a)["resets"].as_u64().unwrap_or(0) > *r)
            },
            |_| "session running".into(),
        )?;
        let check = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "read -P 0x42 0 1M"])
            .arg(&trainee)
            .output()?;
        let gone = String::from_utf8_lossy(&check.stdout).contains("Pattern verification failed");
        println!(
            "    {}  session over: all {} NUCs reset; the trainee's data is {}",
            self.local_time(),
            agents.len(),
            if gone { "gone" } else { "STILL THERE (bug)" }
        );
        if !gone {
            bail!("the reset kept the trainee's data");
        }

        println!("[6/7] a fix is needed today: the DSI imports version 2 and pushes it now, in the daytime (override)");
        let m2 = self.build(&v2_img, "2")?;
        let new_bytes: u64 = {
            let old: std::collections::HashSet<_> =
                m1.unique_chunks().iter().map(|c| c.id).collect();
            m2.unique_chunks()
                .iter()
                .filter(|c| !old.contains(&c.id))
                .map(|c| u64::from(c.stored_len))
                .sum()
        };
        let mut calendar = String::from("site,room,master,version,start,end\n");
        for site in SITES {
            calendar.push_str(&format!(
                "{site},salle-1,{MASTER},2,{tomorrow} 14:00,{tomorrow} 17:00\n"
            ));
        }
        std::fs::write(dir.join("calendar-2.csv"), calendar)?;
        self.nightcast(&[
            "calendar",
            "import",
            dir.join("calendar-2.csv").to_str().context("path")?,
        ])?;
        for site in SITES {
            self.nightcast(&[
                "override",
                "push",
                "--site",
                site,
                "--master",
                MASTER,
                "--version",
                "2",
                "--reason",
                "demo: fix at 09:30",
                "--by",
                "demo",
            ])?;
        }
        self.wait_until("every NUC to run version 2", 120, version("2"), |_| {
            progress(&relays, &agents)
        })?;
        for (i, (site, r)) in SITES.iter().zip(&relays).enumerate() {
            let fetched = status(&r.data)["fetched_bytes"].as_u64().unwrap_or(0) - wan_v1[i];
            println!(
                "    {site}: version 2 cost the WAN {} ({} of new chunks; version 2 is {} in all): only what changed moved",
                human(fetched),
                human(new_bytes),
                human(m2.summary().unique_stored_bytes)
            );
        }
        let a = status(&agents[0]);
        println!(
            "    lyon pc-1: {} chunks reused from the running master, {} fetched in all; swapped in at {} between sessions",
            a["reused_chunks"], a["fetched_chunks"], self.local_time()
        );

        self.sleep(Duration::from_millis(2500))?;
        println!("[7/7] the fleet now:");
        println!("{}", indent(&self.nightcast(&["fleet"])?));
        println!("demo complete: every NUC was ready before its session, reset after it, and updated with only new chunks");
        Ok(())
    }

    /// Starts the controller on its data directory `data`: its QUIC address (the admin API's is
    /// kept for `nightcast`).
    fn serve_controller(&mut self, data: &str) -> Result<String> {
        let lines = self.spawn(
            "controller",
            &self.bins.controller.clone(),
            &[
                "serve",
                "--data",
                data,
                "--listen",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
            ],
            2,
        )?;
        let quic = lines[0]
            .strip_prefix("listening on ")
            .context("controller address")?
            .to_owned();
        self.api = lines[1]
            .strip_prefix("admin API on ")
            .context("admin API")?
            .to_owned();
        Ok(quic)
    }

    /// Builds an image into the controller's store and registers it.
    fn build(&self, image: &Path, version: &str) -> Result<Manifest> {
        self.build_named(image, MASTER, version)
    }

    /// Builds `image` as master `name` version `version` into the controller's store and
    /// registers it.
    fn build_named(&self, image: &Path, name: &str, version: &str) -> Result<Manifest> {
        let ctl = self.dir.join("controller");
        let out = self.dir.join(format!("{name}-{version}.manifest"));
        let s = |p: &Path| p.to_str().map(str::to_owned).context("utf-8 path");
        self.run(
            &self.bins.image,
            &[
                "build",
                "--store",
                &s(&ctl.join("store"))?,
                "--key",
                &s(&ctl.join("signing.key"))?,
                "--name",
                name,
                "--version",
                version,
                &s(image)?,
                "-o",
                &s(&out)?,
            ],
        )?;
        self.run(
            &self.bins.controller,
            &["master-add", "--data", &s(&ctl)?, &s(&out)?],
        )?;
        Ok(Manifest::decode_unverified(&std::fs::read(&out)?)?.manifest)
    }

    fn start_relay(&mut self, site: &str, quic: &str) -> Result<RelayInfo> {
        let data = self.dir.join(format!("relay-{site}"));
        let token = self.nightcast(&["enroll", "--role", "relay", "--site", site])?;
        let d = data.to_str().context("utf-8 path")?.to_owned();
        self.run(
            &self.bins.relay.clone(),
            &[
                "enroll",
                "--controller",
                quic,
                "--token",
                token.trim(),
                "--node-id",
                &format!("relay-{site}"),
                "--data",
                &d,
            ],
        )?;
        let config = self.dir.join(format!("relay-{site}.toml"));
        std::fs::write(
            &config,
            format!("controller = \"{quic}\"\ndata = \"{d}\"\nlisten = \"127.0.0.1:0\"\ndiscovery = \"127.0.0.1:0\"\nquota = \"10 GiB\"\npoll_secs = 1\n[wake_on_lan]\ntarget = \"127.0.0.1:9\"\n"),
        )?;
        let lines = self.spawn(
            &format!("relay-{site}"),
            &self.bins.relay.clone(),
            &["run", "--config", config.to_str().context("path")?],
            2,
        )?;
        let discovery = lines[1]
            .strip_prefix("answering discovery on ")
            .context("relay output")?
            .to_owned();
        Ok(RelayInfo { data, discovery })
    }

    fn start_agent(&mut self, site: &str, n: usize, relay: &RelayInfo) -> Result<()> {
        self.start_agent_with(site, n, relay, "hypervisor = \"fake\"\n")
            .map(|_| ())
    }

    /// Starts NUC `n` of `site` with `extra` in its configuration (which must say its
    /// hypervisor); its data directory.
    fn start_agent_with(
        &mut self,
        site: &str,
        n: usize,
        relay: &RelayInfo,
        extra: &str,
    ) -> Result<PathBuf> {
        let node = format!("{site}-nuc-{n}");
        let data = self.dir.join(format!("agent-{node}"));
        std::fs::create_dir_all(&data)?;
        let config = self.dir.join(format!("agent-{node}.toml"));
        // Six NUCs on one machine: each serves its peers on a port of its own (a real NUC uses
        // the default, 0.0.0.0:4436).
        std::fs::write(
            &config,
            format!(
                "data = \"{}\"\ndiscovery = \"{}\"\nnode_id = \"{node}\"\npoll_secs = 1\nend_of_day = \"23:59\"\npeer_listen = \"127.0.0.1:0\"\n{extra}",
                data.display(),
                relay.discovery
            ),
        )?;
        self.spawn(
            &format!("agent-{node}"),
            &self.bins.agent.clone(),
            &["run", "--config", config.to_str().context("path")?],
            0,
        )?;
        Ok(data)
    }
}

/// What a relay or agent last wrote to `DATA/status.json` (Null until it has).
fn status(data: &Path) -> Value {
    std::fs::read(data.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

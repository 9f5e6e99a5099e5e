//! The session VM: a [`Hypervisor`] runs the seat's workstation on a throw-away qcow2 overlay
//! above the read-only master, and a reset drops the overlay.
//!
//! Guarantees: the master is only ever a backing file (opened read-only by QEMU; nothing here writes
//! to it or copies it), so a reset costs the same for 6 MB as for 60 GB: stop the VM, create an empty
//! overlay (`qemu-img create -f qcow2 -b <master> -F raw`), rename it over the old one. An overlay
//! file under its real name is always a complete one (it is made under a temp name first). Not
//! guaranteed: that an overlay survives an agent restart; the first `start` after construction
//! always makes a fresh one, since a session does not outlive its agent.
//!
//! Implementations: [`Qemu`] (a `qemu-system-x86_64` child process, its command line built from a
//! machine profile (`profile`), or from a raw template as an expert override) and [`Fake`] (no VM; the same overlay code, plus "guest" writes through `qemu-io` and a simulated
//! power-off), for tests where the VM itself is not the subject.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image_tools::durable::TempFile;

use crate::health::{self, Health, Seen};
use crate::profile::{self, Chosen, Host, Network, Paths, Profile, ProfileError, Seat};
use crate::qmp::{GuestAgent, Qmp, QmpError};

mod fake;
pub use fake::Fake;

/// What the VM is doing, as far as the agent can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmStatus {
    /// Never started since the hypervisor was made or last reset.
    NotStarted,
    Running,
    /// Stopped by the agent.
    Stopped,
    /// The guest powered itself off (QEMU exited with status 0).
    PoweredOff,
    /// QEMU exited on an error or a signal.
    Failed {
        code: Option<i32>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("cannot make overlay {overlay} over master {master}: {reason}")]
    Overlay {
        overlay: PathBuf,
        master: PathBuf,
        reason: String,
    },
    #[error("cannot run {tool}: {source}")]
    Tool { tool: String, source: io::Error },
    #[error("{tool} failed on {path}: {stderr}")]
    ToolFailed {
        tool: String,
        path: PathBuf,
        stderr: String,
    },
    #[error("VM {name}: no master prepared (call start with a master first)")]
    NotPrepared { name: String },
    #[error("VM {name} is running: stop it first")]
    Running { name: String },
    #[error("VM {name}: cannot start {command}: {source}")]
    Start {
        name: String,
        command: String,
        source: io::Error,
    },
    #[error("VM {name}: cannot stop process {pid}: {source}")]
    Stop {
        name: String,
        pid: u32,
        source: io::Error,
    },
    #[error("VM {name}: bad command template: {reason}")]
    Template { name: String, reason: String },
    #[error("VM {name}: {source}")]
    Profile { name: String, source: ProfileError },
    #[error("VM {name}: cannot make {path}: {source}")]
    Files {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("VM {name} has no profile: {what} needs one")]
    NoProfile { name: String, what: &'static str },
    #[error("VM {name}: {source}")]
    Control { name: String, source: QmpError },
}

/// A seat's VM. One overlay path per hypervisor; the master may change between sessions (after a
/// slot swap), never during one.
pub trait Hypervisor: fmt::Debug {
    /// The VM's name (used in logs and the `{name}` placeholder).
    fn name(&self) -> &str;

    /// The overlay file the VM writes to.
    fn overlay(&self) -> &Path;

    /// The master the overlay is over, once prepared.
    fn master(&self) -> Option<&Path>;

    /// Discards the overlay and makes a fresh, empty one over `master`. Refused while running.
    fn prepare(&mut self, master: &Path) -> Result<(), HypervisorError>;

    /// Starts the VM over `master`: on the prepared overlay if it is over this master (so a guest
    /// that powered off mid-session keeps its files), else on a fresh one.
    fn start(&mut self, master: &Path) -> Result<(), HypervisorError>;

    /// Stops the VM (nothing to do if it is not running).
    fn stop(&mut self) -> Result<(), HypervisorError>;

    /// Whether the VM runs, and if not, why.
    fn status(&mut self) -> Result<VmStatus, HypervisorError>;

    /// Between sessions: stop, discard the overlay, make a fresh one over the same master.
    fn reset(&mut self) -> Result<(), HypervisorError> {
        let master = self
            .master()
            .ok_or_else(|| HypervisorError::NotPrepared {
                name: self.name().to_owned(),
            })?
            .to_owned();
        self.stop()?;
        self.prepare(&master)
    }
}

/// The overlay file and the master it is over; shared by every implementation.
#[derive(Debug)]
struct Overlay {
    qemu_img: PathBuf,
    path: PathBuf,
    /// Canonical path of the master the current overlay file is over; `None` until prepared.
    master: Option<PathBuf>,
}

impl Overlay {
    fn new(qemu_img: PathBuf, path: PathBuf) -> Overlay {
        Overlay {
            qemu_img,
            path,
            master: None,
        }
    }

    fn is_over(&self, master: &Path) -> bool {
        self.master.is_some() && fs::canonicalize(master).ok() == self.master
    }

    /// Makes an empty qcow2 file over `master` under a temp name, then renames it over the
    /// overlay. No fsync: an overlay is never trusted across a restart.
    fn prepare(&mut self, master: &Path) -> Result<(), HypervisorError> {
        let err = |reason: String| HypervisorError::Overlay {
            overlay: self.path.clone(),
            master: master.to_owned(),
            reason,
        };
        let master_abs = fs::canonicalize(master).map_err(|e| err(e.to_string()))?;
        if !master_abs.is_file() {
            return Err(err("the master is not a file".into()));
        }
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = TempFile::new_in(dir, 0o600).map_err(|e| err(e.to_string()))?;
        let mut cmd = Command::new(&self.qemu_img);
        cmd.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&master_abs)
            .arg(tmp.path());
        run_tool(&mut cmd, &self.qemu_img, tmp.path())?;
        tmp.persist_unsynced(&self.path)
            .map_err(|e| err(e.to_string()))?;
        tracing::debug!(overlay = %self.path.display(), master = %master_abs.display(), "fresh overlay");
        self.master = Some(master_abs);
        Ok(())
    }
}

/// Runs a short tool to completion; its stderr becomes the error.
fn run_tool(cmd: &mut Command, tool: &Path, subject: &Path) -> Result<String, HypervisorError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HypervisorError::Tool {
            tool: tool.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        return Err(HypervisorError::ToolFailed {
            tool: tool.display().to_string(),
            path: subject.to_owned(),
            stderr: stderr.chars().take(2000).collect(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A VM built from a machine profile: what the guest needs, who it is, what the NUC has.
#[derive(Clone, Debug)]
pub struct Machine {
    pub profile: Profile,
    pub seat: Seat,
    pub host: Host,
}

/// How [`Qemu`] runs the VM.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The VM's name, for `{name}` and logs.
    pub name: String,
    /// Where the overlay lives (on the same disk as the slots, so a reset never copies). Its
    /// directory also holds the session's sockets, serial log and UEFI variables.
    pub overlay: PathBuf,
    /// The command line is built from this profile when set; `command` is then unused.
    pub machine: Option<Machine>,
    /// The expert override: a raw command line; `{overlay}`, `{master}` and `{name}` are replaced
    /// in every argument. Must mention `{overlay}`. Default: [`QemuConfig::default_command`].
    pub command: Vec<String>,
    /// `qemu-img`, found on `PATH` by default.
    pub qemu_img: PathBuf,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// With a profile, `stop` first presses the ACPI power button (QMP `system_powerdown`) and
    /// gives the guest this long to power off before stopping QEMU. Blocks the caller that long
    /// at most.
    pub powerdown_grace: Duration,
}

impl QemuConfig {
    pub fn new(name: &str, overlay: &Path) -> QemuConfig {
        QemuConfig {
            name: name.to_owned(),
            overlay: overlay.to_owned(),
            machine: None,
            command: QemuConfig::default_command(),
            qemu_img: PathBuf::from("qemu-img"),
            stop_timeout: Duration::from_secs(5),
            powerdown_grace: Duration::from_secs(30),
        }
    }

    /// A VM built from `machine`.
    pub fn with_machine(name: &str, overlay: &Path, machine: Machine) -> QemuConfig {
        QemuConfig {
            machine: Some(machine),
            ..QemuConfig::new(name, overlay)
        }
    }

    /// KVM, 4 GiB, 2 vCPUs, the overlay as a virtio disk with host caching off the critical path
    /// (`cache=unsafe`: the overlay is thrown away anyway), no network, no display, no monitor.
    /// `-cpu host` suits a NUC; a nested KVM (QEMU inside a VM) may refuse it ("failed to set MSR"),
    /// where `-cpu qemu64` works.
    pub fn default_command() -> Vec<String> {
        [
            "qemu-system-x86_64",
            "-name",
            "{name}",
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host",
            "-m",
            "4096",
            "-smp",
            "2",
            "-drive",
            "file={overlay},format=qcow2,if=virtio,cache=unsafe",
            "-nic",
            "none",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "none",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// How the last `stop` ended the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The guest powered off after the ACPI power button.
    Acpi,
    /// QEMU was stopped (SIGTERM, then SIGKILL): no profile, or the guest ignored the button.
    Forced,
}

/// A VM run by QEMU as a child process. The guest powering off shows as the process exiting with
/// status 0. Dropping it kills the VM.
#[derive(Debug)]
pub struct Qemu {
    config: QemuConfig,
    overlay: Overlay,
    /// With a profile: where the session's files are.
    paths: Option<Paths>,
    child: Option<Child>,
    last: VmStatus,
    /// A start under KVM did not come up: `Accel::Auto` uses TCG from now on.
    kvm_failed: bool,
    /// The accelerator of the last start (profiles only).
    accel: Option<Chosen>,
    started: Option<tokio::time::Instant>,
    stopped: Option<Stopped>,
}

impl Qemu {
    pub fn new(config: QemuConfig) -> Result<Qemu, HypervisorError> {
        let template_err = |reason: &str| HypervisorError::Template {
            name: config.name.clone(),
            reason: reason.to_owned(),
        };
        let paths = match &config.machine {
            Some(m) => {
                let dir = match config.overlay.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let paths = Paths::in_dir(dir, &config.overlay);
                // Refuse a profile that cannot make a command line now, not at the session.
                profile::argv(
                    &config.name,
                    &m.profile,
                    &m.seat,
                    &m.host,
                    &paths,
                    Chosen::Tcg,
                )
                .map_err(|source| HypervisorError::Profile {
                    name: config.name.clone(),
                    source,
                })?;
                Some(paths)
            }
            None => {
                if config.command.is_empty() {
                    return Err(template_err("empty command"));
                }
                if !config.command.iter().any(|a| a.contains("{overlay}")) {
                    return Err(template_err("no argument mentions {overlay}"));
                }
                None
            }
        };
        Ok(Qemu {
            overlay: Overlay::new(config.qemu_img.clone(), config.overlay.clone()),
            config,
            paths,
            child: None,
            last: VmStatus::NotStarted,
            kvm_failed: false,
            accel: None,
            started: None,
            stopped: None,
        })
    }

    /// The session's files (sockets, serial log, UEFI variables), with a profile.
    pub fn paths(&self) -> Option<&Paths> {
        self.paths.as_ref()
    }

    /// The accelerator of the last start (with a profile).
    pub fn accel(&self) -> Option<Chosen> {
        self.accel
    }

    /// How the last `stop` ended the VM.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }

    /// The guest did not come up under KVM: with `Accel::Auto`, later starts use TCG.
    pub fn mark_kvm_failed(&mut self) {
        if self.accel == Some(Chosen::Kvm) {
            self.kvm_failed = true;
        }
    }

    fn machine(&self, what: &'static str) -> Result<(&Machine, &Paths), HypervisorError> {
        match (&self.config.machine, &self.paths) {
            (Some(m), Some(p)) => Ok((m, p)),
            _ => Err(HypervisorError::NoProfile {
                name: self.config.name.clone(),
                what,
            }),
        }
    }

    /// The command line for the prepared overlay: the template with its placeholders replaced,
    /// or the profile's (with the accelerator of the last start, or the one it would choose).
    pub fn command_line(&self) -> Vec<String> {
        if let (Some(m), Some(paths)) = (&self.config.machine, &self.paths) {
            let accel = self.accel.unwrap_or(
                profile::choose_accel(m.profile.accel, m.host.kvm, self.kvm_failed)
                    .map_or(Chosen::Tcg, |(c, _)| c),
            );
            // Checked in `new`: only the accelerator changes, and it cannot make argv fail.
            return profile::argv(
                &self.config.name,
                &m.profile,
                &m.seat,
                &m.host,
                paths,
                accel,
            )
            .unwrap_or_default();
        }
        let overlay = self.overlay.path.display().to_string();
        let master = self
            .overlay
            .master
            .as_ref()
            .map(|m| m.display().to_string())
            .unwrap_or_default();
        self.config
            .command
            .iter()
            .map(|a| {
                a.replace("{overlay}", &overlay)
                    .replace("{master}", &master)
                    .replace("{name}", &self.config.name)
            })
            .collect()
    }

    /// The VM's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn files_err(&self, path: &Path) -> impl Fn(io::Error) -> HypervisorError {
        let (name, path) = (self.config.name.clone(), path.to_owned());
        move |source| HypervisorError::Files {
            name: name.clone(),
            path: path.clone(),
            source,
        }
    }

    /// A fresh copy of OVMF's variables for UEFI profiles: a session never inherits the boot
    /// entries or settings an earlier one changed.
    fn fresh_vars(&self) -> Result<(), HypervisorError> {
        let Ok((m, paths)) = self.machine("UEFI variables") else {
            return Ok(());
        };
        if m.profile.firmware != profile::Firmware::Uefi {
            return Ok(());
        }
        fs::copy(&m.host.ovmf_vars, &paths.vars).map_err(self.files_err(&m.host.ovmf_vars))?;
        Ok(())
    }

    fn refresh(&mut self) -> Result<(), HypervisorError> {
        if let Some(child) = &mut self.child {
            let pid = child.id();
            let exited = child.try_wait().map_err(|source| HypervisorError::Stop {
                name: self.config.name.clone(),
                pid,
                source,
            })?;
            if let Some(status) = exited {
                self.last = if status.success() {
                    VmStatus::PoweredOff
                } else {
                    VmStatus::Failed {
                        code: status.code(),
                    }
                };
                tracing::info!(vm = %self.config.name, ?status, "VM exited");
                self.child = None;
            }
        }
        Ok(())
    }

    /// A QMP connection to the running VM (profiles only).
    pub fn qmp(&self, timeout: Duration) -> Result<Qmp, HypervisorError> {
        let (_, paths) = self.machine("QMP")?;
        Qmp::connect(&paths.qmp, timeout).map_err(|source| HypervisorError::Control {
            name: self.config.name.clone(),
            source,
        })
    }

    /// A connection to the guest agent (profiles only); times out while the guest boots.
    pub fn guest_agent(&self, timeout: Duration) -> Result<GuestAgent, HypervisorError> {
        let (_, paths) = self.machine("the guest agent")?;
        GuestAgent::connect(&paths.qga, timeout).map_err(|source| HypervisorError::Control {
            name: self.config.name.clone(),
            source,
        })
    }

    /// Everything the guest wrote to its serial port since the last start (profiles only).
    pub fn serial_log(&self) -> Result<Vec<u8>, HypervisorError> {
        let (_, paths) = self.machine("a serial log")?;
        match fs::read(&paths.serial) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.files_err(&paths.serial)(e)),
        }
    }

    /// What can be seen of the boot now: the serial log, one `guest-ping` (waiting at most
    /// `ping_timeout`), whether QEMU is gone.
    pub fn observe(&mut self, ping_timeout: Duration) -> Result<Seen, HypervisorError> {
        self.refresh()?;
        let serial = health::read_serial(&self.serial_log()?);
        let exited = match self.last {
            VmStatus::PoweredOff | VmStatus::Failed { .. } | VmStatus::Stopped => {
                Some(format!("{:?}", self.last))
            }
            _ => None,
        };
        let (m, _) = self.machine("a health check")?;
        let guest_ping = exited.is_none()
            && m.profile.health.guest_agent
            && self
                .guest_agent(ping_timeout)
                .and_then(|mut qga| {
                    qga.ping().map_err(|source| HypervisorError::Control {
                        name: self.config.name.clone(),
                        source,
                    })
                })
                .is_ok();
        Ok(Seen {
            serial,
            guest_ping,
            exited,
        })
    }

    /// Waits until the guest is healthy or has failed, by its profile's check, timed from the
    /// start. A failure under KVM is remembered (see [`Qemu::mark_kvm_failed`]).
    pub fn wait_healthy(&mut self) -> Result<Health, HypervisorError> {
        let check = self.machine("a health check")?.0.profile.health;
        let started = self.started.ok_or_else(|| HypervisorError::NotPrepared {
            name: self.config.name.clone(),
        })?;
        loop {
            let seen = self.observe(Duration::from_secs(1))?;
            let verdict = health::judge(&check, &seen, started.elapsed());
            match &verdict {
                Health::Waiting { .. } => std::thread::sleep(Duration::from_millis(500)),
                Health::Healthy => {
                    tracing::info!(vm = %self.config.name, after = ?started.elapsed(), accel = ?self.accel, "guest healthy");
                    return Ok(verdict);
                }
                Health::Failed(why) => {
                    tracing::warn!(vm = %self.config.name, accel = ?self.accel, %why, "guest did not come up");
                    self.mark_kvm_failed();
                    return Ok(verdict);
                }
            }
        }
    }

    /// The ACPI power button, then up to `powerdown_grace` for QEMU to exit. Whether it did.
    fn acpi_power_off(&mut self) -> bool {
        if self.config.machine.is_none() || self.config.powerdown_grace.is_zero() {
            return false;
        }
        let pressed = self.qmp(Duration::from_secs(2)).and_then(|mut q| {
            q.system_powerdown()
                .map_err(|source| HypervisorError::Control {
                    name: self.config.name.clone(),
                    source,
                })
        });
        if let Err(e) = pressed {
            tracing::warn!(vm = %self.config.name, error = %e, "cannot press the ACPI power button");
            return false;
        }
        let since = tokio::time::Instant::now();
        while since.elapsed() < self.config.powerdown_grace {
            if self.refresh().is_err() || self.child.is_none() {
                return self.child.is_none();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!(vm = %self.config.name, grace = ?self.config.powerdown_grace, "the guest ignored the ACPI power button");
        false
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn overlay(&self) -> &Path {
        &self.overlay.path
    }

    fn master(&self) -> Option<&Path> {
        self.overlay.master.as_deref()
    }

    fn prepare(&mut self, master: &Path) -> Result<(), HypervisorError> {
        self.refresh()?;
        if self.child.is_some() {
            return Err(HypervisorError::Running {
                name: self.config.name.clone(),
            });
        }
        self.overlay.prepare(master)?;
        self.fresh_vars()?;
        self.last = VmStatus::NotStarted;
        Ok(())
    }

    fn start(&mut self, master: &Path) -> Result<(), HypervisorError> {
        self.refresh()?;
        if self.child.is_some() {
            return Err(HypervisorError::Running {
                name: self.config.name.clone(),
            });
        }
        if !self.overlay.is_over(master) {
            self.prepare(master)?;
        }
        if let (Some(m), Some(paths)) = (&self.config.machine, &self.paths) {
            let (accel, fallback) =
                profile::choose_accel(m.profile.accel, m.host.kvm, self.kvm_failed).map_err(
                    |source| HypervisorError::Profile {
                        name: self.config.name.clone(),
                        source,
                    },
                )?;
            if let Some(why) = fallback {
                tracing::warn!(vm = %self.config.name, why, "falling back to TCG (slow): {why}");
            }
            for stale in [&paths.qmp, &paths.qga] {
                let _ = fs::remove_file(stale);
            }
            if m.profile.firmware == profile::Firmware::Uefi && !paths.vars.exists() {
                self.fresh_vars()?;
            }
            self.accel = Some(accel);
        }
        let argv = self.command_line();
        if argv.is_empty() {
            return Err(HypervisorError::Template {
                name: self.config.name.clone(),
                reason: "empty command line".into(),
            });
        }
        let start_err = |source| HypervisorError::Start {
            name: self.config.name.clone(),
            command: argv.join(" "),
            source,
        };
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(start_err)?;
        tracing::info!(vm = %self.config.name, pid = child.id(), accel = ?self.accel, "VM started");
        self.child = Some(child);
        self.started = Some(tokio::time::Instant::now());
        self.stopped = None;
        self.last = VmStatus::Running;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), HypervisorError> {
        self.refresh()?;
        if self.child.is_none() {
            return Ok(());
        }
        if self.acpi_power_off() {
            tracing::info!(vm = %self.config.name, "VM powered off by ACPI");
            self.stopped = Some(Stopped::Acpi);
            self.last = VmStatus::Stopped;
            return Ok(());
        }
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        let stop_err = |source| HypervisorError::Stop {
            name: self.config.name.clone(),
            pid,
            source,
        };
        // QEMU exits cleanly on SIGTERM; the overlay is thrown away, so there is no guest state to
        // save. Polled with sleeps: no clock is read.
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let step = Duration::from_millis(20);
        let mut waited = Duration::ZERO;
        loop {
            if child.try_wait().map_err(stop_err)?.is_some() {
                break;
            }
            if waited >= self.config.stop_timeout {
                tracing::warn!(vm = %self.config.name, pid, "VM ignored SIGTERM: killing it");
                child.kill().map_err(stop_err)?;
                child.wait().map_err(stop_err)?;
                break;
            }
            std::thread::sleep(step);
            waited += step;
        }
        tracing::info!(vm = %self.config.name, pid, "VM stopped");
        self.stopped = Some(Stopped::Forced);
        self.last = VmStatus::Stopped;
        Ok(())
    }

    fn status(&mut self) -> Result<VmStatus, HypervisorError> {
        self.refresh()?;
        Ok(self.last)
    }
}

/// This NUC's facts for profiles: KVM usable (`/dev/kvm` opens read-write), CPUs, memory, Debian's
/// OVMF files, `qemu-system-x86_64` from `PATH`.
pub fn host_facts(network: Network) -> Host {
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(1024, |kib| kib / 1024);
    Host {
        qemu: PathBuf::from("qemu-system-x86_64"),
        kvm,
        cpus,
        memory_mib,
        ovmf_code: PathBuf::from(Host::OVMF_CODE),
        ovmf_vars: PathBuf::from(Host::OVMF_VARS),
        network,
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

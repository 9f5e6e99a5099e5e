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
//! Implementations: [`Qemu`] (a `qemu-system-x86_64` child process from a command-line template)
//! and [`Fake`] (no VM; the same overlay code, plus "guest" writes through `qemu-io` and a simulated
//! power-off), for tests where the VM itself is not the subject.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image_tools::durable::TempFile;

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

/// How [`Qemu`] runs the VM.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The VM's name, for `{name}` and logs.
    pub name: String,
    /// Where the overlay lives (on the same disk as the slots, so a reset never copies).
    pub overlay: PathBuf,
    /// The command line; `{overlay}`, `{master}` and `{name}` are replaced in every argument.
    /// Must mention `{overlay}`. Default: [`QemuConfig::default_command`].
    pub command: Vec<String>,
    /// `qemu-img`, found on `PATH` by default.
    pub qemu_img: PathBuf,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
}

impl QemuConfig {
    pub fn new(name: &str, overlay: &Path) -> QemuConfig {
        QemuConfig {
            name: name.to_owned(),
            overlay: overlay.to_owned(),
            command: QemuConfig::default_command(),
            qemu_img: PathBuf::from("qemu-img"),
            stop_timeout: Duration::from_secs(5),
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

/// A VM run by QEMU as a child process. The guest powering off shows as the process exiting with
/// status 0. Dropping it kills the VM.
#[derive(Debug)]
pub struct Qemu {
    config: QemuConfig,
    overlay: Overlay,
    child: Option<Child>,
    last: VmStatus,
}

impl Qemu {
    pub fn new(config: QemuConfig) -> Result<Qemu, HypervisorError> {
        let template_err = |reason: &str| HypervisorError::Template {
            name: config.name.clone(),
            reason: reason.to_owned(),
        };
        if config.command.is_empty() {
            return Err(template_err("empty command"));
        }
        if !config.command.iter().any(|a| a.contains("{overlay}")) {
            return Err(template_err("no argument mentions {overlay}"));
        }
        Ok(Qemu {
            overlay: Overlay::new(config.qemu_img.clone(), config.overlay.clone()),
            config,
            child: None,
            last: VmStatus::NotStarted,
        })
    }

    /// The command line for the prepared overlay, placeholders replaced.
    pub fn command_line(&self) -> Vec<String> {
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
        let argv = self.command_line();
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
        tracing::info!(vm = %self.config.name, pid = child.id(), "VM started");
        self.child = Some(child);
        self.last = VmStatus::Running;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), HypervisorError> {
        self.refresh()?;
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
        self.last = VmStatus::Stopped;
        Ok(())
    }

    fn status(&mut self) -> Result<VmStatus, HypervisorError> {
        self.refresh()?;
        Ok(self.last)
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

/// A hypervisor without a VM, for tests: real overlays (through `qemu-img`), "guest" writes and
/// reads through `qemu-io`, and a power-off on demand.
#[derive(Debug)]
pub struct Fake {
    name: String,
    overlay: Overlay,
    qemu_io: PathBuf,
    running: bool,
    last: VmStatus,
    /// How many times the VM was started.
    pub starts: u32,
}

impl Fake {
    /// A fake VM whose overlay is `overlay`, using `qemu-img` and `qemu-io` from `PATH`.
    pub fn new(name: &str, overlay: &Path) -> Fake {
        Fake {
            name: name.to_owned(),
            overlay: Overlay::new(PathBuf::from("qemu-img"), overlay.to_owned()),
            qemu_io: PathBuf::from("qemu-io"),
            running: false,
            last: VmStatus::NotStarted,
            starts: 0,
        }
    }

    fn qemu_io(&self, command: &str) -> Result<String, HypervisorError> {
        if self.overlay.master.is_none() {
            return Err(HypervisorError::NotPrepared {
                name: self.name.clone(),
            });
        }
        let mut cmd = Command::new(&self.qemu_io);
        cmd.args(["-f", "qcow2", "-c", command])
            .arg(&self.overlay.path);
        run_tool(&mut cmd, &self.qemu_io, &self.overlay.path)
    }

    /// Writes `len` bytes of `pattern` at `offset` of the disk, as the guest would.
    pub fn guest_write(&self, offset: u64, len: u64, pattern: u8) -> Result<(), HypervisorError> {
        self.qemu_io(&format!("write -P {pattern} {offset} {len}"))
            .map(|_| ())
    }

    /// Whether the guest reads `len` bytes of `pattern` at `offset` of its disk.
    pub fn guest_reads(&self, offset: u64, len: u64, pattern: u8) -> Result<bool, HypervisorError> {
        match self.qemu_io(&format!("read -P {pattern} {offset} {len}")) {
            Ok(out) => Ok(!out.contains("Pattern verification failed")),
            Err(HypervisorError::ToolFailed { stderr, .. })
                if stderr.contains("Pattern verification failed") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The guest shuts itself down.
    pub fn power_off(&mut self) {
        if self.running {
            self.running = false;
            self.last = VmStatus::PoweredOff;
        }
    }
}

impl Hypervisor for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    fn overlay(&self) -> &Path {
        &self.overlay.path
    }

    fn master(&self) -> Option<&Path> {
        self.overlay.master.as_deref()
    }

    fn prepare(&mut self, master: &Path) -> Result<(), HypervisorError> {
        if self.running {
            return Err(HypervisorError::Running {
                name: self.name.clone(),
            });
        }
        self.overlay.prepare(master)?;
        self.last = VmStatus::NotStarted;
        Ok(())
    }

    fn start(&mut self, master: &Path) -> Result<(), HypervisorError> {
        if self.running {
            return Err(HypervisorError::Running {
                name: self.name.clone(),
            });
        }
        if !self.overlay.is_over(master) {
            self.prepare(master)?;
        }
        self.running = true;
        self.starts += 1;
        self.last = VmStatus::Running;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), HypervisorError> {
        if self.running {
            self.running = false;
            self.last = VmStatus::Stopped;
        }
        Ok(())
    }

    fn status(&mut self) -> Result<VmStatus, HypervisorError> {
        Ok(self.last)
    }
}

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
use std::process::{Command, Stdio};
use std::time::Duration;

use image_tools::durable::TempFile;

use crate::health::Health;
use crate::profile::{AudioOut, Host, Network, ProfileError};
use crate::qmp::QmpError;

mod devices;
mod fake;
mod kvm_memory;
mod qemu;
mod saved;
pub use fake::Fake;
pub use qemu::{Machine, Qemu, QemuConfig, Stopped};

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

    /// Stops the VM at once, without asking the guest (one that did not come up, or whose power
    /// button was pressed already). By default the same as [`Hypervisor::stop`].
    fn stop_now(&mut self) -> Result<(), HypervisorError> {
        self.stop()
    }

    /// Whether the VM runs, and if not, why.
    fn status(&mut self) -> Result<VmStatus, HypervisorError>;

    /// Presses the guest's ACPI power button, where the VM has one: how long to give the guest to
    /// power off before [`Hypervisor::stop`] stops it. `None`: nothing pressed, stop at once.
    fn power_button(&mut self) -> Result<Option<Duration>, HypervisorError> {
        Ok(None)
    }

    /// The health check of the running boot (`health`); `None` when this VM has none (a raw
    /// command line, the fake) or runs no boot.
    fn boot_health(&mut self) -> Result<Option<Health>, HypervisorError> {
        Ok(None)
    }

    /// Builds the VM from `machine` from the next start on (the seat or the master changed).
    /// Refused while it runs; ignored by VMs without profiles.
    fn set_machine(&mut self, _machine: &Machine) -> Result<(), HypervisorError> {
        Ok(())
    }

    /// The accelerator of the last start, as text (`kvm`, or `tcg` and why), if known.
    fn accel(&self) -> Option<String> {
        None
    }

    /// While the VM runs: gives the guest the USB devices plugged into the NUC that the site's
    /// policy passes, takes back those pulled out (`usb`). Called at every tick; VMs without a
    /// profile pass nothing.
    fn sync_usb(&mut self) {}

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
        screen: None,
        audio: if Path::new("/dev/snd").is_dir() {
            AudioOut::Alsa
        } else {
            AudioOut::None
        },
        swtpm: PathBuf::from("swtpm"),
        usb: crate::profile::UsbPolicy::None,
    }
}

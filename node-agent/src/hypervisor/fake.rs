//! [`Fake`]: the session VM without a VM, for tests where the VM itself is not the subject.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_tool, Hypervisor, HypervisorError, Overlay, VmStatus};

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

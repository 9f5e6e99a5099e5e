//! [`Qemu`]: the session VM as a `qemu-system-x86_64` child process, its command line built from a
//! machine profile ([`Machine`]: the master's profile, the seat's identity, the NUC's facts), or
//! from a raw template as an expert override. With a profile it also watches the guest boot
//! ([`Qemu::boot_health`]: serial markers and `guest-ping`, judged by `health`), presses the ACPI
//! power button at the session's end, and falls back from KVM to TCG, reported, when the guest
//! did not come up under KVM.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::devices::{self, Swtpm};
use super::kvm_memory::{self, Decision};
use super::saved::{self, Saved};
use super::{Hypervisor, HypervisorError, Overlay, VmStatus};
use crate::health::{self, Failure, Health, Seen};
use crate::profile::{self, Accel, Chosen, Host, Paths, Profile, Seat};
use crate::qmp::{GuestAgent, Qmp};
use crate::usb::{self, Action, UsbDevice};

/// How long a restored guest has to answer its agent before the restore counts as failed.
const RESTORE_LIMIT: Duration = Duration::from_secs(60);

/// How long a `guest-ping` may wait once the guest's serial marker is in.
const PING_AFTER_MARKER: Duration = Duration::from_secs(1);

/// A VM built from a machine profile: what the guest needs, who it is, what the NUC has.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Where the NUC's USB devices show: `/sys/bus/usb/devices` (a test's copy in tests).
    pub usb_devices: PathBuf,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// With a profile, `stop` first presses the ACPI power button (QMP `system_powerdown`) and
    /// gives the guest this long to power off before stopping QEMU. Blocks the caller that long
    /// at most; a caller that must not block presses the button itself
    /// ([`Hypervisor::power_button`]) and calls `stop` once the guest is off or the time is up.
    pub powerdown_grace: Duration,
    /// How long one `guest-ping` of [`Qemu::boot_health`] may wait for an answer.
    pub ping_timeout: Duration,
    /// The X display QEMU shows the guest on (`DISPLAY`, e.g. `:0`), for the kiosk; `None`: the
    /// agent's own environment.
    pub x_display: Option<String>,
    /// With a profile: save the guest's state after its first healthy boot on a fresh overlay,
    /// and restore it instead of booting at the next starts on a fresh overlay (`saved`), with
    /// a cold boot when the restore fails. Off by default; not for profiles whose guest keeps
    /// state outside its RAM and overlay (a persistent disk, a TPM, USB devices of the host).
    pub resume: bool,
}

impl QemuConfig {
    pub fn new(name: &str, overlay: &Path) -> QemuConfig {
        QemuConfig {
            name: name.to_owned(),
            overlay: overlay.to_owned(),
            machine: None,
            command: QemuConfig::default_command(),
            qemu_img: PathBuf::from("qemu-img"),
            usb_devices: PathBuf::from("/sys/bus/usb/devices"),
            stop_timeout: Duration::from_secs(5),
            powerdown_grace: Duration::from_secs(30),
            ping_timeout: Duration::from_millis(200),
            x_display: None,
            resume: false,
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
    /// A start under KVM did not come up (now, or before with the same QEMU and kernel, as
    /// `kvm_memory` remembers it): `Accel::Auto` uses TCG from now on.
    kvm_failed: bool,
    /// The accelerator of the last start (profiles only), and why it is TCG if it fell back.
    accel: Option<Chosen>,
    fallback: Option<&'static str>,
    started: Option<tokio::time::Instant>,
    stopped: Option<Stopped>,
    /// The ACPI power button was pressed since the last start.
    button: bool,
    /// The health check's final verdict for the last start (healthy or failed).
    verdict: Option<Health>,
    /// The size of the X screen the VM was last started on, if it shows on one.
    screen: Option<(u32, u32)>,
    /// The running VM's TPM (profiles with `tpm`): killed with the VM.
    tpm: Option<Swtpm>,
    /// The NUC's USB devices the guest has now (by QMP id), and those QEMU refused (not tried
    /// again until plugged anew).
    usb_attached: BTreeMap<String, UsbDevice>,
    usb_refused: BTreeSet<String>,
    /// The overlay was made fresh and no VM ran on it yet.
    fresh: bool,
    /// The last start restored the saved state (`resume`).
    restoring: bool,
    /// The key to save the state under once the guest of the last start is healthy (`resume`:
    /// a cold boot on a fresh overlay).
    save_key: Option<String>,
    /// What became of the saved state at the last start, for reports.
    resume_note: Option<String>,
    /// `qemu-system-x86_64 --version`'s first line, once asked.
    qemu_version: Option<String>,
}

impl Qemu {
    pub fn new(config: QemuConfig) -> Result<Qemu, HypervisorError> {
        let template_err = |reason: &str| HypervisorError::Template {
            name: config.name.clone(),
            reason: reason.to_owned(),
        };
        let paths = match &config.machine {
            Some(m) => Some(checked_paths(&config, m)?),
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
        let kvm_failed = config
            .machine
            .as_ref()
            .is_some_and(|m| kvm_failed_before(&config, m));
        Ok(Qemu {
            overlay: Overlay::new(config.qemu_img.clone(), config.overlay.clone()),
            config,
            paths,
            child: None,
            last: VmStatus::NotStarted,
            kvm_failed,
            accel: None,
            fallback: None,
            started: None,
            stopped: None,
            button: false,
            verdict: None,
            screen: None,
            tpm: None,
            usb_attached: BTreeMap::new(),
            usb_refused: BTreeSet::new(),
            fresh: false,
            restoring: false,
            save_key: None,
            resume_note: None,
            qemu_version: None,
        })
    }

    /// The accelerator of the last start, as text for reports: `kvm`, or `tcg` and why; and
    /// whether it restored the saved state (`resume`).
    pub fn accel_text(&self) -> Option<String> {
        self.accel.map(|a| {
            let mut text = match self.fallback {
                Some(why) => format!("{a} (fell back from KVM: {why})"),
                None => a.to_string(),
            };
            if let Some(note) = &self.resume_note {
                text = format!("{text}; {note}");
            }
            text
        })
    }

    /// The last start restored the saved state.
    pub fn restored(&self) -> bool {
        self.restoring
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

    /// The guest did not come up under KVM (for `why`): with `Accel::Auto`, later starts use TCG,
    /// after a restart of the agent too, until QEMU or the kernel changes (`kvm_memory`).
    pub fn mark_kvm_failed(&mut self, why: &str) {
        if self.accel != Some(Chosen::Kvm) {
            return;
        }
        self.kvm_failed = true;
        let Some(m) = &self.config.machine else {
            return;
        };
        let path = kvm_memory::path_for(&self.config.overlay);
        let record = kvm_memory::Record {
            versions: kvm_memory::current(&m.host.qemu),
            why: why.to_owned(),
        };
        if let Err(e) = kvm_memory::save(&path, &record) {
            tracing::warn!(vm = %self.config.name, path = %path.display(), error = %e,
                "cannot remember the KVM fall back: KVM will be tried again after a restart");
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
            let host = profile::Host {
                screen: self.screen.or(m.host.screen),
                ..m.host.clone()
            };
            // Checked in `new`: only the accelerator changes, and it cannot make argv fail.
            return profile::argv(&self.config.name, &m.profile, &m.seat, &host, paths, accel)
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

    /// The virtual TPM's `swtpm` process id while the VM runs (profiles with `tpm`).
    pub fn tpm_pid(&self) -> Option<u32> {
        self.tpm.as_ref().map(Swtpm::pid)
    }

    /// The NUC's USB devices the guest has (QMP ids).
    pub fn usb_attached(&self) -> Vec<String> {
        self.usb_attached.keys().cloned().collect()
    }

    /// Gives the guest the plugged devices the site's policy passes and takes back those pulled
    /// out (`usb::reconcile`), over QMP; QMP is opened only when there is something to do. A
    /// device QEMU refuses (no permission on its /dev/bus/usb node, say) is reported once and not
    /// tried again until it is plugged anew.
    pub fn sync_usb(&mut self) {
        let Some(m) = &self.config.machine else {
            return;
        };
        if self.child.is_none()
            || (m.host.usb == usb::UsbPolicy::None && self.usb_attached.is_empty())
        {
            return;
        }
        let plugged = usb::read_devices(&self.config.usb_devices);
        self.usb_refused
            .retain(|id| plugged.iter().any(|d| &d.qmp_id() == id));
        let actions: Vec<Action> = usb::reconcile(m.host.usb, &plugged, &self.usb_attached)
            .into_iter()
            .filter(|a| !matches!(a, Action::Add(d) if self.usb_refused.contains(&d.qmp_id())))
            .collect();
        if actions.is_empty() {
            return;
        }
        let mut qmp = match self.qmp(Duration::from_secs(2)) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(vm = %self.config.name, error = %e, "cannot reach QMP to pass USB devices");
                return;
            }
        };
        for action in actions {
            let (command, arguments) = action.qmp(profile::USB_PASS_BUS);
            let done = qmp.execute(command, arguments);
            match (action, done) {
                (Action::Add(d), Ok(_)) => {
                    tracing::info!(vm = %self.config.name, port = %d.port, vendor = format!("{:04x}", d.vendor), product = format!("{:04x}", d.product), "USB device passed to the guest");
                    self.usb_attached.insert(d.qmp_id(), d);
                }
                (Action::Add(d), Err(e)) => {
                    tracing::warn!(vm = %self.config.name, port = %d.port, error = %e, "QEMU refused the USB device: not retried until it is plugged again");
                    self.usb_refused.insert(d.qmp_id());
                }
                (Action::Remove(id), done) => {
                    if let Err(e) = done {
                        tracing::debug!(vm = %self.config.name, %id, error = %e, "USB device already gone from the guest");
                    }
                    tracing::info!(vm = %self.config.name, %id, "USB device taken back from the guest");
                    self.usb_attached.remove(&id);
                }
            }
        }
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
                self.tpm = None;
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
    /// `ping_timeout`), whether QEMU is gone. When the profile asks for the serial marker too,
    /// the guest agent is pinged only once the marker is in: a ping before waits out its timeout
    /// (the guest agent's channel accepts the connection long before it answers), and the
    /// caller's loop with it.
    pub fn observe(&mut self, ping_timeout: Duration) -> Result<Seen, HypervisorError> {
        self.refresh()?;
        let serial = health::read_serial(&self.serial_log()?);
        let exited = match self.last {
            VmStatus::PoweredOff | VmStatus::Failed { .. } | VmStatus::Stopped => {
                Some(format!("{:?}", self.last))
            }
            _ => None,
        };
        let mut serial = serial;
        if self.restoring && serial.ready.is_none() {
            // The marker was written before the state was saved; the restored guest proves
            // itself by answering its agent.
            serial.ready = Some("(restored)".into());
        }
        let (m, _) = self.machine("a health check")?;
        let marker_first = m.profile.health.serial_marker && serial.ready.is_none();
        // Once the marker is in, the guest is up and its agent answers, but maybe slowly (a TCG
        // guest on a busy host took over 200 ms, and the health signal 11 s after the marker).
        let ping_timeout = if m.profile.health.serial_marker {
            ping_timeout.max(PING_AFTER_MARKER)
        } else {
            ping_timeout
        };
        let guest_ping = exited.is_none()
            && !marker_first
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

    /// The health check of the running boot: waiting, healthy or failed, by the profile's check,
    /// timed from the start; `None` without a profile or a start. One look at a time (the serial
    /// log, one `guest-ping` of at most `ping_timeout`): it is meant to be called at every tick. A
    /// final verdict is kept until the next start. A guest that did not come up under KVM with
    /// `accel = auto` makes later starts use TCG, and the failure says so ([`Failure::UnderKvm`]).
    pub fn boot_health(&mut self) -> Result<Option<Health>, HypervisorError> {
        if self.config.machine.is_none() || self.stopped.is_some() {
            return Ok(None);
        }
        let Some(started) = self.started else {
            return Ok(None);
        };
        if let Some(v) = &self.verdict {
            return Ok(Some(v.clone()));
        }
        let check = self.machine("a health check")?.0.profile.health;
        let seen = self.observe(self.config.ping_timeout)?;
        let judged = health::judge(&check, &seen, started.elapsed());
        if self.restoring {
            let why = match &judged {
                Health::Failed(f) => Some(f.to_string()),
                Health::Waiting { .. } if started.elapsed() >= RESTORE_LIMIT => {
                    Some(format!("no answer within {RESTORE_LIMIT:?}"))
                }
                _ => None,
            };
            if let Some(why) = why {
                return self.cold_boot_after_failed_restore(&why);
            }
        }
        if judged == Health::Healthy {
            self.after_healthy();
        }
        let verdict = match judged {
            Health::Failed(why) => {
                tracing::warn!(vm = %self.config.name, accel = ?self.accel, %why, "guest did not come up");
                let auto = self.machine("a health check")?.0.profile.accel == Accel::Auto;
                if auto && self.accel == Some(Chosen::Kvm) {
                    self.mark_kvm_failed(&why.to_string());
                    Health::Failed(Failure::UnderKvm(Box::new(why)))
                } else {
                    Health::Failed(why)
                }
            }
            v => v,
        };
        if verdict == Health::Healthy {
            tracing::info!(vm = %self.config.name, after = ?started.elapsed(), accel = ?self.accel, "guest healthy");
        }
        if !matches!(verdict, Health::Waiting { .. }) {
            self.verdict = Some(verdict.clone());
        }
        Ok(Some(verdict))
    }

    /// The restore failed: the saved state is discarded and the VM boots from cold on a fresh
    /// overlay (which saves a new state once healthy). Reported in the log and `accel_text`.
    fn cold_boot_after_failed_restore(
        &mut self,
        why: &str,
    ) -> Result<Option<Health>, HypervisorError> {
        tracing::warn!(vm = %self.config.name, %why, "restoring the saved pristine state failed: booting from cold");
        Saved::beside(&self.config.overlay).discard();
        self.stop_now()?;
        let Some(master) = self.overlay.master.clone() else {
            return Err(HypervisorError::NotPrepared {
                name: self.config.name.clone(),
            });
        };
        self.prepare(&master)?;
        self.start(&master)?;
        self.resume_note = Some(format!(
            "restoring the saved state failed ({why}): cold boot"
        ));
        Ok(Some(Health::Waiting {
            missing: vec!["serial marker", "guest agent"],
        }))
    }

    /// The guest of the last start is healthy: a restored guest gets the host's time (its clock
    /// stopped at the save), a cold boot on a fresh overlay is saved (`resume`).
    fn after_healthy(&mut self) {
        let Some(paths) = self.paths.clone() else {
            return;
        };
        if self.restoring {
            // In a thread: a guest just restored has taken seconds to answer it (timers catching
            // up), and the agent's loop must not wait. The guest agent serves one client at a
            // time: later ones wait for this one.
            let (qga, name) = (paths.qga.clone(), self.config.name.clone());
            let clock = image_tools::clock::Clock::system();
            std::thread::spawn(move || {
                let set = GuestAgent::connect(&qga, Duration::from_secs(30)).and_then(|mut q| {
                    let ns = (clock.now_f64() * 1e9) as u64;
                    q.execute("guest-set-time", serde_json::json!({ "time": ns }))
                });
                match set {
                    Ok(_) => tracing::info!(vm = %name, "the restored guest's clock is set"),
                    Err(e) => {
                        tracing::warn!(vm = %name, error = %e, "cannot set the restored guest's clock")
                    }
                }
            });
        }
        let Some(key) = self.save_key.take() else {
            return;
        };
        let vars = self
            .config
            .machine
            .as_ref()
            .filter(|m| m.profile.firmware == profile::Firmware::Uefi)
            .map(|_| paths.vars.clone());
        let saved = Saved::beside(&self.config.overlay);
        let result = self.qmp(Duration::from_secs(5)).and_then(|mut q| {
            saved
                .save(
                    &mut q,
                    &paths.overlay,
                    vars.as_deref(),
                    &key,
                    Duration::from_millis(50),
                )
                .map_err(|e| HypervisorError::Files {
                    name: self.config.name.clone(),
                    path: saved.state.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
        });
        match result {
            Ok(()) => {
                tracing::info!(vm = %self.config.name, state = %saved.state.display(), "saved the pristine state: the next resets restore it");
                self.resume_note = Some(match self.resume_note.take() {
                    Some(note) => format!("{note}; state saved again"),
                    None => "booted from cold, state saved".into(),
                });
            }
            Err(e) => {
                saved.discard();
                tracing::warn!(vm = %self.config.name, error = %e, "cannot save the pristine state: the next resets boot from cold");
                self.resume_note = Some(format!("cannot save the state: {e}"));
            }
        }
    }

    /// `qemu-system-x86_64 --version`'s first line (asked once).
    fn qemu_version(&mut self, qemu: &str) -> String {
        if let Some(v) = &self.qemu_version {
            return v.clone();
        }
        let v = Command::new(qemu)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default();
        self.qemu_version = Some(v.clone());
        v
    }

    /// Builds the VM from `machine` from the next start on (refused while it runs): the seat or
    /// the master's profile changed.
    pub fn set_machine(&mut self, machine: Machine) -> Result<(), HypervisorError> {
        self.refresh()?;
        if self.child.is_some() {
            return Err(HypervisorError::Running {
                name: self.config.name.clone(),
            });
        }
        if self.config.machine.as_ref() == Some(&machine) {
            return Ok(());
        }
        self.paths = Some(checked_paths(&self.config, &machine)?);
        self.kvm_failed |= kvm_failed_before(&self.config, &machine);
        self.config.machine = Some(machine);
        Ok(())
    }

    /// Waits until the guest is healthy or has failed ([`Qemu::boot_health`], looked at ten
    /// times a second).
    pub fn wait_healthy(&mut self) -> Result<Health, HypervisorError> {
        loop {
            match self.boot_health()? {
                Some(Health::Waiting { .. }) => std::thread::sleep(Duration::from_millis(100)),
                Some(verdict) => return Ok(verdict),
                None => {
                    return Err(HypervisorError::NotPrepared {
                        name: self.config.name.clone(),
                    })
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
        self.fresh = true;
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
            self.fallback = fallback;
            for stale in [&paths.qmp, &paths.qga] {
                let _ = fs::remove_file(stale);
            }
            if m.profile.firmware == profile::Firmware::Uefi && !paths.vars.exists() {
                self.fresh_vars()?;
            }
            if let Some(size) = m.profile.persistent_disk {
                devices::persistent_disk(
                    &self.config.name,
                    &self.config.qemu_img,
                    &paths.persistent_disk(&m.seat),
                    size,
                )?;
            }
            self.tpm = None;
            if m.profile.tpm {
                self.tpm = Some(Swtpm::start(
                    &self.config.name,
                    &m.host.swtpm,
                    &paths.tpm_state,
                    &paths.tpm_socket,
                )?);
            }
            self.accel = Some(accel);
            // The guest takes the screen's size (read now: the screen may have changed).
            if let Some(display) = &self.config.x_display {
                self.screen = match crate::kiosk::x11::screen_size(display) {
                    Ok(size) => Some(size),
                    Err(e) => {
                        tracing::warn!(vm = %self.config.name, error = %e, "the guest gets QEMU's default screen size");
                        None
                    }
                };
            }
        }
        let mut argv = self.command_line();
        if argv.is_empty() {
            return Err(HypervisorError::Template {
                name: self.config.name.clone(),
                reason: "empty command line".into(),
            });
        }
        self.restoring = false;
        self.save_key = None;
        self.resume_note = None;
        let unsafe_to_resume = self
            .config
            .machine
            .as_ref()
            .and_then(|m| saved::cannot_resume(&m.profile, &m.host));
        if let Some(why) = unsafe_to_resume.filter(|_| self.config.resume) {
            self.resume_note = Some(format!("booted from cold: {why}"));
        }
        if self.config.resume && self.fresh && unsafe_to_resume.is_none() {
            if let Some(m) = self.config.machine.clone() {
                let version = self.qemu_version(&argv[0]);
                let key = saved::key(&argv, master, &version, &m.host.ovmf_code);
                let saved = Saved::beside(&self.config.overlay);
                let uefi = m.profile.firmware == profile::Firmware::Uefi;
                let vars = self.paths.as_ref().filter(|_| uefi).map(|p| p.vars.clone());
                if saved.matches(&key) {
                    match saved.put_back(&self.config.overlay, vars.as_deref()) {
                        Ok(()) => {
                            argv.extend(saved.incoming());
                            self.restoring = true;
                            self.resume_note = Some("restored the saved pristine state".into());
                        }
                        Err(e) => {
                            tracing::warn!(vm = %self.config.name, error = %e, "cannot put the saved pristine state back: booting from cold");
                            saved.discard();
                            self.prepare(master)?;
                            self.save_key = Some(key);
                        }
                    }
                } else {
                    self.save_key = Some(key);
                }
            }
        }
        self.fresh = false;
        let start_err = |source| HypervisorError::Start {
            name: self.config.name.clone(),
            command: argv.join(" "),
            source,
        };
        let mut command = Command::new(&argv[0]);
        if let Some(display) = &self.config.x_display {
            command.env("DISPLAY", display);
        }
        let child = match command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                self.tpm = None;
                return Err(start_err(e));
            }
        };
        tracing::info!(vm = %self.config.name, pid = child.id(), accel = ?self.accel, "VM started");
        self.child = Some(child);
        self.started = Some(tokio::time::Instant::now());
        self.stopped = None;
        self.button = false;
        self.verdict = None;
        self.usb_attached.clear();
        self.usb_refused.clear();
        self.last = VmStatus::Running;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), HypervisorError> {
        self.stop_with(true)
    }

    fn stop_now(&mut self) -> Result<(), HypervisorError> {
        self.stop_with(false)
    }

    fn status(&mut self) -> Result<VmStatus, HypervisorError> {
        self.refresh()?;
        Ok(self.last)
    }

    fn power_button(&mut self) -> Result<Option<Duration>, HypervisorError> {
        self.refresh()?;
        if self.child.is_none()
            || self.config.machine.is_none()
            || self.config.powerdown_grace.is_zero()
        {
            return Ok(None);
        }
        let pressed = self.qmp(Duration::from_secs(2)).and_then(|mut q| {
            q.system_powerdown()
                .map_err(|source| HypervisorError::Control {
                    name: self.config.name.clone(),
                    source,
                })
        });
        match pressed {
            Ok(()) => {
                self.button = true;
                Ok(Some(self.config.powerdown_grace))
            }
            Err(e) => {
                tracing::warn!(vm = %self.config.name, error = %e, "cannot press the ACPI power button");
                Ok(None)
            }
        }
    }

    fn boot_health(&mut self) -> Result<Option<Health>, HypervisorError> {
        Qemu::boot_health(self)
    }

    fn set_machine(&mut self, machine: &Machine) -> Result<(), HypervisorError> {
        Qemu::set_machine(self, machine.clone())
    }

    fn accel(&self) -> Option<String> {
        self.accel_text()
    }

    fn sync_usb(&mut self) {
        Qemu::sync_usb(self)
    }
}

/// Whether `machine` must start under TCG because its guest did not come up under KVM before,
/// with this QEMU and kernel (`kvm_memory`); only asked with `accel = "auto"` and a usable KVM.
fn kvm_failed_before(config: &QemuConfig, machine: &Machine) -> bool {
    if machine.profile.accel != Accel::Auto || !machine.host.kvm {
        return false;
    }
    let path = kvm_memory::path_for(&config.overlay);
    let Some(stored) = kvm_memory::load(&path) else {
        return false;
    };
    match kvm_memory::decide(Some(&stored), &kvm_memory::current(&machine.host.qemu)) {
        Decision::Tcg(why) => {
            tracing::warn!(vm = %config.name, path = %path.display(), "TCG from the start: {why}");
            true
        }
        Decision::Kvm(why) => {
            tracing::info!(vm = %config.name, "{why}");
            false
        }
    }
}

/// The session's files for `machine`, after checking that it makes a command line (refused now,
/// not at the session).
fn checked_paths(config: &QemuConfig, machine: &Machine) -> Result<Paths, HypervisorError> {
    let dir = match config.overlay.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let paths = Paths::in_dir(dir, &config.overlay);
    profile::argv(
        &config.name,
        &machine.profile,
        &machine.seat,
        &machine.host,
        &paths,
        Chosen::Tcg,
    )
    .map_err(|source| HypervisorError::Profile {
        name: config.name.clone(),
        source,
    })?;
    Ok(paths)
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Qemu {
    /// Stops the VM: with `acpi`, the power button first (unless it was pressed already) and up
    /// to `powerdown_grace` for the guest; then SIGTERM, then SIGKILL.
    fn stop_with(&mut self, acpi: bool) -> Result<(), HypervisorError> {
        self.refresh()?;
        if self.child.is_none() {
            return Ok(());
        }
        if self.button || !acpi {
            self.refresh()?;
            if self.child.is_none() {
                tracing::info!(vm = %self.config.name, "VM powered off by ACPI");
                self.stopped = Some(Stopped::Acpi);
                self.last = VmStatus::Stopped;
                return Ok(());
            }
        } else if self.acpi_power_off() {
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
        self.tpm = None;
        self.stopped = Some(Stopped::Forced);
        self.last = VmStatus::Stopped;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The KVM fall back, remembered across agent restarts: once a guest did not come up under KVM
//! (`accel = "auto"`), the agent writes `kvm-fallback.json` beside the VM's overlay, with the
//! QEMU version and the kernel release it happened with. At start it reads it back: the same QEMU
//! on the same kernel goes straight to TCG (no health timeout wasted after every reboot); a QEMU
//! or kernel upgrade tries KVM again. The decision ([`decide`]) is pure; reading the versions and
//! the file are the thin shells around it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The file's name, in the overlay's directory (`DATA/vm/`).
pub const FILE: &str = "kvm-fallback.json";

/// What the fall back depends on: a change of either may make KVM run the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu: String,
    /// The running kernel's release (`uname -r`).
    pub kernel: String,
}

/// What is stored: the guest did not come up under KVM with these versions, for `why`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub versions: Versions,
    pub why: String,
}

/// KVM or TCG at start, and why, in words for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Kvm(String),
    Tcg(String),
}

/// Given what is stored (if anything) and the versions now.
pub fn decide(stored: Option<&Record>, now: &Versions) -> Decision {
    let Some(r) = stored else {
        return Decision::Kvm("no KVM failure remembered".to_owned());
    };
    let then = &r.versions;
    if then.qemu != now.qemu {
        Decision::Kvm(format!(
            "QEMU changed since the guest failed under KVM ({:?}, now {:?}): trying KVM again",
            then.qemu, now.qemu
        ))
    } else if then.kernel != now.kernel {
        Decision::Kvm(format!(
            "the kernel changed since the guest failed under KVM ({}, now {}): trying KVM again",
            then.kernel, now.kernel
        ))
    } else {
        Decision::Tcg(format!(
            "the guest did not come up under KVM with this QEMU and kernel ({}; {}): {}",
            now.qemu, now.kernel, r.why
        ))
    }
}

/// Where the record of the VM whose overlay is `overlay` lives.
pub fn path_for(overlay: &Path) -> PathBuf {
    match overlay.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(FILE),
        _ => PathBuf::from(FILE),
    }
}

/// The versions on this machine, for `qemu` (a program name or path). An unreadable version reads
/// as `unknown` (the start that follows says what is wrong with QEMU).
pub fn current(qemu: &Path) -> Versions {
    let qemu = Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    Versions { qemu, kernel }
}

/// The stored record, if any. A file that does not read is logged and counts as none: KVM is tried
/// again, which costs one health timeout at most.
pub fn load(path: &Path) -> Option<Record> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the remembered KVM fall back: trying KVM");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the remembered KVM fall back is not valid JSON: trying KVM");
            None
        }
    }
}

/// Durably writes `record` to `path`.
pub fn save(path: &Path, record: &Record) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    image_tools::durable::write_file(path, &bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(qemu: &str, kernel: &str) -> Versions {
        Versions {
            qemu: qemu.into(),
            kernel: kernel.into(),
        }
    }

    fn record(qemu: &str, kernel: &str) -> Record {
        Record {
            versions: v(qemu, kernel),
            why: "no health signal within 120 s".into(),
        }
    }

    #[test]
    fn a_remembered_failure_holds_until_qemu_or_the_kernel_changes() {
        let now = v("QEMU emulator version 10.0.2", "6.1.0-28-amd64");
        assert_eq!(
            decide(None, &now),
            Decision::Kvm("no KVM failure remembered".into())
        );
        assert_eq!(
            decide(
                Some(&record("QEMU emulator version 10.0.2", "6.1.0-28-amd64")),
                &now
            ),
            Decision::Tcg(
                "the guest did not come up under KVM with this QEMU and kernel (QEMU emulator \
                 version 10.0.2; 6.1.0-28-amd64): no health signal within 120 s"
                    .into()
            )
        );
        let Decision::Kvm(why) = decide(
            Some(&record("QEMU emulator version 7.2.0", "6.1.0-28-amd64")),
            &now,
        ) else {
            panic!("a QEMU upgrade must try KVM again");
        };
        assert!(why.starts_with("QEMU changed"), "{why}");
        let Decision::Kvm(why) = decide(
            Some(&record("QEMU emulator version 10.0.2", "6.1.0-27-amd64")),
            &now,
        ) else {
            panic!("a kernel upgrade must try KVM again");
        };
        assert!(why.starts_with("the kernel changed"), "{why}");
    }

    #[test]
    fn a_record_survives_a_round_trip_and_a_damaged_one_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("overlay.qcow2"));
        assert_eq!(path, dir.path().join(FILE));
        assert_eq!(load(&path), None);
        let r = record("QEMU emulator version 10.0.2", "6.1.0-28-amd64");
        save(&path, &r).unwrap();
        assert_eq!(load(&path), Some(r));
        fs::write(&path, b"{\"qemu\": ").unwrap();
        assert_eq!(load(&path), None);
    }

    #[test]
    fn the_versions_are_read_from_this_machine() {
        let now = current(Path::new("qemu-system-x86_64"));
        assert!(now.qemu.starts_with("QEMU emulator version"), "{now:?}");
        assert!(!now.kernel.is_empty() && now.kernel != "unknown", "{now:?}");
        assert_eq!(current(Path::new("/nonexistent/qemu")).qemu, "unknown");
    }
}

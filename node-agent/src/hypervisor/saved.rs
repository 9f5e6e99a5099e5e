//! The saved pristine state of a seat's VM: the guest's RAM and devices right after its first
//! healthy boot on a fresh overlay (QMP `migrate` to a file), with the overlay (and UEFI
//! variables) as they were at that moment. A reset then restores that state (QEMU `-incoming`)
//! instead of booting: about a second instead of a boot (docs/BENCHMARKS.md, `bench/boot.sh`).
//!
//! The files live beside the overlay: `pristine.state`, `pristine.qcow2`, `pristine.vars`, and
//! `pristine.key`, written last: a state counts only when its key file is there and names the
//! same [`key`] as the start about to happen. The key covers QEMU's whole command line (the
//! master's profile, the seat's identity, the accelerator, the screen), the master file (path,
//! inode, size, modification time), QEMU's version and binary, and the UEFI firmware file: a
//! change of any of them makes a new cold boot, which saves a new state.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image_tools::durable::TempFile;
use serde_json::{json, Value};

use crate::qmp::{Qmp, QmpError};

/// The saved state's files, in the overlay's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub state: PathBuf,
    pub overlay: PathBuf,
    pub vars: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("saving the guest's state: {0}")]
    Qmp(#[from] QmpError),
    #[error("saving the guest's state: QEMU says {0}")]
    Migrate(String),
    #[error("saving the guest's state: {0}")]
    Files(#[from] io::Error),
}

/// Describes a file for the key: path, inode, size, modification time (missing: its path alone).
fn file_facts(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(m) => format!(
            "{} {} {} {}.{}",
            path.display(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(_) => format!("{} (missing)", path.display()),
    }
}

/// Why a VM with `profile` on `host` must boot from cold every time, if it must: its state
/// outside the guest's memory would not match a saved one (the seat's persistent disk holds what
/// the last session wrote, the TPM starts empty each session, USB devices come and go).
pub fn cannot_resume(
    profile: &crate::profile::Profile,
    host: &crate::profile::Host,
) -> Option<&'static str> {
    if profile.persistent_disk.is_some() {
        Some("the profile has a persistent disk")
    } else if profile.tpm {
        Some("the profile has a TPM")
    } else if host.usb != crate::usb::UsbPolicy::None {
        Some("the site passes USB devices")
    } else {
        None
    }
}

/// What a saved state must have been made with to be restored by a start with `argv` (QEMU's
/// command line, the binary first) over `master`, QEMU saying `qemu_version`.
pub fn key(argv: &[String], master: &Path, qemu_version: &str, firmware: &Path) -> String {
    let mut h = blake3::Hasher::new();
    for a in argv {
        h.update(a.as_bytes());
        h.update(b"\0");
    }
    let binary = argv.first().map(PathBuf::from).unwrap_or_default();
    let binary = if binary.components().count() > 1 {
        file_facts(&binary)
    } else {
        binary.display().to_string()
    };
    let master = fs::canonicalize(master).unwrap_or_else(|_| master.to_owned());
    for part in [
        file_facts(&master),
        qemu_version.to_owned(),
        binary,
        file_facts(firmware),
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

impl Saved {
    /// The files beside `overlay`.
    pub fn beside(overlay: &Path) -> Saved {
        let dir = match overlay.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Saved {
            state: dir.join("pristine.state"),
            overlay: dir.join("pristine.qcow2"),
            vars: dir.join("pristine.vars"),
            key: dir.join("pristine.key"),
        }
    }

    /// Whether a complete state saved under `key` is here.
    pub fn matches(&self, key: &str) -> bool {
        fs::read_to_string(&self.key).is_ok_and(|k| k.trim() == key)
            && self.state.is_file()
            && self.overlay.is_file()
    }

    /// Removes the saved state (the key first: a half-removed state never counts).
    pub fn discard(&self) {
        for f in [&self.key, &self.state, &self.overlay, &self.vars] {
            let _ = fs::remove_file(f);
        }
    }

    /// Saves the running guest: migrates it to the state file (QEMU pauses it at the end and
    /// flushes the overlay), copies the overlay and `vars` (UEFI) as they are then, writes the
    /// key, and lets the guest go on. `poll` is how long to wait between looks at the migration.
    pub fn save(
        &self,
        qmp: &mut Qmp,
        overlay: &Path,
        vars: Option<&Path>,
        key: &str,
        poll: Duration,
    ) -> Result<(), SaveError> {
        self.discard();
        let dir = self.state.parent().unwrap_or(Path::new("."));
        let state = TempFile::new_in(dir, 0o600)?;
        let result = (|| {
            qmp.execute(
                "migrate",
                json!({ "uri": format!("file:{}", state.path().display()) }),
            )?;
            loop {
                let q = qmp.execute("query-migrate", Value::Null)?;
                match q["status"].as_str() {
                    Some("completed") => break,
                    Some("failed" | "cancelled") => {
                        return Err(SaveError::Migrate(
                            q["error-desc"].as_str().unwrap_or("failed").to_owned(),
                        ))
                    }
                    _ => std::thread::sleep(poll),
                }
            }
            let copy = |from: &Path, to: &Path| -> Result<(), SaveError> {
                let tmp = TempFile::new_in(dir, 0o600)?;
                fs::copy(from, tmp.path())?;
                tmp.persist_unsynced(to)?;
                Ok(())
            };
            copy(overlay, &self.overlay)?;
            if let Some(v) = vars {
                copy(v, &self.vars)?;
            }
            Ok(())
        })();
        // The guest goes on in any case (after a completed migration QEMU keeps it paused).
        let resumed = qmp.execute("cont", Value::Null);
        result?;
        resumed?;
        state.persist_unsynced(&self.state)?;
        image_tools::durable::write_file(&self.key, key.as_bytes(), 0o600)?;
        Ok(())
    }

    /// Puts the saved overlay (and `vars`, UEFI) in place for a restore.
    pub fn put_back(&self, overlay: &Path, vars: Option<&Path>) -> io::Result<()> {
        let dir = overlay.parent().unwrap_or(Path::new("."));
        let tmp = TempFile::new_in(dir, 0o600)?;
        fs::copy(&self.overlay, tmp.path())?;
        tmp.persist_unsynced(overlay)?;
        if let Some(v) = vars {
            fs::copy(&self.vars, v)?;
        }
        Ok(())
    }

    /// QEMU's argument that restores the state.
    pub fn incoming(&self) -> [String; 2] {
        ["-incoming".into(), format!("file:{}", self.state.display())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_the_command_line_the_master_and_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("current.img");
        fs::write(&master, b"v1").unwrap();
        let fw = dir.path().join("OVMF_CODE.fd");
        let argv: Vec<String> = ["qemu-system-x86_64", "-m", "1024"]
            .map(String::from)
            .to_vec();
        let k = key(&argv, &master, "QEMU 10.0.2", &fw);
        assert_eq!(k, key(&argv, &master, "QEMU 10.0.2", &fw));
        let mut other = argv.clone();
        other[2] = "2048".into();
        assert_ne!(k, key(&other, &master, "QEMU 10.0.2", &fw));
        assert_ne!(k, key(&argv, &master, "QEMU 10.1.0", &fw));
        // A new master in the same slot: another file.
        fs::remove_file(&master).unwrap();
        fs::write(&master, b"v2").unwrap();
        assert_ne!(k, key(&argv, &master, "QEMU 10.0.2", &fw));
    }

    #[test]
    fn a_seat_with_a_persistent_disk_a_tpm_or_usb_passthrough_always_boots_from_cold() {
        use crate::profile::{test_host, Profile};
        let host = test_host();
        assert_eq!(cannot_resume(&Profile::default(), &host), None);
        let disk = Profile {
            persistent_disk: Some("2G".parse().unwrap()),
            ..Profile::default()
        };
        assert!(cannot_resume(&disk, &host)
            .unwrap()
            .contains("persistent disk"));
        let tpm = Profile {
            tpm: true,
            ..Profile::default()
        };
        assert!(cannot_resume(&tpm, &host).unwrap().contains("TPM"));
        let usb = crate::profile::Host {
            usb: crate::usb::UsbPolicy::Storage,
            ..host
        };
        assert!(cannot_resume(&Profile::default(), &usb)
            .unwrap()
            .contains("USB"));
    }

    #[test]
    fn a_state_counts_only_complete_and_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Saved::beside(&dir.path().join("overlay.qcow2"));
        assert!(!s.matches("k"));
        fs::write(&s.state, b"ram").unwrap();
        fs::write(&s.overlay, b"disk").unwrap();
        assert!(!s.matches("k"), "no key file yet");
        fs::write(&s.key, b"k\n").unwrap();
        assert!(s.matches("k"));
        assert!(!s.matches("other"));
        fs::remove_file(&s.state).unwrap();
        assert!(!s.matches("k"));
        s.discard();
        assert!(!s.key.exists() && !s.overlay.exists());
    }
}

//! The files and helper processes a profile's devices need before QEMU starts: the seat's
//! persistent disk ([`persistent_disk`]: made once, then kept) and the virtual TPM ([`Swtpm`]: a
//! `swtpm` process on a fresh state, killed with the VM).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image_tools::durable::TempFile;

use super::{run_tool, HypervisorError};
use crate::profile::DiskSize;

/// Makes the seat's persistent disk at `path` (an empty qcow2 of `size`, the guest formats it)
/// unless it exists; whether it made it. A disk that exists is used as it is, whatever its size:
/// nothing here ever shrinks, rewrites or removes one (a profile that drops the field leaves the
/// file on the NUC). Made under a temp name, fsynced and renamed: a power cut never leaves half a
/// disk under the real name.
pub fn persistent_disk(
    vm: &str,
    qemu_img: &Path,
    path: &Path,
    size: DiskSize,
) -> Result<bool, HypervisorError> {
    if path.is_file() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let files = |source: io::Error| HypervisorError::Files {
        name: vm.to_owned(),
        path: path.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(files)?;
    let tmp = TempFile::new_in(dir, 0o600).map_err(files)?;
    let mut cmd = Command::new(qemu_img);
    cmd.args(["create", "-q", "-f", "qcow2"])
        .arg(tmp.path())
        .arg(format!("{}M", size.mib()));
    run_tool(&mut cmd, qemu_img, tmp.path())?;
    tmp.persist(path).map_err(files)?;
    tracing::info!(disk = %path.display(), %size, "made the seat's persistent disk");
    Ok(true)
}

/// A `swtpm` serving one VM's TPM 2.0 on a Unix socket, its state emptied at every start (a TPM
/// that lives as long as the session, like the overlay). Dropping it kills the process; it also
/// ends by itself when QEMU closes its connection (`--terminate`).
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    socket: PathBuf,
}

impl Swtpm {
    /// Empties `state`, starts `swtpm` on `socket` and waits (up to 5 s) for the socket.
    pub fn start(
        vm: &str,
        swtpm: &Path,
        state: &Path,
        socket: &Path,
    ) -> Result<Swtpm, HypervisorError> {
        let files = |path: &Path| {
            let path = path.to_owned();
            move |source: io::Error| HypervisorError::Files {
                name: vm.to_owned(),
                path: path.clone(),
                source,
            }
        };
        match fs::remove_dir_all(state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(files(state)(e)),
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state)
            .map_err(files(state))?;
        match fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(files(socket)(e)),
        }
        let log = state.join("swtpm.log");
        let arg = |prefix: &str, p: &Path, suffix: &str| {
            let mut s = std::ffi::OsString::from(prefix);
            s.push(p);
            s.push(suffix);
            s
        };
        let mut child = Command::new(swtpm)
            .args(["socket", "--tpm2", "--terminate"])
            .arg("--tpmstate")
            .arg(arg("dir=", state, ",mode=0600"))
            .arg("--ctrl")
            .arg(arg("type=unixio,path=", socket, ",mode=0600"))
            .arg("--log")
            .arg(arg("file=", &log, ",level=1"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HypervisorError::Tool {
                tool: swtpm.display().to_string(),
                source,
            })?;
        // Polled with sleeps: no clock is read.
        let step = Duration::from_millis(10);
        for _ in 0..500 {
            if socket.exists() {
                tracing::debug!(pid = child.id(), socket = %socket.display(), "swtpm ready");
                return Ok(Swtpm {
                    child,
                    socket: socket.to_owned(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut e, &mut stderr);
                }
                let logged = fs::read_to_string(&log).unwrap_or_default();
                return Err(HypervisorError::ToolFailed {
                    tool: swtpm.display().to_string(),
                    path: state.to_owned(),
                    stderr: format!("exited ({status}): {} {}", stderr.trim(), logged.trim())
                        .chars()
                        .take(2000)
                        .collect(),
                });
            }
            std::thread::sleep(step);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(HypervisorError::ToolFailed {
            tool: swtpm.display().to_string(),
            path: socket.to_owned(),
            stderr: "did not make its socket within 5 s".into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_persistent_disk_is_made_once_and_then_kept_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats").join("salle-1-pc-1.qcow2");
        let size: DiskSize = "64M".parse().unwrap();
        assert!(persistent_disk("vm", Path::new("qemu-img"), &path, size).unwrap());
        let info = Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&path)
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], 64 << 20);
        assert!(info["backing-filename"].is_null(), "{info}");
        // What the guest wrote stays: a second call, even with another size, changes nothing.
        let before = fs::read(&path).unwrap();
        assert!(
            !persistent_disk("vm", Path::new("qemu-img"), &path, "2G".parse().unwrap()).unwrap()
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        // No temp file left beside it.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("salle-1-pc-1.qcow2")]);
    }

    #[test]
    fn swtpm_starts_on_a_fresh_state_and_dies_with_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("tpm");
        let socket = dir.path().join("tpm.sock");
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join("tpm2-00.permall"), b"last session's TPM").unwrap();
        let tpm = Swtpm::start("vm", Path::new("swtpm"), &state, &socket).unwrap();
        assert!(socket.exists());
        let old = fs::read(state.join("tpm2-00.permall")).unwrap_or_default();
        assert_ne!(
            old, b"last session's TPM",
            "the last session's TPM state was kept"
        );
        let pid = tpm.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(tpm);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "swtpm {pid} outlived the VM"
        );
        assert!(!socket.exists());
    }

    #[test]
    fn a_missing_swtpm_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Swtpm::start(
            "vm",
            Path::new("/nonexistent/swtpm"),
            &dir.path().join("tpm"),
            &dir.path().join("tpm.sock"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/swtpm"), "{e}");
    }
}

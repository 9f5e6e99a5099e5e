//! A small disk for tests of what happens when one fills up: a tmpfs of a given size mounted over
//! a directory (root only, as CI runs), unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory for one test. See the module documentation.
#[derive(Debug)]
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `4m`) at `at`; panics, saying
    /// why, where it cannot (it needs root, as CI runs).
    pub fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", at.display()));
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "nightcast-test",
            ])
            .arg(at)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (this test needs root, as CI runs it): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

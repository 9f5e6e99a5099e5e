//! The test master: a real Debian guest (`build-debian.sh`), built once and shared by every test
//! binary of a run, and by later runs while the script does not change.
//!
//! The image lives in `<target dir>/nightcast-guest/debian-<hash>.raw`, where `<hash>` is the
//! BLAKE3 of the build script: a changed script builds a new image (and removes the old ones).
//! A file lock serialises the builders, so test binaries started in parallel wait for one build.
//! The script renames the image into place only when it is complete.
//!
//! Include it from any test crate with `#[path = ".../node-agent/tests/guest/mod.rs"] mod guest;`:
//! the script is compiled in, so the including crate's location does not matter.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SCRIPT: &str = include_str!("build-debian.sh");

/// The built image (raw, sparse). Builds it on first use; panics with the build log on failure.
pub fn debian() -> PathBuf {
    let key = blake3::hash(SCRIPT.as_bytes()).to_hex()[..16].to_owned();
    let dir = target_dir().join("nightcast-guest");
    fs::create_dir_all(&dir).expect("cannot make the guest cache directory");
    let image = dir.join(format!("debian-{key}.raw"));
    let lock = fs::File::create(dir.join("build.lock")).expect("cannot open the guest build lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .expect("cannot lock the guest build lock");
    if image.is_file() {
        return image;
    }
    remove_stale(&dir, &image);
    let script = dir.join(format!("build-debian-{key}.sh"));
    fs::File::create(&script)
        .and_then(|mut f| f.write_all(SCRIPT.as_bytes()))
        .expect("cannot write the build script");
    let log = dir.join(format!("debian-{key}.log"));
    let log_file = fs::File::create(&log).expect("cannot make the build log");
    eprintln!(
        "building the Debian test master ({}), a few minutes",
        image.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .arg(&image)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .status()
        .expect("cannot run bash");
    if !status.success() || !image.is_file() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "building the Debian test master failed ({status}); log {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    image
}

/// A copy of `image` whose kernel panics at boot: `init=/bin/false` on the kernel command line
/// of its GRUB configuration (same length, patched in place: ext4 keeps no checksum of file data).
pub fn panicking_copy(image: &Path, out: &Path) {
    let ok = Command::new("cp")
        .args(["--sparse=always"])
        .arg(image)
        .arg(out)
        .status()
        .unwrap();
    assert!(ok.success());
    let (from, to): (&[u8], &[u8]) = (b" quiet mitigations=off", b" init=/bin/false quiet");
    assert_eq!(from.len(), to.len());
    let bytes = fs::read(out).unwrap();
    let at: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the kernel command line is not where expected");
    drop(bytes);
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(out).unwrap();
    f.write_all_at(to, at[0] as u64).unwrap();
    f.sync_all().unwrap();
}

/// Images and scripts of other versions of the build script.
fn remove_stale(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("debian-") || name.starts_with("build-debian-");
        if ours && path != keep {
            let _ = fs::remove_file(&path);
        }
    }
}

/// `<target dir>`: the test executable is `<target dir>/<profile>/deps/<name>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("no current executable");
    exe.ancestors()
        .nth(3)
        .expect("the test executable is not under a target directory")
        .to_owned()
}

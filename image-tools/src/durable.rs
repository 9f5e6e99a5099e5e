//! The one way nightcast writes a file that must survive a crash: write a temp file named with
//! [`TEMP_PREFIX`] in the target's directory, fsync it, rename it over the target, fsync the
//! directory. A reader therefore sees the old file or the whole new one, never a part; a crash leaves
//! at most a temp file, which [`clean_temp_files`] removes at the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Every temp file nightcast makes starts with this; nothing else does.
pub const TEMP_PREFIX: &str = ".nc-tmp-";

/// A temp file beside its final path; removed on drop unless [`TempFile::persist`] succeeded.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates a new temp file in `dir` with the given permission bits.
    pub fn new_in(dir: &Path, mode: u32) -> io::Result<TempFile> {
        for _ in 0..16 {
            let mut suffix = [0u8; 8];
            getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
            let path = dir.join(format!("{TEMP_PREFIX}{}", crate::ids::hex(&suffix)));
            match OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("could not pick a free temp file name"))
    }

    /// The open file. Panics after [`TempFile::close`] (a caller bug, never an input error).
    pub fn file(&self) -> &File {
        match &self.file {
            Some(file) => file,
            None => panic!("temp file {} used after close", self.path.display()),
        }
    }

    /// Closes the handle but keeps the file (still removed on drop unless persisted), so that many
    /// pending temp files do not hold as many descriptors.
    pub fn close(&mut self) {
        self.file = None;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs the data, renames it to `target` and fsyncs the target's directory.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        match self.file.take() {
            Some(file) => file.sync_all()?,
            None => File::open(&self.path)?.sync_all()?,
        }
        self.rename_into(target)?;
        sync_dir(parent_of(target))
    }

    /// Renames without any fsync; for callers that make a batch durable at once (see
    /// [`sync_filesystem`]) before they publish anything that refers to it.
    pub fn persist_unsynced(mut self, target: &Path) -> io::Result<()> {
        self.file.take();
        self.rename_into(target)
    }

    fn rename_into(&mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Durably replaces `path` with `bytes`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = TempFile::new_in(parent_of(path), mode)?;
    tmp.file().write_all(bytes)?;
    tmp.persist(path)
}

/// fsyncs a directory, making the renames inside it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes the whole file system holding `path` (syncfs(2)): one call makes a batch of writes durable.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    rustix::fs::syncfs(&dir).map_err(io::Error::from)
}

/// Removes the temp files a crash left in `dir` (not recursive). Returns how many.
pub fn clean_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_whole_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        write_file(&path, b"one", 0o644).unwrap();
        write_file(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_temp_files_vanish_and_stale_ones_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = TempFile::new_in(dir.path(), 0o600).unwrap();
        let path = tmp.path().to_owned();
        drop(tmp);
        assert!(!path.exists());
        // As a kill -9 would leave one:
        fs::write(dir.path().join(format!("{TEMP_PREFIX}stale")), b"x").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(clean_temp_files(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
    }
}

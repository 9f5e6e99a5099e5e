//! Converting a store in place from one [`Format`] to the other (`nightcast-image convert`): the
//! migration path between the file store and the pack store.
//!
//! How: under the store's exclusive lock (no import, relay or agent writing), every chunk is read
//! (and so verified) and written into a new store of the other format beside it, made durable;
//! then the two directories are swapped in one atomic `renameat2(RENAME_EXCHANGE)`, and the old
//! one is deleted. A crash before the swap leaves the old store as it was (and a half-built
//! staging directory, removed by the next conversion); a crash after it leaves the new store in
//! place and the old one under the staging name. Corrupt chunks are not carried over: they are
//! reported, and count as missing afterwards (fetched or imported again), as `scrub --repair`
//! would have it. It needs free space for a second copy of the store while it runs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{open_disk_store, Format, StoreError};
use crate::durable;
use crate::ids::ChunkId;

#[derive(Debug, Default)]
pub struct ConvertReport {
    pub from: &'static str,
    pub to: &'static str,
    /// Chunks carried over.
    pub chunks: u64,
    /// Their stored bytes (with headers).
    pub bytes: u64,
    /// Chunks left behind because they did not verify.
    pub corrupt: Vec<(ChunkId, String)>,
}

/// Where the new store is built: beside `root`, hidden, one name per store.
fn staging_dir(root: &Path) -> Result<PathBuf, StoreError> {
    let name = root
        .file_name()
        .ok_or_else(|| StoreError::Layout(format!("{} has no directory name", root.display())))?;
    Ok(root.with_file_name(format!(".{}.nc-convert", name.to_string_lossy())))
}

/// Converts the store at `root` to `to` in place. A store already in `to` is left alone.
pub fn convert(root: &Path, to: Format) -> Result<ConvertReport, StoreError> {
    let from = Format::of(root)?.ok_or_else(|| {
        StoreError::Layout(format!("{} is not a nightcast store", root.display()))
    })?;
    let mut report = ConvertReport {
        from: from.name(),
        to: to.name(),
        ..ConvertReport::default()
    };
    if from == to {
        return Ok(report);
    }
    let staging = staging_dir(root)?;
    match fs::remove_dir_all(&staging) {
        Ok(()) => {
            tracing::info!(dir = %staging.display(), "removed what an interrupted conversion left")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&staging)(e)),
    }
    {
        let source = open_disk_store(root, from)?;
        let _quiet = source.lock(true)?;
        let target = open_disk_store(&staging, to)?;
        let mut writer = target.writer();
        for id in source.ids()? {
            match source.get(&id) {
                Ok(chunk) => {
                    writer.put(&chunk)?;
                    report.chunks += 1;
                    report.bytes +=
                        (crate::chunk::HEADER_LEN as u64) + u64::from(chunk.stored_len());
                }
                Err(StoreError::Missing(_)) => {}
                Err(StoreError::Invalid { reason, .. }) => {
                    tracing::warn!(chunk = %id, %reason, "corrupt chunk not carried over");
                    report.corrupt.push((id, reason.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        writer.commit()?;
        drop(writer);
        drop(target);
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staging,
            rustix::fs::CWD,
            root,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| StoreError::io(root)(e.into()))?;
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        durable::sync_dir(parent).map_err(StoreError::io(parent))?;
    }
    // The old store, now under the staging name.
    fs::remove_dir_all(&staging).map_err(StoreError::io(&staging))?;
    Ok(report)
}

//! Import: an image in, new chunks in the store and a signed manifest out.
//!
//! One thread reads the image sequentially (8 MiB reads) and cuts it ([`crate::chunker`]); one
//! worker per core hashes each chunk, reuses it if the store holds it *and it verifies* (read,
//! decompressed and hashed: a file that is empty, oversized or corrupt is replaced by the fresh
//! bytes, never signed over) or this import already has it, and compresses it otherwise; the calling
//! thread puts entries back in image order and writes new chunks in group commits. Channels are
//! bounded, so memory is bounded by (cores x 4 + 8 MiB read buffer) chunks whatever the image size.
//! Chunks are durable before the manifest exists: the write order is chunks, then `sync`, then the
//! manifest (done by the caller with the returned bytes). Every chunk length in the manifest is that
//! of the bytes really stored.
//!
//! ## Imports read only the file they were given
//!
//! The format is stated by the caller ([`ImageFormat`]: raw, qcow2, vmdk, vhdx, vpc, vdi) or
//! detected from magic bytes ([`crate::probe::sniff`]) and then pinned: qemu-img never probes.
//! Raw images are read directly and never reach qemu-img. For the others, measured with qemu-img
//! 10.0 under strace: `qemu-img info` does not open a qcow2 backing file (nor, since qemu 9.0.1, a
//! qcow2 data file), but it *does* open VMDK extents, those of a text descriptor and those of the
//! descriptor embedded in a binary VMDK whose header gives no capacity; `qemu-img convert` reads
//! backing files, data files and extents into its output. `backing: null` stops backing files
//! (qcow2 and VMDK `parentFileNameHint`) but not data files or extents. So, in this order:
//!
//! 1. the headers are checked here, before qemu-img runs at all ([`crate::probe`]): a backing file,
//!    an external data file, or VMDK extents outside the file refuse the image with
//!    [`ImportError::Refused`], naming the file and what it references (and, when the format was
//!    only detected, telling the DSI to pass `--format raw` if it is a raw disk);
//! 2. qemu-img opens the file only as `json:{"driver": FMT, "backing": null, "file": {"driver":
//!    "file", "filename": ABSOLUTE PATH}}` (with `-f FMT` too): the format is pinned, no backing file
//!    is ever opened whatever the header says, and the path is never parsed as a protocol;
//! 3. `qemu-img info` of that source must show no backing file, no data file and no child node
//!    other than the file itself (a second opinion for VHDX and VDI, whose headers are not parsed
//!    here); only then does `qemu-img convert` write a sparse raw temp file in the store.
//!
//! Checking headers ourselves was preferred over trusting `qemu-img info` alone because `info`
//! itself opens VMDK extents (and older qemu opened qcow2 data files), and over `--image-opts`
//! options alone because there is no option that stops data files or extents.
//! Not guaranteed: that the image does not change while it is imported.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crossbeam_channel::bounded;

use crate::chunk::VerifiedChunk;
use crate::chunker::{ChunkParams, Chunker, Piece};
use crate::durable::TempFile;
use crate::ids::{ChunkId, MasterName, MasterVersion};
use crate::keys::SigningKey;
use crate::manifest::{ChunkRef, Entry, Manifest, VerifiedManifest};
pub use crate::probe::ImageFormat;
use crate::probe::{Refusal, Sniffed};
use crate::store::{DiskStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read image {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is a {format} image: converting it needs `qemu-img` (Debian package qemu-utils), which is not installed")]
    NoQemuImg { path: PathBuf, format: ImageFormat },
    #[error("qemu-img could not {action} {path} as {format}: {stderr}")]
    Qemu {
        action: &'static str,
        path: PathBuf,
        format: ImageFormat,
        stderr: String,
    },
    /// The image would make qemu-img read another file, or is not a format nightcast imports.
    #[error("refusing image {path}: {reason}{}", what_to_do(.detected))]
    Refused {
        path: PathBuf,
        reason: Refusal,
        /// The format it was taken for from its first bytes; `None` if the caller stated it.
        detected: Option<&'static str>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid chunk parameters: {0}")]
    Params(String),
    #[error("import stopped: a worker thread failed")]
    Worker,
}

fn what_to_do(detected: &Option<&'static str>) -> String {
    match detected {
        Some(format) => format!(
            " (it was taken for a {format} image from its first bytes: if it is a raw disk, \
             import it with --format raw)"
        ),
        None => " (make a self-contained image first, e.g. `qemu-img convert -O qcow2` on the \
                 machine that holds what it references)"
            .to_owned(),
    }
}

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub name: MasterName,
    pub version: MasterVersion,
    pub params: ChunkParams,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// What an import did, for the CLI and the benchmarks.
#[derive(Debug)]
pub struct ImportReport {
    pub manifest: VerifiedManifest,
    pub bytes_read: u64,
    pub new_chunks: u64,
    /// Stored (compressed) bytes added to the store.
    pub new_stored_bytes: u64,
    /// Chunk entries that the store (verified) or this import already had.
    pub reused_chunks: u64,
    /// Chunk files of the store that did not verify and were replaced by this import's bytes.
    pub replaced_chunks: u64,
    /// The input format, when it went through `qemu-img`.
    pub converted_from: Option<ImageFormat>,
}

enum Done {
    Hole(u64),
    Known(ChunkRef),
    /// A chunk to write; `true` if the store held a file for it that did not verify.
    New(ChunkRef, VerifiedChunk, bool),
}

/// Imports the image at `path` as `format` (`None`: detected from its first bytes). Only that file
/// is read: see the module documentation.
pub fn import_file(
    path: &Path,
    format: Option<ImageFormat>,
    store: &dyn DiskStore,
    key: &SigningKey,
    opts: &ImportOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ImportReport, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let refused = |reason, detected| ImportError::Refused {
        path: path.to_owned(),
        reason,
        detected,
    };
    let (format, detected) = match format {
        Some(format) => (format, None),
        None => match crate::probe::sniff(&file).map_err(read_err)? {
            None => (ImageFormat::Raw, None),
            Some(Sniffed::Format(f)) => (f, Some(f.as_str())),
            Some(Sniffed::Unsupported(name)) => {
                return Err(refused(
                    Refusal::Unsupported(format!(
                        "it is a {name} image, a format nightcast does not import: convert it to \
                         qcow2 or raw first"
                    )),
                    Some(name),
                ))
            }
        },
    };
    let (file, _converted, converted_from) = match format {
        ImageFormat::Raw => (file, None, None),
        format => {
            crate::probe::outside_references(&file, format)
                .map_err(read_err)?
                .map_err(|reason| refused(reason, detected))?;
            let source = QemuSource::new(path, format)?;
            source.check_info().map_err(|e| match e {
                ImportError::Refused { path, reason, .. } => ImportError::Refused {
                    path,
                    reason,
                    detected,
                },
                other => other,
            })?;
            let raw = source.convert_to_raw(store)?;
            let file = File::open(raw.path()).map_err(read_err)?;
            (file, Some(raw), Some(format))
        }
    };
    let size = file.metadata().map_err(read_err)?.len();
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    let mut report =
        import_reader(file, size, store, key, opts, progress).map_err(|e| match e {
            ImportError::Read { source, .. } => read_err(source),
            other => other,
        })?;
    report.converted_from = converted_from;
    Ok(report)
}

/// Imports from any reader; `size` is only used for progress.
pub fn import_reader<R: Read + Send>(
    reader: R,
    size: u64,
    store: &dyn DiskStore,
    key: &SigningKey,
    opts: &ImportOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ImportReport, ImportError> {
    opts.params.validate().map_err(ImportError::Params)?;
    let _lock = store.lock(false)?;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let (piece_tx, piece_rx) = bounded::<(u64, io::Result<Piece>)>(threads * 4);
    let (done_tx, done_rx) = bounded::<(u64, Result<Done, ImportError>)>(threads * 4);
    // Chunks this import has already seen, with their stored length.
    let known: Mutex<HashMap<ChunkId, u32>> = Mutex::new(HashMap::new());

    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (seq, piece) in Chunker::new(reader, opts.params).enumerate() {
                let failed = piece.is_err();
                if piece_tx.send((seq as u64, piece)).is_err() || failed {
                    break;
                }
            }
        });
        for _ in 0..threads {
            let (piece_rx, done_tx, known) = (piece_rx.clone(), done_tx.clone(), &known);
            scope.spawn(move || {
                for (seq, piece) in piece_rx {
                    let done = process(piece, store, known);
                    if done_tx.send((seq, done)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        drop(piece_rx);
        collect(done_rx, store, &known, size, progress)
    })
    .map(|(entries, stats)| {
        // The writer's commit made the chunks durable: now the manifest may name them.
        let manifest = Manifest {
            name: opts.name.clone(),
            version: opts.version.clone(),
            size: stats.bytes_read,
            params: opts.params,
            entries,
        };
        ImportReport {
            manifest: manifest.sign(key),
            bytes_read: stats.bytes_read,
            new_chunks: stats.new_chunks,
            new_stored_bytes: stats.new_stored_bytes,
            reused_chunks: stats.reused_chunks,
            replaced_chunks: stats.replaced_chunks,
            converted_from: None,
        }
    })
}

fn process(
    piece: io::Result<Piece>,
    store: &dyn DiskStore,
    known: &Mutex<HashMap<ChunkId, u32>>,
) -> Result<Done, ImportError> {
    let piece = piece.map_err(|source| ImportError::Read {
        path: PathBuf::new(),
        source,
    })?;
    let bytes = match piece {
        Piece::Hole { len, .. } => return Ok(Done::Hole(len)),
        Piece::Data { bytes, .. } => bytes,
    };
    let id = ChunkId::of(&bytes);
    let len = bytes.len() as u32;
    let known_ref = |stored_len| {
        Done::Known(ChunkRef {
            id,
            len,
            stored_len,
        })
    };
    let seen = known
        .lock()
        .map_err(|_| ImportError::Worker)?
        .get(&id)
        .copied();
    if let Some(stored_len) = seen {
        return Ok(known_ref(stored_len));
    }
    // A chunk file is reused only if it verifies, and then with its real stored length.
    let corrupt = match store.get(&id) {
        Ok(stored) => {
            let stored_len = stored.stored_len();
            known
                .lock()
                .map_err(|_| ImportError::Worker)?
                .entry(id)
                .or_insert(stored_len);
            return Ok(known_ref(stored_len));
        }
        Err(StoreError::Missing(_)) => false,
        Err(StoreError::Invalid { id, path, reason }) => {
            tracing::warn!(chunk = %id, path = ?path, %reason, "replacing a corrupt chunk file of the store");
            true
        }
        Err(other) => return Err(other.into()),
    };
    let chunk = VerifiedChunk::from_hashed(id, bytes);
    let r = ChunkRef {
        id,
        len,
        stored_len: chunk.stored_len(),
    };
    Ok(Done::New(r, chunk, corrupt))
}

#[derive(Default)]
struct Stats {
    bytes_read: u64,
    new_chunks: u64,
    new_stored_bytes: u64,
    reused_chunks: u64,
    replaced_chunks: u64,
}

/// Writes new chunks as they come and puts entries back in image order.
fn collect(
    done_rx: crossbeam_channel::Receiver<(u64, Result<Done, ImportError>)>,
    store: &dyn DiskStore,
    known: &Mutex<HashMap<ChunkId, u32>>,
    size: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Vec<Entry>, Stats), ImportError> {
    let mut writer = store.writer();
    let mut waiting: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut stats = Stats::default();
    let mut reported = 0u64;
    for (seq, done) in done_rx {
        let entry = match done? {
            Done::Hole(len) => Entry::Hole { len },
            Done::Known(r) => {
                stats.reused_chunks += 1;
                Entry::Chunk(r)
            }
            Done::New(r, chunk, corrupt) => {
                let first = known
                    .lock()
                    .map_err(|_| ImportError::Worker)?
                    .insert(r.id, r.stored_len)
                    .is_none();
                if first {
                    if corrupt {
                        // The copy there did not verify: out with it, in with the image's bytes.
                        match store.remove(&r.id) {
                            Ok(()) | Err(StoreError::Missing(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    writer.put(&chunk)?;
                    stats.new_chunks += 1;
                    stats.new_stored_bytes += u64::from(r.stored_len);
                    stats.replaced_chunks += u64::from(corrupt);
                } else {
                    stats.reused_chunks += 1;
                }
                Entry::Chunk(r)
            }
        };
        waiting.insert(seq, entry);
        while let Some(entry) = waiting.remove(&(entries.len() as u64)) {
            stats.bytes_read += entry.len();
            entries.push(entry);
        }
        if stats.bytes_read - reported >= 64 << 20 {
            reported = stats.bytes_read;
            progress(reported, size);
        }
    }
    if !waiting.is_empty() {
        return Err(ImportError::Worker);
    }
    writer.commit()?;
    progress(stats.bytes_read, size);
    Ok((entries, stats))
}

/// Reads a file, but never asks the kernel for the holes of a sparse file: it finds them with
/// `SEEK_DATA`/`SEEK_HOLE` and fills them with zeros itself (masters are mostly free space, and
/// reading a hole costs the kernel a page of zeros copied per 4 KiB). Same bytes as a plain read.
#[derive(Debug)]
pub struct SparseReader {
    file: File,
    pos: u64,
    len: u64,
    /// `[pos, data_end)` is data.
    data_end: u64,
    /// `[pos, hole_end)` is a hole.
    hole_end: u64,
}

impl SparseReader {
    pub fn new(file: File, len: u64) -> SparseReader {
        SparseReader {
            file,
            pos: 0,
            len,
            data_end: 0,
            hole_end: 0,
        }
    }

    /// Classifies the extent at `pos`.
    fn locate(&mut self) {
        use rustix::fs::{seek, SeekFrom};
        match seek(&self.file, SeekFrom::Data(self.pos)) {
            Ok(data) if data > self.pos => self.hole_end = data.min(self.len),
            Ok(_) => {
                self.data_end = seek(&self.file, SeekFrom::Hole(self.pos))
                    .map_or(self.len, |h| h.clamp(self.pos + 1, self.len));
            }
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => self.hole_end = self.len,
            // No SEEK_DATA on this file system: read everything.
            Err(_) => self.data_end = self.len,
        }
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.data_end && self.pos >= self.hole_end {
            self.locate();
        }
        let n = if self.pos < self.hole_end {
            let n = buf.len().min((self.hole_end - self.pos) as usize);
            buf[..n].fill(0);
            n
        } else {
            let n = buf.len().min((self.data_end - self.pos) as usize);
            self.file.read_at(&mut buf[..n], self.pos)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// An image as qemu-img opens it: format pinned, no backing file, the path never a protocol.
struct QemuSource<'a> {
    path: &'a Path,
    absolute: PathBuf,
    format: ImageFormat,
    /// `json:{...}`: see the module documentation.
    spec: String,
}

impl<'a> QemuSource<'a> {
    fn new(path: &'a Path, format: ImageFormat) -> Result<QemuSource<'a>, ImportError> {
        let absolute = std::fs::canonicalize(path).map_err(|source| ImportError::Read {
            path: path.to_owned(),
            source,
        })?;
        let Some(filename) = absolute.to_str() else {
            return Err(ImportError::Read {
                path: path.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the path is not UTF-8, which qemu-img needs: rename the file",
                ),
            });
        };
        let spec = serde_json::json!({
            "driver": format.as_str(),
            "backing": null,
            "file": {"driver": "file", "filename": filename},
        });
        Ok(QemuSource {
            path,
            format,
            spec: format!("json:{spec}"),
            absolute,
        })
    }

    fn run(&self, action: &'static str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, ImportError> {
        let output = Command::new("qemu-img").args(args).output();
        match output {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ImportError::NoQemuImg {
                path: self.path.to_owned(),
                format: self.format,
            }),
            Err(source) => Err(ImportError::Read {
                path: self.path.to_owned(),
                source,
            }),
            Ok(out) if !out.status.success() => Err(ImportError::Qemu {
                action,
                path: self.path.to_owned(),
                format: self.format,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }),
            Ok(out) => Ok(out.stdout),
        }
    }

    /// `qemu-img info`: no backing file, no data file, no node but the file itself.
    fn check_info(&self) -> Result<(), ImportError> {
        let out = self.run(
            "read",
            &[
                "info".as_ref(),
                "--output=json".as_ref(),
                "-f".as_ref(),
                self.format.as_str().as_ref(),
                self.spec.as_ref(),
            ],
        )?;
        let info: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| ImportError::Qemu {
                action: "read",
                path: self.path.to_owned(),
                format: self.format,
                stderr: format!("unexpected `qemu-img info` output: {e}"),
            })?;
        let refusal = info_refusal(&info, &self.absolute);
        match refusal {
            Some(reason) => Err(ImportError::Refused {
                path: self.path.to_owned(),
                reason,
                detected: None,
            }),
            None => Ok(()),
        }
    }

    /// `qemu-img convert` into a sparse raw temp file inside the store (same disk, cleaned on restart).
    fn convert_to_raw(&self, store: &dyn DiskStore) -> Result<TempFile, ImportError> {
        let tmp = TempFile::new_in(&store.root().join("tmp"), 0o600).map_err(|source| {
            ImportError::Read {
                path: store.root().to_owned(),
                source,
            }
        })?;
        tracing::info!(image = %self.path.display(), format = %self.format, "converting to raw with qemu-img");
        self.run(
            "convert",
            &[
                "convert".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                self.format.as_str().as_ref(),
                "-O".as_ref(),
                "raw".as_ref(),
                self.spec.as_ref(),
                tmp.path().as_os_str(),
            ],
        )?;
        Ok(tmp)
    }
}

/// What in `qemu-img info --output=json` shows that an image reads a file other than `itself`.
fn info_refusal(info: &serde_json::Value, itself: &Path) -> Option<Refusal> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    if let Some(backing) = info
        .get("full-backing-filename")
        .or_else(|| info.get("backing-filename"))
        .and_then(text)
    {
        return Some(Refusal::BackingFile(backing));
    }
    let data = info.pointer("/format-specific/data");
    if let Some(data_file) = data.and_then(|d| d.get("data-file")).and_then(text) {
        return Some(Refusal::DataFile(data_file));
    }
    let itself = itself.to_string_lossy();
    let children = info.get("children").and_then(|c| c.as_array());
    let extents = data
        .and_then(|d| d.get("extents"))
        .and_then(|e| e.as_array());
    let others: Vec<String> = children
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/info/filename").and_then(text))
        .chain(
            extents
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("filename").and_then(text)),
        )
        .filter(|name| *name != itself)
        .collect();
    (!others.is_empty()).then_some(Refusal::Extents(others))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn qemu_img_info_showing_another_file_is_a_refusal() {
        let me = Path::new("/srv/in/win10.vmdk");
        // As qemu-img 10.0 prints them (trimmed): a text descriptor, a backing file, a data file.
        let extents = serde_json::json!({"format": "vmdk", "children": [
            {"name": "extents.0", "info": {"filename": "/etc/passwd", "format": "file"}},
            {"name": "file", "info": {"filename": "/srv/in/win10.vmdk", "format": "file"}}],
            "format-specific": {"type": "vmdk", "data": {"extents": [{"filename": "/etc/passwd"}]}}});
        assert_eq!(
            info_refusal(&extents, me),
            Some(Refusal::Extents(vec![
                "/etc/passwd".into(),
                "/etc/passwd".into()
            ]))
        );
        let backing = serde_json::json!({"format": "qcow2", "backing-filename": "key",
            "full-backing-filename": "/ctl/signing.key", "children": []});
        assert_eq!(
            info_refusal(&backing, me),
            Some(Refusal::BackingFile("/ctl/signing.key".into()))
        );
        let data = serde_json::json!({"format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow"}}});
        assert_eq!(
            info_refusal(&data, me),
            Some(Refusal::DataFile("/etc/shadow".into()))
        );
        let plain = serde_json::json!({"format": "vmdk", "children": [
            {"name": "file", "info": {"filename": "/srv/in/win10.vmdk"}}],
            "format-specific": {"type": "vmdk", "data": {"extents": [{"filename": "/srv/in/win10.vmdk"}]}}});
        assert_eq!(info_refusal(&plain, me), None);
    }

    #[test]
    fn the_sparse_reader_reads_the_same_bytes_as_a_plain_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let file = File::create(&path).unwrap();
        // Hole, data, hole, data at the very end, with odd sizes.
        file.set_len(3 << 20).unwrap();
        file.write_all_at(&[7u8; 100_000], 1 << 20).unwrap();
        file.write_all_at(&[9u8; 4097], (3 << 20) - 4097).unwrap();
        drop(file);
        let plain = std::fs::read(&path).unwrap();
        for read_size in [1usize, 4096, 65_536, 8 << 20] {
            let mut r = SparseReader::new(File::open(&path).unwrap(), plain.len() as u64);
            let mut got = Vec::new();
            let mut buf = vec![0xaa; read_size];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == plain, "read size {read_size}");
        }
    }
}

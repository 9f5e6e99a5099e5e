//! Import: an image in, new chunks in the store and a signed manifest out.
//!
//! One thread reads the image sequentially (8 MiB reads) and cuts it ([`crate::chunker`]); one
//! worker per core hashes each chunk, skips it if the store or this import already has it, and
//! compresses it otherwise; the calling thread puts entries back in image order and writes new chunks
//! in group commits. Channels are bounded, so memory is bounded by (cores x 4 + 8 MiB read buffer)
//! chunks whatever the image size. Chunks are durable before the manifest exists: the write order is
//! chunks, then `sync`, then the manifest (done by the caller with the returned bytes).
//!
//! Images in qcow2, VMDK, VHD, VHDX or VDI are recognised by their magic bytes and converted to a
//! sparse raw temp file with `qemu-img convert` first; anything else is read as raw.

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
use crate::store::{LocalStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read image {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is a {format} image: converting it needs `qemu-img` (Debian package qemu-utils), which is not installed")]
    NoQemuImg { path: PathBuf, format: &'static str },
    #[error("qemu-img could not convert {path} ({format}): {stderr}")]
    Convert {
        path: PathBuf,
        format: &'static str,
        stderr: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid chunk parameters: {0}")]
    Params(String),
    #[error("import stopped: a worker thread failed")]
    Worker,
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
    /// Chunk entries that the store or this import already had.
    pub reused_chunks: u64,
    /// The input format, when it went through `qemu-img`.
    pub converted_from: Option<&'static str>,
}

enum Done {
    Hole(u64),
    Known(ChunkRef),
    New(ChunkRef, VerifiedChunk),
}

/// Imports the image at `path` (raw, or any format `qemu-img` reads).
pub fn import_file(
    path: &Path,
    store: &LocalStore,
    key: &SigningKey,
    opts: &ImportOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ImportReport, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let format = sniff_format(&mut file).map_err(read_err)?;
    let (file, _converted, converted_from) = match format {
        None => (file, None, None),
        Some(format) => {
            let raw = convert_to_raw(path, format, store)?;
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
    store: &LocalStore,
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
    .and_then(|(entries, stats)| {
        store.sync()?;
        let manifest = Manifest {
            name: opts.name.clone(),
            version: opts.version.clone(),
            size: stats.bytes_read,
            params: opts.params,
            entries,
        };
        Ok(ImportReport {
            manifest: manifest.sign(key),
            bytes_read: stats.bytes_read,
            new_chunks: stats.new_chunks,
            new_stored_bytes: stats.new_stored_bytes,
            reused_chunks: stats.reused_chunks,
            converted_from: None,
        })
    })
}

fn process(
    piece: io::Result<Piece>,
    store: &LocalStore,
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
    let seen = known
        .lock()
        .map_err(|_| ImportError::Worker)?
        .get(&id)
        .copied();
    if let Some(stored_len) = seen.or(store.stored_len(&id)?) {
        return Ok(Done::Known(ChunkRef {
            id,
            len,
            stored_len,
        }));
    }
    let chunk = VerifiedChunk::from_hashed(id, bytes);
    let r = ChunkRef {
        id,
        len,
        stored_len: chunk.stored_len(),
    };
    Ok(Done::New(r, chunk))
}

#[derive(Default)]
struct Stats {
    bytes_read: u64,
    new_chunks: u64,
    new_stored_bytes: u64,
    reused_chunks: u64,
}

/// Writes new chunks as they come and puts entries back in image order.
fn collect(
    done_rx: crossbeam_channel::Receiver<(u64, Result<Done, ImportError>)>,
    store: &LocalStore,
    known: &Mutex<HashMap<ChunkId, u32>>,
    size: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Vec<Entry>, Stats), ImportError> {
    let mut batch = store.batch();
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
            Done::New(r, chunk) => {
                let first = known
                    .lock()
                    .map_err(|_| ImportError::Worker)?
                    .insert(r.id, r.stored_len)
                    .is_none();
                if first {
                    batch.put(&chunk)?;
                    stats.new_chunks += 1;
                    stats.new_stored_bytes += u64::from(r.stored_len);
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
    batch.commit()?;
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

/// Recognises the disk-image formats `qemu-img` must convert; `None` means raw.
pub fn sniff_format(file: &mut File) -> io::Result<Option<&'static str>> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    let head = &head[..got];
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    Ok(if at(0, b"QFI\xfb") {
        Some("qcow2")
    } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        Some("vmdk")
    } else if at(0, b"vhdxfile") {
        Some("vhdx")
    } else if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
        Some("vdi")
    } else if at(0, b"conectix") {
        Some("vpc")
    } else {
        None
    })
}

/// `qemu-img convert` into a sparse raw temp file inside the store (same disk, cleaned on restart).
fn convert_to_raw(
    path: &Path,
    format: &'static str,
    store: &LocalStore,
) -> Result<TempFile, ImportError> {
    let tmp =
        TempFile::new_in(&store.root().join("tmp"), 0o600).map_err(|source| ImportError::Read {
            path: store.root().to_owned(),
            source,
        })?;
    tracing::info!(image = %path.display(), format, "converting to raw with qemu-img");
    let output = Command::new("qemu-img")
        .args(["convert", "-q", "-f", format, "-O", "raw"])
        .arg(path)
        .arg(tmp.path())
        .output();
    match output {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ImportError::NoQemuImg {
            path: path.to_owned(),
            format,
        }),
        Err(source) => Err(ImportError::Read {
            path: path.to_owned(),
            source,
        }),
        Ok(out) if !out.status.success() => Err(ImportError::Convert {
            path: path.to_owned(),
            format,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
        Ok(_) => Ok(tmp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

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

//! The NUC's master slots (`current`, `next`, `previous`): an explicit state machine on disk.
//!
//! # Layout
//! ```text
//! DATA/slots/
//!   state                      the only truth: which version directory each slot holds
//!   events.log                 one line per transition, appended after it is durable
//!   lock                       flock: one agent at a time
//!   v/<seq>-<name>@<version>/  one directory per master version ever begun
//!     master.manifest          the signed manifest bytes, written first
//!     master.img               the raw, sparse image (written by `assemble`: temp, fsync, rename)
//! ```
//! `state` is a few lines of text, replaced as a whole by `image_tools::durable::write_file` (temp
//! file, fsync, rename, fsync dir), so a reader sees the old table or the new one:
//! ```text
//! nightcast-slots 1
//! gen 7
//! current 5 win10 2026-11
//! previous 3 win10 2026-09
//! next 7 win10 2026-12 fetching
//! ```
//! `gen` counts committed transitions; `seq` (the number in a directory's name) is the `gen` of the
//! `begin_next` that made it, so a directory name is never reused, not even for the same version.
//! A `@` separates name and version because neither may contain one.
//!
//! # Why it survives a crash at any instant
//! Every transition has the same shape: (1) prepare new files that nothing references yet, and make
//! them durable; (2) commit the new table with one atomic rename (the switch); (3) append the event
//! to the log; (4) delete what the new table no longer references. A crash before (2) leaves the old
//! table and some unreferenced files; after (2), the new table and maybe garbage. [`Slots::open`]
//! recovers: it removes stale temp files (here and inside the referenced directories: a half-done
//! assembly), every directory of `v/` the table does not reference, and a torn last line of the log,
//! and it logs what it found. It never touches a referenced directory's `master.img` or
//! `master.manifest`, so `current` stays intact. The ready mark is in the table, committed only
//! after the image and manifest are fsynced and verified (see [`VerifiedImage`]); a swap is a table
//! commit, so it is as fast for 60 GB as for 6 MB, and a power cut during it boots the old or the new
//! master, never a mix.
//!
//! Slot states: `current` is [`SlotState::Active`]; `next` is [`SlotState::Fetching`] until
//! [`Slots::mark_ready`], then [`SlotState::Ready`]; `previous` is `Ready` (kept for
//! [`Slots::rollback`]); any slot may be [`SlotState::Empty`].
//!
//! Not decided here: *when* to swap. The caller swaps only at a session boundary, with the VM
//! stopped; the next session's overlay is then made over the new `current`.
//!
//! The table and its transitions are pure ([`Table`]); [`Slots`] is the file-system shell around it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use image_tools::assemble::{self, AssembleReport, Seed};
use image_tools::durable;
use image_tools::manifest::{Entry as ManifestEntry, MAX_MANIFEST_BYTES};
use image_tools::VerifiedManifest;
use image_tools::{ChunkId, ChunkStore, Manifest, PublicKey};

pub(crate) const STATE_HEADER: &str = "nightcast-slots 1";
pub(crate) const STATE_MAX_BYTES: u64 = 4096;
pub const IMAGE_FILE: &str = "master.img";
pub const MANIFEST_FILE: &str = "master.manifest";

/// Proof that `next`'s image was checked, chunk by chunk, against its verified manifest. Only
/// [`Slots::assemble_next`] and [`Slots::verify_next`] make one, and [`Slots::mark_ready`] takes
/// nothing else.
#[derive(Debug)]
pub struct VerifiedImage {
    seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("slots in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("slots in {path} are in use by another agent")]
    Busy { path: PathBuf },
    #[error(
        "slot state file {path} is unreadable ({reason}): refusing to guess, nothing was changed"
    )]
    StateCorrupt { path: PathBuf, reason: String },
    #[error("slot state file {path} is missing but {dir} holds versions: refusing to delete them")]
    StateMissing { path: PathBuf, dir: PathBuf },
    #[error("manifest for slot {slot} ({path}) is not the one given (another master or version)")]
    ManifestMismatch { slot: SlotName, path: PathBuf },
    #[error("manifest of slot {slot} ({path}): {reason}")]
    Manifest {
        slot: SlotName,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "image of slot {slot} ({path}) does not match its manifest at offset {offset}: {what}"
    )]
    ImageMismatch {
        slot: SlotName,
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("assembling slot next ({path})")]
    Assemble {
        path: PathBuf,
        source: assemble::AssembleError,
    },
    #[cfg(test)]
    #[error("simulated crash before {0}")]
    Crash(&'static str),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SlotError + '_ {
    move |source| SlotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What [`Slots::open`] found and cleaned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unreferenced entries of `v/` that were removed (directory names).
    pub removed: Vec<String>,
    /// Stale temp files removed (in `slots/` and inside referenced directories).
    pub temp_files: usize,
    /// Set when the last transition was committed but not logged.
    pub unlogged_gen: Option<u64>,
    /// Referenced slots whose files are missing (damaged from outside: nightcast never does this).
    pub damaged: Vec<(SlotName, PathBuf)>,
}

/// The slots of one data directory, opened (and recovered) with [`Slots::open`]; holds the lock.
#[derive(Debug)]
pub struct Slots {
    root: PathBuf,
    table: Table,
    _lock: File,
    #[cfg(test)]
    crash_after: Option<usize>,
}

impl Slots {
    /// Opens `data_dir/slots` (creating it on first use), taking the lock and recovering from any
    /// crash (see the module doc). `now_unix` stamps the recovery event, if any.
    pub fn open(data_dir: &Path, now_unix: u64) -> Result<(Slots, Recovery), SlotError> {
        let root = data_dir.join("slots");
        let versions = root.join("v");
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| SlotError::Busy { path: root.clone() })?;

        let mut recovery = Recovery {
            temp_files: durable::clean_temp_files(&root).map_err(io_err(&root))?,
            ..Recovery::default()
        };
        let state_path = root.join("state");
        let table = match read_bounded(&state_path, STATE_MAX_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| SlotError::StateCorrupt {
                    path: state_path.clone(),
                    reason: "not UTF-8".into(),
                })?;
                Table::decode(&text).map_err(|reason| SlotError::StateCorrupt {
                    path: state_path.clone(),
                    reason,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let holds_versions = fs::read_dir(&versions)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if holds_versions {
                    return Err(SlotError::StateMissing {
                        path: state_path,
                        dir: versions,
                    });
                }
                let table = Table::default();
                durable::write_file(&state_path, table.encode().as_bytes(), 0o644)
                    .map_err(io_err(&state_path))?;
                table
            }
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        fs::create_dir_all(&versions).map_err(io_err(&versions))?;

        let mut slots = Slots {
            root,
            table,
            _lock: lock,
            #[cfg(test)]
            crash_after: None,
        };
        slots.recover(&mut recovery)?;
        if !recovery.removed.is_empty()
            || recovery.temp_files > 0
            || recovery.unlogged_gen.is_some()
        {
            slots.log(
                now_unix,
                &Event::Recovered {
                    removed: recovery.removed.clone(),
                    temp_files: recovery.temp_files,
                    unlogged_gen: recovery.unlogged_gen,
                },
            )?;
        }
        for (slot, path) in &recovery.damaged {
            tracing::error!(%slot, path = %path.display(), "slot is damaged: a file is missing");
        }
        Ok((slots, recovery))
    }

    fn recover(&mut self, recovery: &mut Recovery) -> Result<(), SlotError> {
        let versions = self.versions_dir();
        let keep: Vec<String> = self.table.referenced().map(Held::dir_name).collect();
        let entries = fs::read_dir(&versions).map_err(io_err(&versions))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&versions))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().map_err(io_err(&path))?.is_dir();
            if is_dir {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            } else {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            tracing::info!(path = %path.display(), "removed an unreferenced slot directory");
            recovery.removed.push(name);
        }
        recovery.removed.sort();
        if !recovery.removed.is_empty() {
            durable::sync_dir(&versions).map_err(io_err(&versions))?;
        }
        for info in self.table.info() {
            let Some(held) = &info.held else { continue };
            let dir = self.dir_of(held);
            if !dir.is_dir() {
                recovery.damaged.push((info.slot, dir));
                continue;
            }
            recovery.temp_files += durable::clean_temp_files(&dir).map_err(io_err(&dir))?;
            let mut needed = vec![MANIFEST_FILE];
            if info.state != SlotState::Fetching {
                needed.push(IMAGE_FILE);
            }
            for file in needed {
                if !dir.join(file).is_file() {
                    recovery.damaged.push((info.slot, dir.join(file)));
                }
            }
        }
        // The log: drop a torn last line, and note a transition committed but not logged.
        let log_path = self.events_path();
        let last_gen = repair_log(&log_path).map_err(io_err(&log_path))?;
        if self.table.gen > 0 && last_gen.is_none_or(|g| g < self.table.gen) {
            recovery.unlogged_gen = Some(self.table.gen);
        }
        Ok(())
    }

    /// The slot table as last committed.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Each slot's state and the version it holds: current, next, previous.
    pub fn state(&self) -> [SlotInfo; 3] {
        self.table.info()
    }

    /// `DATA/slots/events.log`.
    pub fn events_path(&self) -> PathBuf {
        self.root.join("events.log")
    }

    fn versions_dir(&self) -> PathBuf {
        self.root.join("v")
    }

    fn dir_of(&self, held: &Held) -> PathBuf {
        self.versions_dir().join(held.dir_name())
    }

    /// The directory of the version in `slot`, if any.
    pub fn dir(&self, slot: SlotName) -> Option<PathBuf> {
        self.table.get(slot).map(|h| self.dir_of(h))
    }

    /// The (absolute if the data dir is) path of the image in `slot`, if any; for `next` while
    /// fetching, where the image is to be assembled.
    pub fn image_path(&self, slot: SlotName) -> Option<PathBuf> {
        self.dir(slot).map(|d| d.join(IMAGE_FILE))
    }

    pub fn manifest_path(&self, slot: SlotName) -> Option<PathBuf> {
        self.dir(slot).map(|d| d.join(MANIFEST_FILE))
    }

    /// Reads `slot`'s manifest and checks its signature against `key`.
    pub fn load_manifest(
        &self,
        slot: SlotName,
        keys: &[PublicKey],
    ) -> Result<VerifiedManifest, SlotError> {
        let path = self
            .manifest_path(slot)
            .ok_or(TransitionError::Empty { slot })?;
        let bytes = read_bounded(&path, MAX_MANIFEST_BYTES).map_err(io_err(&path))?;
        VerifiedManifest::open_with(bytes, keys).map_err(|e| SlotError::Manifest {
            slot,
            path,
            reason: e.to_string(),
        })
    }

    /// Transition `next`: Empty -> Fetching. Makes a new version directory holding `manifest`
    /// and returns where to assemble the image. Called again with the same manifest while `next`
    /// is still fetching it (after a restart), it returns the same path.
    pub fn begin_next(
        &mut self,
        manifest: &VerifiedManifest,
        now_unix: u64,
    ) -> Result<PathBuf, SlotError> {
        if let Some(held) = &self.table.next {
            let same = self.next_manifest_is(manifest).unwrap_or(false);
            if same && !self.table.next_ready {
                return Ok(self.dir_of(held).join(IMAGE_FILE));
            }
        }
        let table = self
            .table
            .begin_next(manifest.name.clone(), manifest.version.clone())?;
        let Some(held) = table.next.clone() else {
            return Err(TransitionError::NoNext.into());
        };
        let dir = self.dir_of(&held);
        // An unreferenced directory of this number can only be a failed attempt's: replace it.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        self.step("mkdir")?;
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        self.step("write manifest")?;
        durable::write_file(&dir.join(MANIFEST_FILE), manifest.bytes(), 0o444)
            .map_err(io_err(&dir))?;
        self.step("sync versions dir")?;
        let versions = self.versions_dir();
        durable::sync_dir(&versions).map_err(io_err(&versions))?;
        self.commit(table)?;
        self.step("log")?;
        self.log(now_unix, &Event::BeganNext { next: held })?;
        Ok(dir.join(IMAGE_FILE))
    }

    /// Whether `next`'s manifest file holds exactly `manifest`'s signed bytes.
    fn next_manifest_is(&self, manifest: &VerifiedManifest) -> Result<bool, SlotError> {
        let path = self
            .manifest_path(SlotName::Next)
            .ok_or(TransitionError::NoNext)?;
        let bytes = read_bounded(&path, MAX_MANIFEST_BYTES).map_err(io_err(&path))?;
        Ok(bytes == manifest.bytes())
    }

    fn fetching_next(&self, manifest: &VerifiedManifest) -> Result<(u64, PathBuf), SlotError> {
        let held = self.table.next.as_ref().ok_or(TransitionError::NoNext)?;
        if self.table.next_ready {
            return Err(TransitionError::AlreadyReady { held: held.clone() }.into());
        }
        if !self.next_manifest_is(manifest)? {
            return Err(SlotError::ManifestMismatch {
                slot: SlotName::Next,
                path: self.dir_of(held).join(MANIFEST_FILE),
            });
        }
        Ok((held.seq, self.dir_of(held).join(IMAGE_FILE)))
    }

    /// Assembles `next`'s image from `store`, taking every chunk it can from `current`'s image
    /// (each one hashed: the seed is not trusted). Assembly checks every chunk against its id, so
    /// its success is the proof [`Slots::mark_ready`] needs.
    pub fn assemble_next(
        &self,
        manifest: &VerifiedManifest,
        store: &dyn ChunkStore,
        threads: usize,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(VerifiedImage, AssembleReport), SlotError> {
        let (seq, out) = self.fetching_next(manifest)?;
        // The running image first, then the one kept for rollback: a master that comes back
        // after another (or a version 2 after a different course) takes what they hold.
        let held: Vec<(Manifest, PathBuf)> = [SlotName::Current, SlotName::Previous]
            .into_iter()
            .filter_map(|slot| Some((self.seed_manifest(slot)?, self.image_path(slot)?)))
            .collect();
        let seeds: Vec<Seed<'_>> = held
            .iter()
            .map(|(manifest, image)| Seed { image, manifest })
            .collect();
        let report = assemble::assemble(manifest, store, &out, &seeds, threads, progress).map_err(
            |source| SlotError::Assemble {
                path: out.clone(),
                source,
            },
        )?;
        Ok((VerifiedImage { seq }, report))
    }

    /// `slot`'s manifest, decoded without its key (only used as a seed, whose chunks are hashed
    /// anyway); `None` when the slot is empty or its manifest cannot be read.
    fn seed_manifest(&self, slot: SlotName) -> Option<Manifest> {
        let path = self.manifest_path(slot)?;
        let bytes = read_bounded(&path, MAX_MANIFEST_BYTES).ok()?;
        Manifest::decode_unverified(&bytes).ok().map(|u| u.manifest)
    }

    /// Checks an image already in `next` (assembled before a crash, or by other means) against
    /// `manifest`, chunk by chunk; holes must read as zeros. Reads the whole image's data.
    pub fn verify_next(&self, manifest: &VerifiedManifest) -> Result<VerifiedImage, SlotError> {
        let (seq, path) = self.fetching_next(manifest)?;
        verify_image(&path, manifest)?;
        Ok(VerifiedImage { seq })
    }

    /// Transition `next`: Fetching -> Ready. Flushes the image, makes it read-only, then commits
    /// the ready mark: the mark is the last thing written.
    pub fn mark_ready(&mut self, proof: VerifiedImage, now_unix: u64) -> Result<(), SlotError> {
        let table = self.table.mark_ready(proof.seq)?;
        let Some(held) = table.next.clone() else {
            return Err(TransitionError::NoNext.into());
        };
        let dir = self.dir_of(&held);
        let image = dir.join(IMAGE_FILE);
        self.step("sync image")?;
        let file = File::open(&image).map_err(io_err(&image))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err(&image))?;
        file.sync_all().map_err(io_err(&image))?;
        durable::sync_dir(&dir).map_err(io_err(&dir))?;
        self.commit(table)?;
        self.step("log")?;
        self.log(now_unix, &Event::NextReady { next: held })
    }

    /// Transition: next -> current -> previous, the old previous deleted. Refused unless `next` is
    /// ready. The switch is one rename of the state file, whatever the images' sizes. Call it only
    /// between sessions, with the VM stopped.
    pub fn swap(&mut self, now_unix: u64) -> Result<(), SlotError> {
        let (table, removed) = self.table.swap()?;
        let event = Event::Swapped {
            current: table.current.clone().ok_or(TransitionError::NoNext)?,
            previous: table.previous.clone(),
            removed: removed.clone(),
        };
        self.commit(table)?;
        self.step("log")?;
        self.log(now_unix, &event)?;
        if let Some(old) = removed {
            self.step("remove old previous")?;
            self.remove_version(&old)?;
        }
        Ok(())
    }

    /// Transition: previous <-> current. Refused when `previous` is empty.
    pub fn rollback(&mut self, now_unix: u64) -> Result<(), SlotError> {
        let table = self.table.rollback()?;
        let event = Event::RolledBack {
            current: table.current.clone().ok_or(TransitionError::NoPrevious)?,
            previous: table.previous.clone(),
        };
        self.commit(table)?;
        self.step("log")?;
        self.log(now_unix, &event)
    }

    /// Transition `next` -> Empty, deleting what was fetched (a newer version replaces it, or the
    /// DSI withdrew it).
    pub fn abandon_next(&mut self, now_unix: u64) -> Result<(), SlotError> {
        let (table, held) = self.table.abandon_next()?;
        self.commit(table)?;
        self.step("log")?;
        self.log(now_unix, &Event::AbandonedNext { next: held.clone() })?;
        self.step("remove next")?;
        self.remove_version(&held)
    }

    fn remove_version(&self, held: &Held) -> Result<(), SlotError> {
        let dir = self.dir_of(held);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let versions = self.versions_dir();
        durable::sync_dir(&versions).map_err(io_err(&versions))
    }

    /// The switch: replaces the state file atomically, then adopts the new table.
    fn commit(&mut self, table: Table) -> Result<(), SlotError> {
        self.step("commit")?;
        let path = self.root.join("state");
        durable::write_file(&path, table.encode().as_bytes(), 0o644).map_err(io_err(&path))?;
        self.table = table;
        Ok(())
    }

    /// Appends `event` to the log (one line, fsynced) and to the tracing output.
    fn log(&self, now_unix: u64, event: &Event) -> Result<(), SlotError> {
        tracing::info!(gen = self.table.gen, "slots: {event}");
        let path = self.events_path();
        let line = format!("{now_unix} gen={} {event}\n", self.table.gen);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(line.as_bytes()).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))
    }

    /// A point where a test may simulate a crash (kill -9 / power cut) before the next fs step.
    #[cfg(test)]
    fn step(&mut self, what: &'static str) -> Result<(), SlotError> {
        match self.crash_after {
            Some(0) => Err(SlotError::Crash(what)),
            Some(n) => {
                self.crash_after = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn step(&mut self, _what: &'static str) -> Result<(), SlotError> {
        Ok(())
    }
}

/// Reads a whole file, refusing one larger than `max` bytes before reading it.
fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(io::Error::other(format!(
            "{} is {len} bytes, above the {max}-byte limit",
            path.display()
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Truncates a torn last line (a crash during an append) and returns the last line's gen.
fn repair_log(path: &Path) -> io::Result<Option<u64>> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 << 10);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last().is_some_and(|&b| b != b'\n') {
        let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        tail.truncate(keep);
        file.set_len(start + keep as u64)?;
        file.sync_all()?;
    }
    let last = tail
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .map(String::from_utf8_lossy);
    Ok(last.and_then(|l| {
        l.split(' ')
            .find_map(|w| w.strip_prefix("gen="))
            .and_then(|g| g.parse().ok())
    }))
}

/// Checks `path` against `manifest`: size, every chunk's hash, holes all zero (skipping the file's
/// own holes with SEEK_DATA, so a sparse 60 GB image costs only its data).
fn verify_image(path: &Path, manifest: &Manifest) -> Result<(), SlotError> {
    let mismatch = |offset, what: String| SlotError::ImageMismatch {
        slot: SlotName::Next,
        path: path.to_owned(),
        offset,
        what,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len != manifest.size {
        return Err(mismatch(
            0,
            format!("image is {len} bytes, manifest says {}", manifest.size),
        ));
    }
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for entry in &manifest.entries {
        match entry {
            ManifestEntry::Chunk(c) => {
                buf.resize(c.len as usize, 0);
                file.read_exact_at(&mut buf, offset).map_err(io_err(path))?;
                if ChunkId::of(&buf) != c.id {
                    return Err(mismatch(offset, format!("chunk {} differs", c.id.short())));
                }
            }
            ManifestEntry::Hole { len } => {
                let end = offset + len;
                let mut pos = offset;
                while pos < end {
                    let data = match rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(pos)) {
                        Ok(d) => d,
                        Err(rustix::io::Errno::NXIO) => break,
                        Err(e) => return Err(io_err(path)(e.into())),
                    };
                    if data >= end {
                        break;
                    }
                    let n = (end - data).min(1 << 20);
                    buf.resize(n as usize, 0);
                    file.read_exact_at(&mut buf, data).map_err(io_err(path))?;
                    if !image_tools::chunker::is_zero(&buf) {
                        return Err(mismatch(data, "a hole holds non-zero bytes".into()));
                    }
                    pos = data + n;
                }
            }
        }
        offset += entry.len();
    }
    Ok(())
}

mod table;
#[cfg(test)]
mod tests;

pub use table::{Event, Held, SlotInfo, SlotName, SlotState, Table, TransitionError};

//! The signed manifest: what one version of a master is, byte by byte (see `docs/FORMAT.md`).
//!
//! Guarantees: the encoding is canonical (one manifest, one byte string; `decode` accepts nothing
//! that `encode` would not write); decoding is bounded (it checks every count against the bytes
//! present before allocating, so what it holds is at most about twice the input; refuses a
//! non-canonical list at the first offending entry; never panics); a [`VerifiedManifest`] exists only for bytes whose
//! Ed25519 signature matched the pinned key. Not guaranteed here: that the chunks exist anywhere.

use std::collections::HashSet;

use crate::chunker::ChunkParams;
use crate::ids::{ChunkId, MasterName, MasterVersion};
use crate::keys::{PublicKey, SigningKey};

/// The first bytes of every manifest.
pub const MAGIC: [u8; 4] = *b"NCMF";
/// The format version written; decoders refuse any other (see the version rule in FORMAT.md).
pub const FORMAT_VERSION: u16 = 1;
/// Manifests larger than this are refused before being read (a 60 GB master at 16 KiB chunks needs
/// about 160 MB).
pub const MAX_MANIFEST_BYTES: u64 = 512 << 20;
/// The largest image a manifest may describe (1 PiB).
pub const MAX_IMAGE_SIZE: u64 = 1 << 50;

const SIGNATURE_BLOCK: usize = 32 + 64;
const CHUNK_ENTRY: usize = 1 + 4 + 4 + 32;
const HOLE_ENTRY: usize = 1 + 8;
const TAG_CHUNK: u8 = 1;
const TAG_HOLE: u8 = 2;
const SIGNING_CONTEXT: &[u8] = b"nightcast manifest v1\n";

/// A chunk as a manifest lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub id: ChunkId,
    /// Uncompressed length.
    pub len: u32,
    /// Length as stored and sent (compressed, or raw when that is smaller).
    pub stored_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Chunk(ChunkRef),
    /// `len` zero bytes, never stored nor sent.
    Hole {
        len: u64,
    },
}

impl Entry {
    pub fn len(&self) -> u64 {
        match self {
            Entry::Chunk(c) => u64::from(c.len),
            Entry::Hole { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One version of one master: its identity and its ordered pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: MasterName,
    pub version: MasterVersion,
    /// Bytes in the image; the sum of the entries' lengths.
    pub size: u64,
    pub params: ChunkParams,
    pub entries: Vec<Entry>,
}

/// A manifest whose signature matched a pinned key, or that we signed ourselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    manifest: Manifest,
    bytes: Vec<u8>,
    root: [u8; 32],
    signer: PublicKey,
}

/// The signature facts of a manifest decoded without a key (for `inspect`, `diff`, `gc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unverified {
    pub manifest: Manifest,
    pub root: [u8; 32],
    pub signer: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not a nightcast manifest (bad magic bytes)")]
    NotAManifest,
    #[error("manifest format version {found} is not supported (this build reads version {FORMAT_VERSION}): upgrade nightcast")]
    UnsupportedVersion { found: u16 },
    #[error("manifest is truncated: {needed} more bytes expected at byte {at}")]
    Truncated { at: usize, needed: usize },
    #[error("manifest has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("manifest is {0} bytes, above the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("manifest is malformed at byte {at}: {what}")]
    Malformed { at: usize, what: String },
    #[error("manifest signature does not verify against the pinned key {expected}: it was forged, altered or truncated")]
    BadSignature { expected: String },
    #[error("manifest was signed by key {found}, not by the pinned key {expected}")]
    WrongSigner { found: String, expected: String },
}

impl Manifest {
    /// The master version this manifest describes, as the wire names it.
    pub fn master(&self) -> crate::wire::MasterRef {
        crate::wire::MasterRef {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

    /// Checks the invariants `decode` enforces; `import` produces only manifests that pass.
    pub fn check(&self) -> Result<(), String> {
        self.params.validate()?;
        let mut total = 0u64;
        let mut last_was_hole = false;
        for (i, e) in self.entries.iter().enumerate() {
            match e {
                Entry::Chunk(c) => {
                    if c.len == 0 || c.len > self.params.max {
                        return Err(format!("entry {i}: chunk length {} out of range", c.len));
                    }
                    if c.stored_len == 0 || c.stored_len > c.len {
                        return Err(format!(
                            "entry {i}: stored length {} out of range",
                            c.stored_len
                        ));
                    }
                    last_was_hole = false;
                }
                Entry::Hole { len } => {
                    if last_was_hole || *len < u64::from(self.params.hole_min) {
                        return Err(format!(
                            "entry {i}: hole of {len} bytes at {total} is not canonical"
                        ));
                    }
                    last_was_hole = true;
                }
            }
            total = total
                .checked_add(e.len())
                .filter(|t| *t <= MAX_IMAGE_SIZE)
                .ok_or_else(|| format!("entry {i}: image size overflows"))?;
        }
        if total != self.size {
            return Err(format!(
                "entries add up to {total} bytes, not the stated {}",
                self.size
            ));
        }
        Ok(())
    }

    /// The canonical body (everything the signature covers).
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * CHUNK_ENTRY);
        out.extend(MAGIC);
        out.extend(FORMAT_VERSION.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        for s in [self.name.as_str(), self.version.as_str()] {
            out.push(s.len() as u8); // names are at most 64 bytes
            out.extend(s.as_bytes());
        }
        out.extend(self.size.to_le_bytes());
        let p = self.params;
        for v in [p.min, p.avg, p.max, p.hole_min] {
            out.extend(v.to_le_bytes());
        }
        out.extend((self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            match e {
                Entry::Chunk(c) => {
                    out.push(TAG_CHUNK);
                    out.extend(c.len.to_le_bytes());
                    out.extend(c.stored_len.to_le_bytes());
                    out.extend(c.id.as_bytes());
                }
                Entry::Hole { len } => {
                    out.push(TAG_HOLE);
                    out.extend(len.to_le_bytes());
                }
            }
        }
        out
    }

    /// Signs the manifest. Panics if it does not pass [`Manifest::check`] (a bug in the caller).
    pub fn sign(self, key: &SigningKey) -> VerifiedManifest {
        assert_eq!(self.check(), Ok(()), "signing a non-canonical manifest");
        let mut bytes = self.encode_body();
        let root = *blake3::hash(&bytes).as_bytes();
        let signature = key.sign(&signing_message(&root));
        bytes.extend(key.public().as_bytes());
        bytes.extend(signature);
        VerifiedManifest {
            manifest: self,
            bytes,
            root,
            signer: key.public(),
        }
    }

    /// Decodes without checking the signature. For display and bookkeeping only: anything that
    /// trusts the content must use [`VerifiedManifest::open`].
    pub fn decode_unverified(bytes: &[u8]) -> Result<Unverified, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len() as u64));
        }
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(ManifestError::NotAManifest);
        }
        let found = r.u16()?;
        if found != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion { found });
        }
        if r.u16()? != 0 {
            return r.malformed(4, "reserved flags are not zero");
        }
        let name = r.name()?;
        let name = MasterName::new(&name).or_else(|e| r.malformed(name.len(), e))?;
        let version = r.name()?;
        let version = MasterVersion::new(&version).or_else(|e| r.malformed(version.len(), e))?;
        let size = r.u64()?;
        let params = ChunkParams {
            min: r.u32()?,
            avg: r.u32()?,
            max: r.u32()?,
            hole_min: r.u32()?,
        };
        params.validate().or_else(|e| r.malformed(16, e))?;
        let count_at = r.at;
        let count = r.u64()?;
        // Bound the count before allocating: a canonical list of `count` entries needs at least
        // `min_entry_bytes(count)` bytes, so what is reserved is at most about twice the input.
        let room = r.remaining().saturating_sub(SIGNATURE_BLOCK) as u64;
        if count > max_entries(room) {
            return Err(ManifestError::Truncated {
                at: count_at,
                needed: usize::try_from(min_entry_bytes(count).saturating_sub(room))
                    .unwrap_or(usize::MAX),
            });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let entry = match r.u8()? {
                TAG_CHUNK => {
                    let len = r.u32()?;
                    let stored_len = r.u32()?;
                    let id = ChunkId::from_bytes(r.array()?);
                    Entry::Chunk(ChunkRef {
                        id,
                        len,
                        stored_len,
                    })
                }
                TAG_HOLE => {
                    // Refused here, not after the whole list: holes in a row are never canonical.
                    if matches!(entries.last(), Some(Entry::Hole { .. })) {
                        return r
                            .malformed(1, format!("entry {}: two holes in a row", entries.len()));
                    }
                    Entry::Hole { len: r.u64()? }
                }
                tag => return r.malformed(1, format!("unknown entry tag {tag}")),
            };
            entries.push(entry);
        }
        let body_end = r.at;
        let manifest = Manifest {
            name,
            version,
            size,
            params,
            entries,
        };
        manifest.check().or_else(|e| r.malformed(0, e))?;
        let signer = r.array::<32>()?;
        r.array::<64>()?;
        if r.remaining() > 0 {
            return Err(ManifestError::TrailingBytes(r.remaining()));
        }
        Ok(Unverified {
            manifest,
            root: *blake3::hash(&bytes[..body_end]).as_bytes(),
            signer,
        })
    }
}

/// The fewest bytes a canonical list of `n` entries takes: holes never follow each other, so at
/// most `(n + 1) / 2` of them are 9-byte holes and the rest are 41-byte chunks.
fn min_entry_bytes(n: u64) -> u64 {
    let holes = n.div_ceil(2);
    (holes.saturating_mul(HOLE_ENTRY as u64))
        .saturating_add((n - holes).saturating_mul(CHUNK_ENTRY as u64))
}

/// The most entries a canonical list in `len` bytes can have.
fn max_entries(len: u64) -> u64 {
    // A chunk and a hole take 50 bytes; a last lone hole 9 more.
    let pair = (HOLE_ENTRY + CHUNK_ENTRY) as u64;
    let pairs = len / pair;
    if len % pair >= HOLE_ENTRY as u64 {
        2 * pairs + 1
    } else {
        2 * pairs
    }
}

fn signing_message(root: &[u8; 32]) -> Vec<u8> {
    [SIGNING_CONTEXT, root.as_slice()].concat()
}

impl VerifiedManifest {
    /// Checks the signature against `key`, then decodes. Bytes that fail the signature are never
    /// parsed further.
    pub fn open(bytes: Vec<u8>, key: &PublicKey) -> Result<VerifiedManifest, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len() as u64));
        }
        let expected = key.short();
        let Some(body_len) = bytes.len().checked_sub(SIGNATURE_BLOCK) else {
            // Too short to carry a signature: say what is wrong with it structurally.
            Manifest::decode_unverified(&bytes)?;
            return Err(ManifestError::BadSignature { expected });
        };
        let (body, trailer) = bytes.split_at(body_len);
        let (signer, signature) = trailer.split_at(32);
        let root = *blake3::hash(body).as_bytes();
        if signer != key.as_bytes() {
            return Err(ManifestError::WrongSigner {
                found: crate::ids::hex(&signer[..8]),
                expected,
            });
        }
        let signature: [u8; 64] = signature.try_into().unwrap_or([0; 64]);
        if !key.verify(&signing_message(&root), &signature) {
            return Err(ManifestError::BadSignature { expected });
        }
        let decoded = Manifest::decode_unverified(&bytes)?;
        Ok(VerifiedManifest {
            manifest: decoded.manifest,
            bytes,
            root,
            signer: *key,
        })
    }

    /// [`VerifiedManifest::open`] against whichever of `keys` the manifest names as its signer
    /// (a node's accepted keys, during a key rotation several); a signer not among them is
    /// refused like a wrong one.
    pub fn open_with(
        bytes: Vec<u8>,
        keys: &[PublicKey],
    ) -> Result<VerifiedManifest, ManifestError> {
        let signer = bytes
            .len()
            .checked_sub(SIGNATURE_BLOCK)
            .and_then(|at| bytes.get(at..at + 32));
        let key = signer
            .and_then(|s| keys.iter().find(|k| k.as_bytes() == s))
            .or(keys.first());
        match key {
            Some(key) => VerifiedManifest::open(bytes, key),
            None => Err(ManifestError::BadSignature {
                expected: "(no key accepted)".into(),
            }),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact signed bytes, as written to disk and sent.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// BLAKE3 of the body: names this exact manifest.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }

    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }
}

impl std::ops::Deref for VerifiedManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}

/// Figures about a manifest's content, for `inspect` and the planner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub chunks: u64,
    pub unique_chunks: u64,
    pub holes: u64,
    pub hole_bytes: u64,
    pub data_bytes: u64,
    /// Stored (compressed) bytes of the unique chunks: what a site with nothing would fetch.
    pub unique_stored_bytes: u64,
    pub unique_raw_bytes: u64,
}

impl Manifest {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let mut seen = HashSet::new();
        for e in &self.entries {
            match e {
                Entry::Chunk(c) => {
                    s.chunks += 1;
                    s.data_bytes += u64::from(c.len);
                    if seen.insert(c.id) {
                        s.unique_chunks += 1;
                        s.unique_stored_bytes += u64::from(c.stored_len);
                        s.unique_raw_bytes += u64::from(c.len);
                    }
                }
                Entry::Hole { len } => {
                    s.holes += 1;
                    s.hole_bytes += len;
                }
            }
        }
        s
    }

    /// The distinct chunks, in first-use order.
    pub fn unique_chunks(&self) -> Vec<ChunkRef> {
        let mut seen = HashSet::new();
        self.chunks()
            .filter(|c| seen.insert(c.id))
            .copied()
            .collect()
    }

    /// Every chunk entry with its offset in the image, in order.
    pub fn chunk_offsets(&self) -> impl Iterator<Item = (u64, &ChunkRef)> {
        let mut offset = 0u64;
        self.entries.iter().filter_map(move |e| {
            let at = offset;
            offset += e.len();
            match e {
                Entry::Chunk(c) => Some((at, c)),
                Entry::Hole { .. } => None,
            }
        })
    }

    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Chunk(c) => Some(c),
            Entry::Hole { .. } => None,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ManifestError> {
        if self.remaining() < n {
            return Err(ManifestError::Truncated {
                at: self.at,
                needed: n - self.remaining(),
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ManifestError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ManifestError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn name(&mut self) -> Result<String, ManifestError> {
        let len = usize::from(self.u8()?);
        let raw = self.take(len)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.malformed(len, "name is not UTF-8"),
        }
    }

    /// A `Malformed` error pointing `back` bytes before the cursor.
    fn malformed<T>(&self, back: usize, what: impl ToString) -> Result<T, ManifestError> {
        Err(ManifestError::Malformed {
            at: self.at.saturating_sub(back),
            what: what.to_string(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;

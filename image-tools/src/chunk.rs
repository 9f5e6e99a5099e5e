//! A chunk in the form every store keeps and every peer sends: a 5-byte header (encoding, raw length)
//! and the payload, zstd-compressed once at import or kept raw when compression does not pay.
//!
//! [`VerifiedChunk`] is the only way to hold a chunk's bytes, and it can only be made by hashing them:
//! from raw bytes ([`VerifiedChunk::from_raw`], which also compresses) or from a stored form
//! ([`VerifiedChunk::from_stored`], which decompresses within the declared length and compares the
//! hash with the id it was asked for). So "no chunk leaves a store unverified" is a type fact.

use std::cell::RefCell;

use crate::ids::ChunkId;

/// No chunk is longer than FastCDC's largest maximum; decompression never goes past it.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// The zstd level chunks are compressed with at import and whenever a chunk is compressed on the
/// fly: zstd's fastest positive level. Measured on the benchmark image's chunks it compresses about
/// 1.7 times as fast as level 3 for 3 % more bytes, and those bytes never reach the WAN once the
/// second pass ([`TIGHT_LEVEL`]) has recompressed the chunk from its raw bytes (see
/// `docs/BENCHMARKS.md`, "Targets").
pub const ZSTD_LEVEL: i32 = 1;
/// The zstd level of the second pass ([`VerifiedChunk::tightened`]): what the controller spends its
/// idle cores on so that the WAN carries fewer bytes.
pub const TIGHT_LEVEL: i32 = 19;
/// zstd's frame magic number, as it starts a payload.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Bytes before the payload: encoding (1) and raw length (4, little-endian).
pub const HEADER_LEN: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
}

/// Why stored bytes are not the chunk they claim to be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("stored form is {0} bytes, too short for a header")]
    Short(usize),
    #[error("unknown encoding {0}")]
    Encoding(u8),
    #[error("declared length {0} is above the {MAX_CHUNK_LEN}-byte limit")]
    TooLong(u32),
    #[error("payload does not decompress to the declared {declared} bytes: {detail}")]
    Decompress { declared: u32, detail: String },
    #[error("content hashes to {actual}, not to its id")]
    HashMismatch { actual: ChunkId },
}

/// Chunk bytes checked against their id, in both forms.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedChunk {
    id: ChunkId,
    raw: Vec<u8>,
    encoding: Encoding,
    payload: Vec<u8>,
}

impl std::fmt::Debug for VerifiedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedChunk")
            .field("id", &self.id)
            .field("len", &self.raw.len())
            .field("encoding", &self.encoding)
            .field("stored_len", &self.payload.len())
            .finish()
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static TIGHT: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl VerifiedChunk {
    /// Hashes and compresses raw bytes (at most [`MAX_CHUNK_LEN`]; longer input is a caller bug).
    pub fn from_raw(raw: Vec<u8>) -> VerifiedChunk {
        VerifiedChunk::from_hashed(ChunkId::of(&raw), raw)
    }

    /// `from_raw` for a caller that has just computed `id = ChunkId::of(&raw)` itself.
    pub(crate) fn from_hashed(id: ChunkId, raw: Vec<u8>) -> VerifiedChunk {
        assert!(
            raw.len() <= MAX_CHUNK_LEN as usize,
            "chunk longer than MAX_CHUNK_LEN"
        );
        debug_assert_eq!(id, ChunkId::of(&raw));
        let compressed = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            }
            c.as_mut().and_then(|c| c.compress(&raw).ok())
        });
        let (encoding, payload) = match compressed {
            Some(z) if z.len() < raw.len() => (Encoding::Zstd, z),
            _ => (Encoding::Raw, raw.clone()),
        };
        VerifiedChunk {
            id,
            raw,
            encoding,
            payload,
        }
    }

    /// Decodes a stored form (header + payload) and checks it is the chunk `id`.
    pub fn from_stored(id: ChunkId, stored: &[u8]) -> Result<VerifiedChunk, ChunkError> {
        if stored.len() < HEADER_LEN {
            return Err(ChunkError::Short(stored.len()));
        }
        let (header, payload) = stored.split_at(HEADER_LEN);
        let declared = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        if declared > MAX_CHUNK_LEN {
            return Err(ChunkError::TooLong(declared));
        }
        let encoding = match header[0] {
            0 => Encoding::Raw,
            1 => Encoding::Zstd,
            other => return Err(ChunkError::Encoding(other)),
        };
        let raw = match encoding {
            Encoding::Raw if payload.len() == declared as usize => payload.to_vec(),
            Encoding::Raw => {
                return Err(ChunkError::Decompress {
                    declared,
                    detail: format!("raw payload is {} bytes", payload.len()),
                })
            }
            Encoding::Zstd => decompress(payload, declared)?,
        };
        let actual = ChunkId::of(&raw);
        if actual != id {
            return Err(ChunkError::HashMismatch { actual });
        }
        Ok(VerifiedChunk {
            id,
            raw,
            encoding,
            payload: payload.to_vec(),
        })
    }

    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// The same chunk compressed again at zstd `level` (the second pass, slow), or `None` when
    /// that does not pay: a chunk kept raw stays raw. The frame it writes leaves out the content
    /// size (the header carries the length anyway), which is how [`is_tight`] tells a tightened
    /// payload from a first-pass one without any other record; every zstd decoder reads both.
    pub fn tightened(&self, level: i32) -> Option<VerifiedChunk> {
        if self.encoding == Encoding::Raw {
            return None;
        }
        let mut z = compress_tight(&self.raw, level)?;
        if z.len() > self.payload.len() && level != ZSTD_LEVEL {
            // zstd's high levels lose a few bytes on some data: the import's level, marked.
            if let Some(low) = compress_tight(&self.raw, ZSTD_LEVEL).filter(|l| l.len() < z.len()) {
                z = low;
            }
        }
        (z.len() < self.raw.len()).then(|| VerifiedChunk {
            id: self.id,
            raw: self.raw.clone(),
            encoding: Encoding::Zstd,
            payload: z,
        })
    }

    /// The uncompressed bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn len(&self) -> u32 {
        self.raw.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Payload length: what the chunk costs on disk and on the wire (without the header).
    pub fn stored_len(&self) -> u32 {
        self.payload.len() as u32
    }

    /// The header, then the payload: write both to store or send the chunk.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let len = self.len().to_le_bytes();
        [self.encoding as u8, len[0], len[1], len[2], len[3]]
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }
}

/// `raw` compressed at `level` in a frame without its content size (see [`is_tight`]).
fn compress_tight(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    TIGHT.with(|t| {
        let mut t = t.borrow_mut();
        if t.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut c = zstd::bulk::Compressor::new(level).ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
                .ok()?;
            *t = Some((level, c));
        }
        t.as_mut().and_then(|(_, c)| c.compress(raw).ok())
    })
}

/// Whether a stored form (its first bytes are enough: header, then the zstd frame header) is final:
/// kept raw, or compressed by [`VerifiedChunk::tightened`] (a zstd frame without its content size).
/// A first-pass payload, whose frame states its content size, is not.
pub fn is_tight(stored: &[u8]) -> bool {
    match stored.get(..HEADER_LEN + 5) {
        Some(head) if head[0] == Encoding::Zstd as u8 => {
            let frame = &head[HEADER_LEN..];
            let descriptor = frame[4];
            let content_size = descriptor >> 6 != 0 || descriptor & 0x20 != 0;
            frame[..4] == ZSTD_MAGIC && !content_size
        }
        Some(head) => head[0] == Encoding::Raw as u8,
        None => stored.first() == Some(&(Encoding::Raw as u8)),
    }
}

/// How many leading bytes of a stored form [`is_tight`] reads.
pub const TIGHT_PROBE_LEN: usize = HEADER_LEN + 5;

fn decompress(payload: &[u8], declared: u32) -> Result<Vec<u8>, ChunkError> {
    let fail = |detail: String| ChunkError::Decompress { declared, detail };
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| fail(e.to_string()))?);
        }
        let d = d.as_mut().ok_or_else(|| fail("no decompressor".into()))?;
        // `capacity` bounds the output: a bomb fails here instead of allocating.
        let raw = d
            .decompress(payload, declared as usize)
            .map_err(|e| fail(e.to_string()))?;
        if raw.len() != declared as usize {
            return Err(fail(format!("got {} bytes", raw.len())));
        }
        Ok(raw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(c: &VerifiedChunk) -> Vec<u8> {
        [c.header().as_slice(), c.payload()].concat()
    }

    #[test]
    fn compressible_chunks_are_compressed_and_random_ones_kept_raw() {
        let text = b"formation session ".repeat(1000);
        let c = VerifiedChunk::from_raw(text.clone());
        assert_eq!(c.encoding(), Encoding::Zstd);
        assert!(c.stored_len() < 1000);
        let back = VerifiedChunk::from_stored(*c.id(), &stored(&c)).unwrap();
        assert_eq!(back.raw(), &text[..]);

        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let c = VerifiedChunk::from_raw(noise.clone());
        if c.encoding() == Encoding::Raw {
            assert_eq!(c.payload(), &noise[..]);
        }
        assert!(c.stored_len() <= c.len());
        assert_eq!(VerifiedChunk::from_stored(*c.id(), &stored(&c)).unwrap(), c);
    }

    #[test]
    fn import_compresses_at_the_fast_level_and_tightening_undoes_its_cost() {
        // An import that waits on zstd -3 is slower than it needs to be: the second pass
        // recompresses every chunk from its raw bytes anyway.
        let raw: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("user{} /home/{} {} ", i % 311, i % 89, i % 7).into_bytes())
            .collect();
        let first = VerifiedChunk::from_raw(raw.clone());
        let fast = zstd::bulk::compress(&raw, 1).unwrap();
        assert_eq!(first.payload(), &fast[..], "first pass is zstd level 1");
        // What the WAN carries after the second pass does not depend on the first pass's level.
        let tight = first.tightened(TIGHT_LEVEL).unwrap();
        let from_level_3 = VerifiedChunk {
            payload: zstd::bulk::compress(&raw, 3).unwrap(),
            ..first.clone()
        };
        assert_eq!(from_level_3.tightened(TIGHT_LEVEL).unwrap(), tight);
        assert!(tight.stored_len() < first.stored_len());
    }

    #[test]
    fn a_tightened_chunk_is_smaller_reads_back_and_says_it_is_final() {
        // Text with long-range repeats: level 19 finds more than the import's level.
        let raw: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("seat-{} room-{} ", i % 97, (i * 7) % 13).into_bytes())
            .collect();
        let first = VerifiedChunk::from_raw(raw.clone());
        assert!(
            !is_tight(&stored(&first)),
            "a first-pass payload is not final"
        );
        let tight = first.tightened(TIGHT_LEVEL).unwrap();
        assert!(tight.stored_len() <= first.stored_len());
        assert_eq!(tight.id(), first.id());
        assert!(is_tight(&stored(&tight)));
        let back = VerifiedChunk::from_stored(*first.id(), &stored(&tight)).unwrap();
        assert_eq!(back.raw(), &raw[..]);
        // Any zstd decoder reads it (the frame only lacks its content size).
        assert_eq!(zstd::stream::decode_all(tight.payload()).unwrap(), raw);

        // A chunk kept raw is final already and stays as it is.
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let raw_chunk = VerifiedChunk::from_raw(noise);
        if raw_chunk.encoding() == Encoding::Raw {
            assert!(raw_chunk.tightened(TIGHT_LEVEL).is_none());
            assert!(is_tight(&stored(&raw_chunk)));
        }
        assert!(!is_tight(&[1, 0, 0]), "too short to tell: not final");
    }

    #[test]
    fn wrong_bytes_are_refused() {
        let c = VerifiedChunk::from_raw(b"abc".repeat(100));
        let good = stored(&c);
        let other = ChunkId::of(b"other");
        assert!(matches!(
            VerifiedChunk::from_stored(other, &good),
            Err(ChunkError::HashMismatch { .. })
        ));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(VerifiedChunk::from_stored(*c.id(), &flipped).is_err());
        assert_eq!(
            VerifiedChunk::from_stored(*c.id(), &good[..3]),
            Err(ChunkError::Short(3))
        );
        let mut bad_enc = good.clone();
        bad_enc[0] = 9;
        assert_eq!(
            VerifiedChunk::from_stored(*c.id(), &bad_enc),
            Err(ChunkError::Encoding(9))
        );
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_declared_length() {
        // 16 MiB of zeros compress to a few hundred bytes; declare 1000 and it must fail, not allocate.
        let bomb = zstd::bulk::compress(&vec![0u8; 16 << 20], 3).unwrap();
        let mut stored = vec![1u8];
        stored.extend(1000u32.to_le_bytes());
        stored.extend(&bomb);
        let err = VerifiedChunk::from_stored(ChunkId::of(b""), &stored).unwrap_err();
        assert!(
            matches!(err, ChunkError::Decompress { declared: 1000, .. }),
            "{err}"
        );
        let mut huge = vec![1u8];
        huge.extend((MAX_CHUNK_LEN + 1).to_le_bytes());
        huge.extend(&bomb);
        assert_eq!(
            VerifiedChunk::from_stored(ChunkId::of(b""), &huge),
            Err(ChunkError::TooLong(MAX_CHUNK_LEN + 1))
        );
    }
}

//! The records of a pack file and of its index, as bytes: pure encoding and parsing, no I/O.
//!
//! A pack is a sequence of records, each a 45-byte header then a body:
//! `kind` (1 byte: 1 chunk, 2 tombstone), `id` (32 bytes), `body length` (4 bytes, little-endian),
//! `check` (the first 8 bytes of the BLAKE3 hash of kind, id, length and body). A chunk's body is
//! its stored form (chunk header and payload, as a chunk file holds it); a tombstone's body is the
//! pack (8 bytes) and offset (8 bytes) of the chunk record it removes.
//!
//! What the check guarantees: a record cut short or followed by garbage (a crash in the middle
//! of an append, on a file system that may extend a file before its data is written) is told apart
//! from a whole one without decompressing anything. It is not the chunk's integrity: that is the
//! id, checked by every read.

use crate::chunk::{HEADER_LEN, MAX_CHUNK_LEN};
use crate::ids::ChunkId;

/// Bytes before a record's body.
pub const RECORD_HEADER: usize = 1 + 32 + 4 + 8;
/// A tombstone's body: the pack and the offset of the record it removes.
pub const TOMBSTONE_LEN: u32 = 16;
/// No body is longer than the largest stored chunk.
pub const MAX_BODY: u32 = MAX_CHUNK_LEN + HEADER_LEN as u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Chunk = 1,
    Tombstone = 2,
}

/// A record's header, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub id: ChunkId,
    pub body_len: u32,
    check: [u8; 8],
}

/// Why bytes at a record's place are not a record (at a pack's tail: where a crash cut it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Bad {
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("record body length {0} is above the limit")]
    TooLong(u32),
    #[error("tombstone body of {0} bytes")]
    Tombstone(u32),
    #[error("record check does not match its bytes")]
    Check,
}

fn check_of(kind: Kind, id: &ChunkId, body: &[&[u8]]) -> [u8; 8] {
    let len: usize = body.iter().map(|p| p.len()).sum();
    let mut h = blake3::Hasher::new();
    h.update(&[kind as u8]);
    h.update(id.as_bytes());
    h.update(&(len as u32).to_le_bytes());
    for part in body {
        h.update(part);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// The header of a record whose body is the concatenation of `body`'s parts.
pub fn encode_header(kind: Kind, id: &ChunkId, body: &[&[u8]]) -> [u8; RECORD_HEADER] {
    let len: usize = body.iter().map(|p| p.len()).sum();
    let mut out = [0u8; RECORD_HEADER];
    out[0] = kind as u8;
    out[1..33].copy_from_slice(id.as_bytes());
    out[33..37].copy_from_slice(&(len as u32).to_le_bytes());
    out[37..].copy_from_slice(&check_of(kind, id, body));
    out
}

/// Parses a header; its body is checked with [`Header::checks`].
pub fn parse_header(bytes: &[u8; RECORD_HEADER]) -> Result<Header, Bad> {
    let kind = match bytes[0] {
        1 => Kind::Chunk,
        2 => Kind::Tombstone,
        other => return Err(Bad::Kind(other)),
    };
    let mut id = [0u8; 32];
    id.copy_from_slice(&bytes[1..33]);
    let body_len = u32::from_le_bytes([bytes[33], bytes[34], bytes[35], bytes[36]]);
    if body_len > MAX_BODY {
        return Err(Bad::TooLong(body_len));
    }
    if kind == Kind::Tombstone && body_len != TOMBSTONE_LEN {
        return Err(Bad::Tombstone(body_len));
    }
    let mut check = [0u8; 8];
    check.copy_from_slice(&bytes[37..]);
    Ok(Header {
        kind,
        id: ChunkId::from_bytes(id),
        body_len,
        check,
    })
}

impl Header {
    /// Whether `body` is the body this header was written with.
    pub fn checks(&self, body: &[u8]) -> Result<(), Bad> {
        if body.len() == self.body_len as usize
            && check_of(self.kind, &self.id, &[body]) == self.check
        {
            Ok(())
        } else {
            Err(Bad::Check)
        }
    }
}

/// Where a record is: its pack and the offset of its header in that pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    pub pack: u64,
    pub offset: u64,
}

pub fn tombstone_body(target: Place) -> [u8; TOMBSTONE_LEN as usize] {
    let mut out = [0u8; TOMBSTONE_LEN as usize];
    out[..8].copy_from_slice(&target.pack.to_le_bytes());
    out[8..].copy_from_slice(&target.offset.to_le_bytes());
    out
}

pub fn parse_tombstone(body: &[u8; TOMBSTONE_LEN as usize]) -> Place {
    let mut pack = [0u8; 8];
    let mut offset = [0u8; 8];
    pack.copy_from_slice(&body[..8]);
    offset.copy_from_slice(&body[8..]);
    Place {
        pack: u64::from_le_bytes(pack),
        offset: u64::from_le_bytes(offset),
    }
}

/// One record as a pack's index lists it. For a tombstone, `target` is what it removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub id: ChunkId,
    pub offset: u64,
    pub body_len: u32,
    pub target: Option<Place>,
}

impl Entry {
    /// Bytes the record takes in its pack.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER as u64 + u64::from(self.body_len)
    }
}

const INDEX_MAGIC: &[u8; 16] = b"nightcast-pidx1\n";
const INDEX_ENTRY: usize = 1 + 32 + 8 + 4 + 16;

/// A sealed pack's index: magic, the pack length it covers, its entries, and a BLAKE3 hash of
/// all that (32 bytes) at the end.
pub fn encode_index(pack_len: u64, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 + entries.len() * INDEX_ENTRY + 32);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&pack_len.to_le_bytes());
    for e in entries {
        out.push(e.kind as u8);
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.body_len.to_le_bytes());
        out.extend_from_slice(&tombstone_body(
            e.target.unwrap_or(Place { pack: 0, offset: 0 }),
        ));
    }
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// The pack length an index covers and its entries; `None` if the bytes are not a whole index.
pub fn parse_index(bytes: &[u8]) -> Option<(u64, Vec<Entry>)> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, hash) = bytes.split_at(body_len);
    if body.len() < 24 || &body[..16] != INDEX_MAGIC || blake3::hash(body).as_bytes() != hash {
        return None;
    }
    let pack_len = u64::from_le_bytes(body[16..24].try_into().ok()?);
    let rest = &body[24..];
    if rest.len() % INDEX_ENTRY != 0 {
        return None;
    }
    let mut entries = Vec::with_capacity(rest.len() / INDEX_ENTRY);
    for e in rest.chunks_exact(INDEX_ENTRY) {
        let kind = match e[0] {
            1 => Kind::Chunk,
            2 => Kind::Tombstone,
            _ => return None,
        };
        let id = ChunkId::from_bytes(e[1..33].try_into().ok()?);
        let offset = u64::from_le_bytes(e[33..41].try_into().ok()?);
        let body_len = u32::from_le_bytes(e[41..45].try_into().ok()?);
        let target = (kind == Kind::Tombstone)
            .then(|| parse_tombstone(e[45..61].try_into().unwrap_or(&[0; 16])));
        entries.push(Entry {
            kind,
            id,
            offset,
            body_len,
            target,
        });
    }
    Some((pack_len, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_any_flipped_bit_is_caught() {
        let id = ChunkId::of(b"x");
        let body = b"\x00\x01\x00\x00\x00x".to_vec();
        let h = encode_header(Kind::Chunk, &id, &[&body[..2], &body[2..]]);
        let parsed = parse_header(&h).unwrap();
        assert_eq!(
            (parsed.kind, parsed.id, parsed.body_len),
            (Kind::Chunk, id, 6)
        );
        parsed.checks(&body).unwrap();
        for bit in 0..body.len() * 8 {
            let mut b = body.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(parsed.checks(&b), Err(Bad::Check));
        }
        for bit in 0..RECORD_HEADER * 8 {
            let mut hh = h;
            hh[bit / 8] ^= 1 << (bit % 8);
            assert!(
                parse_header(&hh).and_then(|p| p.checks(&body)).is_err(),
                "bit {bit}"
            );
        }
        // All zeros (a file extended before its data was written) is not a record.
        assert_eq!(parse_header(&[0; RECORD_HEADER]), Err(Bad::Kind(0)));
    }

    #[test]
    fn an_index_round_trips_and_a_damaged_one_is_refused() {
        let entries = vec![
            Entry {
                kind: Kind::Chunk,
                id: ChunkId::of(b"a"),
                offset: 0,
                body_len: 10,
                target: None,
            },
            Entry {
                kind: Kind::Tombstone,
                id: ChunkId::of(b"b"),
                offset: 55,
                body_len: TOMBSTONE_LEN,
                target: Some(Place {
                    pack: 7,
                    offset: 99,
                }),
            },
        ];
        let bytes = encode_index(116, &entries);
        assert_eq!(parse_index(&bytes), Some((116, entries)));
        for cut in 0..bytes.len() {
            assert_eq!(parse_index(&bytes[..cut]), None);
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(parse_index(&flipped), None);
    }
}

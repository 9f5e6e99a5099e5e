//! Cutting an image into holes and content-defined chunks.
//!
//! An image is first split into *holes* and *data*: a hole is a maximal run of zero bytes at least
//! [`ChunkParams::hole_min`] long, wherever it starts. Holes are never stored nor sent, and are
//! assembled as sparse holes. Each data segment between holes is cut with FastCDC (the 2020 variant,
//! normalisation level 1), so a chunk never straddles a hole, and since both holes and cuts depend
//! only on content, bytes inserted early in an image do not change the chunks of later segments.
//!
//! Guarantee: the pieces depend only on the image's bytes and the parameters, never on how reads
//! happened to be split (see `pieces_do_not_depend_on_read_sizes`). Every byte is scanned for zeros
//! once. Not guaranteed: zero runs shorter than `hole_min` stay inside chunks (zstd makes them nearly
//! free).

use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};

/// The granularity of holes: the block size of the file systems masters are assembled on.
pub const BLOCK: usize = 4096;

/// How much the chunker reads at once.
const READ_SIZE: usize = 8 << 20;

/// Chunking parameters, recorded in every manifest: the same image with the same parameters always
/// gives the same chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// The shortest run of zero bytes recorded as a hole (a multiple of [`BLOCK`]).
    pub hole_min: u32,
}

impl ChunkParams {
    /// The parameters nightcast imports with; chosen by measurement, see `docs/BENCHMARKS.md`.
    pub const DEFAULT: ChunkParams = ChunkParams::with_avg(64 << 10);

    /// `min = avg / 4`, `max = avg * 4`, holes from 64 KiB: the shape used by casync and desync.
    pub const fn with_avg(avg: u32) -> ChunkParams {
        ChunkParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            hole_min: 64 << 10,
        }
    }

    /// Checks the parameters against what FastCDC and the manifest format accept.
    pub fn validate(&self) -> Result<(), String> {
        let ChunkParams {
            min,
            avg,
            max,
            hole_min,
        } = *self;
        let in_range = |v: u32, lo: usize, hi: usize| (lo..=hi).contains(&(v as usize));
        if !in_range(min, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX)
            || !in_range(avg, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX)
            || !in_range(max, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX)
        {
            return Err(format!(
                "chunk sizes min {min}, avg {avg}, max {max} are outside FastCDC's limits"
            ));
        }
        if !(min < avg && avg < max) || min % 2 != 0 || !avg.is_power_of_two() || max % 2 != 0 {
            return Err(format!(
                "chunk sizes must satisfy min < avg < max, even, avg a power of two (got {min}/{avg}/{max})"
            ));
        }
        if hole_min == 0 || hole_min as usize % BLOCK != 0 || hole_min > 64 << 20 {
            return Err(format!(
                "hole_min {hole_min} must be a positive multiple of {BLOCK} up to 64 MiB"
            ));
        }
        Ok(())
    }
}

/// One piece of an image, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes to store as one chunk, at `offset` in the image.
    Data { offset: u64, bytes: Vec<u8> },
    /// `len` zero bytes at `offset`, recorded as a hole.
    Hole { offset: u64, len: u64 },
}

/// Streams an image as [`Piece`]s. Memory use is bounded by the read size plus one chunk.
#[derive(Debug)]
pub struct Chunker<R> {
    reader: R,
    params: ChunkParams,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    /// Index in `buf` of the first byte not yet emitted.
    start: usize,
    /// Image offset of `buf[0]`.
    base: u64,
    eof: bool,
    read_size: usize,
    /// Image offset up to which bytes have been scanned for zero runs.
    scanned: u64,
    /// Image offset where the zero run ending at `scanned` began (`== scanned` if none).
    zero_run: u64,
    /// Start of the next hole found at or after the current position.
    hole_at: Option<u64>,
}

impl<R: Read> Chunker<R> {
    /// Panics if `params` do not validate: check them first with [`ChunkParams::validate`].
    pub fn new(reader: R, params: ChunkParams) -> Self {
        Self::with_read_size(reader, params, READ_SIZE)
    }

    pub fn with_read_size(reader: R, params: ChunkParams, read_size: usize) -> Self {
        assert!(params.validate().is_ok(), "invalid chunk parameters");
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, Normalization::Level1);
        Chunker {
            reader,
            params,
            mask_s,
            mask_l,
            buf: Vec::new(),
            start: 0,
            base: 0,
            eof: false,
            read_size: read_size.max(1),
            scanned: 0,
            zero_run: 0,
            hole_at: None,
        }
    }

    /// Bytes of lookahead that make every decision independent of read boundaries.
    fn lookahead(&self) -> usize {
        self.params.max as usize + self.params.hole_min as usize + BLOCK
    }

    /// Ensures at least `need` unconsumed bytes are buffered, unless the image ends first.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.buf.len() - self.start >= need || self.eof {
            return Ok(());
        }
        self.buf.drain(..self.start);
        self.base += self.start as u64;
        self.start = 0;
        let target = need.max(self.read_size);
        while self.buf.len() < target && !self.eof {
            let old = self.buf.len();
            self.buf.resize(target, 0);
            match self.reader.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(old + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(old),
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        self.fill(self.lookahead())?;
        if self.start == self.buf.len() {
            return Ok(None);
        }
        let offset = self.base + self.start as u64;
        let max = self.params.max as usize;
        // Is there a hole starting before `offset + max`? Deciding needs `hole_min` bytes past it.
        self.scan_until(offset + (max + self.params.hole_min as usize) as u64);
        if self.hole_at == Some(offset) {
            return self.take_hole(offset).map(Some);
        }
        let avail = &self.buf[self.start..];
        let limit = match self.hole_at {
            // A hole never starts before `offset`: chunks stop at the hole they see coming.
            Some(h) if h < offset + max as u64 => (h.saturating_sub(offset) as usize).max(1),
            _ => avail.len().min(max),
        };
        let (_, cut) = v2020::cut(
            &avail[..limit],
            self.params.min as usize,
            self.params.avg as usize,
            max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        let cut = cut.clamp(1, limit.max(1));
        let bytes = avail[..cut].to_vec();
        self.start += cut;
        Ok(Some(Piece::Data { offset, bytes }))
    }

    /// Scans buffered bytes for zero runs up to image offset `until`, stopping at the first hole.
    fn scan_until(&mut self, until: u64) {
        let hole_min = u64::from(self.params.hole_min);
        let end = until.min(self.base + self.buf.len() as u64);
        while self.hole_at.is_none() && self.scanned < end {
            let from = (self.scanned - self.base) as usize;
            let to = (end - self.base) as usize;
            let lane = &self.buf[from..to.min(from + 64)];
            match lane.iter().rposition(|&b| b != 0) {
                None => self.scanned += lane.len() as u64,
                Some(last) => {
                    self.scanned += lane.len() as u64;
                    self.zero_run = self.scanned - (lane.len() - last - 1) as u64;
                }
            }
            if self.scanned - self.zero_run >= hole_min {
                self.hole_at = Some(self.zero_run);
            }
        }
    }

    /// Consumes zero bytes from a hole's start until data or the end of the image.
    fn take_hole(&mut self, offset: u64) -> io::Result<Piece> {
        let mut len = 0u64;
        loop {
            self.fill(64)?;
            let avail = &self.buf[self.start..];
            let zeros = leading_zeros(avail);
            self.start += zeros;
            len += zeros as u64;
            if zeros < avail.len() || avail.is_empty() {
                break;
            }
        }
        let end = offset + len;
        self.scanned = end;
        self.zero_run = end;
        self.hole_at = None;
        Ok(Piece::Hole { offset, len })
    }
}

/// How many zero bytes `bytes` starts with (64-byte lanes, then bytes).
fn leading_zeros(bytes: &[u8]) -> usize {
    let lanes = bytes
        .chunks_exact(64)
        .take_while(|lane| is_zero(lane))
        .count()
        * 64;
    lanes + bytes[lanes..].iter().take_while(|&&b| b == 0).count()
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Piece>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_piece().transpose()
    }
}

/// Whether every byte is zero (vectorises: folds 64-byte lanes, exits at the first non-zero lane).
pub fn is_zero(bytes: &[u8]) -> bool {
    let mut lanes = bytes.chunks_exact(64);
    lanes.all(|lane| lane.iter().fold(0u8, |acc, &b| acc | b) == 0)
        && lanes.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(data: &[u8], params: ChunkParams, read_size: usize) -> Vec<Piece> {
        Chunker::with_read_size(data, params, read_size)
            .collect::<io::Result<_>>()
            .unwrap()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn small() -> ChunkParams {
        ChunkParams {
            min: 1024,
            avg: 4096,
            max: 16384,
            hole_min: 16384,
        }
    }

    /// Data, a long aligned hole, a short zero run that must stay data, and an unaligned tail.
    fn sample() -> Vec<u8> {
        let mut img = noise(100_000, 1);
        img.resize(3 * 65536, 0); // zero-pad to an aligned hole
        img.extend(noise(50_000, 2));
        img.extend(vec![0u8; 8192]); // shorter than hole_min: stays inside chunks
        img.extend(noise(70_001, 3));
        img
    }

    #[test]
    fn pieces_cover_the_image_in_order() {
        let img = sample();
        let mut at = 0u64;
        let mut rebuilt = Vec::new();
        for piece in pieces(&img, small(), 1 << 20) {
            match piece {
                Piece::Data { offset, bytes } => {
                    assert_eq!(offset, at);
                    assert!(!bytes.is_empty() && bytes.len() <= small().max as usize);
                    at += bytes.len() as u64;
                    rebuilt.extend(bytes);
                }
                Piece::Hole { offset, len } => {
                    assert_eq!(offset, at);
                    assert!(len >= small().hole_min as u64);
                    at += len;
                    rebuilt.resize(at as usize, 0);
                }
            }
        }
        assert_eq!(rebuilt, img);
    }

    #[test]
    fn long_zero_runs_become_one_hole_and_short_ones_stay_data() {
        let img = sample();
        let holes: Vec<_> = pieces(&img, small(), 1 << 20)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Hole { offset, len } => Some((offset, len)),
                Piece::Data { .. } => None,
            })
            .collect();
        // The hole starts right after the last non-zero byte of the first noise, wherever that is.
        let start = img[..100_000].iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
        assert_eq!(holes, vec![(start, 3 * 65536 - start)]);
    }

    #[test]
    fn an_insertion_before_a_hole_leaves_later_segments_alone() {
        let mut a = noise(150_000, 4);
        a.extend(vec![0u8; 50_000]);
        a.extend(noise(150_000, 5));
        a.extend(vec![0u8; 70_000]);
        a.extend(noise(90_000, 6));
        let mut b = a.clone();
        b.splice(1000..1000, noise(123, 7)); // shifts everything after it by 123 bytes
                                             // Chunk ids of everything past the first hole (at 150_000 in `a`, 150_123 in `b`).
        let data = |img: &[u8]| -> Vec<crate::ids::ChunkId> {
            pieces(img, small(), 1 << 20)
                .into_iter()
                .filter_map(|p| match p {
                    Piece::Data { bytes, offset } if offset >= 190_000 => {
                        Some(crate::ids::ChunkId::of(&bytes))
                    }
                    _ => None,
                })
                .collect()
        };
        assert!(!data(&a).is_empty());
        assert_eq!(data(&a), data(&b));
    }

    #[test]
    fn pieces_do_not_depend_on_read_sizes() {
        let img = sample();
        let reference = pieces(&img, small(), 1 << 20);
        for read_size in [1, 7, 4096, 5000, 65536, 100_003] {
            assert_eq!(
                pieces(&img, small(), read_size),
                reference,
                "read size {read_size}"
            );
        }
    }

    #[test]
    fn an_insertion_moves_only_nearby_cuts() {
        let a = noise(400_000, 9);
        let mut b = a.clone();
        b.splice(200_000..200_000, noise(100, 10));
        let ids = |img: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            pieces(img, small(), 1 << 20)
                .into_iter()
                .filter_map(|p| match p {
                    Piece::Data { bytes, .. } => Some(bytes),
                    Piece::Hole { .. } => None,
                })
                .collect()
        };
        let (ca, cb) = (ids(&a), ids(&b));
        let new = cb.difference(&ca).count();
        assert!(new <= 3, "{new} new chunks for one 100-byte insertion");
    }

    #[test]
    fn edge_sizes() {
        assert!(pieces(&[], small(), 4096).is_empty());
        assert_eq!(
            pieces(&[7], small(), 4096),
            vec![Piece::Data {
                offset: 0,
                bytes: vec![7]
            }]
        );
        // All zero, exactly hole_min: one hole. One byte short: data.
        let zeros = vec![0u8; small().hole_min as usize];
        assert_eq!(
            pieces(&zeros, small(), 4096),
            vec![Piece::Hole {
                offset: 0,
                len: zeros.len() as u64
            }]
        );
        let short = &zeros[..zeros.len() - 1];
        assert!(matches!(
            &pieces(short, small(), 4096)[..],
            [Piece::Data { .. }, ..]
        ));
    }

    #[test]
    fn default_params_validate_and_bad_ones_do_not() {
        assert_eq!(ChunkParams::DEFAULT.validate(), Ok(()));
        for avg in [16 << 10, 64 << 10, 256 << 10, 1 << 20] {
            assert_eq!(ChunkParams::with_avg(avg).validate(), Ok(()));
        }
        let bad = ChunkParams {
            hole_min: 1000,
            ..ChunkParams::DEFAULT
        };
        assert!(bad.validate().is_err());
        let bad = ChunkParams {
            min: 70_000,
            ..ChunkParams::DEFAULT
        };
        assert!(bad.validate().is_err());
    }
}

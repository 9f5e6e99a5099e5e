//! A manifest sent as a delta to one the receiver holds (`GetManifestAgainst`, see
//! `docs/PROTOCOL.md`), pure: the new manifest's bytes compressed by zstd with the base
//! manifest's bytes as a raw-content prefix (what `zstd --patch-from` does), and rebuilt from it.
//!
//! Two versions of one master share most chunk ids, in the same order: a delta of a 2 GiB image's
//! manifest is a few percent of the manifest (ids are random bytes: zstd alone hardly shrinks it).
//!
//! Guarantees: [`rebuild`] allocates at most what the delta's frame header declares, refuses a
//! header that declares more than the caller's limit (or nothing), and fails if the frame yields
//! more or less than declared; it never panics. Not guaranteed here: that the rebuilt bytes are
//! the manifest asked for (a delta against other bytes than the server's base rebuilds something
//! else): the caller verifies the signature as for any manifest (`VerifiedManifest::open_with`).

use zstd::zstd_safe::{self, CParameter, DParameter};

/// The zstd level of deltas: fast; the prefix, not the level, makes them small.
const LEVEL: i32 = 3;

/// The name of a manifest's exact bytes (signature included) in a `GetManifestAgainst`.
pub fn base_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("zstd: {0}")]
    Zstd(&'static str),
    #[error("the manifest delta does not say how large the manifest is")]
    NoSize,
    #[error("the manifest delta would rebuild {0} bytes, above the {1}-byte limit of a manifest")]
    TooLarge(u64, u64),
    #[error("the manifest delta rebuilt {found} bytes where its header said {declared}")]
    WrongSize { found: u64, declared: u64 },
}

fn zstd_error(code: usize) -> DeltaError {
    DeltaError::Zstd(zstd_safe::get_error_name(code))
}

/// The window that lets any byte of `target` refer to any byte of `base` before it (at most 2^30:
/// two largest manifests).
fn window_log(base: usize, target: usize) -> u32 {
    let span = (base + target).max(1 << 10) as u64;
    (64 - (span - 1).leading_zeros()).clamp(10, 30)
}

/// `target` compressed against `base`.
pub fn encode(base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut cctx = zstd_safe::CCtx::create();
    for p in [
        CParameter::CompressionLevel(LEVEL),
        CParameter::WindowLog(window_log(base.len(), target.len())),
        // Long-distance matching finds the base's runs however far back they are.
        CParameter::EnableLongDistanceMatching(true),
        CParameter::ContentSizeFlag(true),
    ] {
        cctx.set_parameter(p).map_err(zstd_error)?;
    }
    cctx.ref_prefix(base).map_err(zstd_error)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(target.len()));
    cctx.compress2(&mut out, target).map_err(zstd_error)?;
    Ok(out)
}

/// The bytes `delta` rebuilds against `base`, at most `limit` of them.
pub fn rebuild(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, DeltaError> {
    let declared = match zstd_safe::get_frame_content_size(delta) {
        Ok(Some(n)) => n,
        Ok(None) => return Err(DeltaError::NoSize),
        Err(_) => return Err(DeltaError::Zstd("not a zstd frame")),
    };
    if declared > limit {
        return Err(DeltaError::TooLarge(declared, limit));
    }
    let mut dctx = zstd_safe::DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(31))
        .map_err(zstd_error)?;
    dctx.ref_prefix(base).map_err(zstd_error)?;
    // One frame decoded straight into its declared size: no window buffer, and zstd refuses to
    // write past the end.
    let mut out = Vec::with_capacity(declared as usize);
    let n = dctx.decompress(&mut out, delta).map_err(zstd_error)?;
    if n as u64 != declared {
        return Err(DeltaError::WrongSize {
            found: n as u64,
            declared,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two "manifests": 40-byte random entries, the second with a few replaced, inserted and
    /// removed.
    fn pair(entries: usize) -> (Vec<u8>, Vec<u8>) {
        let entry = |i: usize, salt: u8| {
            let mut e = blake3::hash(&[&i.to_le_bytes()[..], &[salt]].concat())
                .as_bytes()
                .to_vec();
            e.extend((i as u64).to_le_bytes());
            e
        };
        let v1: Vec<u8> = (0..entries).flat_map(|i| entry(i, 0)).collect();
        let v2: Vec<u8> = (0..entries)
            .filter(|i| i % 97 != 5)
            .flat_map(|i| match i % 50 {
                0 => entry(i, 1),
                7 => [entry(i, 0), entry(i, 2)].concat(),
                _ => entry(i, 0),
            })
            .collect();
        (v1, v2)
    }

    #[test]
    fn a_delta_rebuilds_the_new_manifest_and_is_a_fraction_of_it() {
        let (v1, v2) = pair(20_000);
        let delta = encode(&v1, &v2).unwrap();
        assert!(
            delta.len() * 10 < v2.len(),
            "delta {} of {}",
            delta.len(),
            v2.len()
        );
        assert_eq!(rebuild(&v1, &delta, v2.len() as u64).unwrap(), v2);
        // Against nothing it still rebuilds (the server found no base: it sends the full one
        // instead, but the codec does not care).
        assert_eq!(
            rebuild(&[], &encode(&[], &v2).unwrap(), 1 << 30).unwrap(),
            v2
        );
    }

    #[test]
    fn a_delta_that_inflates_past_the_limit_is_refused_before_it_is_decoded() {
        // Ten megabytes of zeros are a few hundred bytes of zstd.
        let big = vec![0u8; 10 << 20];
        let delta = encode(b"NCMF", &big).unwrap();
        assert!(delta.len() < 4096);
        assert_eq!(
            rebuild(b"NCMF", &delta, 1 << 20),
            Err(DeltaError::TooLarge(10 << 20, 1 << 20))
        );
        // A frame that hides its size is refused too.
        let mut cctx = zstd_safe::CCtx::create();
        cctx.set_parameter(CParameter::ContentSizeFlag(false))
            .unwrap();
        let mut hidden = Vec::with_capacity(1 << 16);
        let mut out = zstd_safe::OutBuffer::around(&mut hidden);
        let mut input = zstd_safe::InBuffer::around(&big[..1000]);
        cctx.compress_stream2(
            &mut out,
            &mut input,
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
        )
        .unwrap();
        assert_eq!(rebuild(&[], &hidden, 1 << 20), Err(DeltaError::NoSize));
        // And a header that lies about its size (declares less than the frame holds) fails.
        let mut lying = encode(&[], &big[..1000]).unwrap();
        let honest = rebuild(&[], &lying, 1 << 20).unwrap();
        assert_eq!(honest.len(), 1000);
        // Its header: magic, descriptor (single segment, a 2-byte size: the size minus 256).
        assert_eq!(lying[4] & 0b1110_0000, 0b0110_0000);
        lying[5..7].copy_from_slice(&(500u16 - 256).to_le_bytes());
        assert!(matches!(
            rebuild(&[], &lying, 1 << 20),
            Err(DeltaError::Zstd(_))
        ));
        // Garbage is an error, never a panic.
        assert!(rebuild(&[], b"not zstd at all", 1 << 20).is_err());
    }

    #[test]
    fn a_delta_against_other_bytes_does_not_rebuild_the_manifest() {
        let (v1, v2) = pair(2_000);
        let delta = encode(&v1, &v2).unwrap();
        let (other, _) = pair(1_999);
        let wrong = rebuild(&other[40..], &delta, 1 << 30);
        assert!(wrong.is_err() || wrong.unwrap() != v2);
    }
}

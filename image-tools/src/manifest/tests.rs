use super::*;
use proptest::prelude::*;

pub(crate) fn sample() -> Manifest {
    let chunk = |n: u8, len: u32| {
        Entry::Chunk(ChunkRef {
            id: ChunkId::of(&[n]),
            len,
            stored_len: len / 2 + 1,
        })
    };
    let entries = vec![
        chunk(1, 4096),
        Entry::Hole { len: 65536 },
        chunk(2, 70000),
        chunk(1, 4096),
        chunk(3, 17),
    ];
    Manifest {
        name: MasterName::new("win10").unwrap(),
        version: MasterVersion::new("2026-11").unwrap(),
        size: entries.iter().map(Entry::len).sum(),
        params: ChunkParams::DEFAULT,
        entries,
    }
}

fn key() -> SigningKey {
    SigningKey::from_seed([7; 32])
}

#[test]
fn signed_manifest_round_trips_and_is_canonical() {
    let signed = sample().sign(&key());
    let opened = VerifiedManifest::open(signed.bytes().to_vec(), &key().public()).unwrap();
    assert_eq!(opened.manifest(), &sample());
    assert_eq!(opened.root(), signed.root());
    // Same input, same bytes.
    assert_eq!(sample().sign(&key()).bytes(), signed.bytes());
    let s = opened.summary();
    assert_eq!((s.chunks, s.unique_chunks, s.holes), (4, 3, 1));
    assert_eq!(s.hole_bytes, 65536);
}

#[test]
fn wrong_key_and_altered_bytes_are_refused() {
    let bytes = sample().sign(&key()).bytes().to_vec();
    let other = SigningKey::from_seed([8; 32]).public();
    assert!(matches!(
        VerifiedManifest::open(bytes.clone(), &other),
        Err(ManifestError::WrongSigner { .. })
    ));
    // Change one chunk length in the list (and keep the structure valid): signature fails.
    let mut changed = sample();
    if let Entry::Chunk(c) = &mut changed.entries[4] {
        c.id = ChunkId::of(b"evil");
    }
    let mut forged = changed.encode_body();
    forged.extend(&bytes[bytes.len() - SIGNATURE_BLOCK..]);
    assert!(matches!(
        VerifiedManifest::open(forged, &key().public()),
        Err(ManifestError::BadSignature { .. })
    ));
    // Truncated tails.
    for cut in [1, 10, 64, 96, 97, bytes.len() - 1] {
        let r = VerifiedManifest::open(bytes[..bytes.len() - cut].to_vec(), &key().public());
        assert!(r.is_err(), "cut {cut} accepted");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(VerifiedManifest::open(trailing, &key().public()).is_err());
}

#[test]
fn structural_errors_say_what_is_wrong() {
    let bytes = sample().sign(&key()).bytes().to_vec();
    let decode = |b: &[u8]| Manifest::decode_unverified(b).unwrap_err();
    assert_eq!(decode(b"PK\x03\x04 zip file"), ManifestError::NotAManifest);
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(decode(&v2), ManifestError::UnsupportedVersion { found: 2 });
    assert!(matches!(
        decode(&bytes[..bytes.len() - 1]),
        ManifestError::Truncated { .. }
    ));
    let mut trailing = bytes.clone();
    trailing.extend([1, 2, 3]);
    assert_eq!(decode(&trailing), ManifestError::TrailingBytes(3));
    // An absurd entry count is refused before any allocation.
    let count_at =
        bytes.len() - SIGNATURE_BLOCK - (2 * CHUNK_ENTRY + HOLE_ENTRY + 2 * CHUNK_ENTRY) - 8;
    let mut absurd = bytes.clone();
    absurd[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(decode(&absurd), ManifestError::Truncated { .. }));
    // A size that disagrees with the entries.
    let mut wrong_size = sample();
    wrong_size.size += 1;
    let mut b = wrong_size.encode_body();
    b.extend([0u8; SIGNATURE_BLOCK]);
    assert!(
        matches!(decode(&b), ManifestError::Malformed { .. }),
        "{:?}",
        decode(&b)
    );
    // A name that is a path.
    let mut evil = bytes.clone();
    evil[9..11].copy_from_slice(b"..");
    assert!(matches!(decode(&evil), ManifestError::Malformed { .. }));
}

/// An unsigned manifest of `count` holes in a row (never canonical: holes alternate with
/// chunks), as an attacker would craft to make a decoder allocate 48 bytes per 9 read.
fn all_holes(count: u64) -> (Vec<u8>, usize) {
    let mut m = sample();
    m.entries.clear();
    m.size = 0;
    let mut bytes = m.encode_body();
    let count_at = bytes.len() - 8;
    bytes[count_at..].copy_from_slice(&count.to_le_bytes());
    for _ in 0..count {
        bytes.push(TAG_HOLE);
        bytes.extend(65536u64.to_le_bytes());
    }
    bytes.extend([0u8; SIGNATURE_BLOCK]);
    (bytes, count_at)
}

#[test]
fn an_all_holes_manifest_is_refused_before_its_entries_are_decoded() {
    let (bytes, count_at) = all_holes(1_000_000);
    // With a key, the signature is checked over the bytes before anything is decoded.
    assert!(matches!(
        VerifiedManifest::open(bytes.clone(), &key().public()),
        Err(ManifestError::WrongSigner { .. })
    ));
    // Without one (inspect), the count is refused: the bytes cannot hold that many canonical
    // entries. The error points at the count, not at the end of a decoded list.
    match Manifest::decode_unverified(&bytes) {
        Err(ManifestError::Truncated { at, .. }) => assert_eq!(at, count_at),
        other => panic!("{other:?}"),
    }
    // A count the bytes could back, over holes in a row: refused at the second hole.
    let (mut bytes, count_at) = all_holes(1_000_000);
    bytes[count_at..count_at + 8].copy_from_slice(&1000u64.to_le_bytes());
    match Manifest::decode_unverified(&bytes) {
        Err(ManifestError::Malformed { at, .. }) => {
            assert_eq!(at, count_at + 8 + HOLE_ENTRY)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_entry_count_bound_is_the_smallest_canonical_list() {
    assert_eq!(min_entry_bytes(0), 0);
    assert_eq!(min_entry_bytes(1), HOLE_ENTRY as u64);
    assert_eq!(min_entry_bytes(2), (HOLE_ENTRY + CHUNK_ENTRY) as u64);
    assert_eq!(min_entry_bytes(3), (2 * HOLE_ENTRY + CHUNK_ENTRY) as u64);
    assert_eq!(min_entry_bytes(u64::MAX), u64::MAX);
    // The largest count admitted for a length is exactly the longest canonical list that fits,
    // so what a decoder reserves is at most about twice the bytes it was given.
    for len in [
        0u64,
        8,
        9,
        49,
        50,
        58,
        59,
        60,
        100,
        1 << 20,
        MAX_MANIFEST_BYTES,
    ] {
        let most = max_entries(len);
        assert!(
            min_entry_bytes(most) <= len && min_entry_bytes(most + 1) > len,
            "{len}"
        );
        assert!(
            most * std::mem::size_of::<Entry>() as u64 <= 2 * len + 48,
            "{len} bytes admit {most} entries"
        );
    }
}

#[test]
fn non_canonical_lists_are_refused() {
    let base = sample();
    let mut two_holes = base.clone();
    two_holes.entries.insert(1, Entry::Hole { len: 65536 });
    two_holes.size += 65536;
    assert!(two_holes.check().is_err());
    let mut empty_chunk = base.clone();
    empty_chunk.entries.push(Entry::Chunk(ChunkRef {
        id: ChunkId::of(b""),
        len: 0,
        stored_len: 0,
    }));
    assert!(empty_chunk.check().is_err());
    let mut short_hole = base;
    short_hole.entries.push(Entry::Hole { len: 4096 });
    short_hole.size += 4096;
    assert!(short_hole.check().is_err());
}

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    let entry = prop_oneof![
        (any::<[u8; 32]>(), 1u32..=(256 << 10)).prop_map(|(id, len)| Entry::Chunk(ChunkRef {
            id: ChunkId::from_bytes(id),
            len,
            stored_len: (len / 3).max(1),
        })),
        (65536u64..4_000_000).prop_map(|len| Entry::Hole { len }),
    ];
    proptest::collection::vec(entry, 0..40).prop_map(|raw| {
        // Make it canonical: never two holes in a row.
        let mut entries: Vec<Entry> = Vec::new();
        let mut size = 0u64;
        for e in raw {
            let ok = match e {
                Entry::Hole { .. } => !matches!(entries.last(), Some(Entry::Hole { .. })),
                Entry::Chunk(_) => true,
            };
            if ok {
                size += e.len();
                entries.push(e);
            }
        }
        Manifest {
            name: MasterName::new("m").unwrap(),
            version: MasterVersion::new("1").unwrap(),
            size,
            params: ChunkParams::DEFAULT,
            entries,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_manifest_round_trips(m in arb_manifest()) {
        let signed = m.clone().sign(&key());
        let opened = VerifiedManifest::open(signed.bytes().to_vec(), &key().public()).unwrap();
        prop_assert_eq!(opened.manifest(), &m);
    }

    /// The decoder never panics and never accepts a changed signed manifest.
    #[test]
    fn mutations_are_refused_without_panic(
        m in arb_manifest(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = m.sign(&key()).bytes().to_vec();
        let mut flipped = bytes.clone();
        for (i, x) in &flips {
            let at = i.index(flipped.len());
            flipped[at] ^= x;
        }
        let _ = Manifest::decode_unverified(&flipped);
        prop_assert!(VerifiedManifest::open(flipped, &key().public()).is_err());
        let truncated = bytes[..cut.index(bytes.len())].to_vec();
        let _ = Manifest::decode_unverified(&truncated);
        prop_assert!(VerifiedManifest::open(truncated, &key().public()).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Manifest::decode_unverified(&bytes);
        let mut with_magic = b"NCMF\x01\x00\x00\x00".to_vec();
        with_magic.extend(&bytes);
        let _ = Manifest::decode_unverified(&with_magic);
        prop_assert!(VerifiedManifest::open(with_magic, &key().public()).is_err());
    }
}

//! A manifest's bytes, as a relay or NUC receives them: decoded for display, and opened against a
//! pinned key (which must refuse them).
#![no_main]
use image_tools::{Manifest, SigningKey, VerifiedManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::decode_unverified(data);
    let key = SigningKey::from_seed([7; 32]).public();
    assert!(VerifiedManifest::open(data.to_vec(), &key).is_err());
});

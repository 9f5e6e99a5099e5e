//! A byte stream from a peer: frames decoded one after another, as a connection reads them.
#![no_main]
use image_tools::wire::{decode, peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peek(data);
    let mut rest = data;
    while let Ok(Some((_, used))) = decode(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
});

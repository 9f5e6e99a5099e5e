//! The bytes a client sends the admin API before its body: the request head, parsed (token
//! checked, Content-Length bounded) or refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nightcast_controller::api::{parse_head, MAX_BODY};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = parse_head(data, "t0ken") {
        assert!(head.len <= data.len() && head.length <= MAX_BODY);
    }
});

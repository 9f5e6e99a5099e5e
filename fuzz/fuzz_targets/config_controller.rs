//! The controller's TOML configuration: parsed and checked, or refused; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nightcast_controller::config::Config::parse(text);
    }
});

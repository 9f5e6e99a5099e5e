//! An enrolment token as typed by the DSI or found in a config file.
#![no_main]
use image_tools::trust::Token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = text.parse::<Token>() {
        assert_eq!(token.to_string().parse::<Token>().ok(), Some(token));
    }
});

//! The token opener on arbitrary input: never panics, never opens what it did not seal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whipgate::session::Keyring;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(keys) = Keyring::new([
        ("k1".to_string(), "fuzz-secret-fuzz-secret-fuzz-secret-0001".as_bytes()),
        ("k2".to_string(), "fuzz-secret-fuzz-secret-fuzz-secret-0002".as_bytes()),
    ]) else {
        return;
    };
    assert!(keys.open(text, 0).is_err(), "a token nobody sealed opened");
});

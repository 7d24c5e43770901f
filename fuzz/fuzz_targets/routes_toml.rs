//! The routes.toml loader on arbitrary text: an error or a config, never a panic, and every
//! error is one line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use whipgate::config::{Config, SecretMode, SystemSecrets};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = Config::from_toml(text, "fuzz.toml", Path::new("."), SecretMode::Skip, &SystemSecrets) {
        assert!(!error.to_string().contains('\n'));
    }
});

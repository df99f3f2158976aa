//! The TOML config: parse, then validate; no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pika_remedy::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(text, "fuzz.toml") {
        let _ = c.validate("fuzz.toml");
    }
});

//! INFO: no panic, and CRLF / LF read the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pika_remedy::node::info;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = info::parse(text);
    let lf = text.replace("\r\n", "\n");
    assert_eq!(info::parse(&lf), first);
    let _ = info::parse_with_binlog_size(text, u64::MAX);
    let _ = info::parse_with_binlog_size(text, 0);
});

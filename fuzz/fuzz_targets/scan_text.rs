//! Any text through every managed identifier: the scanner never panics, every hit lies in the
//! text on character boundaries, hits come in text order, and no sample carries its value.
#![no_main]

use std::sync::OnceLock;

use coffer_scan::Scanner;
use libfuzzer_sys::fuzz_target;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(Scanner::managed)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = scanner();
    // The first line doubles as a column-header context for the rest.
    let ctx = s.context(text.lines().next().unwrap_or(""));
    for context in [None, Some(&ctx)] {
        let hits = s.scan(&text, context);
        let mut last = 0;
        for h in &hits {
            assert!(h.start < h.end && h.end <= text.len());
            assert!(h.start >= last);
            last = h.start;
            let value = &text[h.start..h.end];
            let redacted = coffer_scan::redact(value);
            assert_eq!(redacted.chars().count(), value.chars().count());
            if value.chars().count() >= 10 {
                assert_ne!(redacted, value);
            }
        }
    }
});

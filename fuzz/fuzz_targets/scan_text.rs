//! Any text through every managed identifier: the scanner never panics, every location lies in
//! the text on a character boundary, and no sample carries the value it stands for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for m in coffer_scan::scan(&text) {
        let l = &m.location;
        assert!(l.start < l.end && l.end <= text.len());
        let value = &text[l.start..l.end];
        assert!(l.line >= 1 && l.column >= 1);
        assert_eq!(m.redacted.chars().count(), value.chars().count());
        if value.chars().count() >= 10 {
            assert_ne!(m.redacted, value);
        }
    }
});

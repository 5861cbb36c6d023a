//! Any text through every managed identifier: the scanner never panics, every hit lies in the
//! text on character boundaries, hits come in text order, and no sample carries its value. The
//! pure-Rust engine on the reference path (every digit run and trigger byte tried, every value
//! confirmed by its regex) finds exactly what the default scanner does (Vectorscan when the fuzz
//! crate is built with `--features vectorscan`, runs passed over on their bit masks, finders in
//! code where an identifier has one), and a scanner with a few identifiers (none with a
//! single-byte trigger) holds to the same rules.
#![no_main]

use std::sync::OnceLock;

use coffer_scan::{Prefilter, Scanner};
use libfuzzer_sys::fuzz_target;

fn scanners() -> &'static [Scanner; 3] {
    static S: OnceLock<[Scanner; 3]> = OnceLock::new();
    S.get_or_init(|| {
        let build = |b: coffer_scan::ScannerBuilder| b.build().unwrap_or_else(|e| panic!("{e}"));
        [
            Scanner::managed(),
            build(
                Scanner::builder()
                    .prefilter(Prefilter::Rust)
                    .reference(true),
            ),
            build(Scanner::builder().only(vec![
                "USA_SOCIAL_SECURITY_NUMBER".into(),
                "GITHUB_TOKEN".into(),
            ])),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let [auto, rust, few] = scanners();
    for s in [auto, few] {
        // The first line doubles as a column-header context for the rest.
        let ctx = s.context(text.lines().next().unwrap_or(""));
        for context in [None, Some(&ctx)] {
            let hits = s.scan(&text, context);
            if std::ptr::eq(s, auto) {
                assert_eq!(hits, rust.scan(&text, context), "the engines disagree");
            }
            let mut last = 0;
            for h in &hits {
                assert!(h.start < h.end && h.end <= text.len());
                assert!(h.start >= last);
                last = h.start;
                let value = &text[h.start..h.end];
                let redacted = coffer_scan::redact(value);
                assert_eq!(redacted.chars().count(), value.chars().count());
                // A sample never equals a value of ten characters or more, unless the value is
                // itself masked already (`u**************d` in a config line).
                let n = value.chars().count();
                if n >= 10 && value.chars().skip(1).take(n - 2).any(|c| c != '*') {
                    assert_ne!(redacted, value);
                }
            }
        }
    }
});

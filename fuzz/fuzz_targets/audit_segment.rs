//! Any bytes read as an audit segment: every line goes through the record parser, and the whole
//! segment through the chain and digest checker. Neither may panic; a break must be reported with a
//! line number inside the input.
#![no_main]

use coffer_audit::{Record, verify};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// The public key that signed the seed segment (seeds/audit_segment), so mutations of a valid
/// segment reach the digest checks instead of failing at the first signature.
static PUBLIC_KEY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    coffer_audit::public_key_from_pem(include_str!("../seeds/audit_segment.pub.pem"))
        .expect("the committed seed key is valid PEM")
});

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if let Ok(record) = Record::parse(line) {
            // What parses must serialise again and parse to the same record.
            let again = Record::parse(&record.to_line()).expect("a written record parses");
            assert_eq!(again.seq, record.seq);
            assert_eq!(again.prev, record.prev);
        }
    }
    if let Some(b) = verify::verify_segment_bytes(data, &PUBLIC_KEY) {
        let lines = data.split(|b| *b == b'\n').count() as u64;
        assert!(b.line <= lines + 1, "break at line {} of {lines}", b.line);
    }
});

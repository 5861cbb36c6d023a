//! Any bytes as an `aws-chunked` body, unsigned or with signed chunks, fed in arbitrary pieces:
//! the decoder must decode or refuse, never panic, and never hand on more than it was given.
#![no_main]

use coffer_api::s3::chunked::{ChunkSigning, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let signing = (control & 1 == 1).then(|| ChunkSigning {
        key: zeroize::Zeroizing::new([7u8; 32]),
        scope: "20250101/us-east-1/s3/aws4_request".into(),
        amz_date: "20250101T000000Z".into(),
        seed_signature: "0".repeat(64),
    });
    let step = usize::from(control >> 1).max(1);
    let mut d = Decoder::new(signing);
    let mut out = 0usize;
    for piece in body.chunks(step) {
        if d.feed(piece, &mut |b| {
            out += b.len();
            Ok(())
        })
        .is_err()
        {
            return;
        }
    }
    assert!(out <= body.len());
    assert_eq!(d.decoded() as usize, out);
    let _ = d.finish();
});

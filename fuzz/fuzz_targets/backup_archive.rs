//! Any bytes as a backup archive (its header) or as an encrypted stream.
#![no_main]

use coffer_crypto::{Key256, stream};
use coffer_kms::backup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = backup::parse(data) {
        assert_eq!(p.header.format, 1);
    }
    let key = Key256::from_slice(&[3u8; 32]).expect("32 bytes");
    assert!(stream::open(&key, b"header", data).is_err());
});

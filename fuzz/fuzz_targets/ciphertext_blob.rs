//! Any bytes offered to Decrypt as a ciphertext blob: the blob decoder must refuse or open them,
//! never panic, and never open something it did not seal.
#![no_main]

use coffer_crypto::{Key256, blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key256::from_slice(&[7u8; 32]).expect("32 bytes");
    if let Ok(h) = blob::peek(data) {
        assert!(data.len() >= blob::BLOB_OVERHEAD);
        let _ = h.material_version;
    }
    // A blob the fuzzer made up cannot carry a valid tag under this key.
    assert!(blob::open(&key, data, b"").is_err());
    assert!(blob::open(&key, data, b"\x00\x01\x00\x01a\x00\x01b").is_err());
});

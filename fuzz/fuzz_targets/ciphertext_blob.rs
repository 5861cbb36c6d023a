//! Any bytes offered to Decrypt as a ciphertext blob: the blob decoder must refuse or open them,
//! never panic, and never open something it did not seal.
#![no_main]

use coffer_crypto::{Key256, blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key256::from_slice(&[7u8; 32]).expect("32 bytes");
    if let Ok(h) = blob::peek(data) {
        // Version 1 (derived per-message key) or version 2 (AES-GCM inside an HSM).
        let min = if data[0] == blob::BLOB_VERSION {
            blob::BLOB_OVERHEAD
        } else {
            blob::DIRECT_HEADER_LEN + 16
        };
        assert!(data.len() >= min);
        let _ = h.material_version;
    }
    if let Some((head, _nonce, sealed)) = blob::split_direct(data) {
        assert_eq!(head.len() + sealed.len(), data.len());
        assert!(sealed.len() >= 16);
    }
    // A blob the fuzzer made up cannot carry a valid tag under this key.
    assert!(blob::open(&key, data, b"").is_err());
    assert!(blob::open(&key, data, b"\x00\x01\x00\x01a\x00\x01b").is_err());
});

//! Any bytes read back as a wrapped secret (key material, secret access key).
#![no_main]

use coffer_crypto::{Key256, wrap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key256::from_slice(&[9u8; 32]).expect("32 bytes");
    assert!(wrap::unwrap(&key, b"coffer/kms/key-material/v1/x/1", data).is_err());
});

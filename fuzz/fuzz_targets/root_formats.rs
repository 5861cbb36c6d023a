//! Any bytes as an unseal share (submitted over the network), a keyring, or a root.json.
#![no_main]

use coffer_kms::root::{RootConfig, decode_keyring, decode_share};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(share) = decode_share(text) {
            assert!(share.index != 0);
        }
    }
    if let Ok(gens) = decode_keyring(data) {
        assert!(!gens.is_empty());
    }
    let _ = RootConfig::parse(std::path::Path::new("root.json"), data);
});

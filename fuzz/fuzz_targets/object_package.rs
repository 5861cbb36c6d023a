//! Any bytes read back as a stored object: the header decoder and the package opener must refuse
//! or open, never panic, and never open something this key did not seal.
#![no_main]

use coffer_crypto::Key256;
use coffer_crypto::package::{self, ObjectHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = ObjectHeader::decode(data) else {
        return;
    };
    let key = Key256::from_slice(&[5u8; 32]).expect("32 bytes");
    assert!(h.packages() >= 1);
    for i in 0..h.packages().min(4) {
        if let Some((at, len)) = h.package_span(i) {
            let start = (at as usize).min(data.len());
            let end = at.saturating_add(len).min(data.len() as u64) as usize;
            assert!(package::open_package(&key, &h, i, &data[start..end]).is_err());
        }
    }
    if h.plaintext_len > 0 {
        let _ = h.packages_for(0, h.plaintext_len - 1);
    }
});

//! AWS Encryption SDK messages: the encryption context and header parsers, and whole-message
//! decryption with a raw AES key the seeds (fuzz/seeds/esdk_message) were encrypted under, so
//! mutations reach the body, frames and signature footer. Every input must end in a result,
//! never a panic or an allocation the input's length does not justify.
#![no_main]

use coffer_esdk::{CommitmentPolicy, DecryptOptions, Header, RawAesKeyring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = coffer_esdk::context::parse(data);
    let mut r = data;
    let _ = Header::read(&mut r, Some(64));
    let ring = RawAesKeyring::new("fuzz", "key", &[7u8; 32]).expect("key");
    let opts = DecryptOptions {
        commitment_policy: CommitmentPolicy::RequireEncryptAllowDecrypt,
        max_frame_bytes: 1 << 20,
        ..Default::default()
    };
    let _ = coffer_esdk::decrypt_to_vec(&ring, &opts, data);
});

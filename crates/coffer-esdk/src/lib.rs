//! The AWS Encryption SDK message format, so that what Coffer encrypts opens with the AWS
//! Encryption SDK in any language and the other way round: versions 1 and 2, all 11 algorithm
//! suites, framed and non-framed bodies, signatures and key commitment, commitment policies, and
//! the keyrings (raw AES, raw RSA, multi, AWS KMS with or without discovery).
//!
//! Encryption and decryption stream ([`encrypt`], [`decrypt`]); [`decrypt_to_vec`] releases
//! plaintext only once the whole message has verified.

pub mod context;
mod error;
pub mod fields;
pub mod header;
pub mod keyring;
pub mod kms;
mod message;
pub mod suite;

pub use context::Context;
pub use error::Error;
pub use header::{ContentType, EncryptedDataKey, Header};
pub use keyring::{Keyring, MultiKeyring, RawAesKeyring, RawRsaKeyring};
pub use message::{
    CommitmentPolicy, DEFAULT_FRAME_LENGTH, DecryptOptions, EncryptOptions, MAX_NON_FRAMED,
    MessageInfo, decrypt, decrypt_to_vec, encrypt, encrypt_to_vec,
};
pub use suite::Suite;

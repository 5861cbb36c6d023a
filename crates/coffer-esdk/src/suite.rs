//! The algorithm suites of the message format: what each one encrypts with, how it derives the
//! data encryption key, whether it signs and whether it commits to its key.

use coffer_crypto::esdk::{Curve, Hash};

/// One of the format's 11 algorithm suites, by its two-byte id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suite {
    /// 0x0014: AES-128-GCM, no key derivation.
    Aes128GcmIv12Tag16,
    /// 0x0046: AES-192-GCM, no key derivation.
    Aes192GcmIv12Tag16,
    /// 0x0078: AES-256-GCM, no key derivation.
    Aes256GcmIv12Tag16,
    /// 0x0114: AES-128-GCM, HKDF-SHA256.
    Aes128GcmHkdfSha256,
    /// 0x0146: AES-192-GCM, HKDF-SHA256.
    Aes192GcmHkdfSha256,
    /// 0x0178: AES-256-GCM, HKDF-SHA256.
    Aes256GcmHkdfSha256,
    /// 0x0214: AES-128-GCM, HKDF-SHA256, ECDSA P-256.
    Aes128GcmHkdfSha256EcdsaP256,
    /// 0x0346: AES-192-GCM, HKDF-SHA384, ECDSA P-384.
    Aes192GcmHkdfSha384EcdsaP384,
    /// 0x0378: AES-256-GCM, HKDF-SHA384, ECDSA P-384.
    Aes256GcmHkdfSha384EcdsaP384,
    /// 0x0478: AES-256-GCM, HKDF-SHA512, key commitment (message format version 2).
    Aes256GcmHkdfSha512Commit,
    /// 0x0578: AES-256-GCM, HKDF-SHA512, key commitment, ECDSA P-384 (the default).
    Aes256GcmHkdfSha512CommitEcdsaP384,
}

impl Suite {
    /// Every suite, in id order.
    pub const ALL: [Suite; 11] = [
        Suite::Aes128GcmIv12Tag16,
        Suite::Aes192GcmIv12Tag16,
        Suite::Aes256GcmIv12Tag16,
        Suite::Aes128GcmHkdfSha256,
        Suite::Aes192GcmHkdfSha256,
        Suite::Aes256GcmHkdfSha256,
        Suite::Aes128GcmHkdfSha256EcdsaP256,
        Suite::Aes192GcmHkdfSha384EcdsaP384,
        Suite::Aes256GcmHkdfSha384EcdsaP384,
        Suite::Aes256GcmHkdfSha512Commit,
        Suite::Aes256GcmHkdfSha512CommitEcdsaP384,
    ];

    pub fn id(self) -> u16 {
        match self {
            Suite::Aes128GcmIv12Tag16 => 0x0014,
            Suite::Aes192GcmIv12Tag16 => 0x0046,
            Suite::Aes256GcmIv12Tag16 => 0x0078,
            Suite::Aes128GcmHkdfSha256 => 0x0114,
            Suite::Aes192GcmHkdfSha256 => 0x0146,
            Suite::Aes256GcmHkdfSha256 => 0x0178,
            Suite::Aes128GcmHkdfSha256EcdsaP256 => 0x0214,
            Suite::Aes192GcmHkdfSha384EcdsaP384 => 0x0346,
            Suite::Aes256GcmHkdfSha384EcdsaP384 => 0x0378,
            Suite::Aes256GcmHkdfSha512Commit => 0x0478,
            Suite::Aes256GcmHkdfSha512CommitEcdsaP384 => 0x0578,
        }
    }

    pub fn from_id(id: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name the AWS Encryption SDKs give the suite (e.g. in the aws-encryption-cli).
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes128GcmIv12Tag16 => "AES_128_GCM_IV12_TAG16",
            Suite::Aes192GcmIv12Tag16 => "AES_192_GCM_IV12_TAG16",
            Suite::Aes256GcmIv12Tag16 => "AES_256_GCM_IV12_TAG16",
            Suite::Aes128GcmHkdfSha256 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256",
            Suite::Aes192GcmHkdfSha256 => "AES_192_GCM_IV12_TAG16_HKDF_SHA256",
            Suite::Aes256GcmHkdfSha256 => "AES_256_GCM_IV12_TAG16_HKDF_SHA256",
            Suite::Aes128GcmHkdfSha256EcdsaP256 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256",
            Suite::Aes192GcmHkdfSha384EcdsaP384 => "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
            Suite::Aes256GcmHkdfSha384EcdsaP384 => "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
            Suite::Aes256GcmHkdfSha512Commit => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            Suite::Aes256GcmHkdfSha512CommitEcdsaP384 => {
                "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"
            }
        }
    }

    /// A suite by its name or its id (`0x0578`, `578`, `1400`).
    pub fn parse(s: &str) -> Option<Suite> {
        let t = s.trim();
        if let Some(x) = Suite::ALL
            .into_iter()
            .find(|x| x.name().eq_ignore_ascii_case(t))
        {
            return Some(x);
        }
        let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
        let id = match hex {
            Some(h) => u16::from_str_radix(h, 16).ok()?,
            None => u16::from_str_radix(t, 16).ok()?,
        };
        Suite::from_id(id)
    }

    /// The message format version the suite is written in.
    pub fn message_version(self) -> u8 {
        if self.is_committing() { 2 } else { 1 }
    }

    /// Length of the data encryption key (and, for these suites, of the data key itself).
    pub fn key_len(self) -> usize {
        match self.id() & 0xff {
            0x14 => 16,
            0x46 => 24,
            _ => 32,
        }
    }

    /// The HKDF hash, or `None` when the data key is the encryption key.
    pub fn kdf(self) -> Option<Hash> {
        match self.id() >> 8 {
            0x00 => None,
            0x01 => Some(Hash::Sha256),
            0x02 if self == Suite::Aes128GcmHkdfSha256EcdsaP256 => Some(Hash::Sha256),
            0x03 => Some(Hash::Sha384),
            _ => Some(Hash::Sha512),
        }
    }

    pub fn signature(self) -> Option<Curve> {
        match self {
            Suite::Aes128GcmHkdfSha256EcdsaP256 => Some(Curve::P256),
            Suite::Aes192GcmHkdfSha384EcdsaP384
            | Suite::Aes256GcmHkdfSha384EcdsaP384
            | Suite::Aes256GcmHkdfSha512CommitEcdsaP384 => Some(Curve::P384),
            _ => None,
        }
    }

    pub fn is_committing(self) -> bool {
        matches!(
            self,
            Suite::Aes256GcmHkdfSha512Commit | Suite::Aes256GcmHkdfSha512CommitEcdsaP384
        )
    }

    /// Length of the message id in the header.
    pub fn message_id_len(self) -> usize {
        if self.is_committing() { 32 } else { 16 }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:04X} ({})", self.id(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_properties() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_id(s.id()), Some(s));
            assert_eq!(Suite::parse(s.name()), Some(s));
            assert_eq!(Suite::parse(&format!("0x{:04x}", s.id())), Some(s));
        }
        assert_eq!(
            Suite::parse("578"),
            Some(Suite::Aes256GcmHkdfSha512CommitEcdsaP384)
        );
        assert_eq!(Suite::from_id(0x0278), None);
        assert_eq!(Suite::Aes192GcmHkdfSha384EcdsaP384.key_len(), 24);
        assert_eq!(
            Suite::Aes192GcmHkdfSha384EcdsaP384.kdf(),
            Some(Hash::Sha384)
        );
        assert_eq!(
            Suite::Aes128GcmHkdfSha256EcdsaP256.kdf(),
            Some(Hash::Sha256)
        );
        assert_eq!(Suite::Aes256GcmHkdfSha512Commit.kdf(), Some(Hash::Sha512));
        assert_eq!(Suite::Aes256GcmIv12Tag16.kdf(), None);
        assert_eq!(
            Suite::Aes256GcmHkdfSha512CommitEcdsaP384.message_version(),
            2
        );
        assert_eq!(Suite::Aes256GcmHkdfSha384EcdsaP384.message_version(), 1);
    }
}

//! The checksums S3 lets a client attach to an object (`x-amz-checksum-<algorithm>`, in a header
//! or an `aws-chunked` trailer): CRC-32, CRC-32C, CRC-64/NVME, SHA-1 and SHA-256, each sent as the
//! base64 of its big-endian bytes. They detect damage in transit; they protect nothing.

use aws_lc_rs::digest;
use base64::Engine;

/// A checksum algorithm S3 accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// The name S3 uses (`CRC32`, `CRC64NVME`, …).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The header carrying it: `x-amz-checksum-crc32`, ….
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// Parses an algorithm name, in any case.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// The algorithm a checksum header names.
    pub fn from_header(h: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(h))
    }

    /// Bytes in the checksum value.
    pub fn value_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }
}

enum State {
    Crc(Box<crc_fast::Digest>),
    Hash(digest::Context),
}

/// A checksum computed as data arrives.
pub struct Checksum {
    algorithm: Algorithm,
    state: State,
}

impl std::fmt::Debug for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checksum")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Checksum {
    pub fn new(algorithm: Algorithm) -> Self {
        use crc_fast::CrcAlgorithm as C;
        let state = match algorithm {
            Algorithm::Crc32 => State::Crc(Box::new(crc_fast::Digest::new(C::Crc32IsoHdlc))),
            Algorithm::Crc32c => State::Crc(Box::new(crc_fast::Digest::new(C::Crc32Iscsi))),
            Algorithm::Crc64Nvme => State::Crc(Box::new(crc_fast::Digest::new(C::Crc64Nvme))),
            Algorithm::Sha1 => State::Hash(digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY)),
            Algorithm::Sha256 => State::Hash(digest::Context::new(&digest::SHA256)),
        };
        Self { algorithm, state }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Crc(d) => d.update(data),
            State::Hash(c) => c.update(data),
        }
    }

    /// The checksum's bytes, big-endian for the CRCs.
    pub fn finish(self) -> Vec<u8> {
        match self.state {
            State::Crc(d) => {
                let v = d.finalize();
                match self.algorithm {
                    Algorithm::Crc64Nvme => v.to_be_bytes().to_vec(),
                    _ => (v as u32).to_be_bytes().to_vec(),
                }
            }
            State::Hash(c) => c.finish().as_ref().to_vec(),
        }
    }

    /// The checksum as S3 sends it: base64.
    pub fn finish_base64(self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.finish())
    }
}

/// The CRC of consecutive pieces joined, from each piece's CRC (S3's base64 form) and length:
/// what S3 calls a FULL_OBJECT checksum of a multipart object. `None` for the SHA algorithms
/// (which do not combine) or a value that is not a checksum of this algorithm.
pub fn combine(algorithm: Algorithm, pieces: &[(&str, u64)]) -> Option<String> {
    use crc_fast::CrcAlgorithm as C;
    let crc = match algorithm {
        Algorithm::Crc32 => C::Crc32IsoHdlc,
        Algorithm::Crc32c => C::Crc32Iscsi,
        Algorithm::Crc64Nvme => C::Crc64Nvme,
        Algorithm::Sha1 | Algorithm::Sha256 => return None,
    };
    let value = |b64: &str| -> Option<u64> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        if bytes.len() != algorithm.value_len() {
            return None;
        }
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let (first, rest) = pieces.split_first()?;
    let mut acc = value(first.0)?;
    for (b64, len) in rest {
        acc = crc_fast::checksum_combine(crc, acc, value(b64)?, *len);
    }
    let bytes = match algorithm {
        Algorithm::Crc64Nvme => acc.to_be_bytes().to_vec(),
        _ => (acc as u32).to_be_bytes().to_vec(),
    };
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The checksum of `data` in S3's base64 form.
pub fn of(algorithm: Algorithm, data: &[u8]) -> String {
    let mut c = Checksum::new(algorithm);
    c.update(data);
    c.finish_base64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's check values for "123456789", and the SHA digests of it.
    #[test]
    fn check_values() {
        let b64 = |hex: &str| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        assert_eq!(of(Algorithm::Crc32, b"123456789"), b64("cbf43926"));
        assert_eq!(of(Algorithm::Crc32c, b"123456789"), b64("e3069283"));
        assert_eq!(
            of(Algorithm::Crc64Nvme, b"123456789"),
            b64("ae8b14860a799888")
        );
        assert_eq!(
            of(Algorithm::Sha1, b"123456789"),
            b64("f7c3bc1d808e04732adf679965ccc34ca7ae3441")
        );
        assert_eq!(
            of(Algorithm::Sha256, b"123456789"),
            b64("15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225")
        );
        // S3's documented empty-body CRC32 is AAAAAA==.
        assert_eq!(of(Algorithm::Crc32, b""), "AAAAAA==");
    }

    #[test]
    fn crcs_combine_into_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, rest) = data.split_at(40_000);
        let (b, c) = rest.split_at(35_000);
        for alg in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme] {
            let parts = [of(alg, a), of(alg, b), of(alg, c)];
            let pieces = [
                (parts[0].as_str(), a.len() as u64),
                (parts[1].as_str(), b.len() as u64),
                (parts[2].as_str(), c.len() as u64),
            ];
            assert_eq!(combine(alg, &pieces), Some(of(alg, &data)), "{alg:?}");
        }
        assert_eq!(combine(Algorithm::Sha256, &[("x", 1)]), None);
    }

    #[test]
    fn names_and_headers() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            assert_eq!(Algorithm::from_header(a.header()), Some(a));
            assert_eq!(Checksum::new(a).finish().len(), a.value_len());
        }
        assert_eq!(Algorithm::from_name("md5"), None);
    }
}

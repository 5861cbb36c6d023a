//! Shamir secret sharing of a key over GF(256), by vsss-rs (audited).
//!
//! A split returns `shares` byte strings; any `threshold` of them rebuild the secret and fewer reveal
//! nothing about it. Each share is the vsss-rs byte form: a one-byte participant identifier, then one
//! byte per secret byte. Shares carry no integrity of their own: callers frame them with whatever
//! lets a wrong share be told apart (Coffer's unseal shares carry a set id, a digest registered at
//! init and a checksum).

use std::convert::Infallible;

use crate::{CryptoError, SecretBytes};

/// Most shares a split may produce (GF(256) has 255 non-zero participant identifiers).
pub const MAX_SHARES: usize = 255;

/// Splits `secret` into `shares` shares, any `threshold` of which rebuild it.
pub fn split(
    secret: &[u8],
    threshold: usize,
    shares: usize,
) -> Result<Vec<SecretBytes>, CryptoError> {
    if threshold < 2 || threshold > shares || shares > MAX_SHARES || secret.is_empty() {
        return Err(CryptoError::Malformed("share parameters"));
    }
    let mut rng = SystemRng { failed: false };
    let out = vsss_rs::Gf256::split_bytes(threshold, shares, secret, &mut rng)
        .map_err(|_| CryptoError::Unspecified)?;
    if rng.failed {
        return Err(CryptoError::Unspecified);
    }
    Ok(out.into_iter().map(SecretBytes::new).collect())
}

/// Rebuilds a secret from at least `threshold` distinct shares of one split. With shares of
/// different splits, or too few, the result is a wrong secret, not an error: check it.
pub fn combine(shares: &[&[u8]]) -> Result<SecretBytes, CryptoError> {
    let first = shares.first().ok_or(CryptoError::Malformed("share set"))?;
    if shares.len() < 2 || first.len() < 2 || shares.iter().any(|s| s.len() != first.len()) {
        return Err(CryptoError::Malformed("share set"));
    }
    let mut ids: Vec<u8> = shares.iter().map(|s| s[0]).collect();
    ids.sort_unstable();
    if ids.contains(&0) || ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(CryptoError::Malformed("share set"));
    }
    let plain: Vec<Vec<u8>> = shares.iter().map(|s| s.to_vec()).collect();
    let result = vsss_rs::Gf256::combine_bytes(&plain);
    for mut p in plain {
        zeroize::Zeroize::zeroize(&mut p);
    }
    result
        .map(SecretBytes::new)
        .map_err(|_| CryptoError::Malformed("share set"))
}

/// The operating system's CSPRNG (through aws-lc) in the shape vsss-rs asks for. That shape cannot
/// fail, so a failure is remembered and the split that saw it is discarded.
struct SystemRng {
    failed: bool,
}

impl rand_core::TryRng for SystemRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if crate::fill_random(dst).is_err() {
            self.failed = true;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SystemRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_rebuilds_and_fewer_do_not() {
        let secret = [7u8; 32];
        let shares = split(&secret, 3, 5).expect("split");
        assert_eq!(shares.len(), 5);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let got =
                        combine(&[shares[a].expose(), shares[b].expose(), shares[c].expose()])
                            .expect("combine");
                    assert_eq!(got.expose(), &secret);
                }
                let two = combine(&[shares[a].expose(), shares[b].expose()]).expect("combine");
                assert_ne!(two.expose(), &secret);
            }
        }
    }

    #[test]
    fn refuses_bad_parameters_and_sets() {
        assert!(split(&[1; 32], 1, 3).is_err());
        assert!(split(&[1; 32], 4, 3).is_err());
        assert!(split(&[1; 32], 2, 256).is_err());
        assert!(split(&[], 2, 3).is_err());
        let s = split(&[1; 32], 2, 3).expect("split");
        assert!(combine(&[s[0].expose()]).is_err());
        assert!(combine(&[s[0].expose(), s[0].expose()]).is_err());
        assert!(combine(&[s[0].expose(), &s[1].expose()[..10]]).is_err());
        assert!(combine(&[]).is_err());
    }
}

//! The canonical encoding of a KMS encryption context, used as associated data.
//!
//! The encoding is unambiguous: pairs sorted by key (byte order), a big-endian u16 pair count, then
//! for each pair the key and the value, each as a big-endian u16 length followed by UTF-8 bytes.
//! `{"a":"bc"}` and `{"ab":"c"}` therefore never encode alike. See `docs/formats.md`.

use std::collections::BTreeMap;

use crate::CryptoError;

/// Encodes an encryption context. Keys and values longer than 65535 bytes, or more than 65535 pairs,
/// are refused (the API layer bounds them far below that).
pub fn encode(ctx: &BTreeMap<String, String>) -> Result<Vec<u8>, CryptoError> {
    let count =
        u16::try_from(ctx.len()).map_err(|_| CryptoError::Malformed("encryption context"))?;
    let mut out = Vec::with_capacity(
        2 + ctx
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in ctx {
        for s in [k, v] {
            let len =
                u16::try_from(s.len()).map_err(|_| CryptoError::Malformed("encryption context"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn boundaries_are_unambiguous() {
        assert_ne!(
            encode(&ctx(&[("a", "bc")])).expect("small"),
            encode(&ctx(&[("ab", "c")])).expect("small")
        );
        assert_ne!(
            encode(&ctx(&[])).expect("empty"),
            encode(&ctx(&[("", "")])).expect("small")
        );
    }

    #[test]
    fn order_does_not_matter() {
        let a = encode(&ctx(&[("x", "1"), ("y", "2")])).expect("small");
        let b = encode(&ctx(&[("y", "2"), ("x", "1")])).expect("small");
        assert_eq!(a, b);
        assert_eq!(a, b"\x00\x02\x00\x01x\x00\x011\x00\x01y\x00\x012");
    }
}

//! The encryption context: its serialization (in the header and as the raw AES keyring's AAD)
//! and the reserved `aws-crypto-` keys.

use std::collections::BTreeMap;

use crate::error::{Error, malformed};

/// The encryption context of a message: UTF-8 key-value pairs, kept sorted by key (UTF-8 byte
/// order, which is the order `String`'s `Ord` gives).
pub type Context = BTreeMap<String, String>;

/// Prefix of the keys the format reserves for itself.
pub const RESERVED_PREFIX: &str = "aws-crypto-";
/// The key under which signed suites carry the public verification key.
pub const PUBLIC_KEY: &str = "aws-crypto-public-key";

/// The serialized context: nothing when empty, else a count and the pairs in key order.
pub fn serialize(ctx: &Context) -> Result<Vec<u8>, Error> {
    if ctx.is_empty() {
        return Ok(Vec::new());
    }
    let count =
        u16::try_from(ctx.len()).map_err(|_| Error::Context("more than 65,535 entries".into()))?;
    let mut out = count.to_be_bytes().to_vec();
    for (k, v) in ctx {
        for s in [k, v] {
            let n = u16::try_from(s.len()).map_err(|_| {
                Error::Context(format!(
                    "an entry longer than 65,535 bytes (key '{}')",
                    k.chars().take(40).collect::<String>()
                ))
            })?;
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    if out.len() > u16::MAX as usize {
        return Err(Error::Context(format!(
            "serialized to {} bytes, more than the format's 65,535",
            out.len()
        )));
    }
    Ok(out)
}

/// Parses a serialized context (the whole of `bytes`). Duplicate keys and invalid UTF-8 are
/// refused.
pub fn parse(bytes: &[u8]) -> Result<Context, Error> {
    let mut ctx = Context::new();
    if bytes.is_empty() {
        return Ok(ctx);
    }
    let mut r = bytes;
    let count = take_u16(&mut r)?;
    if count == 0 {
        return Err(malformed("encryption context has length but no entries"));
    }
    for _ in 0..count {
        let k = take_str(&mut r)?;
        let v = take_str(&mut r)?;
        if ctx.insert(k.clone(), v).is_some() {
            return Err(malformed(format!(
                "encryption context has the key '{k}' twice"
            )));
        }
    }
    if !r.is_empty() {
        return Err(malformed("bytes after the encryption context's entries"));
    }
    Ok(ctx)
}

fn take_u16(r: &mut &[u8]) -> Result<u16, Error> {
    if r.len() < 2 {
        return Err(malformed("encryption context ends inside an entry"));
    }
    let v = u16::from_be_bytes([r[0], r[1]]);
    *r = &r[2..];
    Ok(v)
}

fn take_str(r: &mut &[u8]) -> Result<String, Error> {
    let n = take_u16(r)? as usize;
    if r.len() < n {
        return Err(malformed("encryption context ends inside an entry"));
    }
    let s = std::str::from_utf8(&r[..n])
        .map_err(|_| malformed("encryption context entry is not UTF-8"))?
        .to_owned();
    *r = &r[n..];
    Ok(s)
}

/// Refuses a caller's context that uses a reserved key.
pub fn check_caller_context(ctx: &Context) -> Result<(), Error> {
    if let Some(k) = ctx.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
        return Err(Error::Context(format!(
            "the key '{k}' uses the reserved prefix '{RESERVED_PREFIX}'; choose another name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_sorted_and_empty() {
        assert!(serialize(&Context::new()).expect("empty").is_empty());
        let mut c = Context::new();
        c.insert("b".into(), "2".into());
        c.insert("a".into(), "1".into());
        let s = serialize(&c).expect("ser");
        assert_eq!(s, b"\x00\x02\x00\x01a\x00\x011\x00\x01b\x00\x012");
        assert_eq!(parse(&s).expect("parse"), c);
    }

    #[test]
    fn refuses_duplicates_trailing_and_truncation() {
        assert!(parse(b"\x00\x02\x00\x01a\x00\x011\x00\x01a\x00\x012").is_err());
        assert!(parse(b"\x00\x01\x00\x01a\x00\x011x").is_err());
        assert!(parse(b"\x00\x01\x00\x01a\x00\x05").is_err());
        assert!(parse(b"\x00\x00").is_err());
        assert!(parse(b"\x00\x01\x00\x01\xff\x00\x00").is_err());
    }

    #[test]
    fn reserved_prefix() {
        let mut c = Context::new();
        c.insert("aws-crypto-x".into(), "1".into());
        assert!(check_caller_context(&c).is_err());
    }
}

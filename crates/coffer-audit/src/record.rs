//! One line of a segment file, and the hash chain over lines.

use serde::{Deserialize, Serialize};

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line accepted when reading a segment (an event with a 32 KiB policy fits many times).
pub const MAX_LINE: usize = 1024 * 1024;

/// A record: its position in the chain, the hash of the line before it, and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// Lowercase hex SHA-256 of the previous record's line (without its newline).
    pub prev: String,
    #[serde(flatten)]
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordBody {
    /// A CloudTrail-shaped event of one request.
    Event(serde_json::Value),
    /// The first record of every segment.
    Start(Start),
    /// A signed statement of the chain's head.
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Start {
    pub segment: u64,
    pub time: String,
    /// `startup` or `rotation`.
    pub reason: String,
    pub coffer_version: String,
    /// Bytes of an unfinished last line (a write cut short by a crash, never acknowledged) that
    /// were removed from the previous segment at startup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_torn_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Digest {
    pub segment: u64,
    /// The record the digest covers (the one just before it).
    pub last_seq: u64,
    /// Hash of that record's line: the head of the chain.
    pub chain: String,
    pub time: String,
    /// `interval`, `close` (the segment ends here) or `recovery` (closed at the next start after
    /// the process stopped without closing it).
    pub reason: String,
    /// First 16 hex characters of SHA-256 of the signing key's DER SubjectPublicKeyInfo.
    pub key: String,
    /// Base64 ECDSA P-384 / SHA-384 signature (ASN.1 DER) of [`Digest::signed_bytes`].
    pub signature: String,
}

impl Digest {
    /// What the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "coffer-audit-digest-v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.segment, self.last_seq, self.chain, self.time, self.reason, self.key
        )
        .into_bytes()
    }

    /// Whether this digest ends its segment.
    pub fn closes(&self) -> bool {
        self.reason == "close" || self.reason == "recovery"
    }
}

/// The chain hash of a line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(line))
}

/// Fingerprint of a signing key, as digests name it.
pub fn key_fingerprint(spki_der: &[u8]) -> String {
    let mut h = coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(spki_der));
    h.truncate(16);
    h
}

impl Record {
    /// Parses one line; any malformation is an error naming the problem, never a panic.
    pub fn parse(line: &[u8]) -> Result<Record, String> {
        if line.len() > MAX_LINE {
            return Err(format!("the line is longer than {MAX_LINE} bytes"));
        }
        let r: Record =
            serde_json::from_slice(line).map_err(|e| format!("not a valid record: {e}"))?;
        if r.prev.len() != 64
            || !r
                .prev
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err("`prev` is not 64 lowercase hex characters".into());
        }
        Ok(r)
    }

    /// The line this record is written as (without the newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Current time as CloudTrail writes it (`2026-11-22T13:48:14Z`).
pub fn now_rfc3339() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_lines_are_errors() {
        let r = Record {
            seq: 7,
            prev: GENESIS.into(),
            body: RecordBody::Event(serde_json::json!({"eventName": "Encrypt"})),
        };
        let line = r.to_line();
        assert!(line.starts_with(br#"{"seq":7,"prev":"000"#));
        assert_eq!(Record::parse(&line).expect("parse"), r);
        for bad in [
            &b""[..],
            b"{",
            b"null",
            br#"{"seq":1,"prev":"00","event":{}}"#,
            br#"{"seq":-1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","event":{}}"#,
            br#"{"seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
            br#"{"seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","event":{},"start":{}}"#,
        ] {
            assert!(Record::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

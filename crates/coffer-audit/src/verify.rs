//! Checking a log: every line parses, seqs run without gaps, every record chains to the one before,
//! every digest is signed by the audit key and states the chain correctly, segments run without gaps
//! and each closed one ends with its closing digest, and the signed head is still in the chain.

use std::path::Path;

use base64::Engine;
use coffer_crypto::keys::{KeySpec, verify_ecdsa_with_public_key};
use serde::Serialize;

use crate::record::{self, Digest, GENESIS, Record, RecordBody};
use crate::{AuditError, HEAD_FILE, Result, segment_name, segments};

/// Where the chain first breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub segment: u64,
    /// 1-based line in the segment file (0: the segment as a whole or `head.json`).
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{} line {}: {}",
                segment_name(self.segment),
                self.line,
                self.message
            )
        } else if self.segment > 0 {
            write!(f, "{}: {}", segment_name(self.segment), self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub segments: u64,
    pub records: u64,
    pub events: u64,
    pub digests: u64,
    pub last_seq: u64,
    /// Records after the last signed digest (a running log, or one stopped by a crash): chained,
    /// but not yet covered by a signature.
    pub unsigned_tail: u64,
    /// The last segment has not been closed (the server is running, or was stopped by a crash).
    pub open: bool,
    pub head_checked: bool,
    /// The first problem found; `None` when the log is intact.
    pub problem: Option<Break>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

struct Checker<'a> {
    public_key: &'a [u8],
    key: String,
    report: VerifyReport,
    expect_seq: u64,
    prev: String,
    head: Option<Digest>,
    head_hash_seen: Option<String>,
    any_digest: bool,
}

fn brk(segment: u64, line: u64, message: impl Into<String>) -> Break {
    Break {
        segment,
        line,
        message: message.into(),
    }
}

impl<'a> Checker<'a> {
    fn check_digest(
        &self,
        d: &Digest,
        segment: u64,
        line: u64,
        seq: u64,
        prev: &str,
    ) -> Option<Break> {
        if d.key != self.key {
            return Some(brk(
                segment,
                line,
                format!(
                    "digest (seq {seq}) is signed by key {}, not by the audit key {} given for verification",
                    d.key, self.key
                ),
            ));
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&d.signature)
            .unwrap_or_default();
        let valid = verify_ecdsa_with_public_key(
            KeySpec::EccNistP384,
            self.public_key,
            &d.signed_bytes(),
            &sig,
        )
        .unwrap_or(false);
        if !valid {
            return Some(brk(
                segment,
                line,
                format!(
                    "digest (seq {seq}) has no valid signature: the digest was altered or forged"
                ),
            ));
        }
        if d.segment != segment || d.last_seq + 1 != seq || d.chain != prev {
            return Some(brk(
                segment,
                line,
                format!(
                    "digest (seq {seq}) states segment {} up to seq {} with head {}, which is not the chain it stands in",
                    d.segment, d.last_seq, d.chain
                ),
            ));
        }
        None
    }

    fn new(public_key: &'a [u8]) -> Self {
        Checker {
            public_key,
            key: record::key_fingerprint(public_key),
            report: VerifyReport::default(),
            expect_seq: 1,
            prev: GENESIS.to_owned(),
            head: None,
            head_hash_seen: None,
            any_digest: false,
        }
    }

    fn segment(&mut self, n: u64, data: &[u8], last: bool) -> Option<Break> {
        // In the open (last) segment, zeros follow the written data: space the writer
        // preallocated. Records never contain a zero byte.
        let end = if last {
            data.iter().position(|b| *b == 0).unwrap_or(data.len())
        } else {
            data.len()
        };
        let data = &data[..end];
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < data.len() && !last {
            let line = data[..complete].iter().filter(|b| **b == b'\n').count() as u64 + 1;
            return Some(brk(
                n,
                line,
                "unfinished line in the middle of the log: the segment was cut or altered",
            ));
        }
        let mut closed = false;
        let mut line_no = 0u64;
        let lines = data[..complete]
            .strip_suffix(b"\n")
            .map(|b| b.split(|c| *c == b'\n'))
            .into_iter()
            .flatten();
        for line in lines {
            line_no += 1;
            if closed {
                return Some(brk(
                    n,
                    line_no,
                    "a record follows the segment's closing digest: records were inserted",
                ));
            }
            let rec = match Record::parse(line) {
                Ok(r) => r,
                Err(e) => {
                    return Some(brk(
                        n,
                        line_no,
                        format!(
                            "{e}: the record was altered (expected seq {})",
                            self.expect_seq
                        ),
                    ));
                }
            };
            if rec.seq > self.expect_seq {
                let missing = if rec.seq == self.expect_seq + 1 {
                    format!("seq {}", self.expect_seq)
                } else {
                    format!("seqs {} to {}", self.expect_seq, rec.seq - 1)
                };
                return Some(brk(
                    n,
                    line_no,
                    format!(
                        "found seq {} where seq {} belongs: {missing} removed or moved",
                        rec.seq, self.expect_seq
                    ),
                ));
            }
            if rec.seq < self.expect_seq {
                return Some(brk(
                    n,
                    line_no,
                    format!(
                        "found seq {} where seq {} belongs: a record was inserted, repeated or moved",
                        rec.seq, self.expect_seq
                    ),
                ));
            }
            if rec.prev != self.prev {
                let what = if rec.seq == 1 {
                    "the first record does not start the chain".to_owned()
                } else {
                    format!(
                        "the record before it (seq {}) does not hash to what seq {} chains to: seq {} was altered",
                        rec.seq - 1,
                        rec.seq,
                        rec.seq - 1
                    )
                };
                return Some(brk(n, line_no, what));
            }
            match &rec.body {
                RecordBody::Start(s) => {
                    if line_no != 1 || s.segment != n {
                        return Some(brk(
                            n,
                            line_no,
                            format!(
                                "a start record of segment {} stands here: records were moved",
                                s.segment
                            ),
                        ));
                    }
                }
                _ if line_no == 1 => {
                    return Some(brk(
                        n,
                        1,
                        "the segment does not begin with its start record: it was cut or replaced",
                    ));
                }
                RecordBody::Digest(d) => {
                    if let Some(b) = self.check_digest(d, n, line_no, rec.seq, &rec.prev) {
                        return Some(b);
                    }
                    self.any_digest = true;
                    self.report.digests += 1;
                    self.report.unsigned_tail = 0;
                    closed = d.closes();
                }
                RecordBody::Event(_) => self.report.events += 1,
            }
            if !matches!(rec.body, RecordBody::Digest(_)) {
                self.report.unsigned_tail += 1;
            }
            self.prev = record::line_hash(line);
            if self.head.as_ref().is_some_and(|h| h.last_seq == rec.seq) {
                self.head_hash_seen = Some(self.prev.clone());
            }
            self.report.records += 1;
            self.report.last_seq = rec.seq;
            self.expect_seq += 1;
        }
        if !closed && !last {
            return Some(brk(
                n,
                0,
                "the segment ends without its closing digest: records were cut from its end",
            ));
        }
        if last {
            self.report.open = !closed;
        }
        None
    }
}

/// Checks the log in `dir` against the audit public key (DER SubjectPublicKeyInfo).
pub fn verify(dir: &Path, public_key_der: &[u8]) -> Result<VerifyReport> {
    let head_path = dir.join(HEAD_FILE);
    let head = match std::fs::read(&head_path) {
        Ok(bytes) => Some(serde_json::from_slice::<Digest>(&bytes).map_err(|e| {
            AuditError::Invalid(format!("{} is not a digest: {e}", head_path.display()))
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io(&head_path, e)),
    };
    let mut c = Checker::new(public_key_der);
    match head {
        Some(Ok(h)) => c.head = Some(h),
        Some(Err(e)) => {
            c.report.problem = Some(brk(0, 0, format!("{e}: head.json was altered")));
            return Ok(c.report);
        }
        None => {}
    }
    let segs = segments(dir)?;
    c.report.segments = segs.len() as u64;
    if segs.is_empty() {
        c.report.problem = Some(brk(0, 0, format!("no audit segments in {}", dir.display())));
        return Ok(c.report);
    }
    for (i, &n) in segs.iter().enumerate() {
        let expected = i as u64 + 1;
        if n != expected {
            c.report.problem = Some(brk(
                expected,
                0,
                format!("segment {expected} is missing (the next present is {n}): it was deleted"),
            ));
            return Ok(c.report);
        }
        let path = dir.join(segment_name(n));
        let data = std::fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
        if let Some(b) = c.segment(n, &data, i + 1 == segs.len()) {
            c.report.problem = Some(b);
            return Ok(c.report);
        }
    }
    match &c.head {
        Some(h) => {
            let seg = segs.last().copied().unwrap_or(0);
            if let Some(b) = c.check_digest_signature_only(h) {
                c.report.problem = Some(b);
            } else if h.last_seq > c.report.last_seq {
                c.report.problem = Some(brk(
                    0,
                    0,
                    format!(
                        "the log ends at seq {} but the signed head (head.json) covers seq {}: the records \
                         after seq {} were removed (the tail was cut or the newest segment deleted; the last \
                         segment present is {})",
                        c.report.last_seq,
                        h.last_seq,
                        c.report.last_seq,
                        segment_name(seg)
                    ),
                ));
            } else if c.head_hash_seen.as_deref() != Some(h.chain.as_str()) {
                c.report.problem = Some(brk(
                    h.segment,
                    0,
                    format!(
                        "record seq {} does not match the signed head (head.json): the log was altered",
                        h.last_seq
                    ),
                ));
            } else {
                c.report.head_checked = true;
            }
        }
        None if c.any_digest => {
            c.report.problem = Some(brk(
                0,
                0,
                "head.json is missing although the log holds signed digests: it was deleted",
            ));
        }
        None => {}
    }
    Ok(c.report)
}

impl Checker<'_> {
    fn check_digest_signature_only(&self, d: &Digest) -> Option<Break> {
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&d.signature)
            .unwrap_or_default();
        let valid = d.key == self.key
            && verify_ecdsa_with_public_key(
                KeySpec::EccNistP384,
                self.public_key,
                &d.signed_bytes(),
                &sig,
            )
            .unwrap_or(false);
        (!valid).then(|| {
            brk(
                0,
                0,
                "head.json has no valid signature by the audit key: it was altered",
            )
        })
    }
}

/// Verifies one segment's bytes in isolation, as segment 1 of a log (for fuzzing the reader).
pub fn verify_segment_bytes(data: &[u8], public_key_der: &[u8]) -> Option<Break> {
    let mut c = Checker::new(public_key_der);
    c.segment(1, data, true)
}

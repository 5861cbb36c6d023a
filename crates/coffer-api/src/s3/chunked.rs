//! The `aws-chunked` content encoding S3 clients use to stream a body whose checksum (or
//! signature) is only known at the end.
//!
//! ```text
//! unsigned:  <hex size>\r\n <data> \r\n … 0\r\n <trailer lines> \r\n
//! signed:    <hex size>;chunk-signature=<sig>\r\n <data> \r\n … 0;chunk-signature=<sig>\r\n
//!            [<trailer lines> x-amz-trailer-signature:<sig>\r\n] \r\n
//! ```
//!
//! Each chunk signature signs the chunk's data hash chained to the previous signature (the first
//! to the request's own signature), so chunks can be neither altered, reordered nor dropped; the
//! trailer signature signs the trailer lines the same way. The decoder is fed bytes as they
//! arrive, in any pieces, and hands data on as soon as it is read; it never panics.

use coffer_crypto::digest::{Sha256, hex, hmac_sha256, sha256};

/// Longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer lines accepted.
const MAX_TRAILERS: usize = 16;
/// Largest chunk accepted (clients send 64 KiB; S3 allows up to its part size).
const MAX_CHUNK: u64 = 16 * 1024 * 1024;

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("The aws-chunked body is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "The request signature we calculated does not match the signature you provided for a chunk of the body."
    )]
    SignatureMismatch,
    #[error("The aws-chunked body ended before its final chunk.")]
    Incomplete,
}

/// What signs the chunks: the request's signing key and scope, and its signature (the seed).
#[derive(Clone)]
pub struct ChunkSigning {
    pub key: zeroize::Zeroizing<[u8; 32]>,
    pub scope: String,
    pub amz_date: String,
    pub seed_signature: String,
}

impl std::fmt::Debug for ChunkSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSigning")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk header line.
    Header,
    /// Reading chunk data.
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the final chunk: trailer lines up to an empty line.
    Trailers,
    Done,
}

/// An incremental `aws-chunked` decoder.
#[derive(Debug)]
pub struct Decoder {
    signing: Option<ChunkSigning>,
    previous: String,
    state: State,
    line: Vec<u8>,
    chunk_sig: Option<String>,
    chunk_hash: Sha256,
    trailers: Vec<(String, String)>,
    trailer_signature: Option<String>,
    decoded: u64,
}

impl Decoder {
    /// A decoder for unsigned chunks (`signing` is `None`) or signed chunks.
    pub fn new(signing: Option<ChunkSigning>) -> Self {
        let previous = signing
            .as_ref()
            .map(|s| s.seed_signature.clone())
            .unwrap_or_default();
        Self {
            signing,
            previous,
            state: State::Header,
            line: Vec::new(),
            chunk_sig: None,
            chunk_hash: Sha256::new(),
            trailers: Vec::new(),
            trailer_signature: None,
            decoded: 0,
        }
    }

    /// Data bytes decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Decodes `input`, handing each run of data to `out`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), ChunkError>,
    ) -> Result<(), ChunkError> {
        while !input.is_empty() {
            match self.state {
                State::Done => return Err(ChunkError::Malformed("data after the final chunk")),
                State::Data { remaining } => {
                    let n = (remaining.min(input.len() as u64)) as usize;
                    let (data, rest) = input.split_at(n);
                    if self.signing.is_some() {
                        self.chunk_hash.update(data);
                    }
                    self.decoded += n as u64;
                    out(data)?;
                    input = rest;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        self.end_chunk()?;
                        State::DataEnd
                    } else {
                        State::Data { remaining }
                    };
                }
                State::Header | State::DataEnd | State::Trailers => {
                    let Some(at) = input.iter().position(|b| *b == b'\n') else {
                        self.take_partial(input)?;
                        return Ok(());
                    };
                    self.take_partial(&input[..at])?;
                    input = &input[at + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.line_done(&line)?;
                }
            }
        }
        Ok(())
    }

    fn take_partial(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(ChunkError::Malformed(
                "a chunk header or trailer is too long",
            ));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Result<(), ChunkError> {
        let line = std::str::from_utf8(line).map_err(|_| ChunkError::Malformed("not UTF-8"))?;
        match self.state {
            State::DataEnd => {
                if !line.is_empty() {
                    return Err(ChunkError::Malformed("chunk data longer than its size"));
                }
                self.state = State::Header;
            }
            State::Header => {
                let (size, ext) = match line.split_once(';') {
                    Some((s, e)) => (s, Some(e)),
                    None => (line, None),
                };
                let size = u64::from_str_radix(size.trim(), 16)
                    .map_err(|_| ChunkError::Malformed("a chunk size is not hexadecimal"))?;
                if size > MAX_CHUNK {
                    return Err(ChunkError::Malformed("a chunk is too large"));
                }
                self.chunk_sig = match (ext, &self.signing) {
                    (Some(e), Some(_)) => Some(
                        e.trim()
                            .strip_prefix("chunk-signature=")
                            .filter(|s| s.len() == 64)
                            .ok_or(ChunkError::Malformed("a chunk signature is malformed"))?
                            .to_ascii_lowercase(),
                    ),
                    (None, Some(_)) => {
                        return Err(ChunkError::Malformed("a signed chunk has no signature"));
                    }
                    (_, None) => None,
                };
                if size == 0 {
                    self.end_chunk()?;
                    self.state = State::Trailers;
                } else {
                    self.state = State::Data { remaining: size };
                }
            }
            State::Trailers => {
                if line.is_empty() {
                    self.end_trailers()?;
                    self.state = State::Done;
                    return Ok(());
                }
                let (name, value) = line
                    .split_once(':')
                    .ok_or(ChunkError::Malformed("a trailer line has no ':'"))?;
                let name = name.trim().to_ascii_lowercase();
                let value = value.trim().to_owned();
                if name == "x-amz-trailer-signature" {
                    self.trailer_signature = Some(value.to_ascii_lowercase());
                } else {
                    if self.trailers.len() == MAX_TRAILERS {
                        return Err(ChunkError::Malformed("too many trailers"));
                    }
                    self.trailers.push((name, value));
                }
            }
            State::Data { .. } | State::Done => {}
        }
        Ok(())
    }

    /// Checks the signature of the chunk just read.
    fn end_chunk(&mut self) -> Result<(), ChunkError> {
        let hash = std::mem::take(&mut self.chunk_hash).finish();
        let Some(s) = &self.signing else {
            return Ok(());
        };
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            s.amz_date,
            s.scope,
            self.previous,
            hex(&hash)
        );
        let expected = hex(&hmac_sha256(&s.key[..], sts.as_bytes()));
        let got = self.chunk_sig.take().unwrap_or_default();
        if !coffer_crypto::ct_eq(expected.as_bytes(), got.as_bytes()) {
            return Err(ChunkError::SignatureMismatch);
        }
        self.previous = expected;
        Ok(())
    }

    /// Checks the trailer signature, when the chunks are signed and trailers came.
    fn end_trailers(&mut self) -> Result<(), ChunkError> {
        let Some(s) = &self.signing else {
            return Ok(());
        };
        match (&self.trailer_signature, self.trailers.is_empty()) {
            (None, true) => Ok(()),
            (None, false) => Err(ChunkError::Malformed("signed trailers have no signature")),
            (Some(sig), _) => {
                let mut canonical = String::new();
                for (k, v) in &self.trailers {
                    canonical.push_str(k);
                    canonical.push(':');
                    canonical.push_str(v);
                    canonical.push('\n');
                }
                let sts = format!(
                    "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
                    s.amz_date,
                    s.scope,
                    self.previous,
                    hex(&sha256(canonical.as_bytes()))
                );
                let expected = hex(&hmac_sha256(&s.key[..], sts.as_bytes()));
                if coffer_crypto::ct_eq(expected.as_bytes(), sig.as_bytes()) {
                    Ok(())
                } else {
                    Err(ChunkError::SignatureMismatch)
                }
            }
        }
    }

    /// Ends the body: the final chunk must have been read. Returns the trailers (names
    /// lowercased).
    pub fn finish(mut self) -> Result<Vec<(String, String)>, ChunkError> {
        match self.state {
            State::Done => Ok(self.trailers),
            // Some clients end the body right after the trailers, without the empty line.
            State::Trailers if self.line.is_empty() => {
                self.end_trailers()?;
                Ok(self.trailers)
            }
            _ => Err(ChunkError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, input: &[u8], step: usize) -> Result<Vec<u8>, ChunkError> {
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            d.feed(piece, &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            })?;
        }
        Ok(out)
    }

    #[test]
    fn unsigned_with_trailer_in_any_pieces() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let mut d = Decoder::new(None);
            let data = decode_all(&mut d, body, step).expect("decode");
            assert_eq!(data, b"hello world");
            assert_eq!(
                d.finish().expect("finish"),
                vec![("x-amz-checksum-crc32".to_owned(), "DUoRhQ==".to_owned())]
            );
        }
    }

    #[test]
    fn truncated_and_malformed_bodies_are_refused() {
        let mut d = Decoder::new(None);
        decode_all(&mut d, b"5\r\nhel", 100).expect("partial");
        assert_eq!(d.finish(), Err(ChunkError::Incomplete));
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX\r\n",
            b"0\r\nno-colon\r\n",
            b"0\r\n\r\nmore",
        ] {
            let mut d = Decoder::new(None);
            assert!(decode_all(&mut d, bad, 100).is_err(), "{bad:?}");
        }
    }

    /// The worked example of the AWS documentation ("Signature calculation: transfer payload in
    /// multiple chunks"): secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, 65 KiB of 'a' in a
    /// 64 KiB chunk, a 1 KiB chunk and the final chunk, seed signature 4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9.
    #[test]
    fn aws_documentation_signed_chunks() {
        let key = crate::sigv4::signing_key(
            b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        );
        let signing = ChunkSigning {
            key: zeroize::Zeroizing::new(key),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            amz_date: "20130524T000000Z".into(),
            seed_signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
                .into(),
        };
        let mut body = Vec::new();
        body.extend_from_slice(b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n");
        body.extend(std::iter::repeat_n(b'a', 65536));
        body.extend_from_slice(b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n");
        body.extend(std::iter::repeat_n(b'a', 1024));
        body.extend_from_slice(b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
        let mut d = Decoder::new(Some(signing.clone()));
        let data = decode_all(&mut d, &body, 4096).expect("decode");
        assert_eq!(data.len(), 66560);
        assert!(d.finish().expect("finish").is_empty());

        // The same body with signed trailers (the CRT's vector for these chunks: trailers
        // first:1st, second:2nd, third:3rd signed after the final chunk).
        let mut trailed = body[..body.len() - 2].to_vec();
        trailed.extend_from_slice(b"first:1st\r\nsecond:2nd\r\nthird:3rd\r\nx-amz-trailer-signature:df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c\r\n\r\n");
        let mut d = Decoder::new(Some(signing.clone()));
        decode_all(&mut d, &trailed, 1000).expect("decode");
        assert_eq!(d.finish().expect("finish").len(), 3);
        let forged = String::from_utf8_lossy(&trailed).replace("third:3rd", "third:4th");
        let mut d = Decoder::new(Some(signing.clone()));
        assert_eq!(
            decode_all(&mut d, forged.as_bytes(), 1000),
            Err(ChunkError::SignatureMismatch)
        );

        // One changed byte of data breaks that chunk's signature.
        let mut bad = body.clone();
        bad[100] = b'b';
        let mut d = Decoder::new(Some(signing));
        assert_eq!(
            decode_all(&mut d, &bad, 4096),
            Err(ChunkError::SignatureMismatch)
        );
    }
}

//! Request and response bodies of S3: checked as they stream (payload hash, `aws-chunked`
//! decoding and chunk signatures, `Content-MD5`, `x-amz-checksum-*`), sealed into a blob on a
//! blocking thread without ever holding more than a few packages in memory, and read back a
//! package at a time.
//!
//! An upload's blob is committed only after the whole body has arrived and every check passed:
//! the checks run on the async side, which hands the sealing thread its end of input only then,
//! or an error that makes it abandon the blob.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use coffer_crypto::Key256;
use coffer_crypto::checksum::{Algorithm, Checksum};
use coffer_crypto::digest::{Md5, Sha256, hex};
use coffer_store::{BlobStore, Piece, StoreError, Written};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::chunked::{ChunkError, Decoder};
use super::{Ctx, Fail, Payload};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Pieces of body in flight between the connection and the sealing thread (or back).
const IN_FLIGHT: usize = 8;

fn bad_digest(message: impl Into<String>) -> Fail {
    Fail::new(StatusCode::BAD_REQUEST, "BadDigest", message)
}

fn incomplete_body() -> Fail {
    Fail::new(
        StatusCode::BAD_REQUEST,
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    )
}

impl From<ChunkError> for Fail {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::SignatureMismatch => Fail::new(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                e.to_string(),
            ),
            ChunkError::Incomplete => incomplete_body(),
            ChunkError::Malformed(_) => Fail::invalid_request(e.to_string()),
        }
    }
}

/// The checks a body must pass, fed as it arrives.
#[derive(Debug)]
pub struct BodyCheck {
    sha256: Option<(Sha256, String)>,
    md5: Option<(Md5, [u8; 16])>,
    /// The checksum computed, and the value it must have (`None`: from a trailer, or only
    /// computed to be stored).
    checksum: Checksum,
    expected_checksum: Option<String>,
    trailer: Option<Algorithm>,
    decoder: Option<Decoder>,
    /// With `aws-chunked`: the decoded length announced.
    decoded_len: Option<u64>,
}

impl BodyCheck {
    pub fn new(ctx: &Ctx<'_>) -> Result<Self, Fail> {
        Self::build(ctx, true)
    }

    /// `header_checksums`: whether `x-amz-checksum-*` headers describe this body (not so on
    /// CompleteMultipartUpload, where they describe the whole object).
    fn build(ctx: &Ctx<'_>, header_checksums: bool) -> Result<Self, Fail> {
        let sha256 = match &ctx.payload {
            Payload::Signed(h) => Some((Sha256::new(), h.clone())),
            _ => None,
        };
        let md5 = match ctx.header("content-md5") {
            Some(v) => {
                let d: [u8; 16] = B64
                    .decode(v.trim())
                    .ok()
                    .and_then(|d| d.try_into().ok())
                    .ok_or_else(|| {
                        Fail::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidDigest",
                            "The Content-MD5 you specified was not valid.",
                        )
                    })?;
                Some((Md5::new(), d))
            }
            None => None,
        };
        // A checksum in a header, or announced for a trailer, or asked for by name; else S3's
        // default, CRC-64/NVME, computed and kept.
        let mut in_header = None;
        for a in Algorithm::ALL.into_iter().filter(|_| header_checksums) {
            if let Some(v) = ctx.header(a.header()) {
                if in_header.is_some() {
                    return Err(Fail::invalid_request(
                        "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                    ));
                }
                let ok = B64.decode(v.trim()).is_ok_and(|d| d.len() == a.value_len());
                if !ok {
                    return Err(Fail::invalid_request(format!(
                        "Value for {} header is invalid.",
                        a.header()
                    )));
                }
                in_header = Some((a, v.trim().to_owned()));
            }
        }
        let trailer = match ctx.header("x-amz-trailer") {
            Some(t) => Some(Algorithm::from_header(t.trim()).ok_or_else(|| {
                Fail::invalid_request(format!(
                    "The value specified in the x-amz-trailer header is not supported: {t}"
                ))
            })?),
            None => None,
        };
        let named = ctx
            .header("x-amz-sdk-checksum-algorithm")
            .or_else(|| ctx.header("x-amz-checksum-algorithm"))
            .map(|n| {
                Algorithm::from_name(n.trim()).ok_or_else(|| {
                    Fail::invalid_request(format!(
                        "Checksum algorithm {n} is not supported; use CRC32, CRC32C, CRC64NVME, SHA1 or SHA256."
                    ))
                })
            })
            .transpose()?;
        if trailer.is_some() && !ctx.payload.is_chunked() {
            return Err(Fail::invalid_request(
                "x-amz-trailer is only valid with an aws-chunked body (a STREAMING-… x-amz-content-sha256).",
            ));
        }
        let algorithm = in_header
            .as_ref()
            .map(|(a, _)| *a)
            .or(trailer)
            .or(named)
            .unwrap_or(Algorithm::Crc64Nvme);
        let decoder = ctx
            .payload
            .is_chunked()
            .then(|| Decoder::new(ctx.signing.clone()));
        let decoded_len = if ctx.payload.is_chunked() {
            Some(
                ctx.header("x-amz-decoded-content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        Fail::new(
                            StatusCode::LENGTH_REQUIRED,
                            "MissingContentLength",
                            "You must provide the Content-Length HTTP header (x-amz-decoded-content-length for an aws-chunked body).",
                        )
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            sha256,
            md5,
            checksum: Checksum::new(algorithm),
            expected_checksum: in_header.map(|(_, v)| v),
            trailer,
            decoder,
            decoded_len,
        })
    }

    /// The plaintext length the body will have, when known before it arrives.
    pub fn decoded_len(&self) -> Option<u64> {
        self.decoded_len
    }

    /// Checks one piece of the body as received and returns its content (decoded when
    /// `aws-chunked`).
    pub fn feed(&mut self, raw: Bytes) -> Result<Bytes, Fail> {
        if let Some((h, _)) = &mut self.sha256 {
            h.update(&raw);
        }
        let content = match &mut self.decoder {
            None => raw,
            Some(d) => {
                let mut out = BytesMut::new();
                d.feed(&raw, &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })?;
                out.freeze()
            }
        };
        if let Some((m, _)) = &mut self.md5 {
            m.update(&content);
        }
        self.checksum.update(&content);
        Ok(content)
    }

    /// Ends the body: every check must pass. Returns the checksum to keep with the object
    /// (algorithm name, base64 value).
    pub fn finish(self) -> Result<(String, String), Fail> {
        if let Some((h, claimed)) = self.sha256 {
            let computed = hex(&h.finish());
            if computed != claimed {
                return Err(Fail::new(
                    StatusCode::BAD_REQUEST,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
                .with("ClientComputedContentSHA256", claimed)
                .with("S3ComputedContentSHA256", computed));
            }
        }
        let mut expected = self.expected_checksum;
        if let Some(d) = self.decoder {
            let decoded = d.decoded();
            let trailers = d.finish()?;
            if self.decoded_len.is_some_and(|l| l != decoded) {
                return Err(incomplete_body());
            }
            if let Some(t) = self.trailer {
                let v = trailers
                    .iter()
                    .find(|(k, _)| k == t.header())
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        Fail::invalid_request(format!(
                            "The body announced a {} trailer but did not send it.",
                            t.header()
                        ))
                    })?;
                expected = Some(v);
            }
        }
        if let Some((m, claimed)) = self.md5
            && m.finish() != claimed
        {
            return Err(bad_digest(
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
        let algorithm = self.checksum.algorithm();
        let computed = self.checksum.finish_base64();
        if let Some(e) = expected
            && e.trim() != computed
        {
            return Err(bad_digest(format!(
                "The {} you specified did not match the calculated checksum.",
                algorithm.header()
            )));
        }
        Ok((algorithm.name().to_owned(), computed))
    }
}

/// Reads a small body whole (a request document), checking it. `header_checksums`: whether
/// `x-amz-checksum-*` headers are this body's.
pub async fn read_small(
    ctx: &Ctx<'_>,
    body: Body,
    max: usize,
    header_checksums: bool,
) -> Result<Bytes, Fail> {
    let mut check = BodyCheck::build(ctx, header_checksums)?;
    let mut out = BytesMut::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Fail::invalid_request(format!("The request body could not be read: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            let content = check.feed(data)?;
            if out.len() + content.len() > max {
                return Err(Fail::new(
                    StatusCode::BAD_REQUEST,
                    "MaxMessageLengthExceeded",
                    "Your request was too big.",
                ));
            }
            out.extend_from_slice(&content);
        }
    }
    check.finish()?;
    Ok(out.freeze())
}

/// Blocking reads from the pieces the async side sends.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => self.current = b,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Streams a body of `len` content bytes into a new blob sealed under `key`. The blob is
/// committed only if the body is whole and passes every check. Returns what was written and
/// the checksum to keep.
pub async fn put_stream(
    ctx: &Ctx<'_>,
    body: Body,
    len: u64,
    blobs: Arc<dyn BlobStore>,
    key: Key256,
) -> Result<(Written, (String, String)), Fail> {
    let mut check = BodyCheck::new(ctx)?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        coffer_store::write_object(blobs.as_ref(), &key, len, &mut reader)
    });
    let mut body = body;
    let fed: Result<(), Fail> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Fail::invalid_request(format!("The request body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let content = check.feed(data)?;
            if !content.is_empty() && tx.send(Ok(content)).await.is_err() {
                // The sealing thread stopped (too much data, or a failure): it says why.
                return Ok(());
            }
        }
        Ok(())
    }
    .await;
    let verdict = fed.and_then(|()| check.finish());
    let checksum = match verdict {
        Ok(c) => {
            drop(tx);
            c
        }
        Err(f) => {
            let _ = tx
                .send(Err(std::io::Error::other(
                    "the request body failed its checks",
                )))
                .await;
            drop(tx);
            // The blob is abandoned: the writer removes its temporary file.
            let _ = writer.await;
            return Err(f);
        }
    };
    let written = writer
        .await
        .map_err(|e| Fail::internal(format!("the sealing task failed: {e}")))?
        .map_err(|e| match e {
            StoreError::LengthMismatch { .. } => incomplete_body(),
            other => Fail::internal(other.to_string()),
        })?;
    Ok((written, checksum))
}

/// Copies (a range of) a stored object into a new blob sealed under `key`, on a blocking thread.
pub async fn copy(
    blobs: Arc<dyn BlobStore>,
    pieces: Vec<Piece>,
    range: Option<(u64, u64)>,
    key: Key256,
) -> Result<Written, Fail> {
    tokio::task::spawn_blocking(move || {
        coffer_store::copy_pieces(blobs.as_ref(), &pieces, range, &key)
    })
    .await
    .map_err(|e| Fail::internal(format!("the copy task failed: {e}")))?
    .map_err(|e| coffer_store::s3::S3Error::from(e).into())
}

/// The plaintext of a stored object (or the inclusive range `first..=last` of it) as a
/// response body, read a package at a time on a blocking thread. The first package is opened
/// before this returns, so an object that fails at its start is an error response, not a
/// broken body; a failure later cuts the body short, so no unauthenticated byte is ever sent.
pub async fn get_stream(
    blobs: Arc<dyn BlobStore>,
    pieces: Vec<Piece>,
    range: Option<(u64, u64)>,
) -> Result<Body, Fail> {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, StoreError>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let run = || -> Result<(), StoreError> {
            let mut sink = |b: &[u8]| {
                tx.blocking_send(Ok(Bytes::copy_from_slice(b)))
                    .map_err(|_| StoreError::Io {
                        what: "the response".into(),
                        source: std::io::Error::other("the client went away"),
                    })
            };
            coffer_store::read_pieces(blobs.as_ref(), &pieces, range, &mut sink)
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let first = match rx.recv().await {
        None => return Ok(Body::empty()),
        Some(Err(e)) => return Err(coffer_store::s3::S3Error::from(e).into()),
        Some(Ok(b)) => b,
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            let item = item.map_err(|e| {
                tracing::error!(error = %e, "an object failed while its body was being sent; the response was cut short");
                std::io::Error::other(e.to_string())
            });
            (item, rx)
        })
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    Ok(Body::from_stream(stream))
}

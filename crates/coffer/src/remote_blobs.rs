//! Object bytes in any S3-compatible store (`--blobs s3://BUCKET[/PREFIX]`), so that several nodes
//! share them. Coffer seals every object before it leaves (64 KiB packages under a per-object key
//! sealed in the metadata), so the remote store only ever holds ciphertext.
//!
//! A blob is one object, `PREFIX<first two hex digits>/<id>`, written with one PUT, or for blobs
//! over 8 MiB as a multipart upload of 8 MiB parts, so a node holds at most one part of a blob in
//! memory; it is visible only once the store acknowledged the whole of it, before the caller
//! commits the metadata that names it. Reads are ranged GETs. Requests are signed with SigV4 and
//! sent over HTTPS only, through one pooled client; idempotent requests are retried on
//! connection failures and 5xx answers.
//!
//! Blobs no metadata names (a node died between writing one and committing its row) and multipart
//! uploads never completed are removed at start, but only once they are older than the orphan
//! grace period: another node may be writing one right now.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use coffer_api::s3::xml;
use coffer_store::{BlobId, BlobStore, BlobWriter, StoreError};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use zeroize::Zeroizing;

use crate::client::Signer;

/// Multipart part size: blobs larger than this are uploaded in parts of this size.
const PART: usize = 8 << 20;
/// How often an idempotent request is tried before its error is returned.
const ATTEMPTS: u32 = 4;
/// An object key's characters that travel unencoded (S3's URI encoding keeps `/`).
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// A query value's: unreserved only.
const VALUE_SET: &AsciiSet = &KEY_SET.add(b'/');

/// Where the blobs go and how to get there.
#[derive(Clone)]
pub struct RemoteConfig {
    pub bucket: String,
    /// Ends with `/` unless empty.
    pub prefix: String,
    /// `https://host[:port]`.
    pub endpoint: String,
    pub region: String,
    /// A CA certificate (PEM) to trust besides the system's.
    pub ca: Option<PathBuf>,
    pub access_key_id: String,
    pub secret: Zeroizing<String>,
    /// Orphans younger than this are left alone.
    pub orphan_grace: Duration,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Parses `s3://BUCKET[/PREFIX]` into the bucket and the prefix (ending with `/` unless empty).
pub fn parse_location(text: &str) -> anyhow::Result<(String, String)> {
    let rest = text
        .strip_prefix("s3://")
        .with_context(|| format!("--blobs takes `local` or s3://BUCKET[/PREFIX], not '{text}'"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("--blobs s3://BUCKET[/PREFIX] names no bucket: '{text}'");
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_owned(), prefix))
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The remote blob store.
#[derive(Clone)]
pub struct RemoteBlobs {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpsClient,
    endpoint: String,
    host: String,
    bucket: String,
    prefix: String,
    signer: Signer,
    orphan_grace: Duration,
    /// The server's runtime, for callers on threads outside it.
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for RemoteBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBlobs")
            .field("endpoint", &self.inner.endpoint)
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// One answer.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// S3's error, as `HTTP status: Code Message`.
    fn error(&self) -> String {
        let doc = xml::parse(&self.body).unwrap_or_default();
        format!(
            "HTTP {}: {} {}",
            self.status.as_u16(),
            doc.child_text("Code").unwrap_or(""),
            doc.child_text("Message").unwrap_or("")
        )
    }

    /// The answer's XML document.
    fn doc(&self, what: &str) -> coffer_store::Result<xml::Element> {
        xml::parse(&self.body).map_err(|_| store_error(what, "the answer is not well-formed XML"))
    }
}

fn store_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl RemoteBlobs {
    /// Connects (checking the bucket answers) from within the server's runtime.
    pub async fn connect(cfg: RemoteConfig) -> anyhow::Result<Self> {
        let uri: http::Uri = cfg
            .endpoint
            .parse()
            .with_context(|| format!("--blobs-endpoint '{}' is not a URL", cfg.endpoint))?;
        if uri.scheme_str() != Some("https") {
            bail!(
                "--blobs-endpoint must be https:// (object bytes and signatures travel over TLS only), not '{}'",
                cfg.endpoint
            );
        }
        let host = uri
            .authority()
            .context("--blobs-endpoint names no host")?
            .as_str()
            .to_owned();
        let tls = crate::tls::client_config(cfg.ca.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let store = Self {
            inner: Arc::new(Inner {
                client,
                endpoint: cfg.endpoint.trim_end_matches('/').to_owned(),
                host,
                bucket: cfg.bucket,
                prefix: cfg.prefix,
                signer: Signer::new(cfg.access_key_id, cfg.secret, &cfg.region),
                orphan_grace: cfg.orphan_grace,
                handle: tokio::runtime::Handle::current(),
            }),
        };
        let a = store
            .inner
            .send(Method::HEAD, None, "", Vec::new(), Bytes::new())
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the blob store {}: {e}", store.inner.endpoint)
            })?;
        if !a.status.is_success() {
            bail!(
                "the blob store bucket s3://{} at {} is not usable (HTTP {}): check the bucket exists and \
                 COFFER_BLOBS_ACCESS_KEY_ID may use it",
                store.inner.bucket,
                store.inner.endpoint,
                a.status.as_u16()
            );
        }
        Ok(store)
    }
}

impl Inner {
    fn key(&self, id: &BlobId) -> String {
        format!("{}{}/{}", self.prefix, &id.as_str()[..2], id.as_str())
    }

    /// Runs a request future from a synchronous [`BlobStore`] call, on whatever thread it is.
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            // A worker (the call came from async code) or a blocking-pool thread.
            Ok(h) => tokio::task::block_in_place(|| h.block_on(f)),
            Err(_) => self.handle.block_on(f),
        }
    }

    /// Sends one signed request to the bucket (`key` `None`) or an object, retrying idempotent
    /// ones (all of Coffer's are) on connection failures and 5xx answers.
    async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &str,
        extra: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        let path = match key {
            Some(k) => format!("/{}/{}", self.bucket, utf8_percent_encode(k, KEY_SET)),
            None => format!("/{}", self.bucket),
        };
        let payload_hash = coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(&body));
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "host",
                http::HeaderValue::from_str(&self.host).map_err(|e| e.to_string())?,
            );
            headers.insert(
                "x-amz-content-sha256",
                http::HeaderValue::from_str(&payload_hash).map_err(|e| e.to_string())?,
            );
            self.signer
                .sign(
                    "s3",
                    method.as_str(),
                    &path,
                    (!query.is_empty()).then_some(query),
                    &mut headers,
                    &["host", "x-amz-content-sha256", "x-amz-date"],
                    &payload_hash,
                )
                .map_err(|e| e.to_string())?;
            for (name, value) in &extra {
                headers.insert(
                    *name,
                    http::HeaderValue::from_str(value).map_err(|e| e.to_string())?,
                );
            }
            let uri = if query.is_empty() {
                format!("{}{path}", self.endpoint)
            } else {
                format!("{}{path}?{query}", self.endpoint)
            };
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(Full::new(body.clone()))
                .map_err(|e| e.to_string())?;
            *req.headers_mut() = headers;
            req.headers_mut()
                .insert("content-length", body.len().into());
            match self.client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.into_body().collect().await {
                        Ok(b) => {
                            let answer = Answer {
                                status,
                                headers,
                                body: b.to_bytes(),
                            };
                            if status.is_server_error() {
                                last = answer.error();
                                continue;
                            }
                            return Ok(answer);
                        }
                        Err(e) => last = format!("reading the answer: {e}"),
                    }
                }
                Err(e) => last = format!("{e}"),
            }
        }
        Err(format!("{last} (after {ATTEMPTS} attempts)"))
    }

    /// Sends and requires a 2xx answer.
    async fn call(
        &self,
        what: &str,
        method: Method,
        key: Option<&str>,
        query: &str,
        extra: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> coffer_store::Result<Answer> {
        let a = self
            .send(method, key, query, extra, body)
            .await
            .map_err(|e| store_error(what, e))?;
        if !a.status.is_success() {
            return Err(store_error(what, a.error()));
        }
        Ok(a)
    }

    async fn put(&self, key: &str, body: Bytes) -> coffer_store::Result<()> {
        self.call(
            &format!("PUT {key}"),
            Method::PUT,
            Some(key),
            "",
            Vec::new(),
            body,
        )
        .await
        .map(|_| ())
    }

    async fn create_upload(&self, key: &str) -> coffer_store::Result<String> {
        let a = self
            .call(
                &format!("CreateMultipartUpload {key}"),
                Method::POST,
                Some(key),
                "uploads=",
                Vec::new(),
                Bytes::new(),
            )
            .await?;
        a.doc(key)?
            .child_text("UploadId")
            .map(str::to_owned)
            .ok_or_else(|| store_error(key, "CreateMultipartUpload answered no UploadId"))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        n: u32,
        body: Bytes,
    ) -> coffer_store::Result<String> {
        let query = format!(
            "partNumber={n}&uploadId={}",
            utf8_percent_encode(upload, VALUE_SET)
        );
        let a = self
            .call(
                &format!("UploadPart {key} #{n}"),
                Method::PUT,
                Some(key),
                &query,
                Vec::new(),
                body,
            )
            .await?;
        a.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| store_error(key, "UploadPart answered no ETag"))
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &str,
        parts: &[(u32, String)],
    ) -> coffer_store::Result<()> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml::escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let query = format!("uploadId={}", utf8_percent_encode(upload, VALUE_SET));
        let a = self
            .call(
                &format!("CompleteMultipartUpload {key}"),
                Method::POST,
                Some(key),
                &query,
                vec![("content-type", "application/xml".into())],
                Bytes::from(xml),
            )
            .await?;
        // S3 may answer 200 with an error document when completing fails late.
        if a.doc(key)?.name == "Error" {
            return Err(store_error(key, a.error()));
        }
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload: &str) -> coffer_store::Result<()> {
        let query = format!("uploadId={}", utf8_percent_encode(upload, VALUE_SET));
        let a = self
            .send(Method::DELETE, Some(key), &query, Vec::new(), Bytes::new())
            .await
            .map_err(|e| store_error(key, e))?;
        if a.status.is_success() || a.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(store_error(key, a.error()))
        }
    }

    /// One request about a blob from a synchronous call; the caller reads the answer's status.
    fn blob_request(
        &self,
        method: Method,
        key: &str,
        extra: Vec<(&'static str, String)>,
    ) -> coffer_store::Result<Answer> {
        self.run(self.send(method, Some(key), "", extra, Bytes::new()))
            .map_err(|e| store_error(key, e))
    }

    fn cutoff(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.orphan_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

fn parse_time(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

impl BlobStore for RemoteBlobs {
    fn create(&self) -> coffer_store::Result<Box<dyn BlobWriter>> {
        let id = BlobId::new_random();
        Ok(Box::new(RemoteWriter {
            key: self.inner.key(&id),
            inner: self.inner.clone(),
            id,
            buf: Vec::new(),
            upload: None,
            done: false,
        }))
    }

    fn read_at(&self, id: &BlobId, offset: u64, len: usize) -> coffer_store::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = self.inner.key(id);
        let range = format!("bytes={offset}-{}", offset + len as u64 - 1);
        let a = self
            .inner
            .blob_request(Method::GET, &key, vec![("range", range)])?;
        match a.status {
            StatusCode::NOT_FOUND => Err(StoreError::NotFound(id.to_string())),
            // Past the end: the blob is shorter than its header says.
            StatusCode::RANGE_NOT_SATISFIABLE => Err(StoreError::Damaged(id.to_string())),
            s if s.is_success() => {
                if a.body.len() != len {
                    return Err(StoreError::Damaged(id.to_string()));
                }
                Ok(a.body.to_vec())
            }
            _ => Err(store_error(&key, a.error())),
        }
    }

    fn len(&self, id: &BlobId) -> coffer_store::Result<u64> {
        let key = self.inner.key(id);
        let a = self.inner.blob_request(Method::HEAD, &key, Vec::new())?;
        match a.status {
            StatusCode::NOT_FOUND => Err(StoreError::NotFound(id.to_string())),
            s if s.is_success() => a
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| store_error(&key, "HEAD answered no Content-Length")),
            s => Err(store_error(&key, format!("HTTP {}", s.as_u16()))),
        }
    }

    fn delete(&self, id: &BlobId) -> coffer_store::Result<bool> {
        let key = self.inner.key(id);
        let a = self.inner.blob_request(Method::DELETE, &key, Vec::new())?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(store_error(&key, a.error())),
        }
    }

    /// Aborts multipart uploads under the prefix older than the grace period.
    fn clean_temporary(&self) -> coffer_store::Result<usize> {
        let inner = &self.inner;
        let cutoff = inner.cutoff();
        let mut aborted = 0;
        let mut markers = String::new();
        loop {
            let query = format!(
                "uploads=&prefix={}{markers}",
                utf8_percent_encode(&inner.prefix, VALUE_SET)
            );
            let a = inner.run(inner.call(
                "ListMultipartUploads",
                Method::GET,
                None,
                &query,
                Vec::new(),
                Bytes::new(),
            ))?;
            let doc = a.doc("ListMultipartUploads")?;
            for u in doc.children("Upload") {
                let (Some(key), Some(upload), Some(t)) = (
                    u.child_text("Key"),
                    u.child_text("UploadId"),
                    u.child_text("Initiated").and_then(parse_time),
                ) else {
                    continue;
                };
                if t < cutoff {
                    inner.run(inner.abort_upload(key, upload))?;
                    aborted += 1;
                }
            }
            if doc.child_text("IsTruncated") != Some("true") {
                return Ok(aborted);
            }
            markers = format!(
                "&key-marker={}&upload-id-marker={}",
                utf8_percent_encode(doc.child_text("NextKeyMarker").unwrap_or(""), VALUE_SET),
                utf8_percent_encode(
                    doc.child_text("NextUploadIdMarker").unwrap_or(""),
                    VALUE_SET
                )
            );
        }
    }

    /// Blobs under the prefix that are older than the grace period (younger ones may belong to a
    /// write another node has not committed yet).
    fn list(&self) -> coffer_store::Result<Vec<BlobId>> {
        let inner = &self.inner;
        let cutoff = inner.cutoff();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!(
                "list-type=2&prefix={}",
                utf8_percent_encode(&inner.prefix, VALUE_SET)
            );
            if let Some(t) = &token {
                query.push_str(&format!(
                    "&continuation-token={}",
                    utf8_percent_encode(t, VALUE_SET)
                ));
            }
            let a = inner.run(inner.call(
                "ListObjectsV2",
                Method::GET,
                None,
                &query,
                Vec::new(),
                Bytes::new(),
            ))?;
            let doc = a.doc("ListObjectsV2")?;
            for c in doc.children("Contents") {
                let old = c
                    .child_text("LastModified")
                    .and_then(parse_time)
                    .is_some_and(|t| t < cutoff);
                if let Some(id) = c
                    .child_text("Key")
                    .and_then(|k| k.rsplit('/').next())
                    .and_then(BlobId::parse)
                    && old
                {
                    out.push(id);
                }
            }
            match (
                doc.child_text("IsTruncated"),
                doc.child_text("NextContinuationToken"),
            ) {
                (Some("true"), Some(next)) => token = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

/// A blob being written: small ones in one PUT at commit, larger ones as a multipart upload.
struct RemoteWriter {
    inner: Arc<Inner>,
    id: BlobId,
    key: String,
    buf: Vec<u8>,
    upload: Option<(String, Vec<(u32, String)>)>,
    done: bool,
}

impl RemoteWriter {
    /// Sends the first `PART` bytes of the buffer as the next part.
    fn flush_part(&mut self, all: bool) -> coffer_store::Result<()> {
        let inner = self.inner.clone();
        if self.upload.is_none() {
            let id = inner.run(inner.create_upload(&self.key))?;
            self.upload = Some((id, Vec::new()));
        }
        let take = if all { self.buf.len() } else { PART };
        let rest = self.buf.split_off(take);
        let part = Bytes::from(std::mem::replace(&mut self.buf, rest));
        let Some((upload, parts)) = self.upload.as_mut() else {
            return Ok(());
        };
        let n = parts.len() as u32 + 1;
        let etag = inner.run(inner.upload_part(&self.key, upload, n, part))?;
        parts.push((n, etag));
        Ok(())
    }
}

impl BlobWriter for RemoteWriter {
    fn write_all(&mut self, bytes: &[u8]) -> coffer_store::Result<()> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= PART {
            self.flush_part(false)?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> coffer_store::Result<BlobId> {
        let inner = self.inner.clone();
        if self.upload.is_none() {
            let body = Bytes::from(std::mem::take(&mut self.buf));
            inner.run(inner.put(&self.key, body))?;
        } else {
            if !self.buf.is_empty() {
                self.flush_part(true)?;
            }
            if let Some((upload, parts)) = &self.upload {
                inner.run(inner.complete_upload(&self.key, upload, parts))?;
            }
        }
        self.done = true;
        Ok(self.id.clone())
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        // An abandoned write leaves no upload behind (best effort: the start-up sweep aborts any
        // that remain once they are old enough).
        if !self.done
            && let Some((upload, _)) = &self.upload
        {
            let inner = self.inner.clone();
            let _ = inner.run(inner.abort_upload(&self.key, upload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("s3://b").expect("bucket"),
            ("b".into(), String::new())
        );
        assert_eq!(
            parse_location("s3://b/p/q/").expect("prefix"),
            ("b".into(), "p/q/".into())
        );
        assert!(parse_location("s3:///p").is_err());
        assert!(parse_location("https://b").is_err());
    }

    #[test]
    fn s3_times() {
        assert!(parse_time("2026-01-01T00:00:00.000Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}

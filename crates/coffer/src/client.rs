//! A small HTTPS client for Coffer's own commands (bench, operator): TLS against the data dir's CA,
//! SigV4 signing as an SDK does it, and Coffer's unauthenticated endpoints.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use coffer_api::sigv4;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// What a client needs to sign and send.
pub struct Target {
    pub host: String,
    addr: String,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    signer: Signer,
}

/// SigV4 signing as an SDK does it: credentials, region, and the signing key of the current date
/// and service (`date/service`), derived once a day.
pub struct Signer {
    access_key_id: String,
    secret: Zeroizing<String>,
    region: String,
    signing_key: std::sync::Mutex<Option<(String, Zeroizing<[u8; 32]>)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(access_key_id: String, secret: Zeroizing<String>, region: &str) -> Self {
        Self {
            access_key_id,
            secret,
            region: region.to_owned(),
            signing_key: std::sync::Mutex::new(None),
        }
    }

    /// Adds `x-amz-date` and a SigV4 `authorization` to `headers` (which hold `host` and
    /// whatever else `signed` names), for `service`. `path` is as sent (already URL-encoded).
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        service: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &mut http::HeaderMap,
        signed: &[&str],
        payload_hash: &str,
    ) -> anyhow::Result<()> {
        let amz_date = sigv4::format_amz_date(time::OffsetDateTime::now_utc());
        let date = &amz_date[..8];
        headers.insert("x-amz-date", http::HeaderValue::from_str(&amz_date)?);
        let canonical = sigv4::canonical_request(
            &sigv4::RequestParts {
                method,
                raw_path: path,
                raw_query: query,
                headers,
                authority: None,
                payload_hash,
                // S3 signs the path as sent; other services encode it once more.
                double_encode_path: service != "s3",
            },
            signed,
        )?;
        let scope = sigv4::scope(date, &self.region, service);
        // The signing key of a day and service, derived once as SDKs may.
        let tag = format!("{date}/{service}");
        let key = {
            let mut cached = self.signing_key.lock().unwrap_or_else(|p| p.into_inner());
            match cached.as_ref() {
                Some((d, k)) if *d == tag => k.clone(),
                _ => {
                    let k = Zeroizing::new(sigv4::signing_key(
                        self.secret.as_bytes(),
                        date,
                        &self.region,
                        service,
                    ));
                    *cached = Some((tag, k.clone()));
                    k
                }
            }
        };
        let signature = sigv4::sign_with_key(&key, &scope, &amz_date, &canonical);
        let auth = format!(
            "{} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            sigv4::ALGORITHM,
            self.access_key_id,
            signed.join(";")
        );
        headers.insert("authorization", http::HeaderValue::from_str(&auth)?);
        Ok(())
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// A target that signs with the credentials of the environment or of the data dir's credentials
/// file, trusting the data dir's CA.
pub fn target(endpoint: &str, data_dir: &Path, region: &str) -> anyhow::Result<Target> {
    let creds = credentials(data_dir)?;
    tls_target(
        endpoint,
        &data_dir.join("tls").join("ca.pem"),
        Some(creds),
        region,
    )
}

/// The access key to sign with: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else the data dir's
/// credentials file (the administrator key written at first start).
pub fn credentials(data_dir: &Path) -> anyhow::Result<(String, Zeroizing<String>)> {
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(id), Ok(secret)) => Ok((id, Zeroizing::new(secret))),
        _ => crate::credentials::read(&data_dir.join("credentials"))?.with_context(|| {
            format!(
                "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or give --data-dir with a credentials file (looked in {})",
                data_dir.display()
            )
        }),
    }
}

/// A target trusting the CA in `ca`; `credentials` is needed only for signed requests.
pub fn tls_target(
    endpoint: &str,
    ca: &Path,
    credentials: Option<(String, Zeroizing<String>)>,
    region: &str,
) -> anyhow::Result<Target> {
    let uri: http::Uri = endpoint
        .parse()
        .with_context(|| format!("'{endpoint}' is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("the endpoint must be https:// (Coffer serves TLS only)");
    }
    let authority = uri.authority().context("the endpoint has no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| {
        format!(
            "cannot read the CA certificate {} (give --ca-bundle)",
            ca.display()
        )
    })? {
        roots.add(cert?).context("bad CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (access_key_id, secret) = credentials.unwrap_or_default();
    Ok(Target {
        addr: format!("{host}:{port}"),
        server_name: ServerName::try_from(host.clone()).context("server name")?,
        host: authority.as_str().to_owned(),
        tls: TlsConnector::from(Arc::new(config)),
        signer: Signer::new(access_key_id, secret, region),
    })
}

pub type Sender = http1::SendRequest<Full<Bytes>>;

pub async fn connect(t: &Target) -> anyhow::Result<Sender> {
    connect_as(t).await
}

/// A connection sending bodies of type `B` (a streamed body, for S3 uploads).
pub async fn connect_as<B>(t: &Target) -> anyhow::Result<http1::SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(&t.addr)
        .await
        .with_context(|| format!("cannot connect to {}", t.addr))?;
    tcp.set_nodelay(true)?;
    let tls = t
        .tls
        .connect(t.server_name.clone(), tcp)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A KMS request body, serialised and hashed once; every send is still signed afresh.
#[derive(Clone)]
pub struct KmsBody {
    target: http::HeaderValue,
    body: Bytes,
    payload_hash: String,
}

impl KmsBody {
    pub fn new(operation: &str, body: &Value) -> anyhow::Result<Self> {
        Self::with_target(&format!("TrentService.{operation}"), body)
    }

    /// A body for another `X-Amz-Target` (operator actions are `CofferOperator.<Action>`).
    pub fn with_target(target: &str, body: &Value) -> anyhow::Result<Self> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        Ok(Self {
            target: http::HeaderValue::from_str(target)?,
            payload_hash: coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(&body)),
            body,
        })
    }
}

/// Signs `headers` for a request to `t` (see [`Signer::sign`]).
#[allow(clippy::too_many_arguments)]
fn sign_headers(
    t: &Target,
    service: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &mut http::HeaderMap,
    signed: &[&str],
    payload_hash: &str,
) -> anyhow::Result<()> {
    t.signer
        .sign(service, method, path, query, headers, signed, payload_hash)
}

/// Builds a SigV4-signed IAM query-protocol request (`Action=…&Version=2010-05-08&…`), as an SDK
/// would; `params` are encoded here.
pub fn iam_request(
    t: &Target,
    params: &[(&str, &str)],
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    query_request(t, "iam", "2010-05-08", params)
}

/// Builds a SigV4-signed query-protocol request to `service` (`iam` or `sts`) at API `version`.
pub fn query_request(
    t: &Target,
    service: &str,
    version: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        form.append_pair(k, v);
    }
    form.append_pair("Version", version);
    let body = Bytes::from(form.finish());
    let payload_hash = coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(&body));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    headers.insert("host", http::HeaderValue::from_str(&t.host)?);
    sign_headers(
        t,
        service,
        "POST",
        "/",
        None,
        &mut headers,
        &["content-type", "host", "x-amz-date"],
        &payload_hash,
    )?;
    let mut req = hyper::Request::post("/").body(Full::new(body))?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Builds a SigV4-signed request to Coffer's Macie API (REST-JSON under `/_coffer/macie2`), as
/// an SDK would; `path` is below that prefix and already URL-encoded.
pub fn macie_request(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let bytes = match body {
        Some(v) => Bytes::from(serde_json::to_vec(v)?),
        None => Bytes::new(),
    };
    let full = format!("{}{path}", coffer_api::macie::PREFIX);
    let payload_hash = coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(&bytes));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert("host", http::HeaderValue::from_str(&t.host)?);
    sign_headers(
        t,
        "macie2",
        method,
        &full,
        None,
        &mut headers,
        &["content-type", "host", "x-amz-date"],
        &payload_hash,
    )?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(full)
        .body(Full::new(bytes))?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Builds a SigV4-signed KMS request, as an SDK would.
pub fn kms_request(t: &Target, b: &KmsBody) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    headers.insert("host", http::HeaderValue::from_str(&t.host)?);
    headers.insert("x-amz-target", b.target.clone());
    sign_headers(
        t,
        "kms",
        "POST",
        "/",
        None,
        &mut headers,
        &["content-type", "host", "x-amz-date", "x-amz-target"],
        &b.payload_hash,
    )?;
    let mut req = hyper::Request::post("/").body(Full::new(b.body.clone()))?;
    *req.headers_mut() = headers;
    Ok(req)
}

pub async fn call(
    sender: &mut Sender,
    req: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await.context("connection closed")?;
    let resp = sender.send_request(req).await.context("request failed")?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub async fn kms_call(
    t: &Target,
    sender: &mut Sender,
    operation: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let (status, bytes) = call(sender, kms_request(t, &KmsBody::new(operation, &body)?)?).await?;
    let v: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{operation}: response is not JSON"))?;
    if status != 200 {
        bail!("{operation} failed with HTTP {status}: {v}");
    }
    Ok(v)
}

/// SigV4 headers for an S3 request with an unsigned payload (as SDKs send over TLS). `path` is
/// already URL-encoded.
pub fn s3_headers(
    t: &Target,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> anyhow::Result<http::HeaderMap> {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_str(&t.host)?);
    headers.insert(
        "x-amz-content-sha256",
        http::HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    sign_headers(
        t,
        "s3",
        method,
        path,
        query,
        &mut headers,
        &["host", "x-amz-content-sha256", "x-amz-date"],
        "UNSIGNED-PAYLOAD",
    )?;
    Ok(headers)
}

/// An unsigned request to one of Coffer's own endpoints (health, unseal).
pub fn plain_request(
    t: &Target,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let bytes = match body {
        Some(v) => Bytes::from(serde_json::to_vec(v)?),
        None => Bytes::new(),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &t.host)
        .header("content-type", "application/json")
        .body(Full::new(bytes))?;
    req.headers_mut()
        .insert("user-agent", http::HeaderValue::from_static("coffer-cli"));
    Ok(req)
}

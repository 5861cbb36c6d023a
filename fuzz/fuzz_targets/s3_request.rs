//! Any S3 request — method, path, query, headers and body from the fuzzer — signed with a valid
//! SigV4 key so that it reaches the operations, served by the real router over a real object
//! store in a temporary directory. Every input must end in a response, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use coffer_api::{AppState, Metrics};
use coffer_kms::root::DevFileRoot;
use coffer_kms::{Identities, Kms, KmsConfig};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const ACCESS_KEY: &str = "AKIAFUZZFUZZFUZZFUZZ";
const SECRET: &[u8] = b"fuzz-secret-key-fuzz-secret-key-0123456789";

struct World {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: std::path::PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("coffer-fuzz-s3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (root, _) = DevFileRoot::load_or_create(&dir.join("root.key")).expect("root");
        let root: Arc<dyn coffer_kms::root::RootOfTrust> = Arc::new(root);
        let meta: Arc<dyn coffer_meta::MetaStore> =
            Arc::new(coffer_meta::SqlStore::in_memory().expect("sqlite"));
        let cfg = KmsConfig {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            ..KmsConfig::default()
        };
        let kms = Arc::new(Kms::new(cfg, meta.clone(), root.clone()));
        let identities = Arc::new(Identities::new(meta.clone(), root));
        let iam = Arc::new(coffer_kms::Iam::new(
            meta.clone(),
            identities.clone(),
            "111122223333",
            kms.identity_cache(),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(identities.import_access_key(
                ACCESS_KEY,
                SECRET,
                "arn:aws:iam::111122223333:root",
            ))
            .expect("access key");
        let blobs = coffer_store::DiskBlobs::open(&dir.join("objects")).expect("blobs");
        let objects = Arc::new(coffer_store::s3::Objects::new(
            meta,
            Arc::new(blobs),
            kms.clone(),
        ));
        let state = Arc::new(AppState {
            kms,
            identities,
            iam,
            metrics: Metrics::new(),
            started: std::time::Instant::now(),
            audit: None,
            operator: None,
            objects,
            s3_domain: Some("s3.fuzz.test".into()),
            s3_access: Default::default(),
            s3_bucket_keys: Default::default(),
            discovery: coffer_api::macie::Discovery::new(None),
        });
        World {
            runtime,
            router: coffer_api::router(state),
            _dir: dir,
        }
    })
}

/// Splits the input into a request: method, path and query, headers (`name: value` lines) and
/// body, separated by newlines and a blank line.
fn request(data: &[u8]) -> Option<http::Request<axum::body::Body>> {
    let text = std::str::from_utf8(data).ok()?;
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next()?;
    let (method, target) = first.split_once(' ')?;
    let method = match method.len() % 5 {
        0 => "GET",
        1 => "PUT",
        2 => "POST",
        3 => "DELETE",
        _ => "HEAD",
    };
    let target = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/{target}")
    };
    let uri: http::Uri = format!("https://127.0.0.1{target}").parse().ok()?;
    let mut headers = http::HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) else {
                continue;
            };
            headers.append(k, v);
        }
    }
    headers.insert("host", http::HeaderValue::from_static("127.0.0.1"));
    let amz_date = coffer_api::sigv4::format_amz_date(time::OffsetDateTime::now_utc());
    headers.insert("x-amz-date", http::HeaderValue::from_str(&amz_date).ok()?);
    if !headers.contains_key("x-amz-content-sha256") {
        headers.insert(
            "x-amz-content-sha256",
            http::HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
    }
    let payload = headers
        .get("x-amz-content-sha256")?
        .to_str()
        .ok()?
        .to_owned();
    let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    let signed: Vec<&str> = names.iter().map(String::as_str).collect();
    let parts = coffer_api::sigv4::RequestParts {
        method,
        raw_path: uri.path(),
        raw_query: uri.query(),
        headers: &headers,
        authority: None,
        payload_hash: &payload,
        double_encode_path: false,
    };
    let canonical = coffer_api::sigv4::canonical_request(&parts, &signed).ok()?;
    let day = &amz_date[..8];
    let signature = coffer_api::sigv4::sign(SECRET, day, "us-east-1", "s3", &amz_date, &canonical);
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{day}/us-east-1/s3/aws4_request, SignedHeaders={}, Signature={signature}",
        signed.join(";")
    );
    headers.insert("authorization", http::HeaderValue::from_str(&auth).ok()?);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::from(body.to_owned()))
        .ok()?;
    *req.headers_mut() = headers;
    Some(req)
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else { return };
    let w = world();
    w.runtime.block_on(async {
        let resp = w.router.clone().oneshot(req).await.expect("infallible");
        // Drain the body: streaming errors must end the stream, not panic.
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    });
});

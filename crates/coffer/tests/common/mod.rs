//! What the SDK suites share: the real `coffer` binary started on port 0 with a data dir of its
//! own, its administrator credentials, and an HTTPS client that trusts only Coffer's CA.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use aws_smithy_http_client::tls;

pub struct Server {
    child: Child,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("COFFER_ADMIN_ACCESS_KEY_ID")
        .env_remove("COFFER_ADMIN_SECRET_ACCESS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("coffer starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = loop {
        let line = lines
            .next()
            .expect("coffer printed its banner")
            .expect("utf-8");
        if let Some((_, rest)) = line.split_once(" is ready at ") {
            break rest.split_whitespace().next().expect("url").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        endpoint,
        dir,
    }
}

pub fn credentials(data: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data.join("credentials")).expect("credentials file");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.split_once('=')
                    .filter(|(k, _)| k.trim() == name)
                    .map(|(_, v)| v.trim().to_owned())
            })
            .expect("field present")
    };
    (field("aws_access_key_id"), field("aws_secret_access_key"))
}

impl Server {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// An HTTPS client for the SDKs that trusts only the CA in `data`.
pub fn http_client(data: &Path) -> aws_sdk_kms::config::SharedHttpClient {
    let ca = std::fs::read(data.join("tls/ca.pem")).expect("CA");
    let trust = tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(ca);
    let ctx = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("tls context");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(ctx)
        .build_https()
}

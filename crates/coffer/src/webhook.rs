//! Webhooks: JSON POSTed to an http:// or https:// URL (https trusting a given CA), used for
//! anomaly alerts and for published findings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// A parsed webhook target.
#[derive(Debug, Clone)]
pub struct Webhook {
    authority: String,
    host: String,
    port: u16,
    path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    agent: &'static str,
}

impl Webhook {
    /// Parses `url`, and for https reads the CA certificate(s) in `ca`.
    pub fn new(url: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("a webhook URL starts with http:// or https://, not {url:?}");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            bail!("the webhook URL {url:?} names no host");
        }
        let path = if path.is_empty() { "/" } else { path };
        let default_port = if tls { 443 } else { 80 };
        let port_of = |p: &str| p.parse::<u16>().context("bad port in webhook URL");
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').context("bad IPv6 host in webhook URL")?;
            match after.strip_prefix(':') {
                Some(p) => (h, port_of(p)?),
                None => (h, default_port),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (authority, default_port),
            }
        };
        let tls = if tls {
            let ca = ca.context(
                "an https webhook needs the CA certificate its certificate chains to (--webhook-ca / --findings-webhook-ca)",
            )?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::pem::PemObject as _;
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?
            {
                roots.add(
                    cert.with_context(|| format!("{} holds a bad certificate", ca.display()))?,
                )?;
            }
            Some(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        } else {
            None
        };
        Ok(Webhook {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            tls,
            agent: "coffer-webhook",
        })
    }

    pub fn with_agent(mut self, agent: &'static str) -> Self {
        self.agent = agent;
        self
    }

    /// POSTs `body`; an error unless the answer is 2xx.
    pub async fn post(&self, body: &Value) -> anyhow::Result<()> {
        let payload = Bytes::from(serde_json::to_vec(body)?);
        let req = hyper::Request::post(self.path.as_str())
            .header("host", self.authority.as_str())
            .header("content-type", "application/json")
            .header("user-agent", self.agent)
            .body(Full::new(payload))?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .context("timed out connecting")??;
        let status = match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake")?;
                send(hyper_util::rt::TokioIo::new(stream), req).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await?,
        };
        if !(200..300).contains(&status) {
            bail!("the webhook answered HTTP {status}");
        }
        Ok(())
    }
}

async fn send<I>(io: I, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<u16>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .context("the webhook did not answer within 30 s")??;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// Delivers events in order, retrying each with backoff (1 s doubling to 5 min) for up to an
/// hour before it is given up and logged.
pub async fn deliver(hook: Webhook, mut events: tokio::sync::mpsc::Receiver<Value>) {
    while let Some(event) = events.recv().await {
        let mut wait = Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        loop {
            match hook.post(&event).await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_in_s = wait.as_secs(),
                        "findings webhook delivery failed"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(300));
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "findings webhook delivery gave up after an hour; the finding stays listed in the API"
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let h = Webhook::new("http://127.0.0.1:8080/hook?x=1", None).expect("http");
        assert_eq!(
            (h.host.as_str(), h.port, h.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        let h = Webhook::new("http://[::1]/", None).expect("v6");
        assert_eq!((h.host.as_str(), h.port), ("::1", 80));
        assert!(Webhook::new("ftp://x/", None).is_err());
        assert!(
            Webhook::new("https://x/", None).is_err(),
            "https needs a CA"
        );
        assert!(Webhook::new("http://x:port/", None).is_err());
    }
}

//! TLS for the listener: a CA and server certificate generated on first start (rcgen), or the
//! operator's own files. rustls with the aws-lc-rs provider, TLS 1.2 and 1.3 only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_kms::root::write_private_atomically;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};

/// Paths of the generated TLS files inside `DIR/tls`.
#[derive(Debug)]
pub struct TlsPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub server_info: PathBuf,
}

impl TlsPaths {
    pub fn new(data_dir: &Path) -> Self {
        let d = data_dir.join("tls");
        Self {
            ca_cert: d.join("ca.pem"),
            ca_key: d.join("ca.key"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            server_info: d.join("server.json"),
        }
    }
}

/// What the server certificate was issued for, so a later start knows when to issue a new one.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ServerInfo {
    version: u32,
    sans: Vec<String>,
    not_after_unix: i64,
}

const SERVER_CERT_DAYS: i64 = 397;
const RENEW_BEFORE_DAYS: i64 = 30;

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Coffer");
    dn.push(DnType::CommonName, "Coffer local CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    // Certificates are public, but the same atomic write keeps a crash from leaving half a file.
    write_private_atomically(path, contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Makes sure the CA and a current server certificate for `sans` exist; returns whether anything
/// was generated.
/// TLS for Coffer's own outbound connections (PostgreSQL, a remote blob store): servers must
/// chain to the system's roots or to the CA in `ca`, for their host name.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?
        {
            roots
                .add(cert.with_context(|| format!("bad CA certificate in {}", ca.display()))?)
                .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

pub fn ensure_generated(paths: &TlsPaths, sans: &[String]) -> anyhow::Result<bool> {
    let dir = paths.ca_cert.parent().context("tls dir")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut generated = false;

    let ca_key = if paths.ca_key.exists() && paths.ca_cert.exists() {
        let pem = std::fs::read_to_string(&paths.ca_key)
            .with_context(|| format!("cannot read {}", paths.ca_key.display()))?;
        KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a valid private key", paths.ca_key.display()))?
    } else {
        let key = KeyPair::generate().context("cannot generate the CA key")?;
        let mut params = ca_params();
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .context("cannot sign the CA certificate")?;
        write_private_atomically(&paths.ca_key, key.serialize_pem().as_bytes())
            .with_context(|| format!("cannot write {}", paths.ca_key.display()))?;
        write_public(&paths.ca_cert, cert.pem().as_bytes())?;
        // A new CA invalidates any server certificate signed by an old one.
        let _ = std::fs::remove_file(&paths.server_info);
        generated = true;
        key
    };

    let now = time::OffsetDateTime::now_utc();
    let wanted_sans: Vec<String> = {
        let mut s = sans.to_vec();
        s.sort();
        s.dedup();
        s
    };
    let current: Option<ServerInfo> = std::fs::read(&paths.server_info)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let fresh = current.is_some_and(|i| {
        i.version == 1
            && i.sans == wanted_sans
            && i.not_after_unix > (now + time::Duration::days(RENEW_BEFORE_DAYS)).unix_timestamp()
    }) && paths.server_cert.exists()
        && paths.server_key.exists();
    if fresh {
        return Ok(generated);
    }

    let key = KeyPair::generate().context("cannot generate the server key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Coffer");
    dn.push(DnType::CommonName, "Coffer server");
    params.distinguished_name = dn;
    for san in &wanted_sans {
        params.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                san.clone()
                    .try_into()
                    .with_context(|| format!("'{san}' is not a valid DNS name"))?,
            ),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(SERVER_CERT_DAYS);
    params.not_after = not_after;
    let issuer = Issuer::new(ca_params(), &ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the server certificate")?;
    write_private_atomically(&paths.server_key, key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", paths.server_key.display()))?;
    write_public(&paths.server_cert, cert.pem().as_bytes())?;
    let info = ServerInfo {
        version: 1,
        sans: wanted_sans,
        not_after_unix: not_after.unix_timestamp(),
    };
    write_public(&paths.server_info, &serde_json::to_vec_pretty(&info)?)?;
    Ok(true)
}

/// Builds the rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and private key do not match or are not supported")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reissues_on_new_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let paths = TlsPaths::new(dir.path());
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        assert!(ensure_generated(&paths, &sans).expect("first"));
        let ca = std::fs::read(&paths.ca_cert).expect("ca");
        let server = std::fs::read(&paths.server_cert).expect("server");
        assert!(!ensure_generated(&paths, &sans).expect("second"));
        assert_eq!(std::fs::read(&paths.server_cert).expect("server"), server);
        let more = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "coffer.internal".to_string(),
        ];
        assert!(ensure_generated(&paths, &more).expect("third"));
        assert_eq!(
            std::fs::read(&paths.ca_cert).expect("ca"),
            ca,
            "the CA stays"
        );
        assert_ne!(std::fs::read(&paths.server_cert).expect("server"), server);
        server_config(&paths.server_cert, &paths.server_key).expect("rustls accepts it");
    }
}

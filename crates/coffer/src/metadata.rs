//! Which metadata engine a node uses (`--metadata`), and opening it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_meta::SqlStore;

/// The metadata engine: SQLite in the data dir (the embedded default), or a PostgreSQL database
/// that several nodes share.
#[derive(Clone, PartialEq, Eq)]
pub enum MetadataSpec {
    Sqlite,
    Postgres(String),
}

impl MetadataSpec {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("sqlite") {
            return Ok(Self::Sqlite);
        }
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            // Checked now, so a typo fails at start with the flag named, not at first use.
            coffer_meta::check_postgres_url(t).map_err(|e| {
                anyhow::anyhow!(
                    "the metadata URL {} is not valid: {e}; write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                    redact(t)
                )
            })?;
            return Ok(Self::Postgres(t.to_owned()));
        }
        bail!(
            "--metadata takes `sqlite` or a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE), not '{}'",
            redact(t)
        )
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
                    None => url.to_owned(),
                },
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    // libpq's password=... parameter, too.
    if let Some(i) = out.find("password=") {
        let end = out[i..].find('&').map_or(out.len(), |e| i + e);
        out.replace_range(i..end, "password=***");
    }
    out
}

impl std::fmt::Debug for MetadataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("sqlite"),
            Self::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Display for MetadataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The opened store, and whether it held nothing yet (so that a first node may create a root
/// of trust).
pub async fn open(
    spec: &MetadataSpec,
    data_dir: &Path,
    pool_size: usize,
    ca: Option<&Path>,
) -> anyhow::Result<(Arc<SqlStore>, bool)> {
    match spec {
        MetadataSpec::Sqlite => {
            let path = data_dir.join("meta.db");
            let fresh = !path.exists();
            let store = SqlStore::open_sqlite(&path)
                .with_context(|| format!("cannot open the metadata store {}", path.display()))?;
            Ok((Arc::new(store), fresh))
        }
        MetadataSpec::Postgres(url) => {
            let tls = crate::tls::client_config(ca).context("--metadata-ca")?;
            let store = SqlStore::connect_postgres(url, pool_size, tls)
                .await
                .with_context(|| {
                    format!("cannot open the PostgreSQL metadata store {}", redact(url))
                })?;
            let fresh = !store
                .holds_wrapped_secrets()
                .await
                .context("cannot read the PostgreSQL metadata store")?;
            Ok((Arc::new(store), fresh))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://coffer:s3cret@db:5432/coffer?sslmode=disable"),
            "postgres://coffer:***@db:5432/coffer?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://coffer@db/coffer?password=s3cret&x=1"),
            "postgres://coffer@db/coffer?password=***&x=1"
        );
        assert_eq!(redact("postgres://db/coffer"), "postgres://db/coffer");
        let spec = MetadataSpec::parse("postgres://u:pw@h/d").expect("parse");
        assert!(!format!("{spec:?} {spec}").contains("pw"));
        assert_eq!(
            MetadataSpec::parse("SQLite").expect("sqlite"),
            MetadataSpec::Sqlite
        );
        assert!(MetadataSpec::parse("mysql://x").is_err());
    }
}

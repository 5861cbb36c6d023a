//! The administrator's credentials file, in the AWS shared-credentials format (profile `default`),
//! so that `AWS_SHARED_CREDENTIALS_FILE=DIR/credentials` is all a client needs.

use std::path::Path;

use anyhow::Context;
use coffer_kms::root::write_private_atomically;
use zeroize::Zeroizing;

/// Writes `[default]` with the given key to `path`, mode 0600.
pub fn write(path: &Path, access_key_id: &str, secret: &[u8]) -> anyhow::Result<()> {
    let mut text = Zeroizing::new(String::new());
    text.push_str("# Coffer administrator credentials (account root). Keep this file private.\n");
    text.push_str("[default]\n");
    text.push_str(&format!("aws_access_key_id = {access_key_id}\n"));
    text.push_str("aws_secret_access_key = ");
    text.push_str(std::str::from_utf8(secret).context("the secret access key is not text")?);
    text.push('\n');
    write_private_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write the credentials file {}", path.display()))
}

/// Reads the access key id and secret of profile `default`, if the file exists.
pub fn read(path: &Path) -> anyhow::Result<Option<(String, Zeroizing<String>)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (mut in_default, mut id, mut secret) = (false, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            in_default = line == "[default]";
            continue;
        }
        if !in_default {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(Zeroizing::new(v.trim().to_owned())),
                _ => {}
            }
        }
    }
    Ok(id.zip(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("credentials");
        assert!(read(&p).expect("absent").is_none());
        write(&p, "AKIAEXAMPLE0000000", b"secretsecretsecretsecret").expect("write");
        let (id, secret) = read(&p).expect("read").expect("present");
        assert_eq!(
            (id.as_str(), secret.as_str()),
            ("AKIAEXAMPLE0000000", "secretsecretsecretsecret")
        );
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}

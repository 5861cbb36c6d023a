//! `coffer test-vectors`: the AWS Encryption SDK's cross-implementation test vectors, in the
//! layout of the official framework (an `awses-decrypt` manifest and its `keys.json`). `decrypt`
//! checks every message of a manifest — any SDK's — against its expected plaintext or error;
//! `encrypt` writes such a manifest from Coffer, for another SDK to check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use coffer_crypto::esdk::{RsaPadding, RsaPrivateKey, RsaPublicKey};
use coffer_esdk::{
    CommitmentPolicy, DecryptOptions, EncryptOptions, Keyring, MultiKeyring, RawAesKeyring,
    RawRsaKeyring, Suite,
};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum VectorsCommand {
    /// Decrypt every message of an awses-decrypt manifest and compare with what it expects
    /// (a plaintext, or an error); exits non-zero on any difference.
    Decrypt(DecryptVectorsArgs),
    /// Write an awses-decrypt manifest of Coffer messages: every suite, framed and non-framed,
    /// under each raw key of a keys manifest.
    Encrypt(EncryptVectorsArgs),
}

#[derive(Debug, Args)]
pub struct DecryptVectorsArgs {
    /// The manifest (manifest.json).
    manifest: PathBuf,
    /// Print one JSON object per test instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct EncryptVectorsArgs {
    /// The keys manifest (keys.json) whose raw keys to encrypt under.
    #[arg(long, value_name = "FILE")]
    keys: PathBuf,
    /// Directory to write manifest.json, ciphertexts/ and plaintexts/ into.
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Frame lengths to write (0 = non-framed).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0u32, 512, 4096])]
    frame_lengths: Vec<u32>,
    /// Plaintext size in bytes.
    #[arg(long, default_value_t = 10_240)]
    plaintext_size: usize,
}

pub fn run(cmd: VectorsCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        VectorsCommand::Decrypt(a) => decrypt(a),
        VectorsCommand::Encrypt(a) => encrypt(a),
    }
}

/// Resolves a manifest URI (`file://relative/path`) against the manifest's directory.
fn resolve(base: &Path, uri: &str) -> anyhow::Result<PathBuf> {
    let rel = uri
        .strip_prefix("file://")
        .with_context(|| format!("only file:// URIs are supported, not '{uri}'"))?;
    Ok(base.join(rel))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// One master-key entry of a test, as a keyring.
fn keyring_for(mk: &Value, keys: &Value) -> anyhow::Result<Box<dyn Keyring>> {
    let kind = mk["type"].as_str().unwrap_or_default();
    if kind != "raw" {
        bail!("master key type '{kind}' is not supported here (only raw)");
    }
    let name = mk["key"].as_str().context("a master key without 'key'")?;
    let key = &keys["keys"][name];
    if key.is_null() {
        bail!("the keys manifest has no key '{name}'");
    }
    let key_id = mk["key-id"]
        .as_str()
        .or(key["key-id"].as_str())
        .unwrap_or(name);
    let provider = mk["provider-id"]
        .as_str()
        .context("a raw master key without 'provider-id'")?;
    let material = key["material"]
        .as_str()
        .context("a key without 'material'")?;
    match mk["encryption-algorithm"].as_str().unwrap_or_default() {
        "aes" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(material)
                .with_context(|| format!("key '{name}' is not base64"))?;
            let bytes = zeroize::Zeroizing::new(bytes);
            Ok(Box::new(RawAesKeyring::new(provider, key_id, &bytes)?))
        }
        "rsa" => {
            // The manifest's `oaep-mgf1` + `sha256` is the padding Coffer calls `oaep-sha256`.
            let (p, h) = (
                mk["padding-algorithm"].as_str().unwrap_or_default(),
                mk["padding-hash"].as_str().unwrap_or_default(),
            );
            let name = match p {
                "oaep-mgf1" => format!("oaep-{h}"),
                other => other.to_owned(),
            };
            let padding = RsaPadding::from_name(&name)
                .with_context(|| format!("unknown RSA padding '{p}' '{h}'"))?;
            let (public, private) = match key["type"].as_str() {
                Some("private") => (
                    None,
                    Some(RsaPrivateKey::from_pem_or_der(material.as_bytes())?),
                ),
                _ => (
                    Some(RsaPublicKey::from_pem_or_der(material.as_bytes())?),
                    None,
                ),
            };
            Ok(Box::new(RawRsaKeyring::new(
                provider, key_id, padding, public, private,
            )?))
        }
        a => bail!("unknown encryption algorithm '{a}'"),
    }
}

fn decrypt(a: DecryptVectorsArgs) -> anyhow::Result<std::process::ExitCode> {
    let manifest = read_json(&a.manifest)?;
    let base = a.manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    if manifest["manifest"]["type"] != "awses-decrypt" {
        bail!("{} is not an awses-decrypt manifest", a.manifest.display());
    }
    let keys = read_json(&resolve(
        &base,
        manifest["keys"].as_str().context("no 'keys'")?,
    )?)?;
    let tests = manifest["tests"].as_object().context("no 'tests'")?;
    let opts = DecryptOptions {
        commitment_policy: CommitmentPolicy::RequireEncryptAllowDecrypt,
        ..Default::default()
    };
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for (name, t) in tests {
        // Version 1 has the plaintext at the top; later versions a result (output or error).
        let expected_plain = t["result"]["output"]["plaintext"]
            .as_str()
            .or(t["plaintext"].as_str());
        let expect_error = t["result"]["error"].is_object();
        let outcome: Result<&str, String> = (|| {
            let ring: Box<dyn Keyring> = {
                let mut rings = Vec::new();
                for mk in t["master-keys"].as_array().ok_or("no master-keys")? {
                    rings.push(keyring_for(mk, &keys).map_err(|e| format!("skip: {e:#}"))?);
                }
                if rings.len() == 1 {
                    rings.remove(0)
                } else {
                    Box::new(MultiKeyring::new(rings).map_err(|e| e.to_string())?)
                }
            };
            let ct_path = resolve(&base, t["ciphertext"].as_str().ok_or("no ciphertext")?)
                .map_err(|e| e.to_string())?;
            let message =
                std::fs::read(&ct_path).map_err(|e| format!("{}: {e}", ct_path.display()))?;
            let result = coffer_esdk::decrypt_to_vec(ring.as_ref(), &opts, &message);
            match (result, expect_error, expected_plain) {
                (Err(_), true, _) => Ok("rejected as expected"),
                (Ok(_), true, _) => Err("decrypted a message that must be rejected".into()),
                (Err(e), false, _) => Err(format!("did not decrypt: {e}")),
                (Ok((plain, _)), false, Some(p)) => {
                    let want = std::fs::read(resolve(&base, p).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                    if plain.expose() == &want[..] {
                        Ok("plaintext matches")
                    } else {
                        Err("decrypted to a different plaintext".into())
                    }
                }
                (Ok(_), false, None) => Err("the test names no expected result".into()),
            }
        })();
        let (status, detail) = match &outcome {
            Ok(d) => {
                passed += 1;
                ("pass", d.to_string())
            }
            Err(e) if e.starts_with("skip: ") => {
                skipped += 1;
                ("skip", e.trim_start_matches("skip: ").to_string())
            }
            Err(e) => {
                failed += 1;
                ("fail", e.clone())
            }
        };
        if a.json {
            println!(
                "{}",
                json!({"test": name, "status": status, "detail": detail})
            );
        } else if status != "pass" {
            println!("{status}: {name}: {detail}");
        }
    }
    if !a.json {
        println!(
            "{passed} passed, {failed} failed, {skipped} skipped of {} tests",
            tests.len()
        );
    }
    Ok(if failed == 0 && passed > 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn encrypt(a: EncryptVectorsArgs) -> anyhow::Result<std::process::ExitCode> {
    let keys = read_json(&a.keys)?;
    let entries = keys["keys"]
        .as_object()
        .context("the keys manifest has no 'keys'")?;
    std::fs::create_dir_all(a.output.join("ciphertexts"))?;
    std::fs::create_dir_all(a.output.join("plaintexts"))?;
    let keys_copy = a.output.join("keys.json");
    if std::fs::canonicalize(&a.keys).ok() != std::fs::canonicalize(&keys_copy).ok() {
        std::fs::copy(&a.keys, &keys_copy)?;
    }
    let mut plaintext = vec![0u8; a.plaintext_size];
    coffer_crypto::fill_random(&mut plaintext)?;
    std::fs::write(a.output.join("plaintexts").join("small"), &plaintext)?;
    // Every raw key that may encrypt, as the master keys a decryptor needs.
    let mut master_keys: Vec<(String, Value)> = Vec::new();
    for (name, k) in entries {
        if k["encrypt"] != true {
            continue;
        }
        match (k["algorithm"].as_str(), k["type"].as_str()) {
            (Some("aes"), _) => master_keys.push((
                name.clone(),
                json!({"type": "raw", "key": name, "provider-id": "aws-raw-vectors-persistant", "encryption-algorithm": "aes"}),
            )),
            (Some("rsa"), Some("private")) => {
                for (p, h) in [("pkcs1", None), ("oaep-mgf1", Some("sha1")), ("oaep-mgf1", Some("sha256"))] {
                    let mut mk = json!({"type": "raw", "key": name, "provider-id": "aws-raw-vectors-persistant", "encryption-algorithm": "rsa", "padding-algorithm": p});
                    if let Some(h) = h {
                        mk["padding-hash"] = json!(h);
                    }
                    master_keys.push((format!("{name}-{p}{}", h.map(|h| format!("-{h}")).unwrap_or_default()), mk));
                }
            }
            _ => {}
        }
    }
    if master_keys.is_empty() {
        bail!("the keys manifest has no raw AES key or RSA private key that may encrypt");
    }
    let mut tests = BTreeMap::new();
    for suite in Suite::ALL {
        for &fl in &a.frame_lengths {
            for (label, mk) in &master_keys {
                let ring = keyring_for(mk, &keys)?;
                let opts = EncryptOptions {
                    suite,
                    frame_length: fl,
                    context: BTreeMap::from([
                        ("purpose".to_string(), "test-vector".to_string()),
                        ("suite".to_string(), format!("{:04X}", suite.id())),
                    ]),
                    commitment_policy: if suite.is_committing() {
                        CommitmentPolicy::RequireEncryptRequireDecrypt
                    } else {
                        CommitmentPolicy::ForbidEncryptAllowDecrypt
                    },
                    max_encrypted_data_keys: None,
                };
                let (msg, _) = coffer_esdk::encrypt_to_vec(ring.as_ref(), &opts, &plaintext)?;
                let id = format!("coffer-{:04x}-frame{fl}-{label}", suite.id());
                std::fs::write(a.output.join("ciphertexts").join(&id), &msg)?;
                tests.insert(
                    id.clone(),
                    json!({
                        "description": format!("Coffer: {} frame length {fl}, {label}", suite.name()),
                        "ciphertext": format!("file://ciphertexts/{id}"),
                        "master-keys": [mk],
                        "result": {"output": {"plaintext": "file://plaintexts/small"}},
                    }),
                );
            }
        }
    }
    let n = tests.len();
    let manifest = json!({
        "manifest": {"type": "awses-decrypt", "version": 2},
        "client": {"name": "coffer", "version": env!("CARGO_PKG_VERSION")},
        "keys": "file://keys.json",
        "tests": tests,
    });
    std::fs::write(
        a.output.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    println!(
        "wrote {n} messages and {}",
        a.output.join("manifest.json").display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

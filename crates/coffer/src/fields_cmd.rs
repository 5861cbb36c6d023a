//! `coffer encrypt-fields` and `coffer decrypt-fields`: field-level encryption of JSON and JSON
//! Lines records with a table config (see docs/encryption-sdk.md). The table's data key is made
//! by KMS (`encrypt-fields --create-key`), kept in the config wrapped, unwrapped by KMS when
//! needed and cached for a bounded time and number of records.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use coffer_crypto::SecretBytes;
use coffer_esdk::fields::{CachedTable, TableConfig};
use serde_json::{Value, json};

use crate::esdk_cmd::{Kms, KmsConn, take_secret};
use crate::fsutil;

#[derive(Debug, Args)]
pub struct FieldsArgs {
    /// The table config (JSON): table, actions, context_fields, default_action,
    /// signature_field, cache and data_key.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Records to read: a JSON Lines file (one object per line), a JSON array of objects or
    /// one JSON object; - for standard input.
    #[arg(value_name = "INPUT", default_value = "-")]
    input: PathBuf,
    /// Where to write the records, in the input's form; - for standard output.
    #[arg(short, long, value_name = "PATH", default_value = "-")]
    output: PathBuf,
    /// Print the summary (records, KMS calls, time) as JSON on standard error.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: KmsConn,
}

#[derive(Debug, Args)]
pub struct EncryptFieldsArgs {
    #[command(flatten)]
    io: FieldsArgs,
    /// Instead of encrypting: have KMS make the table's data key under this KMS key and write
    /// it, wrapped, into the config's data_key (the config must not have one yet).
    #[arg(long, value_name = "KMS_KEY")]
    create_key: Option<String>,
}

/// The config file: the table config plus where its key is and how long it is cached.
struct ConfigFile {
    table: TableConfig,
    kms_key_id: String,
    wrapped: Vec<u8>,
    max_age: Duration,
    max_uses: u64,
}

fn table_context(table: &str) -> Value {
    json!({ "coffer:table": table })
}

fn read_config(path: &Path) -> anyhow::Result<(Value, TableConfig)> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the config {}", path.display()))?;
    let mut doc: Value = serde_json::from_slice(&text)
        .with_context(|| format!("the config {} is not JSON", path.display()))?;
    let obj = doc
        .as_object_mut()
        .context("the config is not a JSON object")?;
    let mut rest = obj.clone();
    rest.remove("data_key");
    rest.remove("cache");
    let table: TableConfig = serde_json::from_value(Value::Object(rest))
        .with_context(|| format!("the config {} is not valid", path.display()))?;
    table.check()?;
    Ok((doc, table))
}

fn load(path: &Path) -> anyhow::Result<ConfigFile> {
    let (doc, table) = read_config(path)?;
    let dk = &doc["data_key"];
    let kms_key_id = dk["kms_key_id"].as_str().with_context(|| {
        format!(
            "the config has no data_key yet: create one with `coffer encrypt-fields --config {} --create-key <KMS key>`",
            path.display()
        )
    })?;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(
            dk["ciphertext"]
                .as_str()
                .context("data_key has no ciphertext")?,
        )
        .context("data_key.ciphertext is not base64")?;
    let cache = &doc["cache"];
    let max_age = Duration::from_secs(cache["max_age_seconds"].as_u64().unwrap_or(300));
    let max_uses = cache["max_uses"].as_u64().unwrap_or(1_000_000);
    Ok(ConfigFile {
        table,
        kms_key_id: kms_key_id.to_owned(),
        wrapped,
        max_age,
        max_uses,
    })
}

fn fingerprint(wrapped: &[u8]) -> [u8; 8] {
    let h = coffer_crypto::digest::sha256(wrapped);
    let mut f = [0u8; 8];
    f.copy_from_slice(&h[..8]);
    f
}

pub fn run_encrypt(a: EncryptFieldsArgs) -> anyhow::Result<std::process::ExitCode> {
    if let Some(kms_key) = &a.create_key {
        return create_key(&a.io, kms_key);
    }
    process(&a.io, true)
}

pub fn run_decrypt(a: FieldsArgs) -> anyhow::Result<std::process::ExitCode> {
    process(&a, false)
}

fn create_key(io: &FieldsArgs, kms_key: &str) -> anyhow::Result<std::process::ExitCode> {
    let (mut doc, table) = read_config(&io.config)?;
    if !doc["data_key"].is_null() {
        bail!(
            "{} already has a data_key; records encrypted under it need it to decrypt, so it is not replaced",
            io.config.display()
        );
    }
    let kms = Kms::new(&io.conn)?;
    let v = kms
        .call(
            kms_key,
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": kms_key, "KeySpec": "AES_256", "EncryptionContext": table_context(&table.table)}),
        )
        .map_err(|e| anyhow::anyhow!("KMS GenerateDataKeyWithoutPlaintext with {kms_key}: {e}"))?;
    let arn = v["KeyId"].as_str().context("no KeyId in the response")?;
    let blob = v["CiphertextBlob"]
        .as_str()
        .context("no CiphertextBlob in the response")?;
    doc["data_key"] = json!({"kms_key_id": arn, "ciphertext": blob});
    let text = serde_json::to_vec_pretty(&doc)?;
    let tmp = fsutil::aside(&io.config)?;
    std::fs::write(tmp.path(), &text)?;
    fsutil::persist(tmp, &io.config)?;
    eprintln!(
        "created the data key of table '{}' under {arn} and wrote it (wrapped) to {}",
        table.table,
        io.config.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

fn process(io: &FieldsArgs, encrypt: bool) -> anyhow::Result<std::process::ExitCode> {
    let cfg = load(&io.config)?;
    let table_name = cfg.table.table.clone();
    let mut cache = CachedTable::new(
        cfg.table,
        fingerprint(&cfg.wrapped),
        cfg.max_age,
        cfg.max_uses,
    )?;
    let mut kms: Option<Kms> = None;
    let conn = &io.conn;
    let key_id = cfg.kms_key_id.clone();
    let wrapped = cfg.wrapped.clone();
    let mut fetch = || -> Result<SecretBytes, coffer_esdk::Error> {
        if kms.is_none() {
            kms = Some(Kms::new(conn).map_err(|e| coffer_esdk::Error::Keyring(format!("{e:#}")))?);
        }
        let Some(k) = kms.as_ref() else {
            return Err(coffer_esdk::Error::Keyring("no KMS client".into()));
        };
        let mut v = k
            .call(
                &key_id,
                "Decrypt",
                json!({"KeyId": key_id, "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(&wrapped), "EncryptionContext": table_context(&table_name)}),
            )
            .map_err(|e| coffer_esdk::Error::Keyring(format!("KMS Decrypt of the table's data key with {key_id}: {e}")))?;
        take_secret(&mut v, "Plaintext")
            .map_err(|e| coffer_esdk::Error::Keyring(format!("KMS Decrypt: {e}")))
    };
    let started = Instant::now();
    let mut input: Box<dyn BufRead> = if io.input.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin().lock()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&io.input)
                .with_context(|| format!("cannot open {}", io.input.display()))?,
        ))
    };
    // The output appears only once every record has been processed.
    let (mut out, tmp): (Box<dyn Write>, Option<tempfile::NamedTempFile>) =
        if io.output.as_os_str() == "-" {
            (
                Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                None,
            )
        } else {
            let tmp = fsutil::aside(&io.output)?;
            (Box::new(std::io::BufWriter::new(tmp.reopen()?)), Some(tmp))
        };
    let verb = if encrypt { "encrypt" } else { "decrypt" };
    let mut one = |record: &mut Value, n: u64| -> anyhow::Result<()> {
        let c = cache.cipher(&mut fetch)?;
        let r = if encrypt {
            c.encrypt(record)
        } else {
            c.decrypt(record)
        };
        r.map_err(|e| anyhow::anyhow!("record {n}: {e}"))
    };
    let mut records = 0u64;
    // JSON Lines unless the input starts with '[' (an array) or is one object over several lines.
    let first = {
        let buf = input.fill_buf()?;
        buf.iter().find(|b| !b.is_ascii_whitespace()).copied()
    };
    let result: anyhow::Result<()> = (|| {
        if first == Some(b'[') {
            let mut text = String::new();
            input.read_to_string(&mut text)?;
            let mut doc: Value =
                serde_json::from_str(&text).context("the input is not a JSON array")?;
            for r in doc
                .as_array_mut()
                .context("the input is not a JSON array")?
            {
                records += 1;
                one(r, records)?;
            }
            serde_json::to_writer(&mut out, &doc)?;
            out.write_all(b"\n")?;
            return Ok(());
        }
        let mut line = String::new();
        let mut pending = String::new();
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            if pending.is_empty() && line.trim().is_empty() {
                continue;
            }
            pending.push_str(&line);
            // A record may span several lines (a pretty-printed object): read on until it parses.
            let mut r: Value = match serde_json::from_str(&pending) {
                Ok(v) => v,
                Err(e) if e.is_eof() => continue,
                Err(e) => bail!("record {}: not JSON: {e}", records + 1),
            };
            pending.clear();
            records += 1;
            one(&mut r, records)?;
            serde_json::to_writer(&mut out, &r)?;
            out.write_all(b"\n")?;
        }
        if !pending.trim().is_empty() {
            bail!("the input ends inside record {}", records + 1);
        }
        Ok(())
    })();
    if let Err(e) = result {
        drop(out);
        eprintln!("coffer: cannot {verb} the records: {e:#}; no output was written");
        return Ok(std::process::ExitCode::FAILURE);
    }
    out.flush()?;
    drop(out);
    if let Some(tmp) = tmp {
        fsutil::persist(tmp, &io.output)?;
    }
    let secs = started.elapsed().as_secs_f64();
    if io.json {
        eprintln!(
            "{}",
            json!({"mode": verb, "records": records, "kms_decrypt_calls": cache.fetches(), "seconds": secs})
        );
    } else {
        eprintln!(
            "{verb}ed {records} records in {secs:.2} s ({} KMS Decrypt call(s) for the table's data key)",
            cache.fetches()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

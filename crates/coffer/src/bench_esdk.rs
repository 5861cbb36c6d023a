//! `coffer bench esdk`: AWS Encryption SDK messages encrypted and decrypted in memory with 0x0478
//! and 0x0578, beside raw AES-256-GCM over the same bytes in the same frame-sized pieces (the
//! ceiling: what is left is the format's cost), in alternating rounds; optionally beside the
//! Python AWS Encryption SDK streaming the same bytes file to file.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use coffer_crypto::esdk::Gcm;
use coffer_esdk::{CommitmentPolicy, DecryptOptions, EncryptOptions, RawAesKeyring, Suite};
use serde_json::json;

#[derive(Debug, Args)]
pub struct EsdkBenchArgs {
    /// Plaintext size, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Frame length of the messages (and piece size of the raw baseline).
    #[arg(long, default_value_t = coffer_esdk::DEFAULT_FRAME_LENGTH)]
    frame_length: u32,
    /// Alternating rounds (the median of each measurement is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also time the Python AWS Encryption SDK (this interpreter, which must have
    /// aws-encryption-sdk installed) on the same bytes, file to file.
    #[arg(long, value_name = "PYTHON")]
    python: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

const PY_BENCH: &str = r#"
import sys, time, aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey
key = RawMasterKey(provider_id="bench", key_id=b"key", wrapping_key=WrappingKey(
    wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING, wrapping_key=b"k" * 32,
    wrapping_key_type=EncryptionKeyType.SYMMETRIC))
client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
src, suite, frame = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3])
algorithm = next(a for a in Algorithm if a.algorithm_id == suite)
t = time.perf_counter()
with open(src, "rb") as fin, open(src + ".enc", "wb") as fout:
    with client.stream(mode="e", source=fin, key_provider=key, algorithm=algorithm, frame_length=frame) as s:
        for chunk in s:
            fout.write(chunk)
enc = time.perf_counter() - t
t = time.perf_counter()
with open(src + ".enc", "rb") as fin, open(src + ".dec", "wb") as fout:
    with client.stream(mode="d", source=fin, key_provider=key) as s:
        for chunk in s:
            fout.write(chunk)
dec = time.perf_counter() - t
print(enc, dec)
"#;

pub fn run(a: EsdkBenchArgs) -> anyhow::Result<()> {
    let n = a.mib << 20;
    let mut data = vec![0u8; n];
    // Random bytes, cheaply: one random MiB repeated (GCM's speed does not depend on content).
    let mut block = vec![0u8; 1 << 20];
    coffer_crypto::fill_random(&mut block)?;
    for chunk in data.chunks_mut(block.len()) {
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    let key = [0x5au8; 32];
    let ring = RawAesKeyring::new("bench", "key", &key)?;
    let gcm = Gcm::new(&key)?;
    let fl = a.frame_length.max(1) as usize;
    let mb = n as f64 / 1e6;
    let suites = [
        Suite::Aes256GcmHkdfSha512Commit,
        Suite::Aes256GcmHkdfSha512CommitEcdsaP384,
    ];
    let mut raw = Vec::new();
    let mut enc: Vec<Vec<f64>> = vec![Vec::new(); suites.len()];
    let mut dec: Vec<Vec<f64>> = vec![Vec::new(); suites.len()];
    let mut message = Vec::with_capacity(n + n / fl * 40 + 4096);
    let mut work = data.clone();
    for _ in 0..a.rounds.max(1) {
        // Raw AES-256-GCM: seal every frame-sized piece in place, nothing else.
        let t = Instant::now();
        for (i, piece) in work.chunks_mut(fl).enumerate() {
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&(i as u64).to_be_bytes());
            std::hint::black_box(gcm.seal(&iv, b"", piece)?);
        }
        raw.push(mb / t.elapsed().as_secs_f64());
        for (s, suite) in suites.iter().enumerate() {
            let opts = EncryptOptions {
                suite: *suite,
                frame_length: a.frame_length,
                ..Default::default()
            };
            message.clear();
            let t = Instant::now();
            coffer_esdk::encrypt(&ring, &opts, &mut &data[..], &mut message)?;
            enc[s].push(mb / t.elapsed().as_secs_f64());
            let t = Instant::now();
            let info = coffer_esdk::decrypt(
                &ring,
                &DecryptOptions {
                    commitment_policy: CommitmentPolicy::RequireEncryptRequireDecrypt,
                    ..Default::default()
                },
                &mut &message[..],
                &mut std::io::sink(),
            )?;
            dec[s].push(mb / t.elapsed().as_secs_f64());
            anyhow::ensure!(info.plaintext_len == n as u64, "decrypted length differs");
        }
    }
    let raw = median(raw);
    let enc: Vec<f64> = enc.into_iter().map(median).collect();
    let dec: Vec<f64> = dec.into_iter().map(median).collect();
    let mut python = Vec::new();
    if let Some(py) = &a.python {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("plain.bin");
        std::fs::write(&src, &data)?;
        for suite in suites {
            let out = std::process::Command::new(py)
                .arg("-c")
                .arg(PY_BENCH)
                .arg(&src)
                .arg(format!("{:04x}", suite.id()))
                .arg(a.frame_length.to_string())
                .output()
                .with_context(|| format!("cannot run {py}"))?;
            anyhow::ensure!(
                out.status.success(),
                "the Python SDK run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text
                .split_whitespace()
                .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
            let (e, d) = (it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN));
            python.push((suite, mb / e, mb / d));
        }
    }
    if a.json {
        let rows: Vec<_> = suites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let py = python.iter().find(|p| p.0 == *s);
                json!({
                    "suite": format!("0x{:04X}", s.id()),
                    "encrypt_mb_per_s": enc[i],
                    "decrypt_mb_per_s": dec[i],
                    "encrypt_ratio_to_raw": enc[i] / raw,
                    "decrypt_ratio_to_raw": dec[i] / raw,
                    "python_encrypt_mb_per_s": py.map(|p| p.1),
                    "python_decrypt_mb_per_s": py.map(|p| p.2),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "plaintext_bytes": n,
                "frame_length": a.frame_length,
                "raw_aes_256_gcm_mb_per_s": raw,
                "suites": rows,
            }))?
        );
        return Ok(());
    }
    println!(
        "{} MiB in frames of {} bytes, median of {} rounds",
        a.mib,
        a.frame_length,
        a.rounds.max(1)
    );
    println!("raw AES-256-GCM, same pieces (the ceiling): {raw:>8.1} MB/s");
    for (i, s) in suites.iter().enumerate() {
        println!(
            "0x{:04X} encrypt: {:>8.1} MB/s ({:.2} of raw)   decrypt: {:>8.1} MB/s ({:.2} of raw)",
            s.id(),
            enc[i],
            enc[i] / raw,
            dec[i],
            dec[i] / raw
        );
    }
    for (s, e, d) in &python {
        println!(
            "Python aws-encryption-sdk 0x{:04X}, file to file: encrypt {e:>7.1} MB/s, decrypt {d:>7.1} MB/s",
            s.id()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct FieldsBenchArgs {
    /// Records per round.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Alternating rounds (the median of each measurement is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `coffer bench fields`: records/s of field-level encryption and decryption of a 10-field
/// JSON Lines record (3 deterministic, 3 randomized, 2 signed, the context field, 1 left alone),
/// beside parsing and writing the same lines without encryption (the ceiling).
pub fn fields(a: FieldsBenchArgs) -> anyhow::Result<()> {
    use coffer_esdk::fields::{RecordCipher, TableConfig};
    let config: TableConfig = serde_json::from_value(json!({
        "table": "bench",
        "actions": {"ssn": "deterministic", "email": "deterministic", "phone": "deterministic",
                    "card": "randomized", "dob": "randomized", "address": "randomized",
                    "status": "sign-only", "plan": "sign-only", "notes": "nothing"},
        "context_fields": ["id"],
    }))?;
    let cipher = RecordCipher::new(config, &[0x42u8; 32], [7; 8])?;
    let lines: Vec<String> = (0..a.records)
        .map(|i| {
            json!({"id": i, "ssn": format!("078-05-{:04}", i % 10_000), "email": format!("user{i}@example.com"),
                   "phone": format!("+1-555-{:07}", i), "card": "4111 1111 1111 1111", "dob": "1980-04-01",
                   "address": {"street": "1 Main St", "city": "Springfield", "zip": "12345"},
                   "status": "active", "plan": "gold", "notes": "called about the invoice"})
            .to_string()
        })
        .collect();
    let mut encrypted = Vec::with_capacity(lines.len());
    let (mut base, mut enc, mut dec) = (Vec::new(), Vec::new(), Vec::new());
    let n = a.records as f64;
    for _ in 0..a.rounds.max(1) {
        let t = Instant::now();
        let mut out = Vec::with_capacity(lines.len() * 300);
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l)?;
            serde_json::to_writer(&mut out, &v)?;
            out.push(b'\n');
        }
        std::hint::black_box(&out);
        base.push(n / t.elapsed().as_secs_f64());
        encrypted.clear();
        let t = Instant::now();
        for l in &lines {
            let mut v: serde_json::Value = serde_json::from_str(l)?;
            cipher.encrypt(&mut v)?;
            encrypted.push(v.to_string());
        }
        enc.push(n / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut out = Vec::with_capacity(lines.len() * 300);
        for l in &encrypted {
            let mut v: serde_json::Value = serde_json::from_str(l)?;
            cipher.decrypt(&mut v)?;
            serde_json::to_writer(&mut out, &v)?;
            out.push(b'\n');
        }
        std::hint::black_box(&out);
        dec.push(n / t.elapsed().as_secs_f64());
    }
    let (base, enc, dec) = (median(base), median(enc), median(dec));
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "records": a.records, "fields_per_record": 10,
                "parse_and_write_records_per_s": base,
                "encrypt_records_per_s": enc, "decrypt_records_per_s": dec,
                "encrypt_ratio": enc / base, "decrypt_ratio": dec / base,
            }))?
        );
    } else {
        println!(
            "{} records of 10 fields, median of {} rounds, one core",
            a.records,
            a.rounds.max(1)
        );
        println!("parse and write only (the ceiling): {base:>10.0} records/s");
        println!(
            "encrypt-fields:                     {enc:>10.0} records/s ({:.2} of the ceiling)",
            enc / base
        );
        println!(
            "decrypt-fields:                     {dec:>10.0} records/s ({:.2} of the ceiling)",
            dec / base
        );
    }
    Ok(())
}

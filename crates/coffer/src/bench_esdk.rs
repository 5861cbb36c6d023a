//! `coffer bench esdk`: AWS Encryption SDK messages encrypted and decrypted in memory with 0x0478
//! and 0x0578, beside raw AES-256-GCM over the same bytes in the same frame-sized pieces (the
//! ceiling: what is left is the format's cost), in alternating rounds; optionally beside the
//! Python AWS Encryption SDK streaming the same bytes file to file.

use std::time::Instant;

use std::path::{Path, PathBuf};
use std::process::Command;

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
    /// Also compare the command-line tools file to file: `coffer encrypt`/`decrypt` and this
    /// aws-encryption-cli, both with a KMS key of a Coffer server started here, timed with their
    /// peak memory.
    #[arg(long, value_name = "AWS_ENCRYPTION_CLI")]
    cli: Option<PathBuf>,
    /// Where the files of --cli go (e.g. /dev/shm, so that the disk does not set the pace).
    /// [default: the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
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
    // The message buffer is touched once before timing, so that no round pays the kernel's
    // first-touch page faults (the raw baseline works in a buffer already touched, too).
    let mut message = Vec::with_capacity(n + n / fl * 40 + 4096);
    message.resize(message.capacity(), 0xa5);
    message.clear();
    let mut work = data.clone();
    // Raw AES-256-GCM: seal every frame-sized piece in place, nothing else. It runs right
    // before and after each measurement, and each ratio is against the mean of those two (the
    // machine's speed drifts between rounds).
    let mut raw_once = || -> anyhow::Result<f64> {
        let t = Instant::now();
        for (i, piece) in work.chunks_mut(fl).enumerate() {
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&(i as u64).to_be_bytes());
            std::hint::black_box(gcm.seal(&iv, b"", piece)?);
        }
        Ok(mb / t.elapsed().as_secs_f64())
    };
    let mut enc_ratio: Vec<Vec<f64>> = vec![Vec::new(); suites.len()];
    let mut dec_ratio: Vec<Vec<f64>> = vec![Vec::new(); suites.len()];
    for _ in 0..a.rounds.max(1) {
        for (s, suite) in suites.iter().enumerate() {
            let opts = EncryptOptions {
                suite: *suite,
                frame_length: a.frame_length,
                ..Default::default()
            };
            // Both directions stream their output into a sink, as into a pipe or a file's
            // buffer: the cost measured is the format's, not that of filling 1 GiB of memory.
            let r0 = raw_once()?;
            let t = Instant::now();
            let written = coffer_esdk::encrypt(&ring, &opts, &mut &data[..], &mut std::io::sink())?;
            let e = mb / t.elapsed().as_secs_f64();
            let r1 = raw_once()?;
            message.clear();
            coffer_esdk::encrypt(&ring, &opts, &mut &data[..], &mut message)?;
            // (Equal up to the signature, whose DER length varies by a byte or two.)
            anyhow::ensure!(
                written.message_len.abs_diff(message.len() as u64) < 8,
                "message lengths differ"
            );
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
            let d = mb / t.elapsed().as_secs_f64();
            let r2 = raw_once()?;
            anyhow::ensure!(info.plaintext_len == n as u64, "decrypted length differs");
            raw.extend([r0, r1, r2]);
            enc[s].push(e);
            dec[s].push(d);
            enc_ratio[s].push(e / ((r0 + r1) / 2.0));
            dec_ratio[s].push(d / ((r1 + r2) / 2.0));
        }
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    let enc_range: Vec<(f64, f64)> = enc_ratio.iter().map(|v| range(v)).collect();
    let dec_range: Vec<(f64, f64)> = dec_ratio.iter().map(|v| range(v)).collect();
    let enc_ratio: Vec<f64> = enc_ratio.into_iter().map(median).collect();
    let dec_ratio: Vec<f64> = dec_ratio.into_iter().map(median).collect();
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
    let cli_rows = match &a.cli {
        Some(cli) => compare_clis(cli, a.work_dir.as_deref(), &data, a.frame_length, &suites)?,
        None => Vec::new(),
    };
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
                    "encrypt_ratio_to_raw": enc_ratio[i],
                    "encrypt_ratio_range": enc_range[i],
                    "decrypt_ratio_to_raw": dec_ratio[i],
                    "decrypt_ratio_range": dec_range[i],
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
                "cli": cli_rows.iter().map(|r| json!({
                    "tool": r.tool, "suite": format!("0x{:04X}", r.suite.id()),
                    "encrypt_mb_per_s": mb / r.encrypt.0, "encrypt_peak_rss_bytes": r.encrypt.1,
                    "decrypt_mb_per_s": mb / r.decrypt.0, "decrypt_peak_rss_bytes": r.decrypt.1,
                })).collect::<Vec<_>>(),
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
            "0x{:04X} encrypt: {:>8.1} MB/s, {:.2} of raw ({:.2}-{:.2})   decrypt: {:>8.1} MB/s, {:.2} of raw ({:.2}-{:.2})",
            s.id(),
            enc[i],
            enc_ratio[i],
            enc_range[i].0,
            enc_range[i].1,
            dec[i],
            dec_ratio[i],
            dec_range[i].0,
            dec_range[i].1
        );
    }
    for r in &cli_rows {
        println!(
            "{:<18} 0x{:04X} file to file: encrypt {:>7.1} MB/s (peak {:>5.0} MiB)   decrypt {:>7.1} MB/s (peak {:>5.0} MiB)",
            r.tool,
            r.suite.id(),
            mb / r.encrypt.0,
            r.encrypt.1 as f64 / 1048576.0,
            mb / r.decrypt.0,
            r.decrypt.1 as f64 / 1048576.0
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

/// One tool's file-to-file run: (seconds, peak resident bytes) for encryption and decryption.
struct CliRow {
    tool: &'static str,
    suite: Suite,
    encrypt: (f64, u64),
    decrypt: (f64, u64),
}

/// Runs `cmd` to completion, polling its peak resident memory (VmHWM) as it runs.
fn run_measured(cmd: &mut Command) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut peak = 0u64;
    let status = loop {
        if let Some(p) = crate::bench::peak_rss_of(child.id()) {
            peak = peak.max(p);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        anyhow::bail!("{cmd:?} failed: {err}");
    }
    Ok((secs, peak))
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::io::Read as _;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba)?;
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na])?;
            if k == 0 {
                return Ok(false);
            }
            nb += k;
        }
        if na == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        if ba[..na] != bb[..na] {
            return Ok(false);
        }
    }
}

/// `coffer encrypt`/`decrypt` and the aws-encryption-cli on the same file with a KMS key of a
/// Coffer started here.
fn compare_clis(
    cli: &Path,
    work_dir: Option<&Path>,
    data: &[u8],
    frame_length: u32,
    suites: &[Suite],
) -> anyhow::Result<Vec<CliRow>> {
    let (_server, endpoint, dir) = crate::bench::start_own_server(&["--anomaly-interval", "0"])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let arn = runtime.block_on(async {
        let t = crate::client::target(&endpoint, &dir, "us-east-1")?;
        let mut s = crate::client::connect(&t).await?;
        let v = crate::client::kms_call(
            &t,
            &mut s,
            "CreateKey",
            json!({"Description": "bench esdk"}),
        )
        .await?;
        v["KeyMetadata"]["Arn"]
            .as_str()
            .map(str::to_owned)
            .context("CreateKey returned no ARN")
    })?;
    let work = match work_dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let plain = work.path().join("plain.bin");
    std::fs::write(&plain, data)?;
    let exe = std::env::current_exe()?;
    let ca = dir.join("tls").join("ca.pem");
    let mut rows = Vec::new();
    for &suite in suites {
        let enc = work.path().join("coffer.enc");
        let dec = work.path().join("coffer.dec");
        // `coffer encrypt|decrypt` with the Coffer's endpoint, CA and credentials.
        let coffer = |mode: &str, input: &Path, output: &Path| {
            let mut c = Command::new(&exe);
            c.args([
                mode,
                "--no-progress",
                "--kms-key",
                &arn,
                "--endpoint",
                &endpoint,
            ])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--ca-bundle")
            .arg(&ca)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .arg(input)
            .arg("-o")
            .arg(output);
            c
        };
        let mut c = coffer("encrypt", &plain, &enc);
        c.arg("--suite")
            .arg(format!("0x{:04x}", suite.id()))
            .arg("--frame-length")
            .arg(frame_length.to_string());
        let e = run_measured(&mut c)?;
        let d = run_measured(&mut coffer("decrypt", &enc, &dec))?;
        anyhow::ensure!(same_file(&plain, &dec)?, "coffer decrypt gave other bytes");
        rows.push(CliRow {
            tool: "coffer",
            suite,
            encrypt: e,
            decrypt: d,
        });
        std::fs::remove_file(&enc)?;
        std::fs::remove_file(&dec)?;
        let env: [(&str, std::ffi::OsString); 6] = [
            ("AWS_ENDPOINT_URL_KMS", endpoint.clone().into()),
            ("AWS_CA_BUNDLE", ca.clone().into_os_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("credentials").into_os_string(),
            ),
            ("AWS_PROFILE", "default".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ];
        let py_enc = work.path().join("py.enc");
        let py_dec = work.path().join("py.dec");
        // The aws-encryption-cli, with the Coffer's endpoint, CA and credentials.
        let aws_cli = |mode: &str, input: &Path, output: &Path| {
            let mut c = Command::new(cli);
            c.args([
                mode,
                "-S",
                "--commitment-policy",
                "require-encrypt-require-decrypt",
            ])
            .arg("-w")
            .arg(format!("key={arn}"))
            .arg("-i")
            .arg(input)
            .arg("-o")
            .arg(output)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_ENDPOINT_URL");
            for (k, v) in &env {
                c.env(k, v);
            }
            c
        };
        let mut c = aws_cli("--encrypt", &plain, &py_enc);
        c.args(["--algorithm", suite.name()])
            .arg("--frame-length")
            .arg(frame_length.to_string());
        let e = run_measured(&mut c)?;
        let d = run_measured(&mut aws_cli("--decrypt", &py_enc, &py_dec))?;
        anyhow::ensure!(
            same_file(&plain, &py_dec)?,
            "aws-encryption-cli decrypt gave other bytes"
        );
        rows.push(CliRow {
            tool: "aws-encryption-cli",
            suite,
            encrypt: e,
            decrypt: d,
        });
        std::fs::remove_file(&py_enc)?;
        std::fs::remove_file(&py_dec)?;
    }
    Ok(rows)
}

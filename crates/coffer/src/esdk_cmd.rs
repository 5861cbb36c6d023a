//! `coffer encrypt` and `coffer decrypt`: files, directory trees and standard streams in the AWS
//! Encryption SDK message format, with KMS keys (of Coffer or AWS) and raw AES/RSA keys.
//! Output files appear only once complete: each is written aside and renamed when the whole
//! message — signature included — has been written or verified.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use coffer_crypto::SecretBytes;
use coffer_crypto::esdk::{RsaPadding, RsaPrivateKey, RsaPublicKey};
use coffer_esdk::kms::{DiscoveryFilter, KmsArn, KmsClient, KmsDiscoveryKeyring, KmsKeyring};
use coffer_esdk::{
    CommitmentPolicy, Context, DecryptOptions, EncryptOptions, Keyring, MessageInfo, MultiKeyring,
    RawAesKeyring, RawRsaKeyring, Suite,
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::client::{self, Target};
use crate::config::{DEFAULT_DATA_DIR, DEFAULT_REGION};
use crate::fsutil;

/// Where the keys come from (shared by encrypt and decrypt).
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// A KMS key: key id, alias name, key ARN or alias ARN to encrypt with; on decryption a key
    /// ARN (an id or alias is resolved to its ARN first). Repeatable: the first generates the
    /// data key, every one wraps it.
    #[arg(long = "kms-key", value_name = "KEY")]
    kms_keys: Vec<String>,
    /// A raw AES key: NAMESPACE/NAME=FILE, FILE holding 16, 24 or 32 bytes (raw, or base64
    /// text). Namespace and name must match those used to encrypt. Repeatable.
    #[arg(long = "raw-aes-key", value_name = "NS/NAME=FILE")]
    raw_aes: Vec<String>,
    /// A raw RSA key: NAMESPACE/NAME=FILE[,padding=P], FILE a PEM private key (encrypts and
    /// decrypts) or public key (encrypts only); P one of pkcs1, oaep-sha1, oaep-sha256
    /// (default), oaep-sha384, oaep-sha512. Repeatable.
    #[arg(long = "raw-rsa-key", value_name = "NS/NAME=FILE[,padding=P]")]
    raw_rsa: Vec<String>,
    #[command(flatten)]
    conn: KmsConn,
    /// A grant token for the KMS calls (repeatable).
    #[arg(long = "grant-token", value_name = "TOKEN")]
    grant_tokens: Vec<String>,
    /// REQUIRE_ENCRYPT_REQUIRE_DECRYPT (default: only committing suites),
    /// REQUIRE_ENCRYPT_ALLOW_DECRYPT (also read older messages) or FORBID_ENCRYPT_ALLOW_DECRYPT
    /// (write messages SDKs before 2.0 can read).
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "REQUIRE_ENCRYPT_REQUIRE_DECRYPT"
    )]
    commitment_policy: String,
    /// Refuse messages with more encrypted data keys than this (and refuse to write them).
    #[arg(long, value_name = "N")]
    max_encrypted_data_keys: Option<usize>,
}

/// How to reach KMS (Coffer's or AWS's).
#[derive(Debug, Args)]
pub struct KmsConn {
    /// The KMS endpoint. [default: $AWS_ENDPOINT_URL_KMS, $AWS_ENDPOINT_URL, or
    /// https://127.0.0.1:8443]
    #[arg(long, env = "COFFER_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// CA certificate(s) to trust for the KMS endpoint. [default: $AWS_CA_BUNDLE, else
    /// DIR/tls/ca.pem of --data-dir when it exists, else the system's bundle]
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// A Coffer data dir, for its CA certificate and administrator credentials (used when
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set).
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Region to sign KMS requests for when the key is not given as an ARN.
    #[arg(long, env = "AWS_REGION", value_name = "REGION", default_value = DEFAULT_REGION)]
    region: String,
}

/// Inputs, outputs and reporting (shared by encrypt and decrypt).
#[derive(Debug, Args)]
pub struct IoArgs {
    /// Files or directories to read, or - for standard input.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Where to write: a file, a directory (one output per input, named after it plus the
    /// suffix), or - for standard output.
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
    /// Descend into directories given as inputs.
    #[arg(short, long)]
    recursive: bool,
    /// Suffix of output files written into a directory. [default: .encrypted when encrypting,
    /// .decrypted when decrypting]
    #[arg(long, value_name = "SUFFIX")]
    suffix: Option<String>,
    /// Never replace an existing output file.
    #[arg(long)]
    no_overwrite: bool,
    /// Print one JSON object per message (what it holds, never any key) instead of the human
    /// summary.
    #[arg(long)]
    json: bool,
    /// Show progress on standard error even when it is not a terminal.
    #[arg(long, conflicts_with = "no_progress")]
    progress: bool,
    /// Never show progress.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    #[command(flatten)]
    io: IoArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Encryption context entry KEY=VALUE (repeatable); bound to the message and needed,
    /// value for value, by whoever checks it on decryption.
    #[arg(short = 'c', long = "encryption-context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Algorithm suite, by id (0x0578) or name. [default: 0x0578, committing and signed]
    #[arg(long, value_name = "SUITE", default_value = "0x0578")]
    suite: String,
    /// Plaintext bytes per frame; 0 writes one non-framed body (held in memory).
    #[arg(long, value_name = "BYTES", default_value_t = coffer_esdk::DEFAULT_FRAME_LENGTH)]
    frame_length: u32,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    io: IoArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Decrypt with whichever KMS key wrapped the data key, as the message names it.
    #[arg(long)]
    discovery: bool,
    /// With --discovery: only keys of this account (repeatable; needs --discovery-partition).
    #[arg(
        long = "discovery-account",
        value_name = "ACCOUNT",
        requires = "discovery"
    )]
    discovery_accounts: Vec<String>,
    /// With --discovery-account: the keys' partition.
    #[arg(long, value_name = "PARTITION", default_value = "aws")]
    discovery_partition: String,
    /// Require KEY=VALUE in the message's encryption context, or KEY alone to require the key
    /// with any value (repeatable). A message without it is refused before anything is
    /// decrypted.
    #[arg(short = 'c', long = "encryption-context", value_name = "KEY[=VALUE]")]
    context: Vec<String>,
    /// The largest frame held in memory to authenticate it, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    max_frame_bytes: u64,
    /// To standard output: hold the plaintext until the whole message has verified (by
    /// default it streams out frame by frame; a failed signature then ends it with an error).
    #[arg(long)]
    buffer: bool,
}

pub fn run_encrypt(a: EncryptArgs) -> anyhow::Result<std::process::ExitCode> {
    let suite = Suite::parse(&a.suite).with_context(|| {
        format!(
            "unknown algorithm suite '{}': give an id such as 0x0578 or 0x0478, or a name such as AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
            a.suite
        )
    })?;
    let policy = parse_policy(&a.keys.commitment_policy)?;
    let mut context = Context::new();
    for c in &a.context {
        let (k, v) = c
            .split_once('=')
            .with_context(|| format!("encryption context '{c}' is not KEY=VALUE"))?;
        if k.is_empty() {
            bail!("encryption context '{c}' has an empty key");
        }
        context.insert(k.to_owned(), v.to_owned());
    }
    let opts = EncryptOptions {
        suite,
        frame_length: a.frame_length,
        context,
        commitment_policy: policy,
        max_encrypted_data_keys: a.keys.max_encrypted_data_keys,
    };
    let keyring = build_keyring(&a.keys, Mode::Encrypt, None)?;
    process(&a.io, Mode::Encrypt, &mut |input, output| {
        coffer_esdk::encrypt(keyring.as_ref(), &opts, input, output).map_err(Into::into)
    })
}

pub fn run_decrypt(a: DecryptArgs) -> anyhow::Result<std::process::ExitCode> {
    let policy = parse_policy(&a.keys.commitment_policy)?;
    let mut opts = DecryptOptions {
        commitment_policy: policy,
        max_encrypted_data_keys: a.keys.max_encrypted_data_keys,
        max_frame_bytes: a.max_frame_bytes,
        ..Default::default()
    };
    for c in &a.context {
        match c.split_once('=') {
            Some((k, v)) => {
                opts.required_context.insert(k.to_owned(), v.to_owned());
            }
            None => opts.required_keys.push(c.clone()),
        }
    }
    let discovery = a.discovery.then(|| {
        (!a.discovery_accounts.is_empty()).then(|| DiscoveryFilter {
            partition: a.discovery_partition.clone(),
            accounts: a.discovery_accounts.clone(),
        })
    });
    let keyring = build_keyring(&a.keys, Mode::Decrypt, discovery)?;
    let buffer = a.buffer;
    process(&a.io, Mode::Decrypt, &mut |input, output| {
        if buffer {
            let mut message = Vec::new();
            input.read_to_end(&mut message)?;
            let (plain, info) = coffer_esdk::decrypt_to_vec(keyring.as_ref(), &opts, &message)?;
            output.write_all(plain.expose())?;
            output.flush()?;
            Ok(info)
        } else {
            coffer_esdk::decrypt(keyring.as_ref(), &opts, input, output).map_err(Into::into)
        }
    })
}

fn parse_policy(s: &str) -> anyhow::Result<CommitmentPolicy> {
    CommitmentPolicy::parse(s).with_context(|| {
        format!(
            "unknown commitment policy '{s}': use REQUIRE_ENCRYPT_REQUIRE_DECRYPT, REQUIRE_ENCRYPT_ALLOW_DECRYPT or FORBID_ENCRYPT_ALLOW_DECRYPT"
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Encrypt,
    Decrypt,
}

impl Mode {
    fn verb(self) -> &'static str {
        match self {
            Mode::Encrypt => "encrypt",
            Mode::Decrypt => "decrypt",
        }
    }
}

/// A raw key given on the command line as `NS/NAME=FILE[,opt=value…]`.
struct RawSpec {
    namespace: String,
    name: String,
    file: PathBuf,
    options: Vec<(String, String)>,
}

fn parse_raw_spec(spec: &str) -> anyhow::Result<RawSpec> {
    let (id, rest) = spec
        .split_once('=')
        .with_context(|| format!("raw key '{spec}' is not NAMESPACE/NAME=FILE"))?;
    let (ns, name) = id
        .split_once('/')
        .with_context(|| format!("raw key '{spec}' is not NAMESPACE/NAME=FILE"))?;
    if ns.is_empty() || name.is_empty() {
        bail!("raw key '{spec}' needs a namespace and a name (NAMESPACE/NAME=FILE)");
    }
    let mut parts = rest.split(',');
    let file = PathBuf::from(parts.next().unwrap_or_default());
    let mut opts = Vec::new();
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("raw key option '{p}' is not NAME=VALUE"))?;
        opts.push((k.to_owned(), v.to_owned()));
    }
    Ok(RawSpec {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        file,
        options: opts,
    })
}

fn read_aes_key(path: &Path) -> anyhow::Result<SecretBytes> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    if matches!(bytes.len(), 16 | 24 | 32) {
        return Ok(SecretBytes::new(bytes.to_vec()));
    }
    let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(k) if matches!(k.len(), 16 | 24 | 32) => Ok(SecretBytes::new(k)),
        _ => bail!(
            "{} holds neither 16, 24 or 32 raw bytes nor their base64 text",
            path.display()
        ),
    }
}

fn build_keyring(
    k: &KeyArgs,
    mode: Mode,
    discovery: Option<Option<DiscoveryFilter>>,
) -> anyhow::Result<Box<dyn Keyring>> {
    let mut rings: Vec<Box<dyn Keyring>> = Vec::new();
    let needs_kms = !k.kms_keys.is_empty() || discovery.is_some();
    let kms: Option<Arc<Kms>> = if needs_kms {
        Some(Arc::new(Kms::new(&k.conn)?))
    } else {
        None
    };
    if let Some(kms) = &kms {
        for id in &k.kms_keys {
            let key_id = if mode == Mode::Decrypt {
                kms.resolve_arn(id)?
            } else {
                id.clone()
            };
            rings.push(Box::new(KmsKeyring::new(
                kms.clone(),
                &key_id,
                k.grant_tokens.clone(),
            )?));
        }
        if let Some(filter) = discovery {
            rings.push(Box::new(KmsDiscoveryKeyring::new(
                kms.clone(),
                filter,
                k.grant_tokens.clone(),
            )?));
        }
    }
    for spec in &k.raw_aes {
        let raw = parse_raw_spec(spec)?;
        if let Some((o, _)) = raw.options.first() {
            bail!("raw AES key '{spec}': unknown option '{o}'");
        }
        let key = read_aes_key(&raw.file)?;
        rings.push(Box::new(RawAesKeyring::new(
            &raw.namespace,
            &raw.name,
            key.expose(),
        )?));
    }
    for spec in &k.raw_rsa {
        let RawSpec {
            namespace: ns,
            name,
            file,
            options,
        } = parse_raw_spec(spec)?;
        let mut padding = RsaPadding::OaepSha256;
        for (o, v) in options {
            match o.as_str() {
                "padding" => {
                    padding = RsaPadding::from_name(&v).with_context(|| {
                        format!(
                            "raw RSA key '{spec}': unknown padding '{v}' (pkcs1, oaep-sha1, oaep-sha256, oaep-sha384, oaep-sha512)"
                        )
                    })?
                }
                _ => bail!("raw RSA key '{spec}': unknown option '{o}' (only padding=)"),
            }
        }
        let pem = Zeroizing::new(
            std::fs::read(&file)
                .with_context(|| format!("cannot read the key file {}", file.display()))?,
        );
        let (public, private) = match RsaPrivateKey::from_pem_or_der(&pem) {
            Ok(p) => (None, Some(p)),
            Err(_) => (
                Some(RsaPublicKey::from_pem_or_der(&pem).map_err(|_| {
                    anyhow::anyhow!(
                        "{} is neither an RSA private key (PEM PKCS #8 or PKCS #1) nor a public key (PEM)",
                        file.display()
                    )
                })?),
                None,
            ),
        };
        if mode == Mode::Decrypt && private.is_none() {
            bail!(
                "raw RSA key '{spec}': {} is a public key, which cannot decrypt; give the private key",
                file.display()
            );
        }
        rings.push(Box::new(RawRsaKeyring::new(
            &ns, &name, padding, public, private,
        )?));
    }
    match rings.len() {
        0 => bail!(
            "no key given: name one with --kms-key, --raw-aes-key or --raw-rsa-key{}",
            if mode == Mode::Decrypt {
                " (or use --discovery)"
            } else {
                ""
            }
        ),
        1 => Ok(rings.remove(0)),
        _ => Ok(Box::new(MultiKeyring::new(rings)?)),
    }
}

/// A region's signing target and its open connection, if any.
type Conn = (Arc<Target>, Option<client::Sender>);

/// A KMS client over Coffer's SigV4 client: one TLS connection per region, reused.
pub(crate) struct Kms {
    endpoint: String,
    ca: PathBuf,
    credentials: (String, Zeroizing<String>),
    region: String,
    runtime: tokio::runtime::Runtime,
    conns: Mutex<HashMap<String, Conn>>,
}

impl Kms {
    pub(crate) fn new(k: &KmsConn) -> anyhow::Result<Self> {
        let endpoint = k
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_KMS").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_else(|| "https://127.0.0.1:8443".into());
        let ca = match (&k.ca_bundle, std::env::var_os("AWS_CA_BUNDLE")) {
            (Some(c), _) => c.clone(),
            (None, Some(c)) => PathBuf::from(c),
            (None, None) => {
                let d = k.data_dir.join("tls").join("ca.pem");
                if d.exists() {
                    d
                } else {
                    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
                }
            }
        };
        Ok(Self {
            endpoint,
            ca,
            credentials: client::credentials(&k.data_dir)?,
            region: k.region.clone(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// Calls `operation` with the region of `key_id` when it is an ARN.
    pub(crate) fn call(&self, key_id: &str, operation: &str, body: Value) -> Result<Value, String> {
        let region = KmsArn::parse(key_id)
            .map(|a| a.region)
            .unwrap_or_else(|| self.region.clone());
        let mut conns = self.conns.lock().map_err(|_| "lock poisoned".to_string())?;
        if !conns.contains_key(&region) {
            let t = client::tls_target(
                &self.endpoint,
                &self.ca,
                Some((self.credentials.0.clone(), self.credentials.1.clone())),
                &region,
            )
            .map_err(|e| format!("{e:#}"))?;
            conns.insert(region.clone(), (Arc::new(t), None));
        }
        let Some((target, sender)) = conns.get_mut(&region) else {
            return Err("no connection".into());
        };
        let target = target.clone();
        self.runtime.block_on(async {
            let mut s = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => client::connect(&target).await.map_err(|e| {
                    format!("cannot reach the KMS endpoint {}: {e:#}", self.endpoint)
                })?,
            };
            let req = client::kms_request(
                &target,
                &client::KmsBody::new(operation, &body).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let (status, bytes) = client::call(&mut s, req)
                .await
                .map_err(|e| format!("{e:#}"))?;
            *sender = Some(s);
            let parsed = serde_json::from_slice::<Value>(&bytes);
            // The body may hold a plaintext data key: wipe it once parsed.
            if let Ok(mut b) = bytes.try_into_mut() {
                b.fill(0);
            }
            let v = parsed
                .map_err(|_| format!("{operation}: HTTP {status} with a body that is not JSON"))?;
            if status != 200 {
                let code = v["__type"].as_str().unwrap_or("error");
                let code = code.rsplit('#').next().unwrap_or(code);
                let msg = v["message"]
                    .as_str()
                    .or(v["Message"].as_str())
                    .unwrap_or("");
                return Err(format!("{code}: {msg}"));
            }
            Ok(v)
        })
    }

    /// A key id or alias as its key ARN (DescribeKey), for strict decryption.
    fn resolve_arn(&self, id: &str) -> anyhow::Result<String> {
        if KmsArn::parse(id).is_some_and(|a| a.resource_type == "key") {
            return Ok(id.to_owned());
        }
        let v = self
            .call(id, "DescribeKey", json!({ "KeyId": id }))
            .map_err(|e| anyhow::anyhow!("cannot resolve the KMS key '{id}' to its ARN: {e}"))?;
        v["KeyMetadata"]["Arn"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("DescribeKey of '{id}' returned no ARN"))
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Takes a base64 secret (a plaintext data key) out of a KMS response, wiping the text form.
pub(crate) fn take_secret(v: &mut Value, field: &str) -> Result<SecretBytes, String> {
    let Value::String(text) = v[field].take() else {
        return Err(format!("response has no {field}"));
    };
    let text = Zeroizing::new(text);
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map(SecretBytes::new)
        .map_err(|_| format!("response's {field} is not base64"))
}

fn unb64(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(
            v[field]
                .as_str()
                .ok_or_else(|| format!("response has no {field}"))?,
        )
        .map_err(|_| format!("response's {field} is not base64"))
}

impl KmsClient for Kms {
    fn generate_data_key(
        &self,
        key_id: &str,
        number_of_bytes: usize,
        context: &Context,
        grant_tokens: &[String],
    ) -> Result<(SecretBytes, Vec<u8>, String), String> {
        let mut v = self.call(
            key_id,
            "GenerateDataKey",
            json!({"KeyId": key_id, "NumberOfBytes": number_of_bytes, "EncryptionContext": context, "GrantTokens": grant_tokens}),
        )?;
        let plaintext = take_secret(&mut v, "Plaintext")?;
        let blob = unb64(&v, "CiphertextBlob")?;
        let arn = v["KeyId"].as_str().unwrap_or_default().to_owned();
        Ok((plaintext, blob, arn))
    }

    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &Context,
        grant_tokens: &[String],
    ) -> Result<(Vec<u8>, String), String> {
        let encoded = Zeroizing::new(b64(plaintext));
        let v = self.call(
            key_id,
            "Encrypt",
            json!({"KeyId": key_id, "Plaintext": encoded.as_str(), "EncryptionContext": context, "GrantTokens": grant_tokens}),
        )?;
        Ok((
            unb64(&v, "CiphertextBlob")?,
            v["KeyId"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &Context,
        grant_tokens: &[String],
    ) -> Result<(SecretBytes, String), String> {
        let mut v = self.call(
            key_id,
            "Decrypt",
            json!({"KeyId": key_id, "CiphertextBlob": b64(ciphertext), "EncryptionContext": context, "GrantTokens": grant_tokens}),
        )?;
        let plaintext = take_secret(&mut v, "Plaintext")?;
        Ok((
            plaintext,
            v["KeyId"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}

/// One unit of work: read `input` (a path or stdin), write `output` (a path or stdout).
struct Job {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Works out every input → output pair before touching anything.
fn plan(io: &IoArgs, mode: Mode) -> anyhow::Result<Vec<Job>> {
    let suffix = io.suffix.clone().unwrap_or_else(|| match mode {
        Mode::Encrypt => ".encrypted".into(),
        Mode::Decrypt => ".decrypted".into(),
    });
    let out_is_dash = is_dash(&io.output);
    let out_is_dir = io.output.is_dir();
    let many = io.inputs.len() > 1 || io.inputs.iter().any(|p| p.is_dir());
    if io.inputs.len() > 1 && io.inputs.iter().any(|p| is_dash(p)) {
        bail!("standard input (-) cannot be combined with other inputs");
    }
    if many && !out_is_dir {
        if out_is_dash || io.output.exists() {
            bail!(
                "several inputs or a directory need an output directory; {} is not one",
                io.output.display()
            );
        }
        std::fs::create_dir_all(&io.output).with_context(|| {
            format!("cannot create the output directory {}", io.output.display())
        })?;
    }
    let mut jobs = Vec::new();
    for input in &io.inputs {
        if is_dash(input) {
            if out_is_dir {
                bail!("standard input needs an output file or -, not a directory");
            }
            jobs.push(Job {
                input: None,
                output: (!out_is_dash).then(|| io.output.clone()),
            });
            continue;
        }
        if input.is_dir() {
            if !io.recursive {
                bail!(
                    "{} is a directory: add --recursive to {} its files",
                    input.display(),
                    mode.verb()
                );
            }
            let mut files = Vec::new();
            fsutil::files_under(input, &mut files)?;
            for f in files {
                let rel = f.strip_prefix(input).unwrap_or(&f);
                let mut out = io.output.join(rel).into_os_string();
                out.push(&suffix);
                jobs.push(Job {
                    input: Some(f),
                    output: Some(PathBuf::from(out)),
                });
            }
            continue;
        }
        if !input.exists() {
            bail!("{} does not exist", input.display());
        }
        let output = if out_is_dash {
            None
        } else if many || out_is_dir {
            let name = input.file_name().context("an input without a file name")?;
            let mut out = io.output.join(name).into_os_string();
            out.push(&suffix);
            Some(PathBuf::from(out))
        } else {
            Some(io.output.clone())
        };
        jobs.push(Job {
            input: Some(input.clone()),
            output,
        });
    }
    for j in &jobs {
        if let (Some(i), Some(o)) = (&j.input, &j.output)
            && std::fs::canonicalize(i).ok() == std::fs::canonicalize(o).ok()
            && o.exists()
        {
            bail!("{} would be both input and output", i.display());
        }
        if let Some(o) = &j.output
            && io.no_overwrite
            && o.exists()
        {
            bail!("{} exists (and --no-overwrite was given)", o.display());
        }
    }
    Ok(jobs)
}

type Work<'a> = dyn FnMut(&mut dyn Read, &mut dyn Write) -> anyhow::Result<MessageInfo> + 'a;

fn process(io: &IoArgs, mode: Mode, work: &mut Work<'_>) -> anyhow::Result<std::process::ExitCode> {
    if io.json && is_dash(&io.output) {
        bail!("--json prints to standard output, which -o - already uses for data");
    }
    let jobs = plan(io, mode)?;
    let show_progress = !io.no_progress && (io.progress || std::io::stderr().is_terminal());
    let mut failed = 0usize;
    for job in &jobs {
        let started = Instant::now();
        let name = job
            .input
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<stdin>".into());
        match run_job(job, mode, show_progress, &name, work) {
            Ok(info) => report(io, mode, job, &info, started.elapsed()),
            Err(e) => {
                failed += 1;
                eprintln!("coffer: cannot {} {name}: {e:#}", mode.verb());
            }
        }
    }
    if failed > 0 {
        if jobs.len() > 1 {
            eprintln!(
                "coffer: {failed} of {} inputs failed; their outputs were not written",
                jobs.len()
            );
        }
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn run_job(
    job: &Job,
    mode: Mode,
    show_progress: bool,
    name: &str,
    work: &mut Work<'_>,
) -> anyhow::Result<MessageInfo> {
    let (mut input, total): (Box<dyn Read>, Option<u64>) = match &job.input {
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    let progress = (show_progress && total.unwrap_or(u64::MAX) >= 16 << 20)
        .then(|| Progress::new(name, mode, total));
    let mut reader = Counting {
        inner: &mut input,
        progress: progress.as_ref(),
    };
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, &mut reader);
    let info = match &job.output {
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            work(&mut reader, &mut w)?
        }
        Some(out) => {
            // Written aside and renamed only once the whole message has been written (or has
            // verified): a failure leaves no partial or unverified output behind.
            let tmp = fsutil::aside(out)?;
            let info = {
                let mut w = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file());
                let info = work(&mut reader, &mut w)?;
                w.flush()?;
                info
            };
            fsutil::persist(tmp, out)?;
            info
        }
    };
    if let Some(p) = progress {
        p.finish();
    }
    Ok(info)
}

/// Counts bytes read, for the progress line.
struct Counting<'a, R: Read> {
    inner: &'a mut R,
    progress: Option<&'a Progress>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.advance(n as u64);
        }
        Ok(n)
    }
}

/// A progress line on standard error, redrawn at most 5 times a second.
struct Progress {
    name: String,
    verb: &'static str,
    total: Option<u64>,
    started: Instant,
    state: Mutex<(u64, Instant)>,
}

impl Progress {
    fn new(name: &str, mode: Mode, total: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            name: name.to_owned(),
            verb: match mode {
                Mode::Encrypt => "encrypting",
                Mode::Decrypt => "decrypting",
            },
            total,
            started: now,
            state: Mutex::new((0, now - Duration::from_secs(1))),
        }
    }

    fn advance(&self, n: u64) {
        let Ok(mut s) = self.state.lock() else { return };
        s.0 += n;
        if s.1.elapsed() >= Duration::from_millis(200) {
            s.1 = Instant::now();
            self.draw(s.0);
        }
    }

    fn draw(&self, done: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs / 1e6;
        let line = match self.total {
            Some(t) if t > 0 => format!(
                "{} {}: {:>3}% {} of {} ({rate:.0} MB/s)",
                self.verb,
                self.name,
                done * 100 / t,
                human(done),
                human(t)
            ),
            _ => format!(
                "{} {}: {} ({rate:.0} MB/s)",
                self.verb,
                self.name,
                human(done)
            ),
        };
        eprint!("\r\x1b[2K{line}");
    }

    fn finish(&self) {
        let done = self.state.lock().map(|s| s.0).unwrap_or(0);
        self.draw(done);
        eprintln!();
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn report(io: &IoArgs, mode: Mode, job: &Job, info: &MessageInfo, took: Duration) {
    let input = job
        .input
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into());
    let output = job
        .output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into());
    if io.json {
        let edks: Vec<Value> = info
            .encrypted_data_keys
            .iter()
            .map(|e| {
                json!({
                    "provider_id": e.provider_id,
                    "provider_info": String::from_utf8_lossy(&e.provider_info),
                })
            })
            .collect();
        let v = json!({
            "mode": mode.verb(),
            "input": input,
            "output": output,
            "suite_id": format!("0x{:04X}", info.suite.id()),
            "algorithm": info.suite.name(),
            "message_format_version": info.suite.message_version(),
            "message_id": b64(&info.message_id),
            "encryption_context": info.context,
            "encrypted_data_keys": edks,
            "frame_length": info.frame_length,
            "plaintext_bytes": info.plaintext_len,
            "message_bytes": info.message_len,
            "seconds": took.as_secs_f64(),
        });
        println!("{v}");
        return;
    }
    let line = format!(
        "{}ed {input} -> {output}: {} plaintext, {} message, suite 0x{:04X}, {} data key(s)",
        mode.verb(),
        human(info.plaintext_len),
        human(info.message_len),
        info.suite.id(),
        info.encrypted_data_keys.len()
    );
    if job.output.is_none() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

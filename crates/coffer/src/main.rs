//! `coffer`: the Coffer binary. `coffer server` runs the service; `coffer bench` measures it;
//! `coffer audit` checks the audit log; `coffer iam` imports access keys.

mod anomaly_cmd;
mod anomaly_task;
mod audit_cmd;
mod backup_cmd;
mod bench;
mod bench_discovery;
mod bench_esdk;
mod bench_findings;
mod bench_meta;
mod bench_s3;
mod bench_scan;
mod bench_scan_eval;
mod client;
mod config;
mod credentials;
mod discovery_cmd;
mod esdk_cmd;
mod fields_cmd;
mod front;
mod fsutil;
mod iam_cmd;
mod metadata;
mod operator_cmd;
mod pdf_text;
mod remote_blobs;
mod scan_cmd;
mod server;
mod tls;
mod vectors_cmd;
mod webhook;

use clap::{Parser, Subcommand};

// Profiling the KMS hot path showed glibc malloc/free at ~8% of server CPU (many small, short-lived
// allocations across worker threads); mimalloc serves those from thread-local pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Coffer: a self-hosted key management service that speaks the AWS KMS API.
///
/// Point the aws CLI, boto3 or any AWS SDK at it by changing only the endpoint.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Coffer server (KMS API over TLS; first start sets up the data dir).
    Server(Box<config::ServerArgs>),
    /// Measure a running Coffer with real SigV4-signed requests over HTTPS.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check, search and export the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Identity tasks AWS IAM has no API for (importing an existing access key pair).
    #[command(subcommand)]
    Iam(iam_cmd::IamCommand),
    /// Back up a running server into one encrypted archive; restore an archive into a new data dir.
    #[command(subcommand)]
    Backup(backup_cmd::BackupCommand),
    /// The root of trust: choose it (init), unseal, seal, rotate.
    #[command(subcommand)]
    Operator(operator_cmd::OperatorCommand),
    /// Find sensitive data (card numbers, national ids, credentials, …) in local files, archives,
    /// documents and s3:// buckets; reports where, never the values
    Scan(scan_cmd::ScanArgs),
    /// The server's sensitive-data discovery: classification jobs over buckets, findings,
    /// counts, and automated discovery of new objects (the Macie API under /_coffer/macie2)
    #[command(subcommand)]
    Discovery(discovery_cmd::DiscoveryCommand),
    /// Encrypt files, directories or standard input into AWS Encryption SDK messages, with KMS
    /// keys (Coffer's or AWS's) or raw AES/RSA keys
    Encrypt(Box<esdk_cmd::EncryptArgs>),
    /// Decrypt AWS Encryption SDK messages (from Coffer, any AWS Encryption SDK or the
    /// aws-encryption-cli); nothing is written until a message has verified
    Decrypt(Box<esdk_cmd::DecryptArgs>),
    /// Encrypt chosen fields of JSON / JSON Lines records (randomized, deterministic for
    /// equality search, or sign-only), each record bound together by a tag; --create-key makes
    /// the table's data key
    EncryptFields(Box<fields_cmd::EncryptFieldsArgs>),
    /// Verify and decrypt records written by encrypt-fields; nothing is written unless every
    /// record verifies
    DecryptFields(Box<fields_cmd::FieldsArgs>),
    /// The AWS Encryption SDK's cross-implementation test vectors: check an awses-decrypt
    /// manifest (any SDK's), or write one from Coffer
    #[command(subcommand)]
    TestVectors(vectors_cmd::VectorsCommand),
    /// Internal: the resource-limited PDF text reader the scanner starts (PDF on stdin, text
    /// on stdout).
    #[command(hide = true)]
    PdfText,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(*args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Bench(cmd) => bench::run(cmd).map(|()| std::process::ExitCode::SUCCESS),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Iam(cmd) => iam_cmd::run(cmd).map(|()| std::process::ExitCode::SUCCESS),
        Command::Operator(cmd) => operator_cmd::run(cmd).map(|()| std::process::ExitCode::SUCCESS),
        Command::Backup(cmd) => backup_cmd::run(cmd).map(|()| std::process::ExitCode::SUCCESS),
        Command::Scan(args) => scan_cmd::run(args),
        Command::Encrypt(args) => esdk_cmd::run_encrypt(*args),
        Command::Decrypt(args) => esdk_cmd::run_decrypt(*args),
        Command::EncryptFields(args) => fields_cmd::run_encrypt(*args),
        Command::DecryptFields(args) => fields_cmd::run_decrypt(*args),
        Command::TestVectors(cmd) => vectors_cmd::run(cmd),
        Command::PdfText => return pdf_text::child_main(),
        Command::Discovery(cmd) => {
            discovery_cmd::run(cmd).map(|()| std::process::ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coffer: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

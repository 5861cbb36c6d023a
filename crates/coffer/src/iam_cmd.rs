//! `coffer iam`: what AWS IAM has no API for. Today: importing an existing access key pair (an
//! id and secret from AWS, for migrating clients without re-issuing their credentials).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use coffer_kms::root::{self, RootOfTrust};
use coffer_kms::{Iam, Identities};
use coffer_meta::MetaStore;

use crate::config::{DEFAULT_ACCOUNT_ID, DEFAULT_DATA_DIR};

#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Give an IAM user an existing access key pair (for example one issued by AWS), so clients
    /// keep their credentials when they move to Coffer. The user must exist (`aws iam
    /// create-user`); it can hold at most two access keys. The secret is read from standard
    /// input, never from the command line, and stored only wrapped under the root key. Works
    /// while the server runs: the key is usable on the next request.
    ImportAccessKey(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The server's data dir.
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The server's metadata: `sqlite` (DIR/meta.db) or its PostgreSQL URL.
    #[arg(
        long,
        env = "COFFER_METADATA",
        value_name = "sqlite|URL",
        default_value = "sqlite",
        hide_env_values = true
    )]
    metadata: String,
    /// With PostgreSQL metadata: the CA its certificate chains to (as the server's --metadata-ca).
    #[arg(long, env = "COFFER_METADATA_CA", value_name = "PEM")]
    metadata_ca: Option<PathBuf>,
    /// The account id the server runs as.
    #[arg(long, env = "COFFER_ACCOUNT_ID", value_name = "ID", default_value = DEFAULT_ACCOUNT_ID)]
    account_id: String,
    /// The IAM user that gets the key.
    #[arg(long, value_name = "NAME")]
    user_name: String,
    /// The access key id (16 to 128 characters of A-Z and 0-9, e.g. AKIA…).
    #[arg(long, value_name = "ID")]
    access_key_id: String,
    /// Read the secret access key from standard input (one line). Required: secrets are not
    /// taken from the command line, where other users of the machine could see them.
    #[arg(long, required = true)]
    secret_access_key_stdin: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: IamCommand) -> anyhow::Result<()> {
    match cmd {
        IamCommand::ImportAccessKey(a) => import(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let mut secret = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut secret)
        .context("cannot read the secret access key from standard input")?;
    let trimmed = secret.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        bail!(
            "no secret access key on standard input; pipe it in, e.g. `printf %s \"$SECRET\" | coffer iam import-access-key …`"
        );
    }
    let spec = crate::metadata::MetadataSpec::parse(&a.metadata)?;
    let has_root = a.data_dir.join(root::DEV_KEY_FILE).exists()
        || root::root_config_path(&a.data_dir).exists();
    if !has_root || (!spec.is_shared() && !a.data_dir.join("meta.db").exists()) {
        bail!(
            "{} is not a Coffer data dir: point --data-dir at one (start `coffer server` once to create one)",
            a.data_dir.display()
        );
    }
    let root: Arc<dyn RootOfTrust> = match root::open_with(&a.data_dir, false)? {
        root::Opened::Ready { root, .. } => root,
        root::Opened::Sealed(_) => bail!(
            "the root of trust of {} is sealed behind Shamir shares, so this command cannot wrap the secret; \
             create the key through the running server instead (`aws iam create-access-key`)",
            a.data_dir.display()
        ),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (store, _) = rt.block_on(crate::metadata::open(
        &spec,
        &a.data_dir,
        2,
        a.metadata_ca.as_deref(),
    ))?;
    let meta: Arc<dyn MetaStore> = store;
    let identities = Arc::new(Identities::new(meta.clone(), root));
    let iam = Iam::new(meta, identities, &a.account_id, Default::default());
    let info = rt
        .block_on(iam.import_access_key(&a.user_name, &a.access_key_id, trimmed.as_bytes()))
        .map_err(|e| match e {
            coffer_kms::IamError::NoSuchEntity(m) => {
                anyhow::anyhow!(
                    "{m} Create it first: aws iam create-user --user-name {}",
                    a.user_name
                )
            }
            other => anyhow::anyhow!("{other}"),
        })?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "UserName": info.user_name,
                "AccessKeyId": info.access_key_id,
                "Status": info.status,
            })
        );
    } else {
        println!(
            "imported access key {} for user {} (Active)",
            info.access_key_id, info.user_name
        );
    }
    Ok(())
}

//! The AWS KMS JSON 1.1 protocol: `POST /` with `X-Amz-Target: TrentService.<Operation>`, a JSON body
//! whose blobs are base64, and JSON responses whose timestamps are epoch seconds.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_crypto::SecretBytes;
use coffer_crypto::keys::MessageType;
use coffer_kms::{CreateKeyInput, KeyMetadata, KeyRef, Kms};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::validate::Checks;

pub const TARGET_PREFIX: &str = "TrentService.";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

macro_rules! operations {
    ($($op:ident),* $(,)?) => {
        /// The KMS operations Coffer serves, named as AWS names them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KmsOperation { $($op),* }

        impl KmsOperation {
            pub const ALL: &'static [KmsOperation] = &[$(KmsOperation::$op),*];

            pub fn name(self) -> &'static str {
                match self { $(KmsOperation::$op => stringify!($op)),* }
            }

            /// The IAM action that authorizes it (`kms:Encrypt`).
            pub fn action(self) -> &'static str {
                match self { $(KmsOperation::$op => concat!("kms:", stringify!($op))),* }
            }

            pub fn from_name(s: &str) -> Option<Self> {
                match s { $(stringify!($op) => Some(KmsOperation::$op),)* _ => None }
            }
        }
    };
}

operations!(
    CreateKey,
    DescribeKey,
    ListKeys,
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    GenerateRandom,
    CreateAlias,
    UpdateAlias,
    DeleteAlias,
    ListAliases,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    UpdateKeyDescription,
    TagResource,
    UntagResource,
    ListResourceTags,
    EnableKeyRotation,
    DisableKeyRotation,
    GetKeyRotationStatus,
    RotateKeyOnDemand,
    ListKeyRotations,
    GetPublicKey,
    Sign,
    Verify,
    GenerateMac,
    VerifyMac,
    DeriveSharedSecret,
    GenerateDataKeyPair,
    GenerateDataKeyPairWithoutPlaintext,
    GetParametersForImport,
    ImportKeyMaterial,
    DeleteImportedKeyMaterial,
    GetKeyPolicy,
    PutKeyPolicy,
    ListKeyPolicies,
    CreateGrant,
    ListGrants,
    ListRetirableGrants,
    RetireGrant,
    RevokeGrant,
    CreateCustomKeyStore,
    DescribeCustomKeyStores,
    ConnectCustomKeyStore,
    DisconnectCustomKeyStore,
    UpdateCustomKeyStore,
    DeleteCustomKeyStore,
);

/// AWS KMS operations that Coffer does not serve yet; they get UnsupportedOperationException rather
/// than UnknownOperationException, so a caller can tell "not yet" from "no such thing".
const NOT_YET: &[&str] = &["GetKeyLastUsage", "ReplicateKey", "UpdatePrimaryRegion"];

/// Reads the operation from an `X-Amz-Target` value.
pub fn operation(target: Option<&str>) -> Result<KmsOperation, ApiError> {
    let Some(target) = target else {
        return Err(ApiError::UnknownOperation(
            "The request has no X-Amz-Target header naming a KMS operation (TrentService.<Operation>).".into(),
        ));
    };
    let name = target.strip_prefix(TARGET_PREFIX).unwrap_or("");
    if let Some(op) = KmsOperation::from_name(name) {
        return Ok(op);
    }
    if NOT_YET.contains(&name) {
        return Err(ApiError::Kms(coffer_kms::KmsError::UnsupportedOperation(
            format!("Coffer does not implement {name} yet."),
        )));
    }
    Err(ApiError::UnknownOperation(format!(
        "Unknown operation {target}."
    )))
}

// ---- request decoding -----------------------------------------------------------------------

/// A base64 blob from a request.
#[derive(Debug)]
struct Blob(Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        B64.decode(s.as_bytes())
            .map(Blob)
            .map_err(|_| serde::de::Error::custom("a blob member is not valid base64"))
    }
}

/// A base64 blob that holds a secret (plaintext); decoded straight into zeroizing memory.
#[derive(Debug)]
struct SecretBlob(SecretBytes);

impl<'de> Deserialize<'de> for SecretBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let mut out = SecretBytes::zeroed(base64::decoded_len_estimate(s.len()));
        let n = B64
            .decode_slice(s.as_bytes(), out.expose_mut())
            .map_err(|_| serde::de::Error::custom("a blob member is not valid base64"))?;
        out.truncate(n);
        Ok(SecretBlob(out))
    }
}

type Context = BTreeMap<String, String>;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // An empty body is an empty request object, as AWS treats it.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::Serialization(serialization_message(&e)))
}

fn serialization_message(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("The request body is not valid JSON: {e}"),
        Category::Data => format!("A request member has the wrong type or value: {e}"),
        Category::Io => "The request body could not be read.".into(),
    }
}

fn key_ref(kms: &Kms, v: &str) -> Result<KeyRef, ApiError> {
    let cfg = kms.config();
    Ok(KeyRef::parse(v, &cfg.account_id, &cfg.region)?)
}

fn opt_key_ref(kms: &Kms, v: Option<&str>) -> Result<Option<KeyRef>, ApiError> {
    v.map(|v| key_ref(kms, v)).transpose()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConstraintsIn {
    encryption_context_subset: Option<Context>,
    encryption_context_equals: Option<Context>,
}

fn principal_checks(c: &mut Checks, name: &str, v: Option<&str>) {
    c.str_len(name, v, 1, 256);
    c.chars(name, v, "^[\\w+=,.@:/-]+$", |ch| {
        ch.is_ascii_alphanumeric() || "_+=,.@:/-".contains(ch)
    });
}

fn grant_json(g: &coffer_kms::grants::GrantInfo) -> Value {
    let mut o = Map::new();
    o.insert("KeyId".into(), json!(g.key_arn));
    o.insert("GrantId".into(), json!(g.grant_id));
    if let Some(n) = &g.name {
        o.insert("Name".into(), json!(n));
    }
    o.insert("CreationDate".into(), epoch(g.created_ms));
    o.insert("GranteePrincipal".into(), json!(g.grantee));
    if let Some(r) = &g.retiring {
        o.insert("RetiringPrincipal".into(), json!(r));
    }
    o.insert("IssuingAccount".into(), json!(g.issuing_account));
    o.insert("Operations".into(), json!(g.operations));
    if let Some(c) = &g.constraint {
        let (name, pairs) = match c {
            coffer_kms::grants::Constraint::Equals(p) => ("EncryptionContextEquals", p),
            coffer_kms::grants::Constraint::Subset(p) => ("EncryptionContextSubset", p),
        };
        let m: Map<String, Value> = pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        o.insert("Constraints".into(), json!({ name: m }));
    }
    Value::Object(o)
}

/// The `Policy` parameter's model constraints (the 32 KiB key policy limit is the service's).
fn policy_checks(c: &mut Checks, policy: Option<&str>) {
    c.str_len("Policy", policy, 1, 131_072);
    c.chars(
        "Policy",
        policy,
        "[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+",
        |ch| matches!(ch, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'),
    );
}

fn policy_name_checks(c: &mut Checks, name: Option<&str>) {
    c.str_len("PolicyName", name, 1, 128);
    c.chars("PolicyName", name, "[\\w]+", |ch| {
        ch.is_ascii_alphanumeric() || ch == '_'
    });
}

fn limit(v: Option<i64>, default: usize) -> usize {
    v.map(|v| v as usize).unwrap_or(default)
}

const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];
const KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
];
const SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];
const MAC_ALGORITHMS: &[&str] = &[
    "HMAC_SHA_224",
    "HMAC_SHA_256",
    "HMAC_SHA_384",
    "HMAC_SHA_512",
];
const KEY_PAIR_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
    "ECC_NIST_EDWARDS25519",
];

fn recipient_unsupported() -> ApiError {
    ApiError::Kms(coffer_kms::KmsError::UnsupportedOperation(
        "Coffer does not support the Recipient parameter (Nitro Enclaves attestation).".into(),
    ))
}

const KEY_USAGES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
];
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];

// ---- response encoding ----------------------------------------------------------------------

fn epoch(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(B64.encode(bytes))
}

fn key_metadata(m: &KeyMetadata) -> Value {
    let mut o = Map::new();
    o.insert("AWSAccountId".into(), json!(m.account_id));
    o.insert("KeyId".into(), json!(m.key_id));
    o.insert("Arn".into(), json!(m.arn));
    o.insert("CreationDate".into(), epoch(m.creation_ms));
    o.insert("Enabled".into(), json!(m.enabled));
    o.insert("Description".into(), json!(m.description));
    o.insert("KeyUsage".into(), json!(m.key_usage));
    o.insert("KeyState".into(), json!(m.key_state));
    if let Some(d) = m.deletion_ms {
        o.insert("DeletionDate".into(), epoch(d));
    }
    if let Some(w) = m.pending_window_days {
        o.insert("PendingDeletionWindowInDays".into(), json!(w));
    }
    o.insert("Origin".into(), json!(m.origin));
    o.insert("KeyManager".into(), json!(m.key_manager));
    o.insert("CustomerMasterKeySpec".into(), json!(m.key_spec));
    o.insert("KeySpec".into(), json!(m.key_spec));
    for (name, list) in [
        ("EncryptionAlgorithms", &m.encryption_algorithms),
        ("SigningAlgorithms", &m.signing_algorithms),
        ("MacAlgorithms", &m.mac_algorithms),
        ("KeyAgreementAlgorithms", &m.key_agreement_algorithms),
    ] {
        if !list.is_empty() {
            o.insert(name.into(), json!(list));
        }
    }
    o.insert("MultiRegion".into(), json!(m.multi_region));
    if let Some(id) = &m.current_key_material_id {
        o.insert("CurrentKeyMaterialId".into(), json!(id));
    }
    if let Some(model) = &m.expiration_model {
        o.insert("ExpirationModel".into(), json!(model));
    }
    if let Some(t) = m.valid_to_ms {
        o.insert("ValidTo".into(), epoch(t));
    }
    if let Some(id) = &m.custom_key_store_id {
        o.insert("CustomKeyStoreId".into(), json!(id));
    }
    if let Some(id) = &m.cloud_hsm_cluster_id {
        o.insert("CloudHsmClusterId".into(), json!(id));
    }
    Value::Object(o)
}

/// `CloudHsmClusterId`: 19–24 characters, `cluster-` and base32-ish letters and digits.
fn cluster_id_checks(c: &mut Checks, v: Option<&str>) {
    c.str_len("CloudHsmClusterId", v, 19, 24);
    c.pattern("CloudHsmClusterId", v, "cluster-[2-7a-zA-Z]{11,16}", |s| {
        s.strip_prefix("cluster-").is_some_and(|rest| {
            rest.chars()
                .all(|ch| ch.is_ascii_alphabetic() || ('2'..='7').contains(&ch))
        })
    });
}

fn with_marker(mut o: Map<String, Value>, next: Option<String>) -> Value {
    o.insert("Truncated".into(), json!(next.is_some()));
    if let Some(m) = next {
        o.insert("NextMarker".into(), json!(m));
    }
    Value::Object(o)
}

// ---- operations -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagIn {
    tag_key: Option<String>,
    tag_value: Option<String>,
}

fn tags(c: &mut Checks, tags: Option<Vec<TagIn>>) -> Vec<(String, String)> {
    let tags = tags.unwrap_or_default();
    let mut out = Vec::with_capacity(tags.len());
    for (i, t) in tags.into_iter().enumerate() {
        let n = i + 1;
        c.required(&format!("tags.{n}.member.tagKey"), &t.tag_key);
        c.required(&format!("tags.{n}.member.tagValue"), &t.tag_value);
        c.str_len(
            &format!("tags.{n}.member.tagKey"),
            t.tag_key.as_deref(),
            1,
            128,
        );
        c.str_len(
            &format!("tags.{n}.member.tagValue"),
            t.tag_value.as_deref(),
            0,
            256,
        );
        if let (Some(k), Some(v)) = (t.tag_key, t.tag_value) {
            out.push((k, v));
        }
    }
    out
}

/// The authorization decision for a request, applied by [`dispatch`] once the request has passed
/// its validation: AWS reports a malformed request as such before it reports access denied.
#[derive(Debug, Default)]
pub struct Gate(Option<ApiError>);

impl Gate {
    /// The caller may proceed.
    pub fn open() -> Self {
        Gate(None)
    }

    /// The request is refused with `e` once it is known to be well-formed.
    pub fn refused(e: ApiError) -> Self {
        Gate(Some(e))
    }

    fn pass(&mut self) -> Result<(), ApiError> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Runs one KMS operation on a JSON body and returns the JSON response. Every operation checks
/// `gate` right after validating its input, before it acts.
pub async fn dispatch(
    kms: &Kms,
    op: KmsOperation,
    body: &[u8],
    caller: &coffer_kms::Caller,
    gate: &mut Gate,
) -> Result<Value, ApiError> {
    use KmsOperation as O;
    match op {
        O::CreateKey => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                policy: Option<String>,
                description: Option<String>,
                key_usage: Option<String>,
                customer_master_key_spec: Option<String>,
                key_spec: Option<String>,
                origin: Option<String>,
                custom_key_store_id: Option<String>,
                bypass_policy_lockout_safety_check: Option<bool>,
                tags: Option<Vec<TagIn>>,
                multi_region: Option<bool>,
                xks_key_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            policy_checks(&mut c, r.policy.as_deref());
            c.str_len("Description", r.description.as_deref(), 0, 8192);
            c.one_of("KeyUsage", r.key_usage.as_deref(), KEY_USAGES);
            c.one_of(
                "CustomerMasterKeySpec",
                r.customer_master_key_spec.as_deref(),
                KEY_SPECS,
            );
            c.one_of("KeySpec", r.key_spec.as_deref(), KEY_SPECS);
            c.one_of("Origin", r.origin.as_deref(), ORIGINS);
            c.str_len("CustomKeyStoreId", r.custom_key_store_id.as_deref(), 1, 64);
            c.str_len("XksKeyId", r.xks_key_id.as_deref(), 1, 128);
            let tags = tags(&mut c, r.tags);
            c.finish()?;
            gate.pass()?;
            if r.key_spec.is_some() && r.customer_master_key_spec.is_some() {
                return Err(ApiError::Kms(coffer_kms::KmsError::Validation(
                    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec parameter is deprecated. Use KeySpec.".into(),
                )));
            }
            let md = kms
                .create_key(CreateKeyInput {
                    description: r.description,
                    key_usage: r.key_usage,
                    key_spec: r.key_spec.or(r.customer_master_key_spec),
                    origin: r.origin,
                    multi_region: r.multi_region.unwrap_or(false),
                    custom_key_store_id: r.custom_key_store_id.or(r.xks_key_id),
                    tags,
                    policy: r.policy,
                    bypass_policy_lockout_safety_check: r
                        .bypass_policy_lockout_safety_check
                        .unwrap_or(false),
                    caller: Some(caller.clone()),
                    aws_managed: false,
                })
                .await?;
            Ok(json!({ "KeyMetadata": key_metadata(&md) }))
        }
        O::DescribeKey => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                #[allow(dead_code)]
                grant_tokens: Option<Vec<String>>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.finish()?;
            gate.pass()?;
            let md = kms
                .describe_key(&key_ref(kms, r.key_id.as_deref().unwrap_or_default())?)
                .await?;
            Ok(json!({ "KeyMetadata": key_metadata(&md) }))
        }
        O::ListKeys => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                limit: Option<i64>,
                marker: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.range("Limit", r.limit, 1, 1000);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let page = kms
                .list_keys(limit(r.limit, 100), r.marker.as_deref())
                .await?;
            let keys: Vec<Value> = page
                .items
                .iter()
                .map(|k| json!({ "KeyId": k.key_id, "KeyArn": k.key_arn }))
                .collect();
            let mut o = Map::new();
            o.insert("Keys".into(), Value::Array(keys));
            Ok(with_marker(o, page.next_marker))
        }
        O::Encrypt => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                plaintext: Option<SecretBlob>,
                encryption_context: Option<Context>,
                grant_tokens: Option<Vec<String>>,
                encryption_algorithm: Option<String>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("Plaintext", &r.plaintext);
            c.key_id("KeyId", r.key_id.as_deref());
            c.blob_len(
                "Plaintext",
                r.plaintext.as_ref().map(|p| p.0.len()),
                1,
                4096,
            );
            c.encryption_context("EncryptionContext", r.encryption_context.as_ref());
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.one_of(
                "EncryptionAlgorithm",
                r.encryption_algorithm.as_deref(),
                ENCRYPTION_ALGORITHMS,
            );
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let plaintext = r
                .plaintext
                .map(|p| p.0)
                .unwrap_or_else(|| SecretBytes::zeroed(0));
            let out = kms
                .encrypt(
                    &key,
                    plaintext.expose(),
                    &r.encryption_context.unwrap_or_default(),
                    r.encryption_algorithm.as_deref(),
                    r.dry_run.unwrap_or(false),
                )
                .await?;
            Ok(json!({
                "CiphertextBlob": b64(&out.ciphertext),
                "KeyId": out.key_arn,
                "EncryptionAlgorithm": out.algorithm,
            }))
        }
        O::Decrypt => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                ciphertext_blob: Option<Blob>,
                encryption_context: Option<Context>,
                grant_tokens: Option<Vec<String>>,
                key_id: Option<String>,
                encryption_algorithm: Option<String>,
                dry_run: Option<bool>,
                recipient: Option<Value>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("CiphertextBlob", &r.ciphertext_blob);
            c.blob_len(
                "CiphertextBlob",
                r.ciphertext_blob.as_ref().map(|b| b.0.len()),
                1,
                6144,
            );
            c.encryption_context("EncryptionContext", r.encryption_context.as_ref());
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.key_id("KeyId", r.key_id.as_deref());
            c.one_of(
                "EncryptionAlgorithm",
                r.encryption_algorithm.as_deref(),
                ENCRYPTION_ALGORITHMS,
            );
            c.finish()?;
            gate.pass()?;
            if r.recipient.is_some() {
                return Err(recipient_unsupported());
            }
            let key = opt_key_ref(kms, r.key_id.as_deref())?;
            let blob = r.ciphertext_blob.map(|b| b.0).unwrap_or_default();
            let out = kms
                .decrypt(
                    &blob,
                    &r.encryption_context.unwrap_or_default(),
                    key.as_ref(),
                    r.encryption_algorithm.as_deref(),
                    r.dry_run.unwrap_or(false),
                )
                .await?;
            Ok(json!({
                "KeyId": out.key_arn,
                "Plaintext": b64(out.plaintext.expose()),
                "EncryptionAlgorithm": out.algorithm,
                "KeyMaterialId": out.key_material_id,
            }))
        }
        O::ReEncrypt => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                ciphertext_blob: Option<Blob>,
                source_encryption_context: Option<Context>,
                source_key_id: Option<String>,
                destination_key_id: Option<String>,
                destination_encryption_context: Option<Context>,
                source_encryption_algorithm: Option<String>,
                destination_encryption_algorithm: Option<String>,
                grant_tokens: Option<Vec<String>>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("CiphertextBlob", &r.ciphertext_blob);
            c.required("DestinationKeyId", &r.destination_key_id);
            c.blob_len(
                "CiphertextBlob",
                r.ciphertext_blob.as_ref().map(|b| b.0.len()),
                1,
                6144,
            );
            c.encryption_context(
                "SourceEncryptionContext",
                r.source_encryption_context.as_ref(),
            );
            c.encryption_context(
                "DestinationEncryptionContext",
                r.destination_encryption_context.as_ref(),
            );
            c.key_id("SourceKeyId", r.source_key_id.as_deref());
            c.key_id("DestinationKeyId", r.destination_key_id.as_deref());
            c.one_of(
                "SourceEncryptionAlgorithm",
                r.source_encryption_algorithm.as_deref(),
                ENCRYPTION_ALGORITHMS,
            );
            c.one_of(
                "DestinationEncryptionAlgorithm",
                r.destination_encryption_algorithm.as_deref(),
                ENCRYPTION_ALGORITHMS,
            );
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            let source = opt_key_ref(kms, r.source_key_id.as_deref())?;
            let destination = key_ref(kms, r.destination_key_id.as_deref().unwrap_or_default())?;
            let blob = r.ciphertext_blob.map(|b| b.0).unwrap_or_default();
            let out = kms
                .re_encrypt(
                    &blob,
                    &r.source_encryption_context.unwrap_or_default(),
                    source.as_ref(),
                    r.source_encryption_algorithm.as_deref(),
                    &destination,
                    &r.destination_encryption_context.unwrap_or_default(),
                    r.destination_encryption_algorithm.as_deref(),
                    r.dry_run.unwrap_or(false),
                )
                .await?;
            Ok(json!({
                "CiphertextBlob": b64(&out.ciphertext),
                "SourceKeyId": out.source_key_arn,
                "KeyId": out.key_arn,
                "SourceEncryptionAlgorithm": out.source_algorithm,
                "DestinationEncryptionAlgorithm": out.destination_algorithm,
                "SourceKeyMaterialId": out.source_key_material_id,
                "DestinationKeyMaterialId": out.destination_key_material_id,
            }))
        }
        O::GenerateDataKey | O::GenerateDataKeyWithoutPlaintext => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                encryption_context: Option<Context>,
                number_of_bytes: Option<i64>,
                key_spec: Option<String>,
                grant_tokens: Option<Vec<String>>,
                dry_run: Option<bool>,
                recipient: Option<Value>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.encryption_context("EncryptionContext", r.encryption_context.as_ref());
            c.range("NumberOfBytes", r.number_of_bytes, 1, 1024);
            c.one_of("KeySpec", r.key_spec.as_deref(), &["AES_256", "AES_128"]);
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            if r.recipient.is_some() {
                return Err(recipient_unsupported());
            }
            let n = match (r.number_of_bytes, r.key_spec.as_deref()) {
                (Some(n), None) => n as usize,
                (None, Some("AES_128")) => 16,
                (None, Some(_)) => 32,
                _ => {
                    return Err(ApiError::Kms(coffer_kms::KmsError::Validation(
                        "Please specify either number of bytes or key spec.".into(),
                    )));
                }
            };
            let with_plaintext = op == O::GenerateDataKey;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let out = kms
                .generate_data_key(
                    &key,
                    &r.encryption_context.unwrap_or_default(),
                    n,
                    with_plaintext,
                    r.dry_run.unwrap_or(false),
                )
                .await?;
            let mut o = Map::new();
            o.insert("CiphertextBlob".into(), b64(&out.ciphertext));
            if let Some(p) = &out.plaintext {
                o.insert("Plaintext".into(), b64(p.expose()));
            }
            o.insert("KeyId".into(), json!(out.key_arn));
            o.insert("KeyMaterialId".into(), json!(out.key_material_id));
            Ok(Value::Object(o))
        }
        O::GenerateRandom => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                number_of_bytes: Option<i64>,
                custom_key_store_id: Option<String>,
                recipient: Option<Value>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.range("NumberOfBytes", r.number_of_bytes, 1, 1024);
            c.str_len("CustomKeyStoreId", r.custom_key_store_id.as_deref(), 1, 64);
            c.finish()?;
            gate.pass()?;
            if r.recipient.is_some() {
                return Err(ApiError::Kms(coffer_kms::KmsError::UnsupportedOperation(
                    "Coffer does not support Recipient (Nitro Enclaves attestation) for GenerateRandom.".into(),
                )));
            }
            let Some(n) = r.number_of_bytes else {
                return Err(ApiError::Kms(coffer_kms::KmsError::Validation(
                    "NumberOfBytes is required.".into(),
                )));
            };
            let bytes = match r.custom_key_store_id.as_deref() {
                Some(store) => kms.generate_random_in_store(store, n as usize).await?,
                None => kms.generate_random(n as usize)?,
            };
            Ok(json!({ "Plaintext": b64(bytes.expose()) }))
        }
        O::CreateAlias | O::UpdateAlias => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                alias_name: Option<String>,
                target_key_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("AliasName", &r.alias_name);
            c.required("TargetKeyId", &r.target_key_id);
            c.alias_name(r.alias_name.as_deref());
            c.key_id("TargetKeyId", r.target_key_id.as_deref());
            c.finish()?;
            gate.pass()?;
            let name = r.alias_name.unwrap_or_default();
            let target = key_ref(kms, r.target_key_id.as_deref().unwrap_or_default())?;
            if op == O::CreateAlias {
                kms.create_alias(&name, &target).await?;
            } else {
                kms.update_alias(&name, &target).await?;
            }
            Ok(json!({}))
        }
        O::DeleteAlias => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                alias_name: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("AliasName", &r.alias_name);
            c.alias_name(r.alias_name.as_deref());
            c.finish()?;
            gate.pass()?;
            kms.delete_alias(r.alias_name.as_deref().unwrap_or_default())
                .await?;
            Ok(json!({}))
        }
        O::ListAliases => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.key_id("KeyId", r.key_id.as_deref());
            c.range("Limit", r.limit, 1, 1000);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = opt_key_ref(kms, r.key_id.as_deref())?;
            let page = kms
                .list_aliases(key.as_ref(), limit(r.limit, 50), r.marker.as_deref())
                .await?;
            let aliases: Vec<Value> = page
                .items
                .iter()
                .map(|a| {
                    json!({
                        "AliasName": a.name,
                        "AliasArn": a.arn,
                        "TargetKeyId": a.target_key_id,
                        "CreationDate": epoch(a.creation_ms),
                        "LastUpdatedDate": epoch(a.last_updated_ms),
                    })
                })
                .collect();
            let mut o = Map::new();
            o.insert("Aliases".into(), Value::Array(aliases));
            Ok(with_marker(o, page.next_marker))
        }
        O::EnableKey
        | O::DisableKey
        | O::CancelKeyDeletion
        | O::DisableKeyRotation
        | O::GetKeyRotationStatus
        | O::RotateKeyOnDemand => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            match op {
                O::EnableKey => kms.enable_key(&key).await.map(|_| json!({})),
                O::DisableKey => kms.disable_key(&key).await.map(|_| json!({})),
                O::CancelKeyDeletion => kms
                    .cancel_key_deletion(&key)
                    .await
                    .map(|arn| json!({ "KeyId": arn })),
                O::DisableKeyRotation => kms.disable_key_rotation(&key).await.map(|_| json!({})),
                O::RotateKeyOnDemand => kms
                    .rotate_key_on_demand(&key)
                    .await
                    .map(|id| json!({ "KeyId": id })),
                _ => kms.key_rotation_status(&key).await.map(|s| {
                    let mut o = Map::new();
                    o.insert("KeyRotationEnabled".into(), json!(s.enabled));
                    o.insert("KeyId".into(), json!(s.key_arn));
                    if let Some(p) = s.period_days {
                        o.insert("RotationPeriodInDays".into(), json!(p));
                    }
                    if let Some(n) = s.next_rotation_ms {
                        o.insert("NextRotationDate".into(), epoch(n));
                    }
                    Value::Object(o)
                }),
            }
            .map_err(ApiError::from)
        }
        O::EnableKeyRotation => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                rotation_period_in_days: Option<i64>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.range("RotationPeriodInDays", r.rotation_period_in_days, 90, 2560);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            kms.enable_key_rotation(&key, r.rotation_period_in_days.map(|d| d as i32))
                .await?;
            Ok(json!({}))
        }
        O::ScheduleKeyDeletion => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                pending_window_in_days: Option<i64>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.range("PendingWindowInDays", r.pending_window_in_days, 7, 30);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let s = kms
                .schedule_key_deletion(&key, r.pending_window_in_days.map(|d| d as i32))
                .await?;
            Ok(json!({
                "KeyId": s.key_arn,
                "DeletionDate": epoch(s.deletion_ms),
                "KeyState": "PendingDeletion",
                "PendingWindowInDays": s.pending_window_days,
            }))
        }
        O::UpdateKeyDescription => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                description: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("Description", &r.description);
            c.key_id("KeyId", r.key_id.as_deref());
            c.str_len("Description", r.description.as_deref(), 0, 8192);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            kms.update_key_description(&key, r.description.unwrap_or_default())
                .await?;
            Ok(json!({}))
        }
        O::TagResource => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                tags: Option<Vec<TagIn>>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("Tags", &r.tags);
            c.key_id("KeyId", r.key_id.as_deref());
            let tags = tags(&mut c, r.tags);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            kms.tag_resource(&key, tags).await?;
            Ok(json!({}))
        }
        O::UntagResource => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                tag_keys: Option<Vec<String>>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("TagKeys", &r.tag_keys);
            c.key_id("KeyId", r.key_id.as_deref());
            for (i, k) in r.tag_keys.iter().flatten().enumerate() {
                c.str_len(&format!("tagKeys.{}.member", i + 1), Some(k), 1, 128);
            }
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            kms.untag_resource(&key, r.tag_keys.unwrap_or_default())
                .await?;
            Ok(json!({}))
        }
        O::CreateGrant => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                grantee_principal: Option<String>,
                retiring_principal: Option<String>,
                operations: Option<Vec<String>>,
                constraints: Option<ConstraintsIn>,
                grant_tokens: Option<Vec<String>>,
                name: Option<String>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("GranteePrincipal", &r.grantee_principal);
            c.required("Operations", &r.operations);
            c.key_id("KeyId", r.key_id.as_deref());
            principal_checks(&mut c, "GranteePrincipal", r.grantee_principal.as_deref());
            principal_checks(&mut c, "RetiringPrincipal", r.retiring_principal.as_deref());
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            if let Some(ops) = &r.operations {
                for (i, o) in ops.iter().enumerate() {
                    c.one_of(
                        &format!("operations.{}.member", i + 1),
                        Some(o.as_str()),
                        coffer_kms::grants::GRANT_OPERATIONS,
                    );
                }
            }
            c.str_len("Name", r.name.as_deref(), 1, 256);
            c.chars("Name", r.name.as_deref(), "^[a-zA-Z0-9:/_-]+$", |ch| {
                ch.is_ascii_alphanumeric() || ":/_-".contains(ch)
            });
            if let Some(k) = &r.constraints {
                c.encryption_context(
                    "Constraints.EncryptionContextSubset",
                    k.encryption_context_subset.as_ref(),
                );
                c.encryption_context(
                    "Constraints.EncryptionContextEquals",
                    k.encryption_context_equals.as_ref(),
                );
            }
            c.finish()?;
            gate.pass()?;
            let constraint = match r.constraints {
                None => None,
                Some(ConstraintsIn {
                    encryption_context_equals: Some(_),
                    encryption_context_subset: Some(_),
                }) => {
                    return Err(ApiError::Kms(coffer_kms::KmsError::Validation(
                        "Specify EncryptionContextEquals or EncryptionContextSubset in Constraints, not both.".into(),
                    )));
                }
                Some(ConstraintsIn {
                    encryption_context_equals: Some(e),
                    ..
                }) => Some(coffer_kms::grants::Constraint::Equals(
                    e.into_iter().collect(),
                )),
                Some(ConstraintsIn {
                    encryption_context_subset: Some(e),
                    ..
                }) => Some(coffer_kms::grants::Constraint::Subset(
                    e.into_iter().collect(),
                )),
                Some(_) => None,
            };
            let mut operations = r.operations.unwrap_or_default();
            operations.dedup();
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let (grant_id, token) = kms
                .create_grant(
                    caller,
                    &key,
                    coffer_kms::grants::CreateGrantInput {
                        grantee: r.grantee_principal.unwrap_or_default(),
                        retiring: r.retiring_principal,
                        operations,
                        constraint,
                        name: r.name,
                        dry_run: r.dry_run.unwrap_or(false),
                    },
                )
                .await?;
            Ok(json!({ "GrantId": grant_id, "GrantToken": token }))
        }
        O::ListGrants | O::ListRetirableGrants => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
                grant_id: Option<String>,
                grantee_principal: Option<String>,
                retiring_principal: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            if op == O::ListGrants {
                c.required("KeyId", &r.key_id);
                c.key_id("KeyId", r.key_id.as_deref());
                c.str_len("GrantId", r.grant_id.as_deref(), 1, 128);
                principal_checks(&mut c, "GranteePrincipal", r.grantee_principal.as_deref());
            } else {
                c.required("RetiringPrincipal", &r.retiring_principal);
                principal_checks(&mut c, "RetiringPrincipal", r.retiring_principal.as_deref());
            }
            c.range("Limit", r.limit, 1, 100);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let listing = if op == O::ListGrants {
                let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
                kms.list_grants(
                    &key,
                    limit(r.limit, 50),
                    r.marker.as_deref(),
                    r.grant_id.as_deref(),
                    r.grantee_principal.as_deref(),
                )
                .await?
            } else {
                kms.list_retirable_grants(
                    r.retiring_principal.as_deref().unwrap_or_default(),
                    limit(r.limit, 50),
                    r.marker.as_deref(),
                )
                .await?
            };
            let grants: Vec<Value> = listing.items.iter().map(grant_json).collect();
            let mut o = Map::new();
            o.insert("Grants".into(), Value::Array(grants));
            Ok(with_marker(o, listing.next_marker))
        }
        O::RetireGrant => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                grant_token: Option<String>,
                key_id: Option<String>,
                grant_id: Option<String>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.str_len("GrantToken", r.grant_token.as_deref(), 1, 8192);
            c.key_id("KeyId", r.key_id.as_deref());
            c.str_len("GrantId", r.grant_id.as_deref(), 1, 128);
            c.finish()?;
            gate.pass()?;
            let key = opt_key_ref(kms, r.key_id.as_deref())?;
            kms.retire_grant(
                caller,
                r.grant_token.as_deref(),
                key.as_ref(),
                r.grant_id.as_deref(),
                r.dry_run.unwrap_or(false),
            )
            .await?;
            Ok(json!({}))
        }
        O::RevokeGrant => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                grant_id: Option<String>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("GrantId", &r.grant_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.str_len("GrantId", r.grant_id.as_deref(), 1, 128);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            kms.revoke_grant(
                &key,
                r.grant_id.as_deref().unwrap_or_default(),
                r.dry_run.unwrap_or(false),
            )
            .await?;
            Ok(json!({}))
        }
        O::GetKeyPolicy => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                policy_name: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            policy_name_checks(&mut c, r.policy_name.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let policy = kms.key_policy(&key, r.policy_name.as_deref()).await?;
            Ok(json!({ "Policy": policy, "PolicyName": "default" }))
        }
        O::PutKeyPolicy => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                policy_name: Option<String>,
                policy: Option<String>,
                bypass_policy_lockout_safety_check: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("Policy", &r.policy);
            c.key_id("KeyId", r.key_id.as_deref());
            policy_name_checks(&mut c, r.policy_name.as_deref());
            policy_checks(&mut c, r.policy.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            kms.put_key_policy(
                caller,
                &key,
                r.policy_name.as_deref(),
                r.policy.as_deref().unwrap_or_default(),
                r.bypass_policy_lockout_safety_check.unwrap_or(false),
            )
            .await?;
            Ok(json!({}))
        }
        O::ListKeyPolicies => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.range("Limit", r.limit, 1, 1000);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let names = kms.list_key_policies(&key).await?;
            Ok(json!({ "PolicyNames": names, "Truncated": false }))
        }
        O::ListResourceTags => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.range("Limit", r.limit, 1, 50);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let page = kms
                .list_resource_tags(&key, limit(r.limit, 50), r.marker.as_deref())
                .await?;
            let tags: Vec<Value> = page
                .items
                .iter()
                .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
                .collect();
            let mut o = Map::new();
            o.insert("Tags".into(), Value::Array(tags));
            Ok(with_marker(o, page.next_marker))
        }
        O::GetPublicKey => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                grant_tokens: Option<Vec<String>>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let out = kms.public_key(&key).await?;
            let mut o = Map::new();
            o.insert("KeyId".into(), json!(out.key_arn));
            o.insert("PublicKey".into(), b64(&out.public_key));
            o.insert("CustomerMasterKeySpec".into(), json!(out.key_spec));
            o.insert("KeySpec".into(), json!(out.key_spec));
            o.insert("KeyUsage".into(), json!(out.key_usage));
            if !out.encryption_algorithms.is_empty() {
                o.insert(
                    "EncryptionAlgorithms".into(),
                    json!(out.encryption_algorithms),
                );
            }
            if !out.signing_algorithms.is_empty() {
                o.insert("SigningAlgorithms".into(), json!(out.signing_algorithms));
            }
            if !out.key_agreement_algorithms.is_empty() {
                o.insert(
                    "KeyAgreementAlgorithms".into(),
                    json!(out.key_agreement_algorithms),
                );
            }
            Ok(Value::Object(o))
        }
        O::Sign | O::Verify => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                message: Option<SecretBlob>,
                message_type: Option<String>,
                signature: Option<Blob>,
                signing_algorithm: Option<String>,
                grant_tokens: Option<Vec<String>>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("Message", &r.message);
            c.required("SigningAlgorithm", &r.signing_algorithm);
            if op == O::Verify {
                c.required("Signature", &r.signature);
                c.blob_len(
                    "Signature",
                    r.signature.as_ref().map(|s| s.0.len()),
                    1,
                    6144,
                );
            }
            c.key_id("KeyId", r.key_id.as_deref());
            c.blob_len("Message", r.message.as_ref().map(|m| m.0.len()), 1, 4096);
            c.one_of(
                "MessageType",
                r.message_type.as_deref(),
                &["RAW", "DIGEST", "EXTERNAL_MU"],
            );
            c.one_of(
                "SigningAlgorithm",
                r.signing_algorithm.as_deref(),
                SIGNING_ALGORITHMS,
            );
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let message = r
                .message
                .map(|m| m.0)
                .unwrap_or_else(|| SecretBytes::zeroed(0));
            let message_type = r
                .message_type
                .as_deref()
                .and_then(MessageType::parse)
                .unwrap_or(MessageType::Raw);
            let algorithm = r.signing_algorithm.unwrap_or_default();
            let dry_run = r.dry_run.unwrap_or(false);
            if op == O::Sign {
                let (sig, arn) = kms
                    .sign(&key, message.expose(), message_type, &algorithm, dry_run)
                    .await?;
                Ok(json!({ "KeyId": arn, "Signature": b64(&sig), "SigningAlgorithm": algorithm }))
            } else {
                let signature = r.signature.map(|s| s.0).unwrap_or_default();
                let arn = kms
                    .verify(
                        &key,
                        message.expose(),
                        message_type,
                        &signature,
                        &algorithm,
                        dry_run,
                    )
                    .await?;
                Ok(json!({ "KeyId": arn, "SignatureValid": true, "SigningAlgorithm": algorithm }))
            }
        }
        O::GenerateMac | O::VerifyMac => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                message: Option<SecretBlob>,
                mac: Option<Blob>,
                mac_algorithm: Option<String>,
                grant_tokens: Option<Vec<String>>,
                dry_run: Option<bool>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("Message", &r.message);
            c.required("KeyId", &r.key_id);
            c.required("MacAlgorithm", &r.mac_algorithm);
            if op == O::VerifyMac {
                c.required("Mac", &r.mac);
                c.blob_len("Mac", r.mac.as_ref().map(|m| m.0.len()), 1, 6144);
            }
            c.key_id("KeyId", r.key_id.as_deref());
            c.blob_len("Message", r.message.as_ref().map(|m| m.0.len()), 1, 4096);
            c.one_of("MacAlgorithm", r.mac_algorithm.as_deref(), MAC_ALGORITHMS);
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let message = r
                .message
                .map(|m| m.0)
                .unwrap_or_else(|| SecretBytes::zeroed(0));
            let algorithm = r.mac_algorithm.unwrap_or_default();
            let dry_run = r.dry_run.unwrap_or(false);
            if op == O::GenerateMac {
                let (mac, arn) = kms
                    .generate_mac(&key, message.expose(), &algorithm, dry_run)
                    .await?;
                Ok(json!({ "Mac": b64(&mac), "MacAlgorithm": algorithm, "KeyId": arn }))
            } else {
                let mac = r.mac.map(|m| m.0).unwrap_or_default();
                let arn = kms
                    .verify_mac(&key, message.expose(), &mac, &algorithm, dry_run)
                    .await?;
                Ok(json!({ "KeyId": arn, "MacValid": true, "MacAlgorithm": algorithm }))
            }
        }
        O::DeriveSharedSecret => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                key_agreement_algorithm: Option<String>,
                public_key: Option<Blob>,
                grant_tokens: Option<Vec<String>>,
                dry_run: Option<bool>,
                recipient: Option<Value>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("KeyAgreementAlgorithm", &r.key_agreement_algorithm);
            c.required("PublicKey", &r.public_key);
            c.key_id("KeyId", r.key_id.as_deref());
            c.one_of(
                "KeyAgreementAlgorithm",
                r.key_agreement_algorithm.as_deref(),
                &["ECDH"],
            );
            c.blob_len(
                "PublicKey",
                r.public_key.as_ref().map(|p| p.0.len()),
                1,
                8192,
            );
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            if r.recipient.is_some() {
                return Err(recipient_unsupported());
            }
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let peer = r.public_key.map(|p| p.0).unwrap_or_default();
            let (secret, arn, origin) = kms
                .derive_shared_secret(&key, "ECDH", &peer, r.dry_run.unwrap_or(false))
                .await?;
            Ok(json!({
                "KeyId": arn,
                "SharedSecret": b64(secret.expose()),
                "KeyAgreementAlgorithm": "ECDH",
                "KeyOrigin": origin,
            }))
        }
        O::GenerateDataKeyPair | O::GenerateDataKeyPairWithoutPlaintext => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                key_pair_spec: Option<String>,
                encryption_context: Option<Context>,
                grant_tokens: Option<Vec<String>>,
                dry_run: Option<bool>,
                recipient: Option<Value>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("KeyPairSpec", &r.key_pair_spec);
            c.key_id("KeyId", r.key_id.as_deref());
            c.one_of("KeyPairSpec", r.key_pair_spec.as_deref(), KEY_PAIR_SPECS);
            c.encryption_context("EncryptionContext", r.encryption_context.as_ref());
            c.list_len("GrantTokens", r.grant_tokens.as_ref(), 0, 10);
            c.finish()?;
            gate.pass()?;
            if r.recipient.is_some() {
                return Err(recipient_unsupported());
            }
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let out = kms
                .generate_data_key_pair(
                    &key,
                    &r.encryption_context.unwrap_or_default(),
                    r.key_pair_spec.as_deref().unwrap_or_default(),
                    op == O::GenerateDataKeyPair,
                    r.dry_run.unwrap_or(false),
                )
                .await?;
            let mut o = Map::new();
            o.insert(
                "PrivateKeyCiphertextBlob".into(),
                b64(&out.private_key_ciphertext),
            );
            if let Some(p) = &out.private_key_plaintext {
                o.insert("PrivateKeyPlaintext".into(), b64(p.expose()));
            }
            o.insert("PublicKey".into(), b64(&out.public_key));
            o.insert("KeyId".into(), json!(out.key_arn));
            o.insert("KeyPairSpec".into(), json!(out.key_pair_spec));
            o.insert("KeyMaterialId".into(), json!(out.key_material_id));
            Ok(Value::Object(o))
        }
        O::GetParametersForImport => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                wrapping_algorithm: Option<String>,
                wrapping_key_spec: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("WrappingAlgorithm", &r.wrapping_algorithm);
            c.required("WrappingKeySpec", &r.wrapping_key_spec);
            c.key_id("KeyId", r.key_id.as_deref());
            c.one_of(
                "WrappingAlgorithm",
                r.wrapping_algorithm.as_deref(),
                &[
                    "RSAES_PKCS1_V1_5",
                    "RSAES_OAEP_SHA_1",
                    "RSAES_OAEP_SHA_256",
                    "RSA_AES_KEY_WRAP_SHA_1",
                    "RSA_AES_KEY_WRAP_SHA_256",
                    "SM2PKE",
                ],
            );
            c.one_of(
                "WrappingKeySpec",
                r.wrapping_key_spec.as_deref(),
                &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"],
            );
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let p = kms
                .parameters_for_import(
                    &key,
                    r.wrapping_algorithm.as_deref().unwrap_or_default(),
                    r.wrapping_key_spec.as_deref().unwrap_or_default(),
                )
                .await?;
            Ok(json!({
                "KeyId": p.key_arn,
                "ImportToken": b64(&p.import_token),
                "PublicKey": b64(&p.public_key),
                "ParametersValidTo": epoch(p.valid_to_ms),
            }))
        }
        O::ImportKeyMaterial => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                import_token: Option<Blob>,
                encrypted_key_material: Option<Blob>,
                valid_to: Option<f64>,
                expiration_model: Option<String>,
                import_type: Option<String>,
                key_material_description: Option<String>,
                key_material_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.required("ImportToken", &r.import_token);
            c.required("EncryptedKeyMaterial", &r.encrypted_key_material);
            c.key_id("KeyId", r.key_id.as_deref());
            c.blob_len(
                "ImportToken",
                r.import_token.as_ref().map(|t| t.0.len()),
                1,
                6144,
            );
            c.blob_len(
                "EncryptedKeyMaterial",
                r.encrypted_key_material.as_ref().map(|m| m.0.len()),
                1,
                6144,
            );
            c.one_of(
                "ExpirationModel",
                r.expiration_model.as_deref(),
                &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"],
            );
            c.one_of(
                "ImportType",
                r.import_type.as_deref(),
                &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"],
            );
            c.str_len(
                "KeyMaterialDescription",
                r.key_material_description.as_deref(),
                0,
                256,
            );
            c.str_len("KeyMaterialId", r.key_material_id.as_deref(), 64, 64);
            c.finish()?;
            gate.pass()?;
            let invalid = |m: &str| ApiError::Kms(coffer_kms::KmsError::Validation(m.into()));
            let expires_ms = match (r.expiration_model.as_deref(), r.valid_to) {
                (Some("KEY_MATERIAL_EXPIRES"), None) => {
                    return Err(invalid(
                        "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.",
                    ));
                }
                (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(_)) => {
                    return Err(invalid(
                        "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.",
                    ));
                }
                (_, Some(t)) => {
                    let ms = (t * 1000.0) as i64;
                    let now = coffer_kms::now_ms();
                    if ms <= now || ms > now + 365 * 86_400_000 {
                        return Err(invalid(
                            "ValidTo must be in the future and at most 365 days from now.",
                        ));
                    }
                    Some(ms)
                }
                (_, None) => None,
            };
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let token = r.import_token.map(|t| t.0).unwrap_or_default();
            let material = r.encrypted_key_material.map(|m| m.0).unwrap_or_default();
            let id = kms
                .import_key_material(
                    &key,
                    coffer_kms::ImportInput {
                        import_token: &token,
                        encrypted_material: &material,
                        expires_ms,
                        import_type: r.import_type.as_deref(),
                        description: r.key_material_description.as_deref(),
                        key_material_id: r.key_material_id.as_deref(),
                    },
                )
                .await?;
            Ok(json!({ "KeyId": id.0, "KeyMaterialId": id.1 }))
        }
        O::DeleteImportedKeyMaterial => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                key_material_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.str_len("KeyMaterialId", r.key_material_id.as_deref(), 64, 64);
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let (arn, material_id) = kms
                .delete_imported_key_material(&key, r.key_material_id.as_deref())
                .await?;
            Ok(json!({ "KeyId": arn, "KeyMaterialId": material_id }))
        }
        O::CreateCustomKeyStore => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                custom_key_store_name: Option<String>,
                cloud_hsm_cluster_id: Option<String>,
                trust_anchor_certificate: Option<String>,
                key_store_password: Option<zeroize::Zeroizing<String>>,
                custom_key_store_type: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("CustomKeyStoreName", &r.custom_key_store_name);
            c.str_len(
                "CustomKeyStoreName",
                r.custom_key_store_name.as_deref(),
                1,
                256,
            );
            cluster_id_checks(&mut c, r.cloud_hsm_cluster_id.as_deref());
            c.str_len(
                "TrustAnchorCertificate",
                r.trust_anchor_certificate.as_deref(),
                1,
                5000,
            );
            c.str_len(
                "KeyStorePassword",
                r.key_store_password.as_deref().map(String::as_str),
                7,
                32,
            );
            c.one_of(
                "CustomKeyStoreType",
                r.custom_key_store_type.as_deref(),
                &["AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"],
            );
            c.finish()?;
            gate.pass()?;
            let id = kms
                .create_custom_key_store(
                    r.custom_key_store_name.as_deref().unwrap_or_default(),
                    r.custom_key_store_type.as_deref(),
                    r.cloud_hsm_cluster_id.as_deref(),
                    r.trust_anchor_certificate.as_deref(),
                    r.key_store_password.as_deref().map(String::as_str),
                )
                .await?;
            Ok(json!({ "CustomKeyStoreId": id }))
        }
        O::DescribeCustomKeyStores => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                custom_key_store_id: Option<String>,
                custom_key_store_name: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.str_len("CustomKeyStoreId", r.custom_key_store_id.as_deref(), 1, 64);
            c.str_len(
                "CustomKeyStoreName",
                r.custom_key_store_name.as_deref(),
                1,
                256,
            );
            c.range("Limit", r.limit, 1, 1000);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let page = kms
                .describe_custom_key_stores(
                    r.custom_key_store_id.as_deref(),
                    r.custom_key_store_name.as_deref(),
                    limit(r.limit, 100),
                    r.marker.as_deref(),
                )
                .await?;
            let stores: Vec<Value> = page
                .items
                .iter()
                .map(|s| {
                    let mut o = Map::new();
                    o.insert("CustomKeyStoreId".into(), json!(s.id));
                    o.insert("CustomKeyStoreName".into(), json!(s.name));
                    o.insert("CloudHsmClusterId".into(), json!(s.cluster_id));
                    o.insert("TrustAnchorCertificate".into(), json!(s.trust_anchor));
                    o.insert("ConnectionState".into(), json!(s.connection_state));
                    if let Some(e) = &s.connection_error {
                        o.insert("ConnectionErrorCode".into(), json!(e));
                    }
                    o.insert("CreationDate".into(), epoch(s.created_ms));
                    o.insert("CustomKeyStoreType".into(), json!("AWS_CLOUDHSM"));
                    Value::Object(o)
                })
                .collect();
            let mut o = Map::new();
            o.insert("CustomKeyStores".into(), Value::Array(stores));
            Ok(with_marker(o, page.next_marker))
        }
        O::ConnectCustomKeyStore | O::DisconnectCustomKeyStore | O::DeleteCustomKeyStore => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                custom_key_store_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("CustomKeyStoreId", &r.custom_key_store_id);
            c.str_len("CustomKeyStoreId", r.custom_key_store_id.as_deref(), 1, 64);
            c.finish()?;
            gate.pass()?;
            let id = r.custom_key_store_id.as_deref().unwrap_or_default();
            match op {
                O::ConnectCustomKeyStore => kms.connect_custom_key_store(id).await?,
                O::DisconnectCustomKeyStore => kms.disconnect_custom_key_store(id).await?,
                _ => kms.delete_custom_key_store(id).await?,
            }
            Ok(json!({}))
        }
        O::UpdateCustomKeyStore => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                custom_key_store_id: Option<String>,
                new_custom_key_store_name: Option<String>,
                key_store_password: Option<zeroize::Zeroizing<String>>,
                cloud_hsm_cluster_id: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("CustomKeyStoreId", &r.custom_key_store_id);
            c.str_len("CustomKeyStoreId", r.custom_key_store_id.as_deref(), 1, 64);
            c.str_len(
                "NewCustomKeyStoreName",
                r.new_custom_key_store_name.as_deref(),
                1,
                256,
            );
            c.str_len(
                "KeyStorePassword",
                r.key_store_password.as_deref().map(String::as_str),
                7,
                32,
            );
            cluster_id_checks(&mut c, r.cloud_hsm_cluster_id.as_deref());
            c.finish()?;
            gate.pass()?;
            kms.update_custom_key_store(
                r.custom_key_store_id.as_deref().unwrap_or_default(),
                r.new_custom_key_store_name.as_deref(),
                r.key_store_password.as_deref().map(String::as_str),
                r.cloud_hsm_cluster_id.as_deref(),
            )
            .await?;
            Ok(json!({}))
        }
        O::ListKeyRotations => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct R {
                key_id: Option<String>,
                include_key_material: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
            }
            let r: R = parse(body)?;
            let mut c = Checks::new();
            c.required("KeyId", &r.key_id);
            c.key_id("KeyId", r.key_id.as_deref());
            c.one_of(
                "IncludeKeyMaterial",
                r.include_key_material.as_deref(),
                &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"],
            );
            c.range("Limit", r.limit, 1, 1000);
            c.marker(r.marker.as_deref());
            c.finish()?;
            gate.pass()?;
            let key = key_ref(kms, r.key_id.as_deref().unwrap_or_default())?;
            let all = r.include_key_material.as_deref() == Some("ALL_KEY_MATERIAL");
            let page = kms
                .list_key_rotations(&key, all, limit(r.limit, 100), r.marker.as_deref())
                .await?;
            let rotations: Vec<Value> = page
                .items
                .iter()
                .map(|e| {
                    let mut o = Map::new();
                    o.insert("KeyId".into(), json!(e.key_id));
                    o.insert("KeyMaterialId".into(), json!(e.key_material_id));
                    o.insert("KeyMaterialState".into(), json!(e.material_state));
                    if let Some(i) = &e.import {
                        o.insert(
                            "ImportState".into(),
                            json!(if i.imported {
                                "IMPORTED"
                            } else {
                                "PENDING_IMPORT"
                            }),
                        );
                        if let Some(m) = &i.expiration_model {
                            o.insert("ExpirationModel".into(), json!(m));
                        }
                        if let Some(t) = i.valid_to_ms {
                            o.insert("ValidTo".into(), epoch(t));
                        }
                        if let Some(d) = &i.description {
                            o.insert("KeyMaterialDescription".into(), json!(d));
                        }
                    }
                    if let Some(t) = e.rotation_ms {
                        o.insert("RotationDate".into(), epoch(t));
                    }
                    if let Some(t) = &e.rotation_type {
                        o.insert("RotationType".into(), json!(t));
                    }
                    Value::Object(o)
                })
                .collect();
            let mut o = Map::new();
            o.insert("Rotations".into(), Value::Array(rotations));
            Ok(with_marker(o, page.next_marker))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No operation acts on a refused request: each either rejects the input or reports the
    /// refusal, whatever it is given.
    #[test]
    fn every_operation_checks_the_gate() {
        let dir = tempfile::tempdir().expect("tmp");
        let (root, _) = coffer_kms::root::DevFileRoot::load_or_create(&dir.path().join("root.key"))
            .expect("root");
        let meta = std::sync::Arc::new(coffer_meta::SqlStore::in_memory().expect("db"));
        let kms = Kms::new(
            coffer_kms::KmsConfig {
                account_id: "111122223333".into(),
                region: "us-east-1".into(),
                ..Default::default()
            },
            meta,
            std::sync::Arc::new(root),
        );
        let caller = coffer_kms::Caller::new(
            coffer_kms::Principal {
                arn: "arn:aws:iam::111122223333:user/x".into(),
                account_id: "111122223333".into(),
                access_key_id: "AKIAEXAMPLEEXAMPLE12".into(),
            },
            None,
            None,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let key = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let bodies = [
            "{}".to_owned(),
            format!(
                r#"{{"KeyId":"{key}","Plaintext":"eA==","CiphertextBlob":"eA==","NumberOfBytes":32,"KeySpec":"AES_256","Message":"eA==","Signature":"eA==","SigningAlgorithm":"ECDSA_SHA_256","MacAlgorithm":"HMAC_SHA_256","Mac":"eA==","GranteePrincipal":"arn:aws:iam::111122223333:root","Operations":["Encrypt"],"AliasName":"alias/a","TargetKeyId":"{key}","Policy":"{{}}","PolicyName":"default","Tags":[{{"TagKey":"a","TagValue":"b"}}],"TagKeys":["a"],"Description":"d","DestinationKeyId":"{key}","KeyPairSpec":"RSA_2048","WrappingAlgorithm":"RSAES_OAEP_SHA_256","WrappingKeySpec":"RSA_2048","ImportToken":"eA==","EncryptedKeyMaterial":"eA==","KeyAgreementAlgorithm":"ECDH","PublicKey":"eA==","GrantId":"g","GrantToken":"t","RetiringPrincipal":"arn:aws:iam::111122223333:root","PendingWindowInDays":7}}"#
            ),
        ];
        for op in KmsOperation::ALL {
            for body in &bodies {
                let mut gate = Gate::refused(ApiError::Kms(coffer_kms::KmsError::AccessDenied(
                    "refused".into(),
                )));
                let r = rt.block_on(dispatch(&kms, *op, body.as_bytes(), &caller, &mut gate));
                assert!(
                    r.is_err(),
                    "{} acted on a refused request with {body}",
                    op.name()
                );
                if gate.0.is_none() {
                    assert!(
                        matches!(r, Err(ApiError::Kms(coffer_kms::KmsError::AccessDenied(_)))),
                        "{} passed the gate but did not report the refusal: {r:?}",
                        op.name()
                    );
                }
            }
        }
    }

    #[test]
    fn operations_by_name() {
        for op in KmsOperation::ALL {
            assert_eq!(KmsOperation::from_name(op.name()), Some(*op));
            assert!(!NOT_YET.contains(&op.name()));
        }
        assert_eq!(
            operation(Some("TrentService.Encrypt")).expect("known"),
            KmsOperation::Encrypt
        );
        assert!(matches!(
            operation(Some("TrentService.Nope")),
            Err(ApiError::UnknownOperation(_))
        ));
        assert!(matches!(
            operation(Some("Encrypt")),
            Err(ApiError::UnknownOperation(_))
        ));
        assert!(matches!(
            operation(None),
            Err(ApiError::UnknownOperation(_))
        ));
        assert!(matches!(
            operation(Some("TrentService.ReplicateKey")),
            Err(ApiError::Kms(coffer_kms::KmsError::UnsupportedOperation(_)))
        ));
    }

    #[test]
    fn secret_blob_decodes_into_zeroizing_memory() {
        let b: SecretBlob = serde_json::from_str("\"aGVsbG8=\"").expect("base64");
        assert_eq!(b.0.expose(), b"hello");
        assert!(serde_json::from_str::<SecretBlob>("\"***\"").is_err());
        assert!(serde_json::from_str::<SecretBlob>("12").is_err());
    }
}

//! Authorization of KMS requests, before they run: which action on which key, with which
//! condition keys from the request (`kms:EncryptionContext:…`, `kms:EncryptionAlgorithm`, …).
//! The decision itself is `coffer_kms`'s (key policy, identity policies).

use base64::Engine;
use coffer_kms::{Caller, KeyRef, Kms};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::kms::KmsOperation;

/// Operations that act on no key: decided by identity policies alone.
fn account_level(op: KmsOperation) -> bool {
    matches!(
        op,
        KmsOperation::CreateKey
            | KmsOperation::ListKeys
            | KmsOperation::ListAliases
            | KmsOperation::GenerateRandom
            | KmsOperation::CreateCustomKeyStore
            | KmsOperation::DescribeCustomKeyStores
            | KmsOperation::ConnectCustomKeyStore
            | KmsOperation::DisconnectCustomKeyStore
            | KmsOperation::UpdateCustomKeyStore
            | KmsOperation::DeleteCustomKeyStore
    )
}

/// Request fields that become `kms:` condition keys, by field name.
const SCALAR_KEYS: &[(&str, &str)] = &[
    ("EncryptionAlgorithm", "kms:EncryptionAlgorithm"),
    ("SigningAlgorithm", "kms:SigningAlgorithm"),
    ("MacAlgorithm", "kms:MacAlgorithm"),
    ("KeyAgreementAlgorithm", "kms:KeyAgreementAlgorithm"),
    ("MessageType", "kms:MessageType"),
    ("NumberOfBytes", "kms:NumberOfBytes"),
    ("KeyPairSpec", "kms:DataKeyPairSpec"),
    ("WrappingAlgorithm", "kms:WrappingAlgorithm"),
    ("WrappingKeySpec", "kms:WrappingKeySpec"),
    ("ExpirationModel", "kms:ExpirationModel"),
    ("ValidTo", "kms:ValidTo"),
    (
        "PendingWindowInDays",
        "kms:ScheduleKeyDeletionPendingWindowInDays",
    ),
    ("RotationPeriodInDays", "kms:RotationPeriodInDays"),
    (
        "BypassPolicyLockoutSafetyCheck",
        "kms:BypassPolicyLockoutSafetyCheck",
    ),
    ("KeySpec", "kms:KeySpec"),
    ("KeyUsage", "kms:KeyUsage"),
    ("Origin", "kms:KeyOrigin"),
];

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Adds the condition keys a request body supplies to the caller's context.
fn add_request_keys(caller: &mut Caller, op: KmsOperation, body: &Map<String, Value>) {
    let ctx = &mut caller.context;
    for (field, key) in SCALAR_KEYS {
        // For CreateKey, KeySpec/KeyUsage/Origin describe the key to be; elsewhere the key's own
        // values are set when the key is known.
        if matches!(*field, "KeySpec" | "KeyUsage" | "Origin") && op != KmsOperation::CreateKey {
            continue;
        }
        if let Some(v) = body.get(*field).and_then(text) {
            ctx.set(key, v);
        }
    }
    if op == KmsOperation::CreateKey
        && let Some(v) = body.get("CustomerMasterKeySpec").and_then(text)
    {
        ctx.set_if_absent("kms:KeySpec", v);
    }
    let ec = match op {
        KmsOperation::ReEncrypt => body.get("DestinationEncryptionContext"),
        _ => body.get("EncryptionContext"),
    };
    if let Some(Value::Object(ec)) = ec {
        let mut keys = Vec::with_capacity(ec.len());
        for (k, v) in ec {
            if let Some(v) = v.as_str() {
                // The key part of kms:EncryptionContext:<key> is case-insensitive, as in AWS.
                ctx.set_if_absent(&format!("kms:EncryptionContext:{k}"), v);
                keys.push(k.clone());
            }
        }
        ctx.set_multi("kms:EncryptionContextKeys", keys);
    }
    if op == KmsOperation::CreateGrant {
        if let Some(Value::Array(ops)) = body.get("Operations") {
            let ops = ops
                .iter()
                .filter_map(|o| o.as_str().map(str::to_owned))
                .collect();
            ctx.set_multi("kms:GrantOperations", ops);
        }
        for (field, key) in [
            ("GranteePrincipal", "kms:GranteePrincipal"),
            ("RetiringPrincipal", "kms:RetiringPrincipal"),
        ] {
            if let Some(v) = body.get(field).and_then(text) {
                ctx.set(key, v);
            }
        }
        ctx.set("kms:GrantIsForAWSResource", "false");
        if let Some(Value::Object(c)) = body.get("Constraints") {
            let types = c.keys().cloned().collect();
            ctx.set_multi("kms:GrantConstraintType", types);
        }
    }
    if op == KmsOperation::ReEncrypt
        && let (Some(s), Some(d)) = (
            body.get("SourceKeyId").and_then(Value::as_str),
            body.get("DestinationKeyId").and_then(Value::as_str),
        )
    {
        ctx.set("kms:ReEncryptOnSameKey", (s == d).to_string());
    }
}

fn key_ref_of(kms: &Kms, v: Option<&Value>) -> Option<KeyRef> {
    let cfg = kms.config();
    KeyRef::parse(v?.as_str()?, &cfg.account_id, &cfg.region).ok()
}

/// The key a ciphertext field names (symmetric blobs carry their key id).
fn blob_key(kms: &Kms, v: Option<&Value>) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v?.as_str()?)
        .ok()?;
    kms.ciphertext_key_id(&bytes)
}

/// Decides whether `caller` may run `op` with this body. A body that names no usable key is let
/// through: the operation then fails validation or finds nothing, and nothing is disclosed.
pub async fn authorize(
    kms: &Kms,
    op: KmsOperation,
    body: &[u8],
    caller: &mut Caller,
) -> Result<(), ApiError> {
    match decide(kms, op, body, caller).await {
        // A key or alias that does not exist is the operation's to report, after it has
        // validated the request, as AWS orders its errors; nothing runs on a missing key.
        Err(ApiError::Kms(coffer_kms::KmsError::NotFound(_))) => Ok(()),
        r => r,
    }
}

async fn decide(
    kms: &Kms,
    op: KmsOperation,
    body: &[u8],
    caller: &mut Caller,
) -> Result<(), ApiError> {
    // A body that is not a JSON object is decided as an empty request: the operation rejects
    // it (or, for an empty body, treats it as `{}` — which must not skip the decision).
    let b = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(b)) => b,
        _ => Map::new(),
    };
    if let Some(Value::Array(tokens)) = b.get("GrantTokens") {
        let tokens: Vec<String> = tokens
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        coffer_kms::grants::check_grant_tokens(&tokens)?;
    }
    // Who may retire a grant is the grant's to say, not a policy's (as in AWS).
    if op == KmsOperation::RetireGrant {
        return Ok(());
    }
    add_request_keys(caller, op, &b);
    let action = op.action();
    if account_level(op) {
        kms.authorize_account(caller, action).await?;
        return Ok(());
    }
    match op {
        KmsOperation::Decrypt => {
            if let Some(r) = key_ref_of(kms, b.get("KeyId")) {
                kms.authorize(caller, action, &r).await?;
            } else if let Some(id) = blob_key(kms, b.get("CiphertextBlob")) {
                authorize_if_exists(kms, caller, action, &id).await?;
            }
        }
        KmsOperation::ReEncrypt => {
            if let Some(r) = key_ref_of(kms, b.get("SourceKeyId")) {
                kms.authorize(caller, "kms:ReEncryptFrom", &r).await?;
            } else if let Some(id) = blob_key(kms, b.get("CiphertextBlob")) {
                authorize_if_exists(kms, caller, "kms:ReEncryptFrom", &id).await?;
            }
            if let Some(r) = key_ref_of(kms, b.get("DestinationKeyId")) {
                kms.authorize(caller, "kms:ReEncryptTo", &r).await?;
            }
        }
        KmsOperation::CreateAlias | KmsOperation::UpdateAlias => {
            if let Some(r) = key_ref_of(kms, b.get("TargetKeyId")) {
                kms.authorize(caller, action, &r).await?;
            }
            // Moving an alias needs the permission on the key it points to now, too.
            if op == KmsOperation::UpdateAlias
                && let Some(r @ KeyRef::Alias(_)) = key_ref_of(kms, b.get("AliasName"))
            {
                kms.authorize(caller, action, &r).await?;
            }
        }
        KmsOperation::DeleteAlias => {
            if let Some(r @ KeyRef::Alias(_)) = key_ref_of(kms, b.get("AliasName")) {
                kms.authorize(caller, action, &r).await?;
            }
        }
        _ => {
            if let Some(r) = key_ref_of(kms, b.get("KeyId")) {
                kms.authorize(caller, action, &r).await?;
            }
        }
    }
    Ok(())
}

/// Authorizes on a key named by a ciphertext; a key that does not exist is left to the
/// operation, which answers as it answers for a bad ciphertext.
async fn authorize_if_exists(
    kms: &Kms,
    caller: &mut Caller,
    action: &str,
    key_id: &str,
) -> Result<(), ApiError> {
    match kms.authorize_key(caller, action, key_id, None).await {
        Err(coffer_kms::KmsError::NotFound(_)) => Ok(()),
        r => Ok(r?),
    }
}

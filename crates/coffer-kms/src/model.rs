//! What the key service returns. Plaintexts are [`SecretBytes`]; nothing here holds raw material.

use std::collections::BTreeMap;

use coffer_crypto::SecretBytes;

/// An encryption context: string pairs bound to a ciphertext as authenticated data.
pub type EncryptionContext = BTreeMap<String, String>;

pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
pub const ENCRYPT_DECRYPT: &str = "ENCRYPT_DECRYPT";
pub const ORIGIN_AWS_KMS: &str = "AWS_KMS";
pub const ORIGIN_EXTERNAL: &str = "EXTERNAL";
pub const ORIGIN_AWS_CLOUDHSM: &str = "AWS_CLOUDHSM";

/// The states a key can be in (the subset Coffer produces today).
pub mod state {
    pub const ENABLED: &str = "Enabled";
    pub const DISABLED: &str = "Disabled";
    pub const PENDING_DELETION: &str = "PendingDeletion";
    pub const PENDING_IMPORT: &str = "PendingImport";
    /// A key in a custom key store that is not connected (shown, never stored).
    pub const UNAVAILABLE: &str = "Unavailable";
}

/// DescribeKey's `KeyMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    pub account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_ms: i64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: String,
    pub key_state: String,
    pub deletion_ms: Option<i64>,
    pub pending_window_days: Option<i32>,
    pub origin: String,
    pub key_manager: String,
    pub key_spec: String,
    pub encryption_algorithms: Vec<&'static str>,
    pub signing_algorithms: Vec<&'static str>,
    pub mac_algorithms: Vec<&'static str>,
    pub key_agreement_algorithms: Vec<&'static str>,
    pub multi_region: bool,
    /// `None` while an imported key has no material.
    pub current_key_material_id: Option<String>,
    pub expiration_model: Option<String>,
    pub valid_to_ms: Option<i64>,
    pub custom_key_store_id: Option<String>,
    pub cloud_hsm_cluster_id: Option<String>,
}

/// GetParametersForImport's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportParameters {
    pub key_arn: String,
    /// Opaque to clients: a version byte and 32 random bytes; stored only as a hash.
    pub import_token: Vec<u8>,
    /// DER SubjectPublicKeyInfo of the RSA wrapping key.
    pub public_key: Vec<u8>,
    pub valid_to_ms: i64,
}

/// CreateKey's parameters, already checked for shape by the API layer.
#[derive(Debug, Clone, Default)]
pub struct CreateKeyInput {
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub key_spec: Option<String>,
    pub origin: Option<String>,
    pub multi_region: bool,
    pub custom_key_store_id: Option<String>,
    pub tags: Vec<(String, String)>,
    /// The key policy; `None` for the default key policy.
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: bool,
    /// Who creates the key, for the policy lockout safety check (`None`: no check).
    pub caller: Option<crate::authz::Caller>,
    /// An AWS managed key (KeyManager `AWS`), made by Coffer for a service; never by a request.
    pub aws_managed: bool,
}

#[derive(Debug)]
pub struct EncryptOutput {
    pub ciphertext: Vec<u8>,
    pub key_arn: String,
    pub key_material_id: String,
    pub algorithm: &'static str,
}

#[derive(Debug)]
pub struct DecryptOutput {
    pub plaintext: SecretBytes,
    pub key_arn: String,
    pub key_material_id: String,
    pub algorithm: &'static str,
}

#[derive(Debug)]
pub struct ReEncryptOutput {
    pub ciphertext: Vec<u8>,
    pub source_key_arn: String,
    pub key_arn: String,
    pub source_key_material_id: String,
    pub destination_key_material_id: String,
    pub source_algorithm: &'static str,
    pub destination_algorithm: &'static str,
}

/// GetPublicKey's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyOutput {
    pub key_arn: String,
    pub public_key: Vec<u8>,
    pub key_spec: String,
    pub key_usage: String,
    pub encryption_algorithms: Vec<&'static str>,
    pub signing_algorithms: Vec<&'static str>,
    pub key_agreement_algorithms: Vec<&'static str>,
}

/// GenerateDataKeyPair's answer.
#[derive(Debug)]
pub struct DataKeyPairOutput {
    /// PKCS#8 DER; `None` for GenerateDataKeyPairWithoutPlaintext.
    pub private_key_plaintext: Option<SecretBytes>,
    pub private_key_ciphertext: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    pub key_arn: String,
    pub key_pair_spec: &'static str,
    pub key_material_id: String,
}

#[derive(Debug)]
pub struct DataKeyOutput {
    /// `None` for GenerateDataKeyWithoutPlaintext.
    pub plaintext: Option<SecretBytes>,
    pub ciphertext: Vec<u8>,
    pub key_arn: String,
    pub key_material_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEntry {
    pub name: String,
    pub arn: String,
    pub target_key_id: String,
    pub creation_ms: i64,
    pub last_updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledDeletion {
    pub key_arn: String,
    pub deletion_ms: i64,
    pub pending_window_days: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatus {
    pub key_arn: String,
    pub enabled: bool,
    pub period_days: Option<i32>,
    pub next_rotation_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEntry {
    pub key_id: String,
    pub key_material_id: String,
    /// `CURRENT`, `NON_CURRENT` or `PENDING_ROTATION`.
    pub material_state: &'static str,
    /// `None` for the material the key was created with.
    pub rotation_type: Option<String>,
    /// When the material became current by rotation (or was created); `None` while pending.
    pub rotation_ms: Option<i64>,
    /// For keys with imported material.
    pub import: Option<ImportedMaterial>,
}

/// The import side of one material of a key with imported material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedMaterial {
    /// False once deleted or expired (AWS's `PENDING_IMPORT`).
    pub imported: bool,
    pub expiration_model: Option<String>,
    pub valid_to_ms: Option<i64>,
    pub description: Option<String>,
}

/// What ImportKeyMaterial carries besides the key.
#[derive(Debug, Clone, Copy)]
pub struct ImportInput<'a> {
    pub import_token: &'a [u8],
    pub encrypted_material: &'a [u8],
    /// `None`: the material does not expire.
    pub expires_ms: Option<i64>,
    /// `NEW_KEY_MATERIAL` or `EXISTING_KEY_MATERIAL` (the default).
    pub import_type: Option<&'a str>,
    pub description: Option<&'a str>,
    pub key_material_id: Option<&'a str>,
}

/// One page of a listing, with the marker for the next page when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

/// What a sweep of the clock did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub deleted: usize,
    pub rotated: usize,
    /// Imported material removed at its ValidTo.
    pub expired: usize,
}

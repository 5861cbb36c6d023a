//! Rows of the metadata store. Times are Unix milliseconds.

/// A KMS key (customer master key) without its material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub created_ms: i64,
    pub description: String,
    pub key_usage: String,
    pub key_spec: String,
    pub origin: String,
    pub key_manager: String,
    pub state: String,
    pub deletion_ms: Option<i64>,
    pub pending_window_days: Option<i32>,
    pub rotation_enabled: bool,
    pub rotation_period_days: Option<i32>,
    pub next_rotation_ms: Option<i64>,
    /// 0 while an imported key waits for its material.
    pub current_version: u32,
    /// Imported keys: `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE` of the current
    /// material (DescribeKey shows it).
    pub expiration_model: Option<String>,
    /// Imported keys: when the current material expires.
    pub valid_to_ms: Option<i64>,
    /// Unused since schema version 3 (each material row keeps its own fingerprint); kept so the
    /// column keeps its meaning for older rows.
    pub import_fingerprint: Option<Vec<u8>>,
    /// Keys in a custom key store: its id (the key's material lives in the store's token).
    pub custom_key_store_id: Option<String>,
}

/// One version of a key's material, wrapped under the root key.
#[derive(Clone, PartialEq, Eq)]
pub struct MaterialRecord {
    pub key_id: String,
    pub version: u32,
    pub wrapped: Vec<u8>,
    pub created_ms: i64,
    /// `None` for the material a key was created with; `AUTOMATIC` or `ON_DEMAND` for rotations.
    pub rotation_type: Option<String>,
    /// Imported material only: false once it was deleted or expired (`wrapped` is then empty) until
    /// the same material is imported again.
    pub imported: bool,
    /// Imported material only: imported with `NEW_KEY_MATERIAL` and waiting for RotateKeyOnDemand
    /// to become current; not yet part of the key.
    pub pending_rotation: bool,
    /// Imported material only: `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    pub expiration_model: Option<String>,
    /// Imported material only: when it expires.
    pub valid_to_ms: Option<i64>,
    /// Imported material only: the caller's `KeyMaterialDescription`.
    pub description: Option<String>,
    /// Imported material only: a keyed fingerprint, so that only the same material can be imported
    /// again into this version.
    pub fingerprint: Option<Vec<u8>>,
}

impl MaterialRecord {
    /// Material Coffer generated (at creation or on rotation).
    pub fn generated(
        key_id: &str,
        version: u32,
        wrapped: Vec<u8>,
        created_ms: i64,
        rotation_type: Option<&str>,
    ) -> Self {
        Self {
            key_id: key_id.to_owned(),
            version,
            wrapped,
            created_ms,
            rotation_type: rotation_type.map(str::to_owned),
            imported: true,
            pending_rotation: false,
            expiration_model: None,
            valid_to_ms: None,
            description: None,
            fingerprint: None,
        }
    }
}

impl std::fmt::Debug for MaterialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaterialRecord")
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .field("wrapped", &format_args!("[{} bytes]", self.wrapped.len()))
            .field("created_ms", &self.created_ms)
            .field("rotation_type", &self.rotation_type)
            .field("imported", &self.imported)
            .field("pending_rotation", &self.pending_rotation)
            .field("valid_to_ms", &self.valid_to_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    pub name: String,
    pub target_key_id: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// An access key; the secret is wrapped under the root key.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub wrapped_secret: Vec<u8>,
    pub principal_arn: String,
    pub status: String,
    pub created_ms: i64,
}

impl std::fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("access_key_id", &self.access_key_id)
            .field("principal_arn", &self.principal_arn)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The wrapping key behind an import token (GetParametersForImport). The private key is wrapped
/// under the root key; the token itself is stored only as a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportTokenRecord {
    pub token_hash: Vec<u8>,
    pub key_id: String,
    pub wrapping_alg: String,
    pub wrapping_spec: String,
    pub wrapped_private: Vec<u8>,
    pub valid_to_ms: i64,
}

impl std::fmt::Debug for ImportTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportTokenRecord")
            .field("key_id", &self.key_id)
            .field("wrapping_alg", &self.wrapping_alg)
            .field("wrapping_spec", &self.wrapping_spec)
            .field("valid_to_ms", &self.valid_to_ms)
            .finish_non_exhaustive()
    }
}

/// An IAM user or group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamEntityRecord {
    pub kind: IamKind,
    /// Unique without regard to case, as in IAM; kept as created.
    pub name: String,
    /// `AIDA…` for users, `AGPA…` for groups.
    pub id: String,
    pub path: String,
    pub created_ms: i64,
}

/// What an IAM entity or an inline policy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamKind {
    User,
    Group,
}

impl IamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IamKind::User => "user",
            IamKind::Group => "group",
        }
    }
}

/// A grant on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// 64 lowercase hex characters.
    pub grant_id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub grantee: String,
    pub retiring: Option<String>,
    /// Operation names, as given (`Encrypt`, `Decrypt`, …).
    pub operations: Vec<String>,
    /// `EncryptionContextEquals` or `EncryptionContextSubset`, with its pairs; `None` without
    /// constraints.
    pub constraint: Option<(String, Vec<(String, String)>)>,
    pub issuing_account: String,
    /// The principal that created the grant.
    pub creator: String,
    pub created_ms: i64,
}

/// What a wrapped secret is, which names the row it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedKind {
    KeyMaterial {
        key_id: String,
        version: u32,
    },
    SecretAccessKey {
        access_key_id: String,
    },
    ImportWrappingKey {
        key_id: String,
        token_hash: Vec<u8>,
    },
    KeyStorePassword {
        id: String,
    },
    /// The master key that seals SSE-S3 object keys.
    S3MasterKey {
        id: u32,
    },
}

/// A secret stored wrapped under the root of trust.
#[derive(Debug, Clone)]
pub struct WrappedSecret {
    pub kind: WrappedKind,
    pub wrapped: Vec<u8>,
}

/// A custom key store: a PKCS#11 token (named by a configured HSM cluster id) that holds the key
/// material of the keys created in it.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomKeyStoreRecord {
    pub id: String,
    pub name: String,
    pub cluster_id: String,
    pub trust_anchor: String,
    /// The token's user PIN (AWS's `KeyStorePassword`), wrapped under the root.
    pub wrapped_password: Vec<u8>,
    /// `CONNECTED`, `DISCONNECTED` or `FAILED` (AWS's connection states).
    pub connection_state: String,
    /// With `FAILED`: AWS's connection error code.
    pub connection_error: Option<String>,
    pub created_ms: i64,
}

impl std::fmt::Debug for CustomKeyStoreRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomKeyStoreRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("cluster_id", &self.cluster_id)
            .field("connection_state", &self.connection_state)
            .field("connection_error", &self.connection_error)
            .finish_non_exhaustive()
    }
}

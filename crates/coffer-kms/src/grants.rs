//! Grants: a key's owner lets a principal use the key for some operations, optionally only with
//! a given encryption context, without changing the key policy. In Coffer a grant takes effect
//! at once; grant tokens are accepted (and checked for form) so clients written for AWS's
//! eventual consistency work unchanged.

use base64::Engine;
use coffer_meta::{GrantRecord, IamKind};

use crate::authz::{Caller, user_name};
use crate::{KeyRef, Kms, KmsError, Listing, Result, now_ms};

/// Every operation a grant can allow, as AWS names them.
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

/// Operations whose requests carry an encryption context, to which grant constraints apply.
const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// AWS's quota of grants per key.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;

const TOKEN_VERSION: u8 = 1;

/// A grant constraint: the encryption context a request must have (exactly, or at least).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    Equals(Vec<(String, String)>),
    Subset(Vec<(String, String)>),
}

impl Constraint {
    fn to_record(&self) -> (String, Vec<(String, String)>) {
        match self {
            Constraint::Equals(p) => ("EncryptionContextEquals".into(), p.clone()),
            Constraint::Subset(p) => ("EncryptionContextSubset".into(), p.clone()),
        }
    }

    fn from_record(r: &(String, Vec<(String, String)>)) -> Option<Constraint> {
        match r.0.as_str() {
            "EncryptionContextEquals" => Some(Constraint::Equals(r.1.clone())),
            "EncryptionContextSubset" => Some(Constraint::Subset(r.1.clone())),
            _ => None,
        }
    }

    /// Whether a request's encryption context satisfies the constraint. Keys compare without
    /// regard to case, values exactly (AWS's rule for grant constraints).
    pub fn holds(&self, ctx: &[(String, String)]) -> bool {
        let has = |k: &str, v: &str| {
            ctx.iter()
                .any(|(ck, cv)| ck.eq_ignore_ascii_case(k) && cv == v)
        };
        match self {
            Constraint::Equals(pairs) => {
                pairs.len() == ctx.len() && pairs.iter().all(|(k, v)| has(k, v))
            }
            Constraint::Subset(pairs) => pairs.iter().all(|(k, v)| has(k, v)),
        }
    }
}

/// What CreateGrant asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateGrantInput {
    pub grantee: String,
    pub retiring: Option<String>,
    pub operations: Vec<String>,
    pub constraint: Option<Constraint>,
    pub name: Option<String>,
    pub dry_run: bool,
}

/// A grant as ListGrants shows it.
#[derive(Debug, Clone)]
pub struct GrantInfo {
    pub key_arn: String,
    pub grant_id: String,
    pub name: Option<String>,
    pub created_ms: i64,
    pub grantee: String,
    pub retiring: Option<String>,
    pub issuing_account: String,
    pub operations: Vec<String>,
    pub constraint: Option<Constraint>,
}

/// A grant token: version byte, the 32-byte grant id, 16 random bytes; base64url.
fn token_for(grant_id: &str) -> Result<String> {
    let id =
        decode_hex(grant_id).ok_or_else(|| KmsError::Internal("grant id is not hex".into()))?;
    let nonce = coffer_crypto::random_secret(16).map_err(|e| KmsError::Internal(e.to_string()))?;
    let mut raw = Vec::with_capacity(49);
    raw.push(TOKEN_VERSION);
    raw.extend_from_slice(&id);
    raw.extend_from_slice(nonce.expose());
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The grant id in a grant token, or `InvalidGrantTokenException`.
pub fn grant_id_of_token(token: &str) -> Result<String> {
    let invalid = || KmsError::InvalidGrantToken("The grant token is not valid.".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    if raw.len() != 49 || raw[0] != TOKEN_VERSION {
        return Err(invalid());
    }
    Ok(coffer_crypto::digest::hex(&raw[1..33]))
}

/// Checks the form of every grant token in a request.
pub fn check_grant_tokens(tokens: &[String]) -> Result<()> {
    for t in tokens {
        grant_id_of_token(t)?;
    }
    Ok(())
}

/// Whether a grant on a key of this usage and spec can allow `op`.
fn valid_operation(usage: &str, spec: &str, op: &str) -> bool {
    let specific: &[&str] = match (usage, spec) {
        ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT") => CONTEXT_OPERATIONS,
        ("ENCRYPT_DECRYPT", _) => &[
            "Decrypt",
            "Encrypt",
            "ReEncryptFrom",
            "ReEncryptTo",
            "GetPublicKey",
        ],
        ("SIGN_VERIFY", _) => &["Sign", "Verify", "GetPublicKey"],
        ("GENERATE_VERIFY_MAC", _) => &["GenerateMac", "VerifyMac"],
        ("KEY_AGREEMENT", _) => &["DeriveSharedSecret", "GetPublicKey"],
        _ => &[],
    };
    matches!(op, "CreateGrant" | "RetireGrant" | "DescribeKey") || specific.contains(&op)
}

impl Kms {
    fn info(&self, g: GrantRecord) -> GrantInfo {
        GrantInfo {
            key_arn: self.cfg.key_arn(&g.key_id),
            constraint: g.constraint.as_ref().and_then(Constraint::from_record),
            grant_id: g.grant_id,
            name: g.name,
            created_ms: g.created_ms,
            grantee: g.grantee,
            retiring: g.retiring,
            issuing_account: format!("arn:aws:iam::{}:root", g.issuing_account),
            operations: g.operations,
        }
    }

    /// A grantee or retiring principal must be the account, an existing user of it, or a
    /// service principal.
    async fn check_principal(&self, field: &str, p: &str) -> Result<()> {
        let root = format!("arn:aws:iam::{}:root", self.cfg.account_id);
        let user_prefix = format!("arn:aws:iam::{}:user/", self.cfg.account_id);
        let ok = if p == root || p.ends_with(".amazonaws.com") {
            true
        } else if p.starts_with(&user_prefix) {
            match user_name(p) {
                Some(name) => self.meta.iam_entity(IamKind::User, name).await?.is_some(),
                None => false,
            }
        } else {
            false
        };
        if ok {
            Ok(())
        } else {
            Err(KmsError::Validation(format!(
                "{field} '{p}' is not a valid principal: use the account ({root}), an existing user of it ({user_prefix}NAME) or a service principal."
            )))
        }
    }

    /// CreateGrant. The caller was authorized for kms:CreateGrant by a policy or by a grant;
    /// through a grant, the new grant may allow no more than that grant does.
    pub async fn create_grant(
        &self,
        caller: &Caller,
        r: &KeyRef,
        input: CreateGrantInput,
    ) -> Result<(String, String)> {
        let key_id = self.resolve(r).await?;
        let k = self.loaded(&key_id).await?;
        self.usable(&k.record)?;
        self.check_principal("GranteePrincipal", &input.grantee)
            .await?;
        if let Some(rp) = &input.retiring {
            self.check_principal("RetiringPrincipal", rp).await?;
        }
        let (usage, spec) = (&k.record.key_usage, &k.record.key_spec);
        let bad: Vec<&str> = input
            .operations
            .iter()
            .map(String::as_str)
            .filter(|o| !valid_operation(usage, spec, o))
            .collect();
        if !bad.is_empty() {
            return Err(KmsError::Validation(format!(
                "Grant operations {} are not valid for a key with KeySpec {} and KeyUsage {}; valid operations are {}.",
                bad.join(", "),
                k.record.key_spec,
                k.record.key_usage,
                GRANT_OPERATIONS
                    .iter()
                    .filter(|o| valid_operation(usage, spec, o))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if input.constraint.is_some() && k.record.key_spec != "SYMMETRIC_DEFAULT" {
            return Err(KmsError::Validation(
                "Grant constraints apply to encryption context, which only symmetric encryption keys take; remove Constraints for this key.".into(),
            ));
        }
        if !self
            .policy_allows(caller, "kms:CreateGrant", &key_id)
            .await?
        {
            let parents = self.meta.grants_for(&key_id, &caller.principal.arn).await?;
            let covered = parents.iter().any(|g| {
                g.operations.iter().any(|o| o == "CreateGrant")
                    && input.operations.iter().all(|o| g.operations.contains(o))
                    && match g.constraint.as_ref().and_then(Constraint::from_record) {
                        None => true,
                        Some(c) => input.constraint.as_ref() == Some(&c),
                    }
            });
            if !covered {
                return Err(crate::authz::denied(
                    &caller.principal.arn,
                    "kms:CreateGrant",
                    &self.cfg.key_arn(&key_id),
                    "because a grant allows creating grants only for the operations and constraints it has itself",
                ));
            }
        }
        if input.dry_run {
            return Err(KmsError::DryRun);
        }
        let _w = self.write_lock().await?;
        if let Some(name) = &input.name {
            // Retrying with the same name and parameters returns the same grant.
            let mut after = None;
            loop {
                let page = self
                    .meta
                    .grants_of_key(&key_id, after.as_deref(), 1000)
                    .await?;
                for g in &page.items {
                    let same = g.name.as_deref() == Some(name.as_str())
                        && g.grantee == input.grantee
                        && g.retiring == input.retiring
                        && g.operations == input.operations
                        && g.constraint.as_ref().and_then(Constraint::from_record)
                            == input.constraint;
                    if same {
                        return Ok((g.grant_id.clone(), token_for(&g.grant_id)?));
                    }
                }
                if !page.truncated {
                    break;
                }
                after = page.items.last().map(|g| g.grant_id.clone());
            }
        }
        if self.meta.grant_count(&key_id).await? >= MAX_GRANTS_PER_KEY {
            return Err(KmsError::LimitExceeded(format!(
                "A key can have at most {MAX_GRANTS_PER_KEY} grants."
            )));
        }
        let id_bytes =
            coffer_crypto::random_secret(32).map_err(|e| KmsError::Internal(e.to_string()))?;
        let grant_id = coffer_crypto::digest::hex(id_bytes.expose());
        self.meta
            .create_grant(&GrantRecord {
                grant_id: grant_id.clone(),
                key_id,
                name: input.name,
                grantee: input.grantee,
                retiring: input.retiring,
                operations: input.operations,
                constraint: input.constraint.as_ref().map(Constraint::to_record),
                issuing_account: self.cfg.account_id.clone(),
                creator: caller.principal.arn.clone(),
                created_ms: now_ms(),
            })
            .await?;
        let token = token_for(&grant_id)?;
        Ok((grant_id, token))
    }

    /// ListGrants, optionally only one grant id or one grantee.
    pub async fn list_grants(
        &self,
        r: &KeyRef,
        limit: usize,
        marker: Option<&str>,
        grant_id: Option<&str>,
        grantee: Option<&str>,
    ) -> Result<Listing<GrantInfo>> {
        let key_id = self.resolve(r).await?;
        self.loaded(&key_id).await?;
        let mut items = Vec::new();
        let mut after = marker.map(str::to_owned);
        let next_marker = loop {
            let page = self
                .meta
                .grants_of_key(&key_id, after.as_deref(), limit)
                .await?;
            let last = page.items.last().map(|g| g.grant_id.clone());
            for g in page.items {
                if grant_id.is_some_and(|id| id != g.grant_id)
                    || grantee.is_some_and(|p| p != g.grantee)
                {
                    continue;
                }
                items.push(self.info(g));
                if items.len() == limit {
                    break;
                }
            }
            if items.len() == limit {
                break items.last().map(|g: &GrantInfo| g.grant_id.clone());
            }
            if !page.truncated {
                break None;
            }
            after = last;
        };
        Ok(Listing { items, next_marker })
    }

    /// ListRetirableGrants.
    pub async fn list_retirable_grants(
        &self,
        retiring: &str,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Listing<GrantInfo>> {
        let page = self
            .meta
            .grants_retirable_by(retiring, marker, limit)
            .await?;
        let next_marker = if page.truncated {
            page.items.last().map(|g| g.grant_id.clone())
        } else {
            None
        };
        Ok(Listing {
            items: page.items.into_iter().map(|g| self.info(g)).collect(),
            next_marker,
        })
    }

    /// RetireGrant, by token or by key and grant id. Who may: the account that issued it, its
    /// retiring principal, or its grantee when RetireGrant is one of its operations.
    pub async fn retire_grant(
        &self,
        caller: &Caller,
        token: Option<&str>,
        key: Option<&KeyRef>,
        grant_id: Option<&str>,
        dry_run: bool,
    ) -> Result<()> {
        let id = match (token, grant_id) {
            (Some(t), _) => grant_id_of_token(t)?,
            (None, Some(id)) => id.to_owned(),
            (None, None) => {
                return Err(KmsError::Validation(
                    "Specify GrantToken, or KeyId and GrantId, to retire a grant.".into(),
                ));
            }
        };
        let g = self
            .meta
            .grant(&id)
            .await?
            .ok_or_else(|| KmsError::NotFound(format!("Grant ID {id} is not found.")))?;
        if let Some(k) = key {
            let key_id = self.resolve(k).await?;
            if key_id != g.key_id {
                return Err(KmsError::NotFound(format!(
                    "Grant ID {id} is not found for key {}.",
                    self.cfg.key_arn(&key_id)
                )));
            }
        }
        let me = caller.principal.arn.as_str();
        let may = caller.is_account_root() && caller.principal.account_id == g.issuing_account
            || g.retiring.as_deref() == Some(me)
            || (g.grantee == me && g.operations.iter().any(|o| o == "RetireGrant"));
        if !may {
            return Err(crate::authz::denied(
                me,
                "kms:RetireGrant",
                &self.cfg.key_arn(&g.key_id),
                "because only the grant's retiring principal, its grantee (with RetireGrant) or the issuing account may retire it",
            ));
        }
        if dry_run {
            return Err(KmsError::DryRun);
        }
        self.meta.delete_grant(&id).await?;
        Ok(())
    }

    /// RevokeGrant (authorized by the key's policies for kms:RevokeGrant).
    pub async fn revoke_grant(&self, r: &KeyRef, grant_id: &str, dry_run: bool) -> Result<()> {
        let key_id = self.resolve(r).await?;
        self.loaded(&key_id).await?;
        let g = self.meta.grant(grant_id).await?;
        if g.as_ref().is_none_or(|g| g.key_id != key_id) {
            return Err(KmsError::NotFound(format!(
                "Grant ID {grant_id} is not found for key {}.",
                self.cfg.key_arn(&key_id)
            )));
        }
        if dry_run {
            return Err(KmsError::DryRun);
        }
        self.meta.delete_grant(grant_id).await?;
        Ok(())
    }

    /// Whether a grant lets `caller` perform `action` on the key with this request's encryption
    /// context (read back from the caller's condition keys).
    pub(crate) async fn grant_allows(
        &self,
        caller: &Caller,
        action: &str,
        key_id: &str,
    ) -> Result<bool> {
        let Some(op) = action.strip_prefix("kms:") else {
            return Ok(false);
        };
        if !GRANT_OPERATIONS.contains(&op) {
            return Ok(false);
        }
        let grants = self.meta.grants_for(key_id, &caller.principal.arn).await?;
        if grants.is_empty() {
            return Ok(false);
        }
        let ctx = request_context(caller);
        Ok(grants.iter().any(|g| {
            g.operations.iter().any(|o| o == op)
                && (!CONTEXT_OPERATIONS.contains(&op)
                    || g.constraint
                        .as_ref()
                        .and_then(Constraint::from_record)
                        .is_none_or(|c| c.holds(&ctx)))
        }))
    }
}

/// The request's encryption context, from the caller's condition keys.
fn request_context(caller: &Caller) -> Vec<(String, String)> {
    use coffer_policy::ContextValue;
    let Some(ContextValue::Multi(keys)) = caller.context.get("kms:EncryptionContextKeys") else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(
            |k| match caller.context.get(&format!("kms:EncryptionContext:{k}")) {
                Some(ContextValue::Single(v)) => Some((k.clone(), v.clone())),
                _ => None,
            },
        )
        .collect()
}

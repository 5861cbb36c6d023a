//! IAM for one account: users (with up to two access keys each), groups, and the inline
//! policies attached to them. The API crate serves it as the AWS IAM query API; key policies
//! consult these identity policies when they delegate to the account.

use std::sync::Arc;

use coffer_meta::{IamEntityRecord, IamKind, MetaError, MetaStore};
use coffer_policy::{Caller as PolicyCaller, Policy, PolicyKind, Request};

use crate::authz::{self, Caller, IdentityPolicyCache, identity_decision, user_arn};
use crate::identity::{ACCESS_KEY_ALPHABET, Identities, STATUS_ACTIVE, random_chars};
use crate::{KmsError, now_ms};

/// IAM's errors, one per IAM error code.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<KmsError> for IamError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::AccessDenied(m) => IamError::AccessDenied(m),
            KmsError::Validation(m) => IamError::Validation(m),
            other => IamError::Internal(other.to_string()),
        }
    }
}

impl From<MetaError> for IamError {
    fn from(e: MetaError) -> Self {
        IamError::Internal(e.to_string())
    }
}

pub type IamResult<T> = std::result::Result<T, IamError>;

/// AWS's quota of access keys per user.
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;
/// AWS's limits on the total size of a user's or a group's inline policies (characters, not
/// counting white space).
pub const MAX_USER_POLICY_CHARS: usize = 2048;
pub const MAX_GROUP_POLICY_CHARS: usize = 5120;

/// A user or group as IAM shows it.
#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub created_ms: i64,
}

/// An access key as ListAccessKeys shows it (no secret).
#[derive(Debug, Clone)]
pub struct AccessKeyInfo {
    pub user_name: String,
    pub access_key_id: String,
    pub status: String,
    pub created_ms: i64,
}

#[derive(Debug)]
pub struct Iam {
    meta: Arc<dyn MetaStore>,
    identities: Arc<Identities>,
    account_id: String,
    cache: Arc<IdentityPolicyCache>,
    /// Serialises changes that check before they act (quotas, "must be empty first").
    writes: tokio::sync::Mutex<()>,
}

fn validate_name(what: &str, name: &str, max: usize) -> IamResult<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}"
        )))
    }
}

fn validate_path(path: &str) -> IamResult<()> {
    let ok = path.len() <= 512
        && path.starts_with('/')
        && path.ends_with('/')
        && path.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "1 validation error detected: Value '{path}' at 'path' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)"
        )))
    }
}

/// `AIDA…` / `AGPA…` ids: a prefix and 17 characters of A-Z2-7.
fn new_id(prefix: &str) -> IamResult<String> {
    let suffix = random_chars(ACCESS_KEY_ALPHABET, 17).map_err(IamError::from)?;
    Ok(format!(
        "{prefix}{}",
        String::from_utf8_lossy(suffix.expose())
    ))
}

fn policy_chars(doc: &str) -> usize {
    doc.chars().filter(|c| !c.is_whitespace()).count()
}

impl Iam {
    /// `cache` is the key service's identity-policy cache ([`crate::Kms::identity_cache`]);
    /// every change made here clears it.
    pub fn new(
        meta: Arc<dyn MetaStore>,
        identities: Arc<Identities>,
        account_id: &str,
        cache: Arc<IdentityPolicyCache>,
    ) -> Self {
        Self {
            meta,
            identities,
            account_id: account_id.to_owned(),
            cache,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Held by a change that checks before it acts, on this node and across every node that
    /// shares the metadata store, so that two of them cannot both pass a check one would fail.
    async fn write_lock(
        &self,
    ) -> IamResult<(tokio::sync::MutexGuard<'_, ()>, coffer_meta::ClusterLock)> {
        let local = self.writes.lock().await;
        let shared = self.meta.cluster_lock("coffer:iam-writes").await?;
        Ok((local, shared))
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    fn entity(&self, r: IamEntityRecord) -> Entity {
        let arn = match r.kind {
            IamKind::User => user_arn(&self.account_id, &r.path, &r.name),
            IamKind::Group => format!("arn:aws:iam::{}:group{}{}", self.account_id, r.path, r.name),
        };
        Entity {
            name: r.name,
            id: r.id,
            path: r.path,
            arn,
            created_ms: r.created_ms,
        }
    }

    /// Whether `caller` may perform the IAM `action` (`iam:CreateUser`) on `resource`: the
    /// account root may do anything; a user needs an identity policy that allows it.
    pub async fn authorize(&self, caller: &Caller, action: &str, resource: &str) -> IamResult<()> {
        if caller.is_account_root() {
            return Ok(());
        }
        let ids = self
            .cache
            .get(self.meta.as_ref(), &caller.principal.arn)
            .await?;
        let req = Request {
            caller: PolicyCaller {
                arn: &caller.principal.arn,
                account: &caller.principal.account_id,
            },
            action,
            resource,
            context: &caller.context,
        };
        let d = identity_decision(&ids, &req);
        let why = if d.denied {
            "with an explicit deny in an identity-based policy".to_owned()
        } else if d.allowed {
            return Ok(());
        } else {
            format!("because no identity-based policy allows the {action} action")
        };
        Err(IamError::AccessDenied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
            caller.principal.arn
        )))
    }

    /// The ARN a user of this account would have (for authorizing before it exists).
    pub fn user_resource(&self, name: &str) -> String {
        user_arn(&self.account_id, "/", name)
    }

    pub fn group_resource(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:group/{name}", self.account_id)
    }

    async fn user_record(&self, name: &str) -> IamResult<IamEntityRecord> {
        validate_name("userName", name, 64)?;
        self.meta
            .iam_entity(IamKind::User, name)
            .await?
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("The user with name {name} cannot be found."))
            })
    }

    async fn group_record(&self, name: &str) -> IamResult<IamEntityRecord> {
        validate_name("groupName", name, 128)?;
        self.meta
            .iam_entity(IamKind::Group, name)
            .await?
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("The group with name {name} cannot be found."))
            })
    }

    pub async fn create_user(&self, name: &str, path: Option<&str>) -> IamResult<Entity> {
        validate_name("userName", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        let rec = IamEntityRecord {
            kind: IamKind::User,
            name: name.to_owned(),
            id: new_id("AIDA")?,
            path: path.to_owned(),
            created_ms: now_ms(),
        };
        self.meta
            .create_iam_entity(&rec)
            .await
            .map_err(|e| match e {
                MetaError::AlreadyExists(_) => {
                    IamError::EntityAlreadyExists(format!("User with name {name} already exists."))
                }
                other => other.into(),
            })?;
        Ok(self.entity(rec))
    }

    pub async fn user(&self, name: &str) -> IamResult<Entity> {
        Ok(self.entity(self.user_record(name).await?))
    }

    pub async fn list_users(
        &self,
        marker: Option<&str>,
        max_items: usize,
    ) -> IamResult<(Vec<Entity>, Option<String>)> {
        self.list(IamKind::User, marker, max_items).await
    }

    /// One page of users or groups by name, and the marker of the next page.
    async fn list(
        &self,
        kind: IamKind,
        marker: Option<&str>,
        max_items: usize,
    ) -> IamResult<(Vec<Entity>, Option<String>)> {
        let page = self.meta.list_iam_entities(kind, marker, max_items).await?;
        let next = page
            .truncated
            .then(|| page.items.last().map(|e| e.name.clone()))
            .flatten();
        Ok((
            page.items.into_iter().map(|r| self.entity(r)).collect(),
            next,
        ))
    }

    /// DeleteUser: refused while the user has access keys, inline policies or groups, as in AWS.
    pub async fn delete_user(&self, name: &str) -> IamResult<()> {
        let _w = self.write_lock().await?;
        let u = self.user_record(name).await?;
        let arn = user_arn(&self.account_id, &u.path, &u.name);
        if !self.meta.access_keys_of(&arn).await?.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete access keys first.".into(),
            ));
        }
        if !self
            .meta
            .iam_policies(IamKind::User, &u.name)
            .await?
            .is_empty()
        {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        if !self.meta.groups_of(&u.name).await?.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must remove users from group first.".into(),
            ));
        }
        self.meta.delete_iam_entity(IamKind::User, &u.name).await?;
        self.cache.clear();
        Ok(())
    }

    /// The principal ARN whose keys an access-key call manages: the named user, or the caller.
    async fn key_owner(&self, caller: &Caller, user: Option<&str>) -> IamResult<(String, String)> {
        match user {
            Some(name) => {
                let u = self.user_record(name).await?;
                Ok((u.name.clone(), user_arn(&self.account_id, &u.path, &u.name)))
            }
            None => {
                let name = authz::user_name(&caller.principal.arn)
                    .unwrap_or("root")
                    .to_owned();
                Ok((name, caller.principal.arn.clone()))
            }
        }
    }

    /// CreateAccessKey: a new key pair for the user (or the caller). The secret is returned once
    /// and stored only wrapped under the root key.
    pub async fn create_access_key(
        &self,
        caller: &Caller,
        user: Option<&str>,
    ) -> IamResult<(AccessKeyInfo, coffer_crypto::SecretBytes)> {
        let _w = self.write_lock().await?;
        let (name, arn) = self.key_owner(caller, user).await?;
        if user.is_some() && self.meta.access_keys_of(&arn).await?.len() >= MAX_ACCESS_KEYS_PER_USER
        {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS_PER_USER}"
            )));
        }
        let (id, secret) = self.identities.create_access_key(&arn).await?;
        Ok((
            AccessKeyInfo {
                user_name: name,
                access_key_id: id,
                status: STATUS_ACTIVE.to_owned(),
                created_ms: now_ms(),
            },
            secret,
        ))
    }

    /// Stores an existing key pair for a user (migrating from AWS); `coffer iam import-access-key`.
    pub async fn import_access_key(
        &self,
        user: &str,
        access_key_id: &str,
        secret: &[u8],
    ) -> IamResult<AccessKeyInfo> {
        let _w = self.write_lock().await?;
        let u = self.user_record(user).await?;
        let arn = user_arn(&self.account_id, &u.path, &u.name);
        if let Some(existing) = self.meta.access_key(access_key_id).await? {
            if existing.principal_arn != arn {
                return Err(IamError::EntityAlreadyExists(format!(
                    "Access key {access_key_id} already belongs to {}.",
                    existing.principal_arn
                )));
            }
        } else if self.meta.access_keys_of(&arn).await?.len() >= MAX_ACCESS_KEYS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS_PER_USER}"
            )));
        }
        self.identities
            .import_access_key(access_key_id, secret, &arn)
            .await
            .map_err(|e| match e {
                KmsError::Validation(m) => IamError::InvalidInput(m),
                other => other.into(),
            })?;
        Ok(AccessKeyInfo {
            user_name: u.name,
            access_key_id: access_key_id.to_owned(),
            status: STATUS_ACTIVE.to_owned(),
            created_ms: now_ms(),
        })
    }

    pub async fn list_access_keys(
        &self,
        caller: &Caller,
        user: Option<&str>,
    ) -> IamResult<Vec<AccessKeyInfo>> {
        let (name, arn) = self.key_owner(caller, user).await?;
        Ok(self
            .meta
            .access_keys_of(&arn)
            .await?
            .into_iter()
            .map(|k| AccessKeyInfo {
                user_name: name.clone(),
                access_key_id: k.access_key_id,
                status: k.status,
                created_ms: k.created_ms,
            })
            .collect())
    }

    async fn owned_key(&self, caller: &Caller, user: Option<&str>, id: &str) -> IamResult<()> {
        let (_, arn) = self.key_owner(caller, user).await?;
        match self.meta.access_key(id).await? {
            Some(k) if k.principal_arn == arn => Ok(()),
            _ => Err(IamError::NoSuchEntity(format!(
                "The Access Key with id {id} cannot be found"
            ))),
        }
    }

    /// UpdateAccessKey: `Active` or `Inactive`, effective from the next request.
    pub async fn update_access_key(
        &self,
        caller: &Caller,
        user: Option<&str>,
        id: &str,
        status: &str,
    ) -> IamResult<()> {
        let active = match status {
            "Active" => true,
            "Inactive" => false,
            other => {
                return Err(IamError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"
                )));
            }
        };
        self.owned_key(caller, user, id).await?;
        self.identities.set_status(id, active).await?;
        Ok(())
    }

    /// DeleteAccessKey: the key stops working at once.
    pub async fn delete_access_key(
        &self,
        caller: &Caller,
        user: Option<&str>,
        id: &str,
    ) -> IamResult<()> {
        self.owned_key(caller, user, id).await?;
        self.identities.delete(id).await?;
        Ok(())
    }

    pub async fn create_group(&self, name: &str, path: Option<&str>) -> IamResult<Entity> {
        validate_name("groupName", name, 128)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        let rec = IamEntityRecord {
            kind: IamKind::Group,
            name: name.to_owned(),
            id: new_id("AGPA")?,
            path: path.to_owned(),
            created_ms: now_ms(),
        };
        self.meta
            .create_iam_entity(&rec)
            .await
            .map_err(|e| match e {
                MetaError::AlreadyExists(_) => {
                    IamError::EntityAlreadyExists(format!("Group with name {name} already exists."))
                }
                other => other.into(),
            })?;
        Ok(self.entity(rec))
    }

    pub async fn list_groups(
        &self,
        marker: Option<&str>,
        max_items: usize,
    ) -> IamResult<(Vec<Entity>, Option<String>)> {
        self.list(IamKind::Group, marker, max_items).await
    }

    /// DeleteGroup: refused while the group has members or inline policies, as in AWS.
    pub async fn delete_group(&self, name: &str) -> IamResult<()> {
        let _w = self.write_lock().await?;
        let g = self.group_record(name).await?;
        if !self.meta.group_members(&g.name).await?.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must remove users from group first.".into(),
            ));
        }
        if !self
            .meta
            .iam_policies(IamKind::Group, &g.name)
            .await?
            .is_empty()
        {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        self.meta.delete_iam_entity(IamKind::Group, &g.name).await?;
        self.cache.clear();
        Ok(())
    }

    pub async fn add_user_to_group(&self, group: &str, user: &str) -> IamResult<()> {
        let _w = self.write_lock().await?;
        let g = self.group_record(group).await?;
        let u = self.user_record(user).await?;
        self.meta.add_group_member(&g.name, &u.name).await?;
        self.cache.clear();
        Ok(())
    }

    pub async fn remove_user_from_group(&self, group: &str, user: &str) -> IamResult<()> {
        let g = self.group_record(group).await?;
        let u = self.user_record(user).await?;
        let r = self.meta.remove_group_member(&g.name, &u.name).await;
        self.cache.clear();
        r.map_err(|e| match e {
            MetaError::NotFound(_) => IamError::NoSuchEntity(format!(
                "The user with name {} cannot be found in group {}.",
                u.name, g.name
            )),
            other => other.into(),
        })
    }

    pub async fn groups_for_user(&self, user: &str) -> IamResult<Vec<Entity>> {
        let u = self.user_record(user).await?;
        Ok(self
            .meta
            .groups_of(&u.name)
            .await?
            .into_iter()
            .map(|g| self.entity(g))
            .collect())
    }

    async fn owner(&self, kind: IamKind, name: &str) -> IamResult<IamEntityRecord> {
        match kind {
            IamKind::User => self.user_record(name).await,
            IamKind::Group => self.group_record(name).await,
        }
    }

    /// PutUserPolicy / PutGroupPolicy: a checked identity policy, within AWS's size quota.
    pub async fn put_policy(
        &self,
        kind: IamKind,
        owner: &str,
        policy_name: &str,
        document: &str,
    ) -> IamResult<()> {
        let _w = self.write_lock().await?;
        let o = self.owner(kind, owner).await?;
        validate_name("policyName", policy_name, 128)?;
        Policy::parse(document, PolicyKind::Identity)
            .map_err(|e| IamError::MalformedPolicyDocument(e.0))?;
        let (limit, what) = match kind {
            IamKind::User => (MAX_USER_POLICY_CHARS, "user"),
            IamKind::Group => (MAX_GROUP_POLICY_CHARS, "group"),
        };
        let others: usize = self
            .meta
            .iam_policies(kind, &o.name)
            .await?
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(policy_name))
            .map(|(_, d)| policy_chars(d))
            .sum();
        if others + policy_chars(document) > limit {
            return Err(IamError::LimitExceeded(format!(
                "Maximum policy size of {limit} bytes exceeded for {what} {}",
                o.name
            )));
        }
        self.meta
            .put_iam_policy(kind, &o.name, policy_name, document)
            .await?;
        self.cache.clear();
        Ok(())
    }

    pub async fn policy(
        &self,
        kind: IamKind,
        owner: &str,
        policy_name: &str,
    ) -> IamResult<(String, String)> {
        let o = self.owner(kind, owner).await?;
        self.meta
            .iam_policies(kind, &o.name)
            .await?
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(policy_name))
            .map(|(_, doc)| (o.name.clone(), doc))
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!(
                    "The {} policy with name {policy_name} cannot be found.",
                    kind.as_str()
                ))
            })
    }

    pub async fn delete_policy(
        &self,
        kind: IamKind,
        owner: &str,
        policy_name: &str,
    ) -> IamResult<()> {
        let o = self.owner(kind, owner).await?;
        let r = self
            .meta
            .delete_iam_policy(kind, &o.name, policy_name)
            .await;
        self.cache.clear();
        r.map_err(|e| match e {
            MetaError::NotFound(_) => IamError::NoSuchEntity(format!(
                "The {} policy with name {policy_name} cannot be found.",
                kind.as_str()
            )),
            other => other.into(),
        })
    }

    pub async fn list_policies(&self, kind: IamKind, owner: &str) -> IamResult<Vec<String>> {
        let o = self.owner(kind, owner).await?;
        Ok(self
            .meta
            .iam_policies(kind, &o.name)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }
}

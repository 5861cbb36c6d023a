//! Who may do what with a key. AWS's rules: an explicit Deny in the key policy or in one of the
//! caller's identity policies wins; otherwise the request is allowed when the key policy allows the
//! caller, or when the key policy allows the caller's account (delegating to IAM) and an identity
//! policy of the caller or one of their groups allows it, or when a grant allows it; otherwise it
//! is refused. Refusals name the caller, the action, the resource and the reason, as AWS does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use coffer_meta::{IamKind, MetaStore};
use coffer_policy::{
    Caller as PolicyCaller, Context, Decision, Policy, PolicyKind, PrincipalId, Request,
};

use crate::identity::Principal;
use crate::{KeyRef, KmsError, Result};

/// Largest key policy, in bytes (AWS: 32 KiB); a larger one is `LimitExceededException`.
pub const MAX_KEY_POLICY_BYTES: usize = 32 * 1024;

/// The caller of one request, and the condition keys the connection and the request supply.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub context: Context,
}

impl Caller {
    /// A caller with the global condition keys set: `aws:PrincipalArn`, `aws:PrincipalAccount`,
    /// `aws:PrincipalType`, `aws:username` (users), `aws:userid` (the account root), `kms:CallerAccount`,
    /// `aws:SourceIp`, `aws:SecureTransport` (always true: Coffer serves only TLS),
    /// `aws:CurrentTime`, `aws:EpochTime` and `aws:UserAgent`.
    pub fn new(principal: Principal, source_ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let mut c = Context::new();
        c.set("aws:PrincipalArn", principal.arn.clone());
        c.set("aws:PrincipalAccount", principal.account_id.clone());
        c.set("kms:CallerAccount", principal.account_id.clone());
        if let Some(name) = user_name(&principal.arn) {
            c.set("aws:PrincipalType", "User");
            c.set("aws:username", name);
        } else {
            c.set("aws:PrincipalType", "Account");
            c.set("aws:userid", principal.account_id.clone());
        }
        if let Some(ip) = source_ip {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            c.set("aws:SourceIp", ip.to_string());
        }
        c.set("aws:SecureTransport", "true");
        let (current, epoch) = now_keys();
        c.set("aws:CurrentTime", current);
        c.set("aws:EpochTime", epoch);
        if let Some(ua) = user_agent {
            c.set("aws:UserAgent", ua);
        }
        Caller {
            principal,
            context: c,
        }
    }

    pub fn is_account_root(&self) -> bool {
        self.principal.arn.ends_with(":root")
    }
}

/// `aws:CurrentTime` and `aws:EpochTime` for now, formatted once per second per thread (the
/// request path is hot; the values only change each second).
fn now_keys() -> (String, String) {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(i64, String, String)> = const { RefCell::new((i64::MIN, String::new(), String::new())) };
    }
    let now = time::OffsetDateTime::now_utc();
    let secs = now.unix_timestamp();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let t = now.replace_nanosecond(0).unwrap_or(now);
            c.1 = t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            c.2 = secs.to_string();
            c.0 = secs;
        }
        (c.1.clone(), c.2.clone())
    })
}

/// The user name in `arn:aws:iam::<account>:user/<path/>name`.
pub fn user_name(arn: &str) -> Option<&str> {
    let rest = arn.split_once(":user/")?.1;
    Some(rest.rsplit('/').next().unwrap_or(rest))
}

/// The key policy a key gets when CreateKey names none: the account may do everything, which
/// lets IAM policies decide for its users (AWS's default key policy).
pub fn default_key_policy(account_id: &str) -> String {
    format!(
        "{{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"key-default-1\",\n  \"Statement\" : [ {{\n    \"Sid\" : \"Enable IAM User Permissions\",\n    \"Effect\" : \"Allow\",\n    \"Principal\" : {{\n      \"AWS\" : \"arn:aws:iam::{account_id}:root\"\n    }},\n    \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  }} ]\n}}"
    )
}

/// The inline identity policies that apply to a principal: the user's own and those of every
/// group the user is in. The account root has none (it is governed by resource policies only).
pub async fn identity_policies(meta: &dyn MetaStore, principal_arn: &str) -> Result<Vec<Policy>> {
    let Some(user) = user_name(principal_arn) else {
        return Ok(Vec::new());
    };
    let mut docs = meta.iam_policies(IamKind::User, user).await?;
    for g in meta.groups_of(user).await? {
        docs.extend(meta.iam_policies(IamKind::Group, &g.name).await?);
    }
    let mut out = Vec::with_capacity(docs.len());
    for (name, doc) in docs {
        match Policy::parse(&doc, PolicyKind::Identity) {
            Ok(p) => out.push(p),
            // Stored policies were checked when they were put; a document that no longer parses
            // (a newer, stricter parser) allows nothing and says so.
            Err(e) => {
                tracing::warn!(policy = %name, error = %e, "ignoring an identity policy that does not parse")
            }
        }
    }
    Ok(out)
}

/// Parsed identity policies by user, so that a user's requests do not read the store each time.
/// Any change to users, groups, memberships or inline policies clears it (this node's IAM goes
/// through [`crate::Iam`]); a generation counter keeps a load that raced a change from being kept.
#[derive(Debug, Default)]
pub struct IdentityPolicyCache {
    by_user: RwLock<HashMap<String, Arc<Vec<Policy>>>>,
    generation: std::sync::atomic::AtomicU64,
}

impl IdentityPolicyCache {
    /// The identity policies of a principal (none for the account root).
    pub async fn get(&self, meta: &dyn MetaStore, principal_arn: &str) -> Result<Arc<Vec<Policy>>> {
        use std::sync::atomic::Ordering;
        let Some(user) = user_name(principal_arn) else {
            return Ok(Arc::new(Vec::new()));
        };
        let key = user.to_ascii_lowercase();
        if let Some(p) = crate::read(&self.by_user).get(&key) {
            return Ok(p.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = Arc::new(identity_policies(meta, principal_arn).await?);
        let mut map = crate::write(&self.by_user);
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    /// Forgets everything (after any IAM change).
    pub fn clear(&self) {
        use std::sync::atomic::Ordering;
        let mut map = crate::write(&self.by_user);
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

/// Combines identity policy decisions: any deny denies, any allow allows.
pub fn identity_decision(policies: &[Policy], req: &Request<'_>) -> Decision {
    let mut d = Decision::default();
    for p in policies {
        let x = p.evaluate(req);
        d.denied |= x.denied;
        d.allowed |= x.allowed || x.account_allowed;
    }
    d
}

/// AWS's refusal message.
pub fn denied(caller_arn: &str, action: &str, resource: &str, why: &str) -> KmsError {
    KmsError::AccessDenied(format!(
        "User: {caller_arn} is not authorized to perform: {action} on resource: {resource} {why}"
    ))
}

/// Parsed key policies by key id, with the text they were parsed from.
#[derive(Debug, Default)]
pub(crate) struct PolicyCache {
    by_key: RwLock<HashMap<String, Arc<Policy>>>,
}

impl PolicyCache {
    pub(crate) fn get(&self, key_id: &str) -> Option<Arc<Policy>> {
        crate::read(&self.by_key).get(key_id).cloned()
    }

    pub(crate) fn put(&self, key_id: &str, p: Arc<Policy>) {
        crate::write(&self.by_key).insert(key_id.to_owned(), p);
    }

    pub(crate) fn evict(&self, key_id: &str) {
        crate::write(&self.by_key).remove(key_id);
    }

    pub(crate) fn clear(&self) {
        crate::write(&self.by_key).clear();
    }
}

/// Checks a key policy document for CreateKey and PutKeyPolicy: size, syntax, principals that
/// exist, and (unless bypassed) that the caller could change the policy again afterwards.
pub(crate) async fn check_new_key_policy(
    meta: &dyn MetaStore,
    cache: &IdentityPolicyCache,
    account_id: &str,
    text: &str,
    caller: &Caller,
    key_arn: &str,
    bypass_lockout_check: bool,
) -> Result<Policy> {
    if text.len() > MAX_KEY_POLICY_BYTES {
        return Err(KmsError::LimitExceeded(format!(
            "The key policy is {} bytes; a key policy can be at most {MAX_KEY_POLICY_BYTES} bytes.",
            text.len()
        )));
    }
    let policy = Policy::parse(text, PolicyKind::Resource)
        .map_err(|e| KmsError::MalformedPolicyDocument(e.0))?;
    for p in policy.principals() {
        let exists = match p {
            PrincipalId::Anyone | PrincipalId::Account(_) | PrincipalId::Service(_) => true,
            PrincipalId::Arn(arn) => match user_name(arn) {
                Some(name) if arn.starts_with(&format!("arn:aws:iam::{account_id}:user/")) => meta
                    .iam_entity(IamKind::User, name)
                    .await?
                    .is_some_and(|u| {
                        arn.eq_ignore_ascii_case(&user_arn(account_id, &u.path, &u.name))
                    }),
                _ => false,
            },
        };
        if !exists {
            let shown = match p {
                PrincipalId::Arn(a) => a.as_str(),
                _ => "",
            };
            return Err(KmsError::MalformedPolicyDocument(format!(
                "Policy contains a statement with one or more invalid principals: {shown} does not exist in this Coffer."
            )));
        }
    }
    if !bypass_lockout_check {
        let mut ctx = caller.context.clone();
        ctx.set("kms:BypassPolicyLockoutSafetyCheck", "false");
        let req = Request {
            caller: PolicyCaller {
                arn: &caller.principal.arn,
                account: &caller.principal.account_id,
            },
            action: "kms:PutKeyPolicy",
            resource: key_arn,
            context: &ctx,
        };
        let kd = policy.evaluate(&req);
        let ok = !kd.denied
            && (kd.allowed || {
                kd.account_allowed && {
                    let ids = cache.get(meta, &caller.principal.arn).await?;
                    let id = identity_decision(&ids, &req);
                    id.allowed && !id.denied
                }
            });
        if !ok {
            return Err(KmsError::MalformedPolicyDocument(
                "The new key policy will not allow you to update the key policy in the future."
                    .into(),
            ));
        }
    }
    Ok(policy)
}

/// `arn:aws:iam::<account>:user<path><name>`.
pub fn user_arn(account_id: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account_id}:user{path}{name}")
}

/// What a KeyId in a request adds to the condition keys.
pub(crate) fn request_alias(r: &KeyRef) -> Option<&str> {
    match r {
        KeyRef::Alias(name) => Some(name),
        KeyRef::Key(_) => None,
    }
}

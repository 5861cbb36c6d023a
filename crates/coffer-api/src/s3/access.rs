//! Who may do what to a bucket and its objects: bucket policies (the AWS policy language, the
//! same evaluator as key and identity policies), identity policies, and the bucket's public
//! access block. AWS's rules for a request within the bucket owner's account: an explicit Deny in
//! either policy refuses; otherwise an Allow in either permits (the account root is permitted
//! unless denied); an anonymous request needs the bucket policy to allow it and the public
//! access block not to restrict public buckets.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use coffer_kms::Caller;
use coffer_meta::{BucketAttr, IamKind, MetaStore};
use coffer_policy::{Caller as PolicyCaller, Decision, Policy, PolicyKind, PrincipalId, Request};
use serde::{Deserialize, Serialize};

use super::Fail;

/// Largest bucket policy, in bytes (S3: 20 KB).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// The four switches of S3 Block Public Access. New buckets get all four on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub const ALL_ON: Self = Self {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };
}

/// Condition keys that, pinned to fixed values, make a policy statement non-public (AWS's list).
const PINNING_KEYS: &[&str] = &[
    "aws:sourceip",
    "aws:sourcearn",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceowner",
    "aws:sourceaccount",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:userid",
    "s3:dataaccesspointarn",
];

/// Whether a bucket policy is public: it allows anyone (`"*"`, or everyone but some through
/// `NotPrincipal`) without a condition that pins who or where to fixed values.
pub fn is_public(p: &Policy) -> bool {
    p.statements.iter().any(|s| {
        let anyone = match &s.principals {
            None => false,
            Some(t) => t.not || t.items.contains(&PrincipalId::Anyone),
        };
        s.effect == coffer_policy::Effect::Allow
            && anyone
            && !s
                .conditions
                .iter()
                .any(|c| PINNING_KEYS.contains(&c.key.as_str()) && c.pins_value())
    })
}

/// What governs access to one bucket, parsed once and kept until it changes.
#[derive(Debug, Default)]
pub struct BucketAccess {
    pub policy: Option<Policy>,
    pub block: Option<PublicAccessBlock>,
}

/// Parsed bucket policies and access blocks by bucket. A change made through this node clears
/// the bucket's entry.
#[derive(Debug, Default)]
pub struct AccessCache {
    by_bucket: RwLock<HashMap<String, Arc<BucketAccess>>>,
}

impl AccessCache {
    pub async fn get(&self, meta: &dyn MetaStore, bucket: &str) -> Result<Arc<BucketAccess>, Fail> {
        if let Some(a) = self
            .by_bucket
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
        {
            return Ok(a.clone());
        }
        let policy = meta
            .bucket_attr(bucket, BucketAttr::Policy)
            .await
            .map_err(|e| Fail::internal(e.to_string()))?
            .and_then(|text| match Policy::parse(&text, PolicyKind::Resource) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(bucket, error = %e.0, "ignoring a stored bucket policy that does not parse");
                    None
                }
            });
        let block = meta
            .bucket_attr(bucket, BucketAttr::PublicAccessBlock)
            .await
            .map_err(|e| Fail::internal(e.to_string()))?
            .and_then(|j| serde_json::from_str(&j).ok());
        let access = Arc::new(BucketAccess { policy, block });
        self.by_bucket
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_owned(), access.clone());
        Ok(access)
    }

    pub fn forget(&self, bucket: &str) {
        self.by_bucket
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bucket);
    }

    pub fn forget_all(&self) {
        self.by_bucket
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The bucket an S3 ARN names (`arn:aws:s3:::bucket[/key]`).
pub fn bucket_of(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("arn:aws:s3:::")?;
    Some(rest.split_once('/').map_or(rest, |(b, _)| b)).filter(|b| !b.is_empty())
}

/// Actions the bucket owner's root may always take, whatever the bucket policy says, so that a
/// policy can never lock the owner out.
const OWNER_ALWAYS: &[&str] = &[
    "s3:GetBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
];

/// Decides one action on one resource, for `caller` (`anonymous` when the request was not
/// signed: then only the bucket policy can allow it).
pub async fn authorize(
    state: &crate::AppState,
    caller: &Caller,
    anonymous: bool,
    action: &str,
    resource: &str,
) -> Result<(), Fail> {
    let access = match bucket_of(resource) {
        Some(b) => state.s3_access.get(state.kms.meta().as_ref(), b).await?,
        None => Arc::new(BucketAccess::default()),
    };
    let (arn, account) = (
        caller.principal.arn.as_str(),
        caller.principal.account_id.as_str(),
    );
    let req = Request {
        caller: PolicyCaller { arn, account },
        action,
        resource,
        context: &caller.context,
    };
    let bucket: Decision = access
        .policy
        .as_ref()
        .map(|p| p.evaluate(&req))
        .unwrap_or_default();
    let denied = |why: &str| {
        Fail::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {arn} is not authorized to perform: {action} on resource: \"{resource}\" {why}"
            ),
        )
    };
    if anonymous {
        if bucket.denied {
            return Err(denied("with an explicit deny in a resource-based policy"));
        }
        let restricted = access.block.is_some_and(|b| b.restrict_public_buckets)
            && access.policy.as_ref().is_some_and(is_public);
        if bucket.allowed && !restricted {
            return Ok(());
        }
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied",
        ));
    }
    let root = caller.is_account_root();
    if bucket.denied && !(root && OWNER_ALWAYS.contains(&action)) {
        return Err(denied("with an explicit deny in a resource-based policy"));
    }
    if root {
        return Ok(());
    }
    let ids = state
        .kms
        .identity_cache()
        .get(state.kms.meta().as_ref(), arn)
        .await
        .map_err(|e| Fail::internal(e.to_string()))?;
    let identity = coffer_kms::authz::identity_decision(&ids, &req);
    if identity.denied {
        return Err(denied("with an explicit deny in an identity-based policy"));
    }
    if identity.allowed || bucket.allowed {
        return Ok(());
    }
    Err(denied(&format!(
        "because no identity-based policy allows the {action} action"
    )))
}

/// Checks a bucket policy before it is stored: size, syntax, resources in this bucket,
/// principals that exist, and the public access block.
pub async fn check_policy(
    meta: &dyn MetaStore,
    account: &str,
    bucket: &str,
    text: &str,
    block: Option<PublicAccessBlock>,
    caller_arn: &str,
) -> Result<(), Fail> {
    let malformed = |m: String| Fail::new(StatusCode::BAD_REQUEST, "MalformedPolicy", m);
    if text.len() > MAX_POLICY_BYTES {
        return Err(malformed(format!(
            "Policies must be less than {MAX_POLICY_BYTES} bytes; this one is {}.",
            text.len()
        )));
    }
    let policy = Policy::parse(text, PolicyKind::Resource).map_err(|e| malformed(e.0))?;
    let own = format!("arn:aws:s3:::{bucket}");
    for s in &policy.statements {
        if let Some(r) = &s.resources {
            for item in &r.items {
                let ok = item == &own
                    || item.starts_with(&format!("{own}/"))
                    || (item.ends_with('*') && own.starts_with(item.trim_end_matches('*')));
                if !ok {
                    return Err(malformed(format!(
                        "Policy has invalid resource: {item} is not this bucket ({own}) or an object in it."
                    )));
                }
            }
        }
    }
    for p in policy.principals() {
        let ok = match p {
            PrincipalId::Anyone | PrincipalId::Service(_) => true,
            PrincipalId::Account(a) => a == account,
            PrincipalId::Arn(arn) => match coffer_kms::authz::user_name(arn) {
                Some(name) if arn.starts_with(&format!("arn:aws:iam::{account}:user/")) => meta
                    .iam_entity(IamKind::User, name)
                    .await
                    .map_err(|e| Fail::internal(e.to_string()))?
                    .is_some(),
                _ => false,
            },
        };
        if !ok {
            return Err(malformed("Invalid principal in policy".into()));
        }
    }
    if block.is_some_and(|b| b.block_public_policy) && is_public(&policy) {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {caller_arn} is not authorized to perform: s3:PutBucketPolicy on resource: \"{own}\" because public policies are blocked by the BlockPublicPolicy block public access setting."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(j: &str) -> Policy {
        Policy::parse(j, PolicyKind::Resource).expect("policy")
    }

    #[test]
    fn public_policies() {
        let public = parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
        );
        assert!(is_public(&public));
        let pinned = parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
        );
        assert!(!is_public(&pinned));
        let open_range = parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}}]}"#,
        );
        assert!(is_public(&open_range));
        let deny = parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#,
        );
        assert!(!is_public(&deny));
    }

    #[test]
    fn bucket_of_arns() {
        assert_eq!(bucket_of("arn:aws:s3:::b/k/x"), Some("b"));
        assert_eq!(bucket_of("arn:aws:s3:::b"), Some("b"));
        assert_eq!(bucket_of("*"), None);
    }
}

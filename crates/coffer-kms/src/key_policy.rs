//! Key policies on keys: reading and replacing them, and deciding requests with them.

use std::sync::Arc;

use coffer_policy::{Caller as PolicyCaller, Policy, PolicyKind, Request};

use crate::authz::{self, Caller, denied, identity_decision};
use crate::{KeyRef, Kms, KmsError, Result, now_ms};

/// The only key policy name AWS KMS has.
pub const DEFAULT_POLICY_NAME: &str = "default";

fn check_policy_name(name: Option<&str>) -> Result<()> {
    match name {
        None | Some(DEFAULT_POLICY_NAME) => Ok(()),
        Some(other) => Err(KmsError::NotFound(format!(
            "Key policy '{other}' does not exist: the only key policy name is 'default'."
        ))),
    }
}

/// What the policies (without grants) say about a request.
enum PolicyOutcome {
    Allowed,
    /// An explicit deny: no grant can override it.
    Denied(KmsError),
    /// Nothing allows it; a grant still may.
    NotAllowed(KmsError),
}

impl Kms {
    /// The parsed policy of a key (its default policy if it was created before policies were
    /// stored).
    async fn parsed_key_policy(&self, key_id: &str) -> Result<Arc<Policy>> {
        if let Some(p) = self.policies.get(key_id) {
            return Ok(p);
        }
        let text = self
            .meta
            .key_policy(key_id)
            .await?
            .unwrap_or_else(|| authz::default_key_policy(&self.cfg.account_id));
        let p = Arc::new(
            Policy::parse(&text, PolicyKind::Resource)
                .map_err(|e| KmsError::Internal(format!("stored key policy of {key_id}: {e}")))?,
        );
        self.policies.put(key_id, p.clone());
        Ok(p)
    }

    /// GetKeyPolicy.
    pub async fn key_policy(&self, r: &KeyRef, name: Option<&str>) -> Result<String> {
        check_policy_name(name)?;
        let id = self.resolve(r).await?;
        self.loaded(&id).await?;
        Ok(self
            .meta
            .key_policy(&id)
            .await?
            .unwrap_or_else(|| authz::default_key_policy(&self.cfg.account_id)))
    }

    /// ListKeyPolicies: every key has exactly one, named `default`.
    pub async fn list_key_policies(&self, r: &KeyRef) -> Result<Vec<&'static str>> {
        let id = self.resolve(r).await?;
        self.loaded(&id).await?;
        Ok(vec![DEFAULT_POLICY_NAME])
    }

    /// PutKeyPolicy: checks the document (size, syntax, principals, lockout) and replaces the
    /// key's policy.
    pub async fn put_key_policy(
        &self,
        caller: &Caller,
        r: &KeyRef,
        name: Option<&str>,
        text: &str,
        bypass_lockout_check: bool,
    ) -> Result<()> {
        check_policy_name(name)?;
        let id = self.resolve(r).await?;
        let k = self.loaded(&id).await?;
        if k.record.state == crate::state::PENDING_DELETION {
            return Err(KmsError::InvalidState(format!(
                "{} is pending deletion.",
                self.cfg.key_arn(&id)
            )));
        }
        authz::check_new_key_policy(
            self.meta.as_ref(),
            &self.identity_cache,
            &self.cfg.account_id,
            text,
            caller,
            &self.cfg.key_arn(&id),
            bypass_lockout_check,
        )
        .await?;
        self.meta.put_key_policy(&id, text, now_ms()).await?;
        self.policies.evict(&id);
        Ok(())
    }

    /// Decides whether `caller` may perform `action` (`kms:Encrypt`) on the key `r` names, with
    /// the key's policy and the caller's identity policies. Returns the key id.
    pub async fn authorize(&self, caller: &mut Caller, action: &str, r: &KeyRef) -> Result<String> {
        let id = self.resolve(r).await?;
        self.authorize_key(caller, action, &id, authz::request_alias(r))
            .await?;
        Ok(id)
    }

    /// As [`Kms::authorize`], for a key known by id (the key a ciphertext names).
    pub async fn authorize_key(
        &self,
        caller: &mut Caller,
        action: &str,
        key_id: &str,
        request_alias: Option<&str>,
    ) -> Result<()> {
        match self
            .policy_decision(caller, action, key_id, request_alias)
            .await?
        {
            PolicyOutcome::Allowed => Ok(()),
            PolicyOutcome::Denied(e) => Err(e),
            PolicyOutcome::NotAllowed(e) => {
                if self.grant_allows(caller, action, key_id).await? {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Whether the key policy and identity policies (not grants) allow the action.
    pub(crate) async fn policy_allows(
        &self,
        caller: &Caller,
        action: &str,
        key_id: &str,
    ) -> Result<bool> {
        Ok(matches!(
            self.policy_decision(&mut caller.clone(), action, key_id, None)
                .await?,
            PolicyOutcome::Allowed
        ))
    }

    /// Decides with the key policy and identity policies. The key's own condition keys
    /// (`kms:KeySpec`, …) are set in the caller's context, which is not copied per decision.
    async fn policy_decision(
        &self,
        caller: &mut Caller,
        action: &str,
        key_id: &str,
        request_alias: Option<&str>,
    ) -> Result<PolicyOutcome> {
        let k = self.loaded(key_id).await?;
        let policy = self.parsed_key_policy(key_id).await?;
        let ctx = &mut caller.context;
        ctx.set("kms:KeySpec", k.record.key_spec.clone());
        ctx.set("kms:KeyUsage", k.record.key_usage.clone());
        ctx.set("kms:KeyOrigin", k.record.origin.clone());
        match request_alias {
            Some(alias) => ctx.set("kms:RequestAlias", alias),
            None => ctx.remove("kms:RequestAlias"),
        }
        let caller = &*caller;
        let ctx = &caller.context;
        let resource = self.cfg.key_arn(key_id);
        let req = Request {
            caller: PolicyCaller {
                arn: &caller.principal.arn,
                account: &caller.principal.account_id,
            },
            action,
            resource: &resource,
            context: ctx,
        };
        let kd = policy.evaluate(&req);
        if kd.denied {
            return Ok(PolicyOutcome::Denied(denied(
                &caller.principal.arn,
                action,
                &resource,
                "with an explicit deny in a resource-based policy",
            )));
        }
        // The account root is governed by the key policy alone.
        let ids = if caller.is_account_root() {
            Default::default()
        } else {
            self.identity_cache
                .get(self.meta.as_ref(), &caller.principal.arn)
                .await?
        };
        let id = identity_decision(&ids, &req);
        if id.denied {
            return Ok(PolicyOutcome::Denied(denied(
                &caller.principal.arn,
                action,
                &resource,
                "with an explicit deny in an identity-based policy",
            )));
        }
        if kd.allowed || (kd.account_allowed && id.allowed) {
            return Ok(PolicyOutcome::Allowed);
        }
        let why = if kd.account_allowed {
            format!("because no identity-based policy allows the {action} action")
        } else {
            format!("because no resource-based policy allows the {action} action")
        };
        Ok(PolicyOutcome::NotAllowed(denied(
            &caller.principal.arn,
            action,
            &resource,
            &why,
        )))
    }

    /// Decides an action that acts on no key (CreateKey, ListKeys, ListAliases, GenerateRandom):
    /// the account root may; a user needs an identity policy that allows it.
    pub async fn authorize_account(&self, caller: &Caller, action: &str) -> Result<()> {
        if caller.is_account_root() {
            return Ok(());
        }
        let ids = self
            .identity_cache
            .get(self.meta.as_ref(), &caller.principal.arn)
            .await?;
        let resource = "*";
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
        if d.denied {
            return Err(denied(
                &caller.principal.arn,
                action,
                resource,
                "with an explicit deny in an identity-based policy",
            ));
        }
        if d.allowed {
            return Ok(());
        }
        Err(denied(
            &caller.principal.arn,
            action,
            resource,
            &format!("because no identity-based policy allows the {action} action"),
        ))
    }
}

impl Kms {
    /// The key a symmetric ciphertext blob names, read from its header without decrypting.
    pub fn ciphertext_key_id(&self, blob: &[u8]) -> Option<String> {
        let h = coffer_crypto::blob::peek(blob).ok()?;
        Some(uuid::Uuid::from_bytes(h.key_id).hyphenated().to_string())
    }
}

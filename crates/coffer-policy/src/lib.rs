//! The AWS access policy language: key policies, identity (IAM user and group) policies and, later,
//! bucket policies. [`Policy::parse`] turns a JSON document into a checked [`Policy`] or a
//! [`PolicyError`] naming the problem; [`Policy::evaluate`] decides one request against it.
//!
//! This crate has no I/O and knows nothing of KMS: the caller names the action (`kms:Encrypt`),
//! the resource ARN, the principal and the request's condition keys ([`Context`]), and combines the
//! decisions of the policies that apply (explicit deny wins; see `coffer-kms`).

mod condition;
mod glob;

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use condition::{Condition, Operator, Qualifier};
pub use glob::{arn_matches, matches as glob_matches};

/// Why a policy document was refused. The message names the problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

/// Which kind of policy a document is: it decides whether statements name principals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a resource (a key policy, a bucket policy): every statement names principals.
    Resource,
    /// Attached to a user or group: statements name no principal, they apply to that identity.
    Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The policy language version. Policy variables (`${aws:username}`) exist only in 2012-10-17.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2008_10_17,
    V2012_10_17,
}

/// A principal named by a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalId {
    /// `"*"` or `{"AWS": "*"}`: anyone.
    Anyone,
    /// An account (`"111122223333"` or `arn:aws:iam::111122223333:root`).
    Account(String),
    /// An IAM user, role or other identity ARN.
    Arn(String),
    /// A service principal (`{"Service": "s3.amazonaws.com"}`).
    Service(String),
}

/// A list element that either names what a statement covers (`Action`) or what it does not
/// (`NotAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets<T> {
    pub not: bool,
    pub items: Vec<T>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// `None` in identity policies.
    pub principals: Option<Targets<PrincipalId>>,
    /// `None` when the statement has no Action/NotAction (it then matches nothing).
    pub actions: Option<Targets<String>>,
    /// `None` when the statement has no Resource/NotResource (it then matches nothing).
    pub resources: Option<Targets<String>>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub version: Version,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

/// A value of a condition key in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    Single(String),
    /// A multivalued key (`kms:EncryptionContextKeys`, `kms:GrantOperations`).
    Multi(Vec<String>),
}

/// The condition keys of a request. Keys are case-insensitive, as in AWS.
#[derive(Debug, Clone, Default)]
pub struct Context {
    values: HashMap<String, ContextValue>,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (any case) to one value; a later value for the same key wins.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values
            .insert(key.to_ascii_lowercase(), ContextValue::Single(value.into()));
    }

    /// Sets a multivalued key.
    pub fn set_multi(&mut self, key: &str, values: Vec<String>) {
        self.values
            .insert(key.to_ascii_lowercase(), ContextValue::Multi(values));
    }

    /// Sets `key` unless it is already set (the first of two keys differing only by case wins).
    pub fn set_if_absent(&mut self, key: &str, value: impl Into<String>) {
        self.values
            .entry(key.to_ascii_lowercase())
            .or_insert_with(|| ContextValue::Single(value.into()));
    }

    /// Removes `key` (any case).
    pub fn remove(&mut self, key: &str) {
        self.values.remove(&key.to_ascii_lowercase());
    }

    pub fn get(&self, key: &str) -> Option<&ContextValue> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.values.get(&key.to_ascii_lowercase())
        } else {
            self.values.get(key)
        }
    }

    fn single(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            ContextValue::Single(s) => Some(s),
            ContextValue::Multi(_) => None,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// `arn:aws:iam::111122223333:root` or `arn:aws:iam::111122223333:user/alice`.
    pub arn: &'a str,
    pub account: &'a str,
}

impl Caller<'_> {
    pub fn is_account_root(&self) -> bool {
        self.arn.ends_with(":root")
    }
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub caller: Caller<'a>,
    /// `service:Operation`, e.g. `kms:Encrypt`.
    pub action: &'a str,
    /// The ARN of the resource acted on.
    pub resource: &'a str,
    pub context: &'a Context,
}

/// What one policy says about one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// A Deny statement matched.
    pub denied: bool,
    /// An Allow statement matched that names the caller (or anyone), or, in an identity policy,
    /// any Allow statement.
    pub allowed: bool,
    /// In a resource policy: an Allow statement matched that names the caller's account, which
    /// lets the account's identity policies decide (AWS's "the key policy delegates to IAM").
    pub account_allowed: bool,
}

/// How a statement's principals cover the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalMatch {
    No,
    /// Named directly (its ARN, `*`, or the account when the caller is the account's root).
    Direct,
    /// The caller's account is named and the caller is an identity in it.
    Account,
}

/// Largest policy document accepted by [`Policy::parse`]; callers enforce their own, smaller
/// service limits (32 KiB for key policies) first.
pub const MAX_DOCUMENT: usize = 131_072;

impl Policy {
    /// Parses and checks a policy document.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        if text.len() > MAX_DOCUMENT {
            return err(format!(
                "The policy document is {} bytes; the limit is {MAX_DOCUMENT}.",
                text.len()
            ));
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            PolicyError(format!(
                "The policy is not valid JSON: {e}. Check quotes, commas and brackets."
            ))
        })?;
        let Value::Object(doc) = doc else {
            return err("The policy must be a JSON object with a Statement element.");
        };
        let mut version = Version::V2008_10_17;
        let mut id = None;
        let mut statements = None;
        for (k, v) in &doc {
            match k.as_str() {
                "Version" => {
                    version = match v.as_str() {
                        Some("2012-10-17") => Version::V2012_10_17,
                        Some("2008-10-17") => Version::V2008_10_17,
                        _ => {
                            return err(format!(
                                "Version {v} is not a policy language version; use \"2012-10-17\"."
                            ));
                        }
                    }
                }
                "Id" => {
                    id = Some(
                        v.as_str()
                            .ok_or_else(|| PolicyError("Id must be a string.".into()))?
                            .to_owned(),
                    )
                }
                "Statement" => {
                    let list: Vec<&Map<String, Value>> = match v {
                        Value::Object(o) => vec![o],
                        Value::Array(a) => a
                            .iter()
                            .map(|s| {
                                s.as_object().ok_or_else(|| {
                                    PolicyError("Each statement must be a JSON object.".into())
                                })
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return err("Statement must be a statement object or a list of them.");
                        }
                    };
                    statements = Some(list);
                }
                other => {
                    return err(format!(
                        "The policy has an unknown element '{other}'; the elements are Version, Id and Statement."
                    ));
                }
            }
        }
        let Some(list) = statements else {
            return err("The policy has no Statement element.");
        };
        if list.is_empty() {
            return err("The policy's Statement list is empty.");
        }
        let statements = list
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                parse_statement(s, kind).map_err(|e| {
                    let name = s
                        .get("Sid")
                        .and_then(Value::as_str)
                        .map(|sid| format!("statement {} (Sid \"{sid}\")", i + 1))
                        .unwrap_or_else(|| format!("statement {}", i + 1));
                    PolicyError(format!("In {name}: {}", e.0))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            version,
            id,
            statements,
        })
    }

    /// Every principal the policy names (for checking that they exist).
    pub fn principals(&self) -> impl Iterator<Item = &PrincipalId> {
        self.statements
            .iter()
            .filter_map(|s| s.principals.as_ref())
            .flat_map(|p| p.items.iter())
    }

    /// Decides `req` against every statement.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut d = Decision::default();
        for s in &self.statements {
            let who = match &s.principals {
                None => PrincipalMatch::Direct,
                Some(p) => principal_match(p, &req.caller),
            };
            if who == PrincipalMatch::No
                || !s.covers_action(req.action)
                || !s.covers_resource(self.version, req)
                || !s
                    .conditions
                    .iter()
                    .all(|c| c.holds(req.context, self.version))
            {
                continue;
            }
            match (s.effect, who) {
                (Effect::Deny, _) => d.denied = true,
                (Effect::Allow, PrincipalMatch::Direct) => d.allowed = true,
                (Effect::Allow, _) => d.account_allowed = true,
            }
        }
        d
    }
}

impl Statement {
    fn covers_action(&self, action: &str) -> bool {
        let Some(a) = &self.actions else { return false };
        let hit = a.items.iter().any(|p| glob::matches(p, action, true));
        hit != a.not
    }

    fn covers_resource(&self, version: Version, req: &Request<'_>) -> bool {
        let Some(r) = &self.resources else {
            return false;
        };
        let hit = r.items.iter().any(|p| {
            p == "*"
                || condition::substitute(p, req.context, version)
                    .is_some_and(|p| glob::arn_matches(&p, req.resource))
        });
        hit != r.not
    }
}

fn principal_match(p: &Targets<PrincipalId>, caller: &Caller<'_>) -> PrincipalMatch {
    let mut best = PrincipalMatch::No;
    for id in &p.items {
        let m = match id {
            PrincipalId::Anyone => PrincipalMatch::Direct,
            PrincipalId::Arn(a) if a == caller.arn => PrincipalMatch::Direct,
            PrincipalId::Account(acct) if acct == caller.account => {
                if caller.is_account_root() {
                    PrincipalMatch::Direct
                } else {
                    PrincipalMatch::Account
                }
            }
            _ => PrincipalMatch::No,
        };
        if m == PrincipalMatch::Direct {
            best = m;
            break;
        }
        if m == PrincipalMatch::Account {
            best = m;
        }
    }
    if p.not {
        // NotPrincipal covers everyone it does not name; naming the account exempts only its
        // root (AWS's rule), so an account entry counts as "named" for the root alone.
        match best {
            PrincipalMatch::Direct => PrincipalMatch::No,
            _ => PrincipalMatch::Direct,
        }
    } else {
        best
    }
}

const STATEMENT_ELEMENTS: &str =
    "Sid, Effect, Principal, NotPrincipal, Action, NotAction, Resource, NotResource and Condition";

fn parse_statement(s: &Map<String, Value>, kind: PolicyKind) -> Result<Statement, PolicyError> {
    for k in s.keys() {
        if !matches!(
            k.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return err(format!(
                "unknown element '{k}'; a statement has {STATEMENT_ELEMENTS}."
            ));
        }
    }
    let sid = match s.get("Sid") {
        None => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(_) => return err("Sid must be a string."),
    };
    let effect = match s.get("Effect").map(|v| v.as_str()) {
        Some(Some("Allow")) => Effect::Allow,
        Some(Some("Deny")) => Effect::Deny,
        Some(_) => return err("Effect must be \"Allow\" or \"Deny\"."),
        None => return err("the statement has no Effect; it must be \"Allow\" or \"Deny\"."),
    };
    let principals = match (s.get("Principal"), s.get("NotPrincipal"), kind) {
        (Some(_), Some(_), _) => {
            return err("a statement has Principal or NotPrincipal, not both.");
        }
        (Some(_), _, PolicyKind::Identity) | (_, Some(_), PolicyKind::Identity) => {
            return err(
                "an identity policy names no Principal: it applies to the user or group it is attached to.",
            );
        }
        (None, None, PolicyKind::Resource) => {
            return err("the statement has no Principal; name who it applies to (or \"*\").");
        }
        (Some(p), None, _) => Some(Targets {
            not: false,
            items: parse_principals(p)?,
        }),
        (None, Some(p), _) => Some(Targets {
            not: true,
            items: parse_principals(p)?,
        }),
        (None, None, PolicyKind::Identity) => None,
    };
    let actions = match either(s, "Action", "NotAction")? {
        None if kind == PolicyKind::Identity => {
            return err("the statement has no Action or NotAction.");
        }
        None => None,
        Some((not, v)) => {
            let items = strings(v, "Action")?;
            for a in &items {
                if a != "*" && !valid_action(a) {
                    return err(format!(
                        "'{a}' is not an action; actions are service:Name, such as kms:Encrypt or kms:*."
                    ));
                }
            }
            Some(Targets { not, items })
        }
    };
    let resources = match either(s, "Resource", "NotResource")? {
        None if kind == PolicyKind::Identity => {
            return err("the statement has no Resource or NotResource.");
        }
        None => None,
        Some((not, v)) => {
            let items = strings(v, "Resource")?;
            for r in &items {
                if r != "*" && !(r.starts_with("arn:") && r.splitn(6, ':').count() == 6) {
                    return err(format!(
                        "'{r}' is not a resource; use \"*\" or an ARN (arn:partition:service:region:account:resource)."
                    ));
                }
            }
            Some(Targets { not, items })
        }
    };
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(o)) => condition::parse_block(o)?,
        Some(_) => return err("Condition must be an object of operators."),
    };
    Ok(Statement {
        sid,
        effect,
        principals,
        actions,
        resources,
        conditions,
    })
}

fn valid_action(a: &str) -> bool {
    match a.split_once(':') {
        Some((svc, name)) => {
            !svc.is_empty()
                && svc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
        }
        None => false,
    }
}

fn either<'a>(
    s: &'a Map<String, Value>,
    yes: &str,
    no: &str,
) -> Result<Option<(bool, &'a Value)>, PolicyError> {
    match (s.get(yes), s.get(no)) {
        (Some(_), Some(_)) => err(format!("a statement has {yes} or {no}, not both.")),
        (Some(v), None) => Ok(Some((false, v))),
        (None, Some(v)) => Ok(Some((true, v))),
        (None, None) => Ok(None),
    }
}

/// A string or a non-empty list of strings.
fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let out: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| PolicyError(format!("{what} values must be strings.")))
            })
            .collect::<Result<_, _>>()?,
        _ => return err(format!("{what} must be a string or a list of strings.")),
    };
    if out.is_empty() {
        return err(format!("{what} is an empty list."));
    }
    Ok(out)
}

fn parse_principals(v: &Value) -> Result<Vec<PrincipalId>, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(vec![PrincipalId::Anyone]),
        Value::Object(o) if !o.is_empty() => {
            let mut out = Vec::new();
            for (k, v) in o {
                let list = strings(v, "Principal")?;
                for p in list {
                    out.push(match k.as_str() {
                        "AWS" => parse_aws_principal(&p)?,
                        "Service" => {
                            if p.is_empty() || p.contains(char::is_whitespace) {
                                return err(format!("'{p}' is not a service principal."));
                            }
                            PrincipalId::Service(p)
                        }
                        other => {
                            return err(format!(
                                "principal type '{other}' is not supported; use AWS or Service."
                            ));
                        }
                    });
                }
            }
            Ok(out)
        }
        _ => err(
            "Principal must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::111122223333:root\"}.",
        ),
    }
}

fn parse_aws_principal(p: &str) -> Result<PrincipalId, PolicyError> {
    if p == "*" {
        return Ok(PrincipalId::Anyone);
    }
    if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(PrincipalId::Account(p.to_owned()));
    }
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    let valid = parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && !parts[5].is_empty()
        && !parts[5].contains(['*', '?']);
    if !valid {
        return err(format!(
            "'{p}' is not a valid principal; use an account id, arn:aws:iam::<account>:root, an IAM user or role ARN, or \"*\"."
        ));
    }
    if parts[5] == "root" {
        Ok(PrincipalId::Account(parts[4].to_owned()))
    } else {
        Ok(PrincipalId::Arn(p.to_owned()))
    }
}

/// The account root ARN of an account id.
pub fn account_root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

#[cfg(test)]
mod tests;

//! The AWS query protocol (form-encoded POST, XML responses) for IAM and STS on the same endpoint
//! as KMS, so `aws iam … --endpoint-url` and `aws sts get-caller-identity` work unchanged.

use std::collections::HashMap;

use coffer_kms::iam::{AccessKeyInfo, Entity, IamError};
use coffer_kms::{Caller, Iam};
use coffer_meta::IamKind;
use http::StatusCode;
use serde_json::{Value, json};

const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The IAM actions Coffer serves.
pub const IAM_ACTIONS: &[&str] = &[
    "CreateUser",
    "GetUser",
    "ListUsers",
    "DeleteUser",
    "CreateAccessKey",
    "ListAccessKeys",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "CreateGroup",
    "ListGroups",
    "DeleteGroup",
    "AddUserToGroup",
    "RemoveUserFromGroup",
    "ListGroupsForUser",
    "PutUserPolicy",
    "GetUserPolicy",
    "DeleteUserPolicy",
    "ListUserPolicies",
    "PutGroupPolicy",
    "GetGroupPolicy",
    "DeleteGroupPolicy",
    "ListGroupPolicies",
];

/// Which query API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Iam,
    Sts,
}

impl Service {
    pub fn event_source(self) -> &'static str {
        match self {
            Service::Iam => "iam.amazonaws.com",
            Service::Sts => "sts.amazonaws.com",
        }
    }

    pub fn signing_name(self) -> &'static str {
        match self {
            Service::Iam => "iam",
            Service::Sts => "sts",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Service::Iam => IAM_NS,
            Service::Sts => STS_NS,
        }
    }
}

/// An error in the query protocol's shape: code, HTTP status, message.
#[derive(Debug, Clone)]
pub struct QueryError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl QueryError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }
}

impl From<IamError> for QueryError {
    fn from(e: IamError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            IamError::NoSuchEntity(_) => (S::NOT_FOUND, "NoSuchEntity"),
            IamError::EntityAlreadyExists(_) => (S::CONFLICT, "EntityAlreadyExists"),
            IamError::DeleteConflict(_) => (S::CONFLICT, "DeleteConflict"),
            IamError::LimitExceeded(_) => (S::CONFLICT, "LimitExceeded"),
            IamError::MalformedPolicyDocument(_) => (S::BAD_REQUEST, "MalformedPolicyDocument"),
            IamError::InvalidInput(_) => (S::BAD_REQUEST, "InvalidInput"),
            IamError::Validation(_) => (S::BAD_REQUEST, "ValidationError"),
            IamError::AccessDenied(_) => (S::FORBIDDEN, "AccessDenied"),
            IamError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "ServiceFailure"),
        };
        let message = match e {
            IamError::Internal(_) => {
                "Coffer hit an internal error; the server log has the details.".to_owned()
            }
            other => other.to_string(),
        };
        Self::new(status, code, message)
    }
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The XML error body.
pub fn error_xml(service: Service, e: &QueryError, request_id: &str) -> String {
    let kind = if e.status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        service.namespace(),
        e.code,
        esc(&e.message)
    )
}

fn response_xml(service: Service, action: &str, result: &str, request_id: &str) -> String {
    let ns = service.namespace();
    if result.is_empty() {
        format!(
            "<{action}Response xmlns=\"{ns}\"><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
        )
    } else {
        format!(
            "<{action}Response xmlns=\"{ns}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
        )
    }
}

fn date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A user or group element's children; `kind` is `User` or `Group`.
fn entity_xml(kind: &str, e: &Entity) -> String {
    format!(
        "<Path>{}</Path><{kind}Name>{}</{kind}Name><{kind}Id>{}</{kind}Id><Arn>{}</Arn><CreateDate>{}</CreateDate>",
        esc(&e.path),
        esc(&e.name),
        e.id,
        esc(&e.arn),
        date(e.created_ms)
    )
}

fn user_xml(u: &Entity) -> String {
    entity_xml("User", u)
}

fn group_xml(g: &Entity) -> String {
    entity_xml("Group", g)
}

fn key_xml(k: &AccessKeyInfo) -> String {
    format!(
        "<UserName>{}</UserName><AccessKeyId>{}</AccessKeyId><Status>{}</Status><CreateDate>{}</CreateDate>",
        esc(&k.user_name),
        k.access_key_id,
        k.status,
        date(k.created_ms)
    )
}

fn members(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .map(|i| format!("<member>{i}</member>"))
        .collect()
}

/// Percent-encodes a policy document as IAM returns it (RFC 3986 unreserved kept).
fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The parsed form of a query request.
#[derive(Debug, Default)]
pub struct Form {
    pub params: HashMap<String, String>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form {
            params: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    pub fn action(&self) -> Option<&str> {
        self.get("Action")
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    fn required(&self, k: &str, field: &str) -> Result<&str, QueryError> {
        self.get(k).ok_or_else(|| {
            QueryError::validation(format!(
                "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    fn max_items(&self) -> Result<usize, QueryError> {
        match self.get("MaxItems") {
            None => Ok(100),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(QueryError::validation(format!(
                    "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000"
                ))),
            },
        }
    }

    /// The parameters as recorded in the audit log (camelCase names, as CloudTrail writes them).
    pub fn audit_params(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.params {
            if k == "Action" || k == "Version" {
                continue;
            }
            let mut c = k.chars();
            let name = match c.next() {
                Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
                None => continue,
            };
            m.insert(name, json!(v));
        }
        Value::Object(m)
    }
}

/// What a query request produced: the XML result, and what the audit event records of it.
/// Not `Debug`: the XML of CreateAccessKey carries a secret.
#[allow(missing_debug_implementations)]
pub struct Outcome {
    pub xml: String,
    pub audit: Value,
}

fn resource_for(iam: &Iam, action: &str, form: &Form, caller: &Caller) -> String {
    let user = form
        .get("UserName")
        .map(str::to_owned)
        .or_else(|| coffer_kms::authz::user_name(&caller.principal.arn).map(str::to_owned));
    match action {
        "CreateGroup"
        | "ListGroups"
        | "DeleteGroup"
        | "PutGroupPolicy"
        | "GetGroupPolicy"
        | "DeleteGroupPolicy"
        | "ListGroupPolicies"
        | "AddUserToGroup"
        | "RemoveUserFromGroup" => iam.group_resource(form.get("GroupName").unwrap_or("*")),
        "ListUsers" => "*".to_owned(),
        _ => match user {
            Some(u) => iam.user_resource(&u),
            None => caller.principal.arn.clone(),
        },
    }
}

/// Runs one IAM action.
pub async fn iam(
    iam: &Iam,
    caller: &Caller,
    form: &Form,
    request_id: &str,
) -> Result<Outcome, QueryError> {
    let action = form.action().unwrap_or_default();
    if !IAM_ACTIONS.contains(&action) {
        return Err(QueryError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {action} for version 2010-05-08"),
        ));
    }
    iam.authorize(
        caller,
        &format!("iam:{action}"),
        &resource_for(iam, action, form, caller),
    )
    .await?;
    let user = form.get("UserName");
    let mut audit = Value::Null;
    let result = match action {
        "CreateUser" => {
            let u = iam
                .create_user(form.required("UserName", "userName")?, form.get("Path"))
                .await?;
            audit = json!({"user": {"userName": u.name, "userId": u.id, "arn": u.arn}});
            format!("<User>{}</User>", user_xml(&u))
        }
        "GetUser" => match user {
            Some(name) => format!("<User>{}</User>", user_xml(&iam.user(name).await?)),
            None => match coffer_kms::authz::user_name(&caller.principal.arn) {
                Some(name) => format!("<User>{}</User>", user_xml(&iam.user(name).await?)),
                None => format!(
                    "<User><UserId>{}</UserId><Arn>{}</Arn><CreateDate>{}</CreateDate></User>",
                    iam.account_id(),
                    esc(&caller.principal.arn),
                    date(0)
                ),
            },
        },
        "ListUsers" => {
            let (users, next) = iam
                .list_users(form.get("Marker"), form.max_items()?)
                .await?;
            let prefix = form.get("PathPrefix").unwrap_or("/");
            let list = members(
                users
                    .iter()
                    .filter(|u| u.path.starts_with(prefix))
                    .map(user_xml),
            );
            list_result("Users", &list, next)
        }
        "DeleteUser" => {
            iam.delete_user(form.required("UserName", "userName")?)
                .await?;
            String::new()
        }
        "CreateAccessKey" => {
            let (k, secret) = iam.create_access_key(caller, user).await?;
            audit = json!({"accessKey": {"accessKeyId": k.access_key_id, "status": k.status, "userName": k.user_name}});
            let secret = std::str::from_utf8(secret.expose())
                .unwrap_or_default()
                .to_owned();
            let secret = zeroize::Zeroizing::new(secret);
            format!(
                "<AccessKey><UserName>{}</UserName><AccessKeyId>{}</AccessKeyId><Status>{}</Status><SecretAccessKey>{}</SecretAccessKey><CreateDate>{}</CreateDate></AccessKey>",
                esc(&k.user_name),
                k.access_key_id,
                k.status,
                esc(&secret),
                date(k.created_ms)
            )
        }
        "ListAccessKeys" => {
            let keys = iam.list_access_keys(caller, user).await?;
            let user_name = keys
                .first()
                .map(|k| k.user_name.clone())
                .or(user.map(str::to_owned));
            format!(
                "{}<AccessKeyMetadata>{}</AccessKeyMetadata><IsTruncated>false</IsTruncated>",
                user_name
                    .map(|u| format!("<UserName>{}</UserName>", esc(&u)))
                    .unwrap_or_default(),
                members(keys.iter().map(key_xml))
            )
        }
        "UpdateAccessKey" => {
            iam.update_access_key(
                caller,
                user,
                form.required("AccessKeyId", "accessKeyId")?,
                form.required("Status", "status")?,
            )
            .await?;
            String::new()
        }
        "DeleteAccessKey" => {
            iam.delete_access_key(caller, user, form.required("AccessKeyId", "accessKeyId")?)
                .await?;
            String::new()
        }
        "CreateGroup" => {
            let g = iam
                .create_group(form.required("GroupName", "groupName")?, form.get("Path"))
                .await?;
            audit = json!({"group": {"groupName": g.name, "groupId": g.id, "arn": g.arn}});
            format!("<Group>{}</Group>", group_xml(&g))
        }
        "ListGroups" => {
            let (groups, next) = iam
                .list_groups(form.get("Marker"), form.max_items()?)
                .await?;
            list_result("Groups", &members(groups.iter().map(group_xml)), next)
        }
        "DeleteGroup" => {
            iam.delete_group(form.required("GroupName", "groupName")?)
                .await?;
            String::new()
        }
        "AddUserToGroup" => {
            iam.add_user_to_group(
                form.required("GroupName", "groupName")?,
                form.required("UserName", "userName")?,
            )
            .await?;
            String::new()
        }
        "RemoveUserFromGroup" => {
            iam.remove_user_from_group(
                form.required("GroupName", "groupName")?,
                form.required("UserName", "userName")?,
            )
            .await?;
            String::new()
        }
        "ListGroupsForUser" => {
            let groups = iam
                .groups_for_user(form.required("UserName", "userName")?)
                .await?;
            list_result("Groups", &members(groups.iter().map(group_xml)), None)
        }
        "PutUserPolicy" | "PutGroupPolicy" => {
            let (kind, owner) = owner_of(action, form)?;
            iam.put_policy(
                kind,
                owner,
                form.required("PolicyName", "policyName")?,
                form.required("PolicyDocument", "policyDocument")?,
            )
            .await?;
            String::new()
        }
        "GetUserPolicy" | "GetGroupPolicy" => {
            let (kind, owner) = owner_of(action, form)?;
            let name = form.required("PolicyName", "policyName")?;
            let (owner, doc) = iam.policy(kind, owner, name).await?;
            let owner_tag = match kind {
                IamKind::User => "UserName",
                IamKind::Group => "GroupName",
            };
            format!(
                "<{owner_tag}>{}</{owner_tag}><PolicyName>{}</PolicyName><PolicyDocument>{}</PolicyDocument>",
                esc(&owner),
                esc(name),
                url_encode(&doc)
            )
        }
        "DeleteUserPolicy" | "DeleteGroupPolicy" => {
            let (kind, owner) = owner_of(action, form)?;
            iam.delete_policy(kind, owner, form.required("PolicyName", "policyName")?)
                .await?;
            String::new()
        }
        "ListUserPolicies" | "ListGroupPolicies" => {
            let (kind, owner) = owner_of(action, form)?;
            let names = iam.list_policies(kind, owner).await?;
            format!(
                "<PolicyNames>{}</PolicyNames><IsTruncated>false</IsTruncated>",
                members(names.iter().map(|n| esc(n)))
            )
        }
        _ => unreachable!("checked against IAM_ACTIONS above"),
    };
    Ok(Outcome {
        xml: response_xml(Service::Iam, action, &result, request_id),
        audit,
    })
}

fn owner_of<'a>(action: &str, form: &'a Form) -> Result<(IamKind, &'a str), QueryError> {
    if action.contains("Group") {
        Ok((IamKind::Group, form.required("GroupName", "groupName")?))
    } else {
        Ok((IamKind::User, form.required("UserName", "userName")?))
    }
}

fn list_result(tag: &str, list: &str, next: Option<String>) -> String {
    match next {
        Some(m) => format!(
            "<{tag}>{list}</{tag}><IsTruncated>true</IsTruncated><Marker>{}</Marker>",
            esc(&m)
        ),
        None => format!("<{tag}>{list}</{tag}><IsTruncated>false</IsTruncated>"),
    }
}

/// Runs one STS action: GetCallerIdentity (which needs no permission, as in AWS).
pub async fn sts(
    iam: &Iam,
    caller: &Caller,
    form: &Form,
    request_id: &str,
) -> Result<Outcome, QueryError> {
    let action = form.action().unwrap_or_default();
    if action != "GetCallerIdentity" {
        return Err(QueryError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {action} for version 2011-06-15"),
        ));
    }
    let user_id = match coffer_kms::authz::user_name(&caller.principal.arn) {
        Some(name) => iam.user(name).await?.id,
        None => iam.account_id().to_owned(),
    };
    let result = format!(
        "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
        esc(&caller.principal.arn),
        esc(&user_id),
        esc(&caller.principal.account_id)
    );
    Ok(Outcome {
        xml: response_xml(Service::Sts, action, &result, request_id),
        audit: Value::Null,
    })
}

//! CloudTrail-shaped audit events of API requests. What goes in: who (the verified principal, or the
//! access key id a refused request claimed), from where (source IP, user agent, TLS details), what
//! (operation, key, encryption context, algorithms, sizes), and the outcome. What never goes in:
//! plaintext, ciphertext, messages, signatures, MACs, key material, import tokens, grant tokens or
//! secrets — those request and response fields are dropped by name before the event is built.

use std::net::SocketAddr;

use coffer_kms::{KmsConfig, Principal};
use http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// What Coffer knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `TLSv1.2` or `TLSv1.3`.
    pub tls_version: &'static str,
    /// IANA name of the negotiated cipher suite.
    pub cipher_suite: String,
}

/// Request and response fields that carry secrets or bulk data, never recorded.
const WITHHELD: &[&str] = &[
    "Plaintext",
    "CiphertextBlob",
    "SourceCiphertextBlob",
    "Message",
    "Signature",
    "Mac",
    "ImportToken",
    "EncryptedKeyMaterial",
    "PublicKey",
    "PrivateKeyPlaintext",
    "PrivateKeyCiphertextBlob",
    "SharedSecret",
    "CiphertextForRecipient",
    "Recipient",
    "GrantTokens",
    "GrantToken",
];

/// Operations that change nothing (CloudTrail's `readOnly`).
fn read_only(op: &str) -> bool {
    op.starts_with("Describe")
        || op.starts_with("Get")
        || op.starts_with("List")
        || matches!(
            op,
            "Encrypt"
                | "Decrypt"
                | "ReEncrypt"
                | "GenerateDataKey"
                | "GenerateDataKeyWithoutPlaintext"
                | "GenerateDataKeyPair"
                | "GenerateDataKeyPairWithoutPlaintext"
                | "GenerateRandom"
                | "Sign"
                | "Verify"
                | "GenerateMac"
                | "VerifyMac"
                | "DeriveSharedSecret"
        )
}

fn camel(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Top-level fields of a request or response body, camelCased as CloudTrail writes them, with
/// [`WITHHELD`] fields removed. Nested values (an encryption context, tags) are kept as sent.
fn sanitize(body: &Value) -> Value {
    let Some(o) = body.as_object() else {
        return Value::Null;
    };
    let out: Map<String, Value> = o
        .iter()
        .filter(|(k, _)| !WITHHELD.contains(&k.as_str()))
        .map(|(k, v)| (camel(k), v.clone()))
        .collect();
    Value::Object(out)
}

/// `arn:aws:kms:<region>:<account>:key/<id>` for a key named in a request, when it names a key
/// (not an alias).
fn key_arn(cfg: &KmsConfig, key_id: &str) -> Option<String> {
    if key_id.starts_with("arn:") {
        return key_id.contains(":key/").then(|| key_id.to_owned());
    }
    coffer_kms::is_key_id(key_id).then(|| cfg.key_arn(key_id))
}

fn user_identity(
    cfg: &KmsConfig,
    principal: Option<&Principal>,
    claimed_key: Option<&str>,
) -> Value {
    match principal {
        Some(p) if p.arn.ends_with(":root") => json!({
            "type": "Root",
            "principalId": p.account_id,
            "arn": p.arn,
            "accountId": p.account_id,
            "accessKeyId": p.access_key_id,
        }),
        Some(p) => {
            let name = p.arn.rsplit('/').next().unwrap_or_default();
            json!({
                "type": "IAMUser",
                "principalId": p.access_key_id,
                "arn": p.arn,
                "accountId": p.account_id,
                "accessKeyId": p.access_key_id,
                "userName": name,
            })
        }
        None => {
            let mut o = Map::new();
            o.insert("type".into(), json!("Unknown"));
            o.insert("accountId".into(), json!(cfg.account_id));
            if let Some(k) = claimed_key {
                o.insert("accessKeyId".into(), json!(k));
            }
            Value::Object(o)
        }
    }
}

/// Everything about one request that its event needs.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub event_source: &'static str,
    pub operation: &'a str,
    pub request_id: &'a str,
    pub event_id: &'a str,
    pub headers: &'a HeaderMap,
    pub conn: Option<&'a ConnInfo>,
    /// The parsed JSON request body, when it parsed.
    pub request: Option<&'a Value>,
    pub principal: Option<&'a Principal>,
    pub outcome: Result<&'a Value, &'a ApiError>,
}

/// The CloudTrail-shaped event of a request.
pub fn event(cfg: &KmsConfig, r: &RequestRecord<'_>) -> Value {
    let claimed_key = r
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::sigv4::parse_authorization(v).ok())
        .map(|a| a.access_key_id.to_owned());
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let params = r.request.map(sanitize).unwrap_or(Value::Null);
    let ro = read_only(r.operation);
    let mut e = Map::new();
    e.insert("eventVersion".into(), json!("1.11"));
    e.insert(
        "userIdentity".into(),
        user_identity(cfg, r.principal, claimed_key.as_deref()),
    );
    e.insert("eventTime".into(), json!(now_text()));
    e.insert("eventSource".into(), json!(r.event_source));
    e.insert("eventName".into(), json!(r.operation));
    e.insert("awsRegion".into(), json!(cfg.region));
    e.insert(
        "sourceIPAddress".into(),
        json!(r.conn.map(|c| c.peer.ip().to_string()).unwrap_or_default()),
    );
    e.insert("userAgent".into(), json!(header("user-agent")));
    let mut resources = Vec::new();
    let mut remember = |id: Option<&str>| {
        if let Some(arn) = id.and_then(|id| key_arn(cfg, id))
            && !resources.iter().any(|r: &Value| r["ARN"] == arn.as_str())
        {
            resources
                .push(json!({ "accountId": cfg.account_id, "type": "AWS::KMS::Key", "ARN": arn }));
        }
    };
    for field in ["KeyId", "TargetKeyId", "SourceKeyId", "DestinationKeyId"] {
        remember(r.request.and_then(|b| b.get(field)).and_then(Value::as_str));
    }
    match r.outcome {
        Ok(resp) => {
            remember(resp.get("KeyId").and_then(Value::as_str));
            remember(
                resp.get("KeyMetadata")
                    .and_then(|m| m.get("Arn"))
                    .and_then(Value::as_str),
            );
            e.insert("requestParameters".into(), params);
            e.insert(
                "responseElements".into(),
                if ro { Value::Null } else { sanitize(resp) },
            );
        }
        Err(err) => {
            let (_, code) = err.code();
            e.insert("errorCode".into(), json!(code));
            e.insert(
                "errorMessage".into(),
                json!(err.client_message(r.request_id)),
            );
            e.insert("requestParameters".into(), params);
            e.insert("responseElements".into(), Value::Null);
        }
    }
    e.insert("requestID".into(), json!(r.request_id));
    e.insert("eventID".into(), json!(r.event_id));
    e.insert("readOnly".into(), json!(ro));
    e.insert("resources".into(), Value::Array(resources));
    e.insert("eventType".into(), json!("AwsApiCall"));
    e.insert("managementEvent".into(), json!(true));
    e.insert("recipientAccountId".into(), json!(cfg.account_id));
    e.insert("eventCategory".into(), json!("Management"));
    if let Some(c) = r.conn {
        e.insert(
            "tlsDetails".into(),
            json!({
                "tlsVersion": c.tls_version,
                "cipherSuite": c.cipher_suite,
                "clientProvidedHostHeader": header("host"),
            }),
        );
    }
    Value::Object(e)
}

fn now_text() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_event() {
        let cfg = KmsConfig {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
        };
        let req = json!({
            "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
            "Plaintext": "c2VjcmV0",
            "EncryptionContext": {"Department": "10"},
            "GrantTokens": ["t"],
        });
        let resp = json!({"CiphertextBlob": "AAAA", "KeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"});
        let headers = HeaderMap::new();
        let e = event(
            &cfg,
            &RequestRecord {
                event_source: "kms.amazonaws.com",
                operation: "Encrypt",
                request_id: "r",
                event_id: "e",
                headers: &headers,
                conn: None,
                request: Some(&req),
                principal: None,
                outcome: Ok(&resp),
            },
        );
        let text = e.to_string();
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("AAAA") && !text.contains("\"t\""),
            "{text}"
        );
        assert_eq!(
            e["requestParameters"]["encryptionContext"]["Department"],
            "10"
        );
        assert_eq!(e["readOnly"], true);
        assert_eq!(e["responseElements"], Value::Null);
        assert_eq!(
            e["resources"][0]["ARN"],
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        );
    }
}

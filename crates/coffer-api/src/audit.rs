//! CloudTrail-shaped audit events of API requests. What goes in: who (the verified principal, or the
//! access key id a refused request claimed), from where (source IP, user agent, TLS details), what
//! (operation, key, encryption context, algorithms, sizes), and the outcome. What never goes in:
//! plaintext, ciphertext, messages, signatures, MACs, key material, import tokens, grant tokens or
//! secrets — those request and response fields are dropped by name before the event is built.

use std::net::SocketAddr;

use coffer_kms::{KmsConfig, Principal};
use http::HeaderMap;
use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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
    "Archive",
    "KeyStorePassword",
];

/// Operations that change nothing (CloudTrail's `readOnly`).
fn read_only(op: &str) -> bool {
    op.starts_with("Describe")
        || op.starts_with("Head")
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

/// A top-level field name as CloudTrail writes it (`KeyId` → `keyId`).
fn camel(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// A field name of a request body: borrowed from the body unless it had escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level fields of a JSON request body that may be recorded, in the order sent, with
/// their values as sent (not re-parsed): [`WITHHELD`] fields are skipped while reading.
struct RequestParams<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RequestParams<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RequestParams<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(FieldName(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    if !WITHHELD.contains(&k.as_ref()) {
                        out.push((k, v));
                    }
                }
                Ok(RequestParams(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for RequestParams<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(&camel(k), v)?;
        }
        m.end()
    }
}

/// A response body's top-level fields as CloudTrail writes them, [`WITHHELD`] fields left out.
struct ResponseElements<'a>(&'a Map<String, Value>);

impl Serialize for ResponseElements<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if !WITHHELD.contains(&k.as_str()) {
                m.serialize_entry(&camel(k), v)?;
            }
        }
        m.end()
    }
}

/// `arn:aws:kms:<region>:<account>:key/<id>` for a key named in a request, when it names a key
/// (not an alias).
fn key_arn(cfg: &KmsConfig, key_id: &str) -> Option<String> {
    if key_id.starts_with("arn:") {
        return key_id.contains(":key/").then(|| key_id.to_owned());
    }
    coffer_kms::is_key_id(key_id).then(|| cfg.key_arn(key_id))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentity<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<&'a str>,
    account_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
}

fn user_identity<'a>(
    cfg: &'a KmsConfig,
    principal: Option<&'a Principal>,
    claimed_key: Option<&'a str>,
) -> UserIdentity<'a> {
    match principal {
        Some(p) if p.arn == crate::s3::ANONYMOUS => UserIdentity {
            kind: "AnonymousPrincipal",
            principal_id: Some("ANONYMOUS_PRINCIPAL"),
            arn: None,
            account_id: "ANONYMOUS_PRINCIPAL",
            access_key_id: None,
            user_name: None,
        },
        Some(p) if p.arn.ends_with(":root") => UserIdentity {
            kind: "Root",
            principal_id: Some(&p.account_id),
            arn: Some(&p.arn),
            account_id: &p.account_id,
            access_key_id: Some(&p.access_key_id),
            user_name: None,
        },
        Some(p) => UserIdentity {
            kind: "IAMUser",
            principal_id: Some(&p.access_key_id),
            arn: Some(&p.arn),
            account_id: &p.account_id,
            access_key_id: Some(&p.access_key_id),
            user_name: p.arn.rsplit('/').next(),
        },
        None => UserIdentity {
            kind: "Unknown",
            principal_id: None,
            arn: None,
            account_id: &cfg.account_id,
            access_key_id: claimed_key,
            user_name: None,
        },
    }
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ARN")]
    arn: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TlsDetails<'a> {
    tls_version: &'a str,
    cipher_suite: &'a str,
    client_provided_host_header: &'a str,
}

/// The event, in CloudTrail's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    event_version: &'static str,
    user_identity: UserIdentity<'a>,
    event_time: &'a str,
    event_source: &'a str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: String,
    user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    request_parameters: Option<RequestParams<'a>>,
    response_elements: Option<ResponseElements<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_event_data: Option<Value>,
    #[serde(rename = "requestID")]
    request_id: &'a str,
    #[serde(rename = "eventID")]
    event_id: &'a str,
    read_only: bool,
    resources: Vec<Resource<'a>>,
    event_type: &'static str,
    management_event: bool,
    recipient_account_id: &'a str,
    event_category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_details: Option<TlsDetails<'a>>,
}

/// Largest event written with its request parameters and response elements; a bigger one (a
/// request padded with unknown fields) is written without them, saying so.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Everything about one request that its event needs.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub event_source: &'static str,
    pub operation: &'a str,
    pub request_id: &'a str,
    pub event_id: &'a str,
    pub headers: &'a HeaderMap,
    pub conn: Option<&'a ConnInfo>,
    /// The request body as received.
    pub request: Option<&'a [u8]>,
    pub principal: Option<&'a Principal>,
    pub outcome: Result<&'a Value, Failure<'a>>,
    /// CloudTrail's `additionalEventData` (an S3 data event's byte counts).
    pub additional: Option<Value>,
}

/// How a request failed, as its event records it.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub code: &'a str,
    pub message: String,
}

impl<'a> Failure<'a> {
    pub fn of(e: &'a ApiError, request_id: &str) -> Self {
        Failure {
            code: e.code().1,
            message: e.client_message(request_id),
        }
    }
}

/// An operator event that no signed API request carries — an unseal by shares, an offline root
/// migration — in the same CloudTrail shape (`eventSource` `coffer.operator`, `eventType`
/// `AwsServiceEvent`). `who` names the operator as far as Coffer knows them.
pub fn operator_event(
    cfg: &KmsConfig,
    name: &str,
    who: &str,
    source_ip: &str,
    user_agent: &str,
    request: Value,
    response: Value,
) -> Vec<u8> {
    let event = serde_json::json!({
        "eventVersion": "1.11",
        "userIdentity": { "type": "Operator", "principalId": who, "accountId": cfg.account_id },
        "eventTime": coffer_audit::record::now_rfc3339(),
        "eventSource": "coffer.operator",
        "eventName": name,
        "awsRegion": cfg.region,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": request,
        "responseElements": response,
        "eventID": uuid::Uuid::new_v4().to_string(),
        "readOnly": false,
        "eventType": "AwsServiceEvent",
        "managementEvent": true,
        "recipientAccountId": cfg.account_id,
        "eventCategory": "Management",
    });
    serde_json::to_vec(&event).unwrap_or_default()
}

/// The event source of S3 requests.
pub const S3_EVENT_SOURCE: &str = "s3.amazonaws.com";

/// The CloudTrail-shaped event of a request, as one line of compact JSON (no newline).
pub fn event(cfg: &KmsConfig, r: &RequestRecord<'_>) -> Vec<u8> {
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    // A refused request is recorded with the access key it claimed.
    let claimed_key = match r.principal {
        Some(_) => None,
        None => r
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::sigv4::parse_authorization(v).ok())
            .map(|a| a.access_key_id),
    };
    let params: Option<RequestParams<'_>> = r.request.and_then(|b| serde_json::from_slice(b).ok());
    let field = |name: &str| {
        params
            .as_ref()
            .and_then(|p| p.0.iter().find(|(k, _)| k == name))
            .and_then(|(_, v)| serde_json::from_str::<&str>(v.get()).ok())
    };
    let mut resources: Vec<Resource<'_>> = Vec::new();
    // S3: object operations are data events, bucket operations management events.
    let s3 = r.event_source == S3_EVENT_SOURCE;
    let mut data_event = false;
    if s3 {
        if let Some(bucket) = field("bucketName") {
            if let Some(key) = field("key") {
                data_event = true;
                resources.push(Resource {
                    account_id: &cfg.account_id,
                    kind: "AWS::S3::Object",
                    arn: format!("arn:aws:s3:::{bucket}/{key}"),
                });
            }
            resources.push(Resource {
                account_id: &cfg.account_id,
                kind: "AWS::S3::Bucket",
                arn: format!("arn:aws:s3:::{bucket}"),
            });
        }
        data_event |= matches!(
            r.operation,
            "DeleteObjects" | "ListObjects" | "ListObjectsV2" | "ListObjectVersions"
        );
    }
    let mut remember = |id: Option<&str>| {
        if let Some(arn) = id.and_then(|id| key_arn(cfg, id))
            && !resources.iter().any(|r| r.arn == arn)
        {
            resources.push(Resource {
                account_id: &cfg.account_id,
                kind: "AWS::KMS::Key",
                arn,
            });
        }
    };
    for name in ["KeyId", "TargetKeyId", "SourceKeyId", "DestinationKeyId"] {
        remember(field(name));
    }
    let ro = read_only(r.operation);
    let (error_code, error_message, response) = match &r.outcome {
        Ok(resp) => {
            remember(resp.get("KeyId").and_then(Value::as_str));
            remember(
                resp.get("KeyMetadata")
                    .and_then(|m| m.get("Arn"))
                    .and_then(Value::as_str),
            );
            let elements = if ro { None } else { resp.as_object() };
            (None, None, elements.map(ResponseElements))
        }
        Err(f) => (Some(f.code), Some(f.message.clone()), None),
    };
    let time = coffer_audit::record::now_rfc3339();
    let mut e = Event {
        event_version: "1.11",
        user_identity: user_identity(cfg, r.principal, claimed_key),
        event_time: &time,
        event_source: r.event_source,
        event_name: r.operation,
        aws_region: &cfg.region,
        source_ip_address: r.conn.map(|c| c.peer.ip().to_string()).unwrap_or_default(),
        user_agent: header("user-agent"),
        error_code,
        error_message,
        request_parameters: params,
        response_elements: response,
        additional_event_data: r.additional.clone(),
        request_id: r.request_id,
        event_id: r.event_id,
        read_only: ro,
        resources,
        event_type: "AwsApiCall",
        management_event: !data_event,
        recipient_account_id: &cfg.account_id,
        event_category: if data_event { "Data" } else { "Management" },
        tls_details: r.conn.map(|c| TlsDetails {
            tls_version: c.tls_version,
            cipher_suite: &c.cipher_suite,
            client_provided_host_header: header("host"),
        }),
    };
    let mut out = Vec::with_capacity(1024);
    // Serialising borrowed strings and JSON values cannot fail.
    let _ = serde_json::to_writer(&mut out, &e);
    if out.len() > MAX_EVENT_BYTES {
        e.request_parameters = None;
        e.response_elements = None;
        e.additional_event_data = Some(serde_json::json!({
            "omitted": format!("requestParameters and responseElements: the event would exceed {MAX_EVENT_BYTES} bytes")
        }));
        out.clear();
        let _ = serde_json::to_writer(&mut out, &e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_event() {
        let cfg = KmsConfig {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            ..Default::default()
        };
        let req = serde_json::json!({
            "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
            "Plaintext": "c2VjcmV0",
            "EncryptionContext": {"Department": "10"},
            "GrantTokens": ["t"],
        });
        let resp = serde_json::json!({"CiphertextBlob": "AAAA", "KeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"});
        let headers = HeaderMap::new();
        let body = req.to_string();
        let e = event(
            &cfg,
            &RequestRecord {
                event_source: "kms.amazonaws.com",
                operation: "Encrypt",
                request_id: "r",
                event_id: "e",
                headers: &headers,
                conn: None,
                request: Some(body.as_bytes()),
                principal: None,
                outcome: Ok(&resp),
                additional: None,
            },
        );
        let text = String::from_utf8(e).unwrap();
        let e: Value = serde_json::from_str(&text).unwrap();
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

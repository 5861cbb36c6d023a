//! Field-level encryption of JSON records, in the manner of DynamoDB item encryption and SQL
//! Server's Always Encrypted: each configured field is encrypted randomized (AES-256-GCM) or
//! deterministic (AES-256-SIV: equal plaintexts give equal ciphertexts, so equality search works),
//! signed only, or left as it is; a record tag (HMAC-SHA256) covers every encrypted and signed
//! field with its path and the record's context fields, so that a value cannot be changed, moved
//! to another field or record, or removed without decryption failing.
//!
//! Encrypted values are strings: base64 of a version byte, a kind byte (1 randomized,
//! 2 deterministic) and the sealed canonical JSON of the original value (so numbers, objects and
//! arrays come back as they were). The tag is in the record's signature field: base64 of a
//! version byte, the table key's 8-byte fingerprint and the 32-byte tag.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use coffer_crypto::SecretBytes;
use coffer_crypto::fle::TableKeys;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;

/// What happens to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// AES-256-GCM with a random IV, bound to the table, the field and the record's context.
    Randomized,
    /// AES-256-SIV bound to the table and the field: equal values give equal ciphertexts.
    Deterministic,
    /// Left readable, covered by the record tag.
    SignOnly,
    /// Left as it is, not covered.
    Nothing,
}

impl Action {
    fn byte(self) -> u8 {
        match self {
            Action::Randomized => 1,
            Action::Deterministic => 2,
            Action::SignOnly => 3,
            Action::Nothing => 0,
        }
    }

    fn encrypts(self) -> bool {
        matches!(self, Action::Randomized | Action::Deterministic)
    }
}

fn default_signature_field() -> String {
    "coffer_signature".into()
}

fn default_action() -> Action {
    Action::Nothing
}

/// A table's field configuration (the `table`, `actions`, … members of a config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TableConfig {
    /// The table's name: bound into every key, ciphertext and tag.
    pub table: String,
    /// Field path (`ssn`, or `address.zip` inside an object) → action.
    pub actions: BTreeMap<String, Action>,
    /// For top-level fields not named in `actions` (and not holding named fields).
    #[serde(default = "default_action")]
    pub default_action: Action,
    /// Fields bound as every encrypted field's context: a value is tied to its record through
    /// them. They are signed, never encrypted, and every record must have them.
    #[serde(default)]
    pub context_fields: Vec<String>,
    /// Where the record tag goes.
    #[serde(default = "default_signature_field")]
    pub signature_field: String,
}

impl TableConfig {
    /// Checks the configuration for contradictions, naming the first.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Options(m));
        if self.table.is_empty() {
            return bad("the config needs a table name".into());
        }
        for path in self.actions.keys().chain(&self.context_fields) {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return bad(format!(
                    "'{path}' is not a field path (names joined by dots)"
                ));
            }
        }
        if self.signature_field.is_empty() || self.signature_field.contains('.') {
            return bad("signature_field must be a top-level field name".into());
        }
        if self.actions.contains_key(&self.signature_field) {
            return bad(format!(
                "'{}' is the signature field and cannot have an action",
                self.signature_field
            ));
        }
        for c in &self.context_fields {
            match self.actions.get(c) {
                Some(a) if a.encrypts() => {
                    return bad(format!(
                        "context field '{c}' cannot be encrypted ({a:?}): it must stay readable to decrypt the others"
                    ));
                }
                _ => {}
            }
        }
        let paths: Vec<&String> = self.actions.keys().collect();
        for p in &paths {
            for q in &paths {
                if q.len() > p.len() && q.starts_with(p.as_str()) && q.as_bytes()[p.len()] == b'.' {
                    return bad(format!(
                        "'{p}' and '{q}' overlap: give an action to one of them"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every (path, action) for `record`: the named paths, the context fields (signed), and the
    /// default action for the other top-level fields.
    fn plan(&self, record: &Map<String, Value>) -> BTreeMap<String, Action> {
        let mut plan: BTreeMap<String, Action> = self.actions.clone();
        for c in &self.context_fields {
            plan.entry(c.clone())
                .and_modify(|a| {
                    if *a == Action::Nothing {
                        *a = Action::SignOnly
                    }
                })
                .or_insert(Action::SignOnly);
        }
        if self.default_action != Action::Nothing {
            for k in record.keys() {
                let holds_named = plan.keys().any(|p| {
                    p.len() > k.len() && p.starts_with(k.as_str()) && p.as_bytes()[k.len()] == b'.'
                });
                if *k != self.signature_field && !holds_named {
                    plan.entry(k.clone()).or_insert(self.default_action);
                }
            }
        }
        plan.retain(|_, a| *a != Action::Nothing);
        plan
    }
}

fn get<'a>(record: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = record.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

fn get_mut<'a>(record: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let mut v = record.get_mut(parts.next()?)?;
    for p in parts {
        v = v.as_object_mut()?.get_mut(p)?;
    }
    Some(v)
}

fn push_item(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(&(item.len() as u32).to_be_bytes());
    out.extend_from_slice(item);
}

const VERSION: u8 = 1;

/// Encrypts and decrypts the records of one table under one data key.
pub struct RecordCipher {
    config: TableConfig,
    keys: TableKeys,
    fingerprint: [u8; 8],
}

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordCipher({})", self.config.table)
    }
}

fn record_error(what: impl Into<String>) -> Error {
    Error::Record(what.into())
}

impl RecordCipher {
    /// `fingerprint` names the data key (e.g. a hash of its wrapped form), so that a record
    /// encrypted under another key is reported as such.
    pub fn new(config: TableConfig, data_key: &[u8], fingerprint: [u8; 8]) -> Result<Self, Error> {
        config.check()?;
        let keys = TableKeys::derive(data_key, &config.table)?;
        Ok(Self {
            config,
            keys,
            fingerprint,
        })
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// The record's context: its context fields' paths and canonical values.
    fn context(&self, record: &Map<String, Value>) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        push_item(&mut out, self.config.table.as_bytes());
        for c in &self.config.context_fields {
            let v = get(record, c)
                .ok_or_else(|| record_error(format!("the record has no context field '{c}'")))?;
            push_item(&mut out, c.as_bytes());
            push_item(&mut out, &canonical(v));
        }
        Ok(out)
    }

    /// The bytes the record tag covers.
    fn tag_input(&self, record: &Map<String, Value>, plan: &BTreeMap<String, Action>) -> Vec<u8> {
        let mut out = b"coffer record tag v1\0".to_vec();
        push_item(&mut out, self.config.table.as_bytes());
        out.extend_from_slice(&self.fingerprint);
        for (path, action) in plan {
            push_item(&mut out, path.as_bytes());
            out.push(action.byte());
            match get(record, path) {
                Some(v) => {
                    out.push(1);
                    push_item(&mut out, &canonical(v));
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Encrypts and signs `record` (a JSON object) in place.
    pub fn encrypt(&self, record: &mut Value) -> Result<(), Error> {
        let obj = record
            .as_object_mut()
            .ok_or_else(|| record_error("the record is not a JSON object"))?;
        if obj.contains_key(&self.config.signature_field) {
            return Err(record_error(format!(
                "the record already has '{}' (encrypted already?)",
                self.config.signature_field
            )));
        }
        let context = self.context(obj)?;
        let plan = self.config.plan(obj);
        for (path, action) in &plan {
            if !action.encrypts() {
                continue;
            }
            let Some(v) = get_mut(obj, path) else {
                continue;
            };
            let plain = SecretBytes::new(canonical(v));
            let sealed = match action {
                Action::Deterministic => self.keys.seal_deterministic(
                    &[self.config.table.as_bytes(), path.as_bytes()],
                    plain.expose(),
                )?,
                _ => {
                    let mut aad = context.clone();
                    push_item(&mut aad, path.as_bytes());
                    self.keys.seal_randomized(&aad, plain.expose())?
                }
            };
            let mut out = vec![VERSION, action.byte()];
            out.extend_from_slice(&sealed);
            *v = Value::String(base64::engine::general_purpose::STANDARD.encode(out));
        }
        let tag = self.keys.tag(&self.tag_input(obj, &plan));
        let mut sig = vec![VERSION];
        sig.extend_from_slice(&self.fingerprint);
        sig.extend_from_slice(&tag);
        obj.insert(
            self.config.signature_field.clone(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(sig)),
        );
        Ok(())
    }

    /// Verifies and decrypts `record` in place; nothing of it is changed unless all of it
    /// verifies and decrypts.
    pub fn decrypt(&self, record: &mut Value) -> Result<(), Error> {
        let obj = record
            .as_object_mut()
            .ok_or_else(|| record_error("the record is not a JSON object"))?;
        let sig = obj
            .get(&self.config.signature_field)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                record_error(format!(
                    "the record has no '{}' (not encrypted with this config?)",
                    self.config.signature_field
                ))
            })?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|_| record_error("the record tag is not base64"))?;
        if sig.len() != 1 + 8 + 32 || sig[0] != VERSION {
            return Err(record_error("the record tag is malformed"));
        }
        if sig[1..9] != self.fingerprint {
            return Err(record_error(
                "the record was encrypted under another table data key than the config's",
            ));
        }
        let mut rest = obj.clone();
        rest.remove(&self.config.signature_field);
        let plan = self.config.plan(&rest);
        if !self
            .keys
            .verify_tag(&self.tag_input(&rest, &plan), &sig[9..])
        {
            return Err(record_error(
                "the record does not verify: a protected value was changed, moved or removed",
            ));
        }
        let context = self.context(&rest)?;
        for (path, action) in &plan {
            if !action.encrypts() {
                continue;
            }
            let Some(v) = get_mut(&mut rest, path) else {
                continue;
            };
            let bytes = v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(|| record_error(format!("'{path}' is not an encrypted value")))?;
            if bytes.len() < 2 || bytes[0] != VERSION || bytes[1] != action.byte() {
                return Err(record_error(format!(
                    "'{path}' was not encrypted as the config says ({action:?})"
                )));
            }
            let plain = match action {
                Action::Deterministic => self.keys.open_deterministic(
                    &[self.config.table.as_bytes(), path.as_bytes()],
                    &bytes[2..],
                ),
                _ => {
                    let mut aad = context.clone();
                    push_item(&mut aad, path.as_bytes());
                    self.keys.open_randomized(&aad, &bytes[2..])
                }
            }
            .map_err(|_| record_error(format!("'{path}' does not decrypt")))?;
            *v = serde_json::from_slice(plain.expose())
                .map_err(|_| record_error(format!("'{path}' decrypts to something not JSON")))?;
        }
        *obj = rest;
        Ok(())
    }
}

/// The canonical bytes of a JSON value (object members sorted, as `serde_json::Value` keeps
/// them).
fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A table's unwrapped data key, kept for a bounded time and number of records: past either
/// bound it is fetched (unwrapped by KMS) again, so a disabled or revoked KMS key stops the work
/// within those bounds.
pub struct CachedTable {
    config: TableConfig,
    fingerprint: [u8; 8],
    max_age: Duration,
    max_uses: u64,
    entry: Option<(RecordCipher, Instant, u64)>,
    fetches: u64,
}

impl std::fmt::Debug for CachedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CachedTable({}, {} fetches)",
            self.config.table, self.fetches
        )
    }
}

impl CachedTable {
    pub fn new(
        config: TableConfig,
        fingerprint: [u8; 8],
        max_age: Duration,
        max_uses: u64,
    ) -> Result<Self, Error> {
        config.check()?;
        if max_uses == 0 || max_age.is_zero() {
            return Err(Error::Options(
                "the data key cache needs a positive age and use count".into(),
            ));
        }
        Ok(Self {
            config,
            fingerprint,
            max_age,
            max_uses,
            entry: None,
            fetches: 0,
        })
    }

    /// The cipher for one more record, fetching the data key with `fetch` when the cached one
    /// is missing, too old or used up.
    pub fn cipher(
        &mut self,
        fetch: &mut dyn FnMut() -> Result<SecretBytes, Error>,
    ) -> Result<&RecordCipher, Error> {
        let fresh = matches!(&self.entry, Some((_, at, uses)) if at.elapsed() < self.max_age && *uses < self.max_uses);
        if !fresh {
            self.entry = None;
            let key = fetch()?;
            self.fetches += 1;
            let c = RecordCipher::new(self.config.clone(), key.expose(), self.fingerprint)?;
            self.entry = Some((c, Instant::now(), 0));
        }
        match &mut self.entry {
            Some((c, _, uses)) => {
                *uses += 1;
                Ok(c)
            }
            None => Err(Error::Keyring("no data key".into())),
        }
    }

    /// How many times the data key was fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> TableConfig {
        serde_json::from_value(json!({
            "table": "customers",
            "actions": {"ssn": "deterministic", "card": "randomized", "address.zip": "randomized",
                        "status": "sign-only", "notes": "nothing"},
            "context_fields": ["id"],
        }))
        .expect("config")
    }

    fn cipher() -> RecordCipher {
        RecordCipher::new(config(), &[9u8; 32], [1; 8]).expect("cipher")
    }

    fn record(id: u32, ssn: &str) -> Value {
        json!({"id": id, "ssn": ssn, "card": {"pan": "4111111111111111", "exp": 1227},
               "address": {"zip": 90210, "city": "LA"}, "status": "active", "notes": "free text"})
    }

    #[test]
    fn round_trip_types_and_determinism() {
        let c = cipher();
        let original = record(1, "123-45-6789");
        let mut a = original.clone();
        c.encrypt(&mut a).expect("enc");
        let text = a.to_string();
        assert!(
            !text.contains("123-45-6789")
                && !text.contains("4111111111111111")
                && !text.contains("90210")
        );
        assert_eq!(a["status"], "active");
        assert_eq!(a["notes"], "free text");
        assert_eq!(a["address"]["city"], "LA");
        let mut b = record(2, "123-45-6789");
        c.encrypt(&mut b).expect("enc");
        assert_eq!(
            a["ssn"], b["ssn"],
            "deterministic fields are equal across records"
        );
        assert_ne!(a["card"], b["card"]);
        let mut back = a.clone();
        c.decrypt(&mut back).expect("dec");
        assert_eq!(back, original);
    }

    #[test]
    fn moves_changes_and_removals_are_caught() {
        let c = cipher();
        let mut a = record(1, "111-11-1111");
        let mut b = record(2, "222-22-2222");
        c.encrypt(&mut a).expect("enc");
        c.encrypt(&mut b).expect("enc");
        let tries: Vec<(&str, Value)> = vec![
            ("deterministic value moved between records", {
                let mut x = a.clone();
                x["ssn"] = b["ssn"].clone();
                x
            }),
            ("randomized value moved between records", {
                let mut x = a.clone();
                x["card"] = b["card"].clone();
                x
            }),
            ("value moved to another field", {
                let mut x = a.clone();
                x["address"]["zip"] = a["card"].clone();
                x
            }),
            ("sign-only value changed", {
                let mut x = a.clone();
                x["status"] = json!("closed");
                x
            }),
            ("context field changed", {
                let mut x = a.clone();
                x["id"] = json!(2);
                x
            }),
            ("encrypted field removed", {
                let mut x = a.clone();
                x.as_object_mut().expect("obj").remove("card");
                x
            }),
            ("tag of another record", {
                let mut x = a.clone();
                x["coffer_signature"] = b["coffer_signature"].clone();
                x
            }),
        ];
        for (what, mut x) in tries {
            assert!(c.decrypt(&mut x).is_err(), "{what} went unnoticed");
        }
        // Unprotected fields may change.
        let mut x = a.clone();
        x["notes"] = json!("edited");
        c.decrypt(&mut x).expect("notes are not covered");
        // Another key is named as such.
        let other = RecordCipher::new(config(), &[8u8; 32], [2; 8]).expect("cipher");
        let mut x = a.clone();
        match other.decrypt(&mut x) {
            Err(Error::Record(m)) => assert!(m.contains("another table data key"), "{m}"),
            r => panic!("unexpected {r:?}"),
        }
    }

    #[test]
    fn config_contradictions_are_named() {
        let bad = |v: Value| {
            serde_json::from_value::<TableConfig>(v)
                .expect("parse")
                .check()
                .is_err()
        };
        assert!(bad(
            json!({"table": "t", "actions": {"id": "randomized"}, "context_fields": ["id"]})
        ));
        assert!(bad(
            json!({"table": "t", "actions": {"a": "randomized", "a.b": "sign-only"}})
        ));
        assert!(bad(
            json!({"table": "t", "actions": {"coffer_signature": "sign-only"}})
        ));
        assert!(bad(json!({"table": "", "actions": {}})));
        assert!(
            serde_json::from_value::<TableConfig>(json!({"table": "t", "actions": {}, "extra": 1}))
                .is_err()
        );
    }

    #[test]
    fn default_action_covers_unnamed_fields() {
        let mut cfg = config();
        cfg.default_action = Action::SignOnly;
        let c = RecordCipher::new(cfg, &[9u8; 32], [1; 8]).expect("cipher");
        let mut a = record(1, "x");
        c.encrypt(&mut a).expect("enc");
        let mut x = a.clone();
        x["notes"] = json!("edited");
        assert!(c.decrypt(&mut x).is_ok(), "notes are named 'nothing'");
        let mut x = a.clone();
        x["extra"] = json!(1);
        assert!(
            c.decrypt(&mut x).is_err(),
            "an added field is covered by the default"
        );
    }

    #[test]
    fn cache_bounds_uses() {
        let mut t = CachedTable::new(config(), [1; 8], Duration::from_secs(60), 3).expect("cache");
        let mut fetch = || Ok(SecretBytes::new(vec![9u8; 32]));
        for _ in 0..10 {
            let mut r = record(1, "a");
            t.cipher(&mut fetch)
                .expect("cipher")
                .encrypt(&mut r)
                .expect("enc");
        }
        assert_eq!(t.fetches(), 4);
    }
}

//! The Condition element: operators, the `…IfExists` forms, the `ForAnyValue:`/`ForAllValues:`
//! set qualifiers, and policy variables. Values are checked when the policy is parsed (a date
//! operator with a value that is no date is a malformed policy), so evaluation never fails.

use std::net::IpAddr;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{Context, ContextValue, PolicyError, Version, err, glob};

/// The comparison an operator makes, before negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    ArnEquals,
    ArnLike,
    Null,
}

/// How a condition treats a key with several values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// Single-valued use: true when any request value matches any policy value.
    None,
    /// True when at least one request value matches; false when the key is absent.
    ForAnyValue,
    /// True when every request value matches; true when the key is absent or empty.
    ForAllValues,
}

/// A parsed policy value.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Text(String),
    Number(f64),
    Time(i128),
    Net(IpAddr, u8),
    Flag(bool),
}

/// One key test: `"StringEquals": {"kms:CallerAccount": ["111122223333"]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// As written in the policy, for messages.
    pub operator_name: String,
    pub operator: Operator,
    pub negated: bool,
    pub if_exists: bool,
    pub qualifier: Qualifier,
    /// Lowercase: keys are case-insensitive.
    pub key: String,
    values: Vec<Operand>,
}

/// Operator names and what they mean: (name, operator, negated).
const OPERATORS: &[(&str, Operator, bool)] = &[
    ("StringEquals", Operator::StringEquals, false),
    ("StringNotEquals", Operator::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Operator::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Operator::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Operator::StringLike, false),
    ("StringNotLike", Operator::StringLike, true),
    ("NumericEquals", Operator::NumericEquals, false),
    ("NumericNotEquals", Operator::NumericEquals, true),
    ("NumericLessThan", Operator::NumericLessThan, false),
    (
        "NumericLessThanEquals",
        Operator::NumericLessThanEquals,
        false,
    ),
    ("NumericGreaterThan", Operator::NumericGreaterThan, false),
    (
        "NumericGreaterThanEquals",
        Operator::NumericGreaterThanEquals,
        false,
    ),
    ("DateEquals", Operator::DateEquals, false),
    ("DateNotEquals", Operator::DateEquals, true),
    ("DateLessThan", Operator::DateLessThan, false),
    ("DateLessThanEquals", Operator::DateLessThanEquals, false),
    ("DateGreaterThan", Operator::DateGreaterThan, false),
    (
        "DateGreaterThanEquals",
        Operator::DateGreaterThanEquals,
        false,
    ),
    ("Bool", Operator::Bool, false),
    ("BinaryEquals", Operator::BinaryEquals, false),
    ("IpAddress", Operator::IpAddress, false),
    ("NotIpAddress", Operator::IpAddress, true),
    ("ArnEquals", Operator::ArnEquals, false),
    ("ArnNotEquals", Operator::ArnEquals, true),
    ("ArnLike", Operator::ArnLike, false),
    ("ArnNotLike", Operator::ArnLike, true),
    ("Null", Operator::Null, false),
];

/// Parses a statement's Condition block.
pub(crate) fn parse_block(block: &Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (name, keys) in block {
        let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (Qualifier::ForAnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (Qualifier::ForAllValues, r)
        } else {
            (Qualifier::None, name.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let Some(&(_, operator, negated)) = OPERATORS.iter().find(|(n, _, _)| *n == base) else {
            return err(format!(
                "'{name}' is not a condition operator; use one such as StringEquals, StringLike, NumericLessThan, DateGreaterThan, Bool, IpAddress, ArnLike or Null, optionally with IfExists or a ForAnyValue:/ForAllValues: prefix."
            ));
        };
        if operator == Operator::Null && (if_exists || qualifier != Qualifier::None) {
            return err(format!(
                "'{name}': Null takes neither IfExists nor a set qualifier."
            ));
        }
        let Value::Object(keys) = keys else {
            return err(format!(
                "'{name}' must map condition keys to values, e.g. {{\"kms:CallerAccount\": \"111122223333\"}}."
            ));
        };
        if keys.is_empty() {
            return err(format!("'{name}' names no condition key."));
        }
        for (key, v) in keys {
            if key.is_empty() || key.len() > 256 {
                return err(format!("'{key}' is not a condition key."));
            }
            let raw: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            if raw.is_empty() {
                return err(format!("'{name}' gives '{key}' no value."));
            }
            let values = raw
                .into_iter()
                .map(|v| operand(operator, v))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| PolicyError(format!("'{name}' on '{key}': {e}")))?;
            out.push(Condition {
                operator_name: name.clone(),
                operator,
                negated,
                if_exists,
                qualifier,
                key: key.to_ascii_lowercase(),
                values,
            });
        }
    }
    Ok(out)
}

/// A policy value as text (JSON strings, numbers and booleans are all allowed, as in AWS).
fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err("values must be strings, numbers or booleans".into()),
    }
}

fn operand(op: Operator, v: &Value) -> Result<Operand, String> {
    let t = text(v)?;
    Ok(match op {
        Operator::NumericEquals
        | Operator::NumericLessThan
        | Operator::NumericLessThanEquals
        | Operator::NumericGreaterThan
        | Operator::NumericGreaterThanEquals => {
            Operand::Number(number(&t).ok_or_else(|| format!("'{t}' is not a number"))?)
        }
        Operator::DateEquals
        | Operator::DateLessThan
        | Operator::DateLessThanEquals
        | Operator::DateGreaterThan
        | Operator::DateGreaterThanEquals => Operand::Time(date(&t).ok_or_else(|| {
            format!("'{t}' is not a date; use ISO 8601 (2026-11-22T12:00:00Z) or epoch seconds")
        })?),
        Operator::Bool | Operator::Null => Operand::Flag(match t.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(format!("'{t}' is not true or false")),
        }),
        Operator::IpAddress => {
            let (ip, bits) =
                cidr(&t).ok_or_else(|| format!("'{t}' is not an IP address or CIDR block"))?;
            Operand::Net(ip, bits)
        }
        _ => Operand::Text(t),
    })
}

fn number(s: &str) -> Option<f64> {
    let n: f64 = s.trim().parse().ok()?;
    n.is_finite().then_some(n)
}

/// Nanoseconds since the epoch of an ISO 8601 date or date-time, or of epoch seconds.
pub(crate) fn date(s: &str) -> Option<i128> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(i128::from(s.parse::<i64>().ok()?) * 1_000_000_000);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp_nanos())
}

fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.trim().split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
        None => (s.trim().parse::<IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        // An IPv4 client seen through an IPv6 socket.
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| in_net(IpAddr::V4(a), net, bits)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Replaces policy variables (`${aws:username}`, `${*}`, `${?}`, `${$}`) in a 2012-10-17 policy.
/// `None` when a variable has no value in the request: the value then matches nothing.
pub(crate) fn substitute(s: &str, ctx: &Context, version: Version) -> Option<String> {
    if version != Version::V2012_10_17 || !s.contains("${") {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Some(out);
        };
        let var = after[..end].trim();
        match var {
            "*" | "?" | "$" => out.push_str(var),
            _ => {
                // `${key, 'default'}` supplies a value for an absent key.
                let (name, default) = match var.split_once(',') {
                    Some((n, d)) => (n.trim(), Some(d.trim().trim_matches('\'').to_owned())),
                    None => (var, None),
                };
                match ctx.single(name).map(str::to_owned).or(default) {
                    Some(v) => out.push_str(&v),
                    None => return None,
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

impl Condition {
    /// Whether the condition pins its key to fixed values: a positive equality or IP-range test
    /// whose values hold no wildcard and no range open to every address. S3 uses this to tell a
    /// public bucket policy from one that names who may use it.
    pub fn pins_value(&self) -> bool {
        if self.negated || self.operator == Operator::Null || self.values.is_empty() {
            return false;
        }
        let fixed = |v: &Operand| match v {
            Operand::Text(t) => !t.contains(['*', '?']) && !t.is_empty(),
            Operand::Net(_, prefix) => *prefix > 0,
            _ => false,
        };
        matches!(
            self.operator,
            Operator::StringEquals
                | Operator::StringEqualsIgnoreCase
                | Operator::StringLike
                | Operator::ArnEquals
                | Operator::ArnLike
                | Operator::IpAddress
        ) && self.values.iter().all(fixed)
    }

    /// Whether the condition holds for the request's context.
    pub fn holds(&self, ctx: &Context, version: Version) -> bool {
        let present = ctx.get(&self.key);
        if self.operator == Operator::Null {
            let absent = match present {
                None => true,
                Some(ContextValue::Multi(v)) => v.is_empty(),
                Some(ContextValue::Single(_)) => false,
            };
            return self
                .values
                .iter()
                .any(|v| matches!(v, Operand::Flag(f) if *f == absent));
        }
        let values: Vec<&str> = match present {
            None => Vec::new(),
            Some(ContextValue::Single(s)) => vec![s.as_str()],
            Some(ContextValue::Multi(v)) => v.iter().map(String::as_str).collect(),
        };
        if values.is_empty() {
            if self.if_exists {
                return true;
            }
            return match self.qualifier {
                Qualifier::ForAllValues => true,
                Qualifier::ForAnyValue => false,
                // A missing key matches nothing, so a negated test holds.
                Qualifier::None => self.negated,
            };
        }
        // Does one request value satisfy the (possibly negated) operator?
        let one = |v: &str| {
            let hit = self.values.iter().any(|p| self.compare(v, p, ctx, version));
            hit != self.negated
        };
        match self.qualifier {
            Qualifier::ForAllValues => values.iter().all(|v| one(v)),
            Qualifier::ForAnyValue => values.iter().any(|v| one(v)),
            Qualifier::None => {
                let hit = values
                    .iter()
                    .any(|v| self.values.iter().any(|p| self.compare(v, p, ctx, version)));
                hit != self.negated
            }
        }
    }

    /// Whether request value `v` matches policy value `p` under the positive operator.
    fn compare(&self, v: &str, p: &Operand, ctx: &Context, version: Version) -> bool {
        match (self.operator, p) {
            (Operator::StringEquals, Operand::Text(p)) => {
                substitute(p, ctx, version).is_some_and(|p| p == v)
            }
            (Operator::StringEqualsIgnoreCase, Operand::Text(p)) => {
                substitute(p, ctx, version).is_some_and(|p| p.to_lowercase() == v.to_lowercase())
            }
            (Operator::StringLike, Operand::Text(p)) => {
                substitute(p, ctx, version).is_some_and(|p| glob::matches(&p, v, false))
            }
            (Operator::ArnEquals | Operator::ArnLike, Operand::Text(p)) => {
                substitute(p, ctx, version).is_some_and(|p| glob::arn_matches(&p, v))
            }
            (Operator::BinaryEquals, Operand::Text(p)) => p == v,
            (op, Operand::Number(p)) => number(v).is_some_and(|v| match op {
                Operator::NumericEquals => v == *p,
                Operator::NumericLessThan => v < *p,
                Operator::NumericLessThanEquals => v <= *p,
                Operator::NumericGreaterThan => v > *p,
                Operator::NumericGreaterThanEquals => v >= *p,
                _ => false,
            }),
            (op, Operand::Time(p)) => date(v).is_some_and(|v| match op {
                Operator::DateEquals => v == *p,
                Operator::DateLessThan => v < *p,
                Operator::DateLessThanEquals => v <= *p,
                Operator::DateGreaterThan => v > *p,
                Operator::DateGreaterThanEquals => v >= *p,
                _ => false,
            }),
            (Operator::Bool, Operand::Flag(p)) => match v.to_ascii_lowercase().as_str() {
                "true" => *p,
                "false" => !*p,
                _ => false,
            },
            (Operator::IpAddress, Operand::Net(net, bits)) => {
                v.parse::<IpAddr>().is_ok_and(|ip| in_net(ip, *net, *bits))
            }
            _ => false,
        }
    }
}

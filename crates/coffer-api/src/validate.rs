//! Parameter checks that produce AWS's validation clauses:
//! `Value 'x' at 'memberName' failed to satisfy constraint: Member must …`.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// Collects validation clauses for one request; [`Checks::finish`] turns them into one error.
#[derive(Debug, Default)]
pub struct Checks {
    clauses: Vec<String>,
}

/// AWS names members in messages with a lowercase first letter (`KeyId` → `keyId`).
fn member(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn quoted(v: &str) -> String {
    // Long values are cut so an error never echoes a large input back.
    let shown: String = v.chars().take(256).collect();
    format!("'{shown}'")
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, value: Option<String>, name: &str, constraint: &str) {
        let value = value.map(|v| format!(" {v}")).unwrap_or_default();
        self.clauses.push(format!(
            "Value{value} at '{}' failed to satisfy constraint: Member must {constraint}",
            member(name)
        ));
    }

    /// A required member that is absent.
    pub fn required<T>(&mut self, name: &str, v: &Option<T>) {
        if v.is_none() {
            self.push(Some("null".into()), name, "not be null");
        }
    }

    /// String length bounds (in characters, as AWS counts).
    pub fn str_len(&mut self, name: &str, v: Option<&str>, min: usize, max: usize) {
        if let Some(v) = v {
            let n = v.chars().count();
            if n < min {
                self.push(
                    Some(quoted(v)),
                    name,
                    &format!("have length greater than or equal to {min}"),
                );
            } else if n > max {
                self.push(
                    Some(quoted(v)),
                    name,
                    &format!("have length less than or equal to {max}"),
                );
            }
        }
    }

    /// Blob length bounds. Blob values are never echoed.
    pub fn blob_len(&mut self, name: &str, v: Option<usize>, min: usize, max: usize) {
        if let Some(n) = v {
            if n < min {
                self.push(
                    None,
                    name,
                    &format!("have length greater than or equal to {min}"),
                );
            } else if n > max {
                self.push(
                    None,
                    name,
                    &format!("have length less than or equal to {max}"),
                );
            }
        }
    }

    pub fn range(&mut self, name: &str, v: Option<i64>, min: i64, max: i64) {
        if let Some(v) = v {
            if v < min {
                self.push(
                    Some(quoted(&v.to_string())),
                    name,
                    &format!("have value greater than or equal to {min}"),
                );
            } else if v > max {
                self.push(
                    Some(quoted(&v.to_string())),
                    name,
                    &format!("have value less than or equal to {max}"),
                );
            }
        }
    }

    pub fn one_of(&mut self, name: &str, v: Option<&str>, allowed: &[&str]) {
        if let Some(v) = v
            && !allowed.contains(&v)
        {
            self.push(
                Some(quoted(v)),
                name,
                &format!("satisfy enum value set: [{}]", allowed.join(", ")),
            );
        }
    }

    /// A pattern given as a predicate over characters, with AWS's regex text for the message.
    pub fn chars(&mut self, name: &str, v: Option<&str>, pattern: &str, ok: impl Fn(char) -> bool) {
        if let Some(v) = v
            && !v.chars().all(ok)
        {
            self.push(
                Some(quoted(v)),
                name,
                &format!("satisfy regular expression pattern: {pattern}"),
            );
        }
    }

    /// A value that must match `pattern`, decided by `ok`.
    pub fn pattern(
        &mut self,
        name: &str,
        v: Option<&str>,
        pattern: &str,
        ok: impl Fn(&str) -> bool,
    ) {
        if let Some(v) = v
            && !ok(v)
        {
            self.push(
                Some(quoted(v)),
                name,
                &format!("satisfy regular expression pattern: {pattern}"),
            );
        }
    }

    pub fn list_len<T>(&mut self, name: &str, v: Option<&Vec<T>>, min: usize, max: usize) {
        if let Some(v) = v {
            if v.len() < min {
                self.push(
                    None,
                    name,
                    &format!("have length greater than or equal to {min}"),
                );
            } else if v.len() > max {
                self.push(
                    None,
                    name,
                    &format!("have length less than or equal to {max}"),
                );
            }
        }
    }

    /// Pagination markers: 1–1024 characters in U+0020–U+00FF.
    pub fn marker(&mut self, v: Option<&str>) {
        self.str_len("Marker", v, 1, 1024);
        self.chars("Marker", v, "[\\u0020-\\u00FF]*", |c| {
            ('\u{20}'..='\u{ff}').contains(&c)
        });
    }

    pub fn key_id(&mut self, name: &str, v: Option<&str>) {
        self.str_len(name, v, 1, 2048);
    }

    pub fn alias_name(&mut self, v: Option<&str>) {
        self.str_len("AliasName", v, 1, 256);
        self.chars("AliasName", v, "^[a-zA-Z0-9:/_-]+$", |c| {
            c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '-')
        });
    }

    /// An encryption context: keys of at least one character, and an encoded size AWS would accept.
    pub fn encryption_context(&mut self, name: &str, v: Option<&BTreeMap<String, String>>) {
        if let Some(ctx) = v {
            if ctx.keys().any(|k| k.is_empty()) {
                self.push(None, name, "have keys of length greater than or equal to 1");
            }
            let size: usize = ctx.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > 8192 {
                self.push(
                    None,
                    name,
                    "have a total size of keys and values less than or equal to 8192 bytes",
                );
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.clauses.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.clauses))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_wording() {
        let mut c = Checks::new();
        c.range("NumberOfBytes", Some(2000), 1, 1024);
        c.required::<String>("KeyId", &None);
        c.blob_len("Plaintext", Some(5000), 1, 4096);
        let e = c.finish().expect_err("three problems");
        assert_eq!(
            e.to_string(),
            "3 validation errors detected: Value '2000' at 'numberOfBytes' failed to satisfy constraint: \
             Member must have value less than or equal to 1024; Value null at 'keyId' failed to satisfy \
             constraint: Member must not be null; Value at 'plaintext' failed to satisfy constraint: Member \
             must have length less than or equal to 4096"
        );
        assert!(Checks::new().finish().is_ok());
    }
}

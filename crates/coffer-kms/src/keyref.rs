//! Parsing the `KeyId` forms AWS accepts: key id, key ARN, alias name, alias ARN.

use crate::{KmsError, Result};

/// What a `KeyId` parameter names, parsed once at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id (UUID, lowercase).
    Key(String),
    /// An alias name, including its `alias/` prefix.
    Alias(String),
}

/// Whether `s` is a key id: a UUID in the canonical 8-4-4-4-12 lowercase hex form.
pub fn is_key_id(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

impl KeyRef {
    /// Parses a `KeyId` the way AWS does. ARNs must name this account and region; anything else is
    /// NotFoundException, as AWS answers for a key it cannot see.
    pub fn parse(s: &str, account: &str, region: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() != 5 || parts[1] != "kms" {
                return Err(KmsError::NotFound(format!("Invalid arn {s}")));
            }
            if parts[2] != region || parts[3] != account {
                return Err(KmsError::NotFound(format!("Invalid arn {s}")));
            }
            let resource = parts[4];
            if let Some(id) = resource.strip_prefix("key/") {
                if is_key_id(id) {
                    return Ok(KeyRef::Key(id.to_owned()));
                }
            } else if resource.starts_with("alias/") && resource.len() > "alias/".len() {
                return Ok(KeyRef::Alias(resource.to_owned()));
            }
            return Err(KmsError::NotFound(format!("Invalid arn {s}")));
        }
        if s.starts_with("alias/") && s.len() > "alias/".len() {
            return Ok(KeyRef::Alias(s.to_owned()));
        }
        if is_key_id(s) {
            return Ok(KeyRef::Key(s.to_owned()));
        }
        Err(KmsError::NotFound(format!("Invalid keyId '{s}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn all_four_forms() {
        let p = |s: &str| KeyRef::parse(s, "111122223333", "us-east-1");
        assert_eq!(p(ID).expect("id"), KeyRef::Key(ID.into()));
        assert_eq!(
            p(&format!("arn:aws:kms:us-east-1:111122223333:key/{ID}")).expect("arn"),
            KeyRef::Key(ID.into())
        );
        assert_eq!(
            p("alias/app").expect("alias"),
            KeyRef::Alias("alias/app".into())
        );
        assert_eq!(
            p("arn:aws:kms:us-east-1:111122223333:alias/app").expect("alias arn"),
            KeyRef::Alias("alias/app".into())
        );
    }

    #[test]
    fn refusals() {
        let p = |s: &str| KeyRef::parse(s, "111122223333", "us-east-1");
        for bad in [
            "",
            "alias/",
            "nope",
            &ID.to_uppercase(),
            &format!("arn:aws:kms:eu-west-1:111122223333:key/{ID}"),
            &format!("arn:aws:kms:us-east-1:999999999999:key/{ID}"),
            &format!("arn:aws:s3:us-east-1:111122223333:key/{ID}"),
            "arn:aws:kms:us-east-1:111122223333:key/xyz",
            "arn:",
        ] {
            assert!(
                matches!(p(bad), Err(KmsError::NotFound(_))),
                "{bad} accepted"
            );
        }
    }
}

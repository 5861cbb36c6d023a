//! Sensitive-data discovery: managed identifiers (a pattern, a validator where one exists, and
//! keywords that must appear nearby where the pattern alone would be too loose) and custom ones,
//! matched in two stages (see [`engine`]), over text, CSV, JSON, archives and office documents
//! (see [`read`]), with findings that say where, never what: every sample is redacted.

pub mod anomaly;
pub mod engine;
pub mod findings;
pub mod read;
pub mod rules;
pub mod validate;

use serde::{Deserialize, Serialize};

pub use engine::{AllowList, BuildError, Context, Hit, Scanner, ScannerBuilder};
pub use findings::{Finding, Location, Place};
pub use read::{Limits, Report, Skipped};
pub use rules::{CustomIdentifier, Rule};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }
}

/// What kind of data an identifier finds (Macie's categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    FinancialInformation,
    PersonalInformation,
    Credentials,
    CustomIdentifier,
}

/// Masks a value so that no finding, log line or output carries it.
pub fn redact(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let mut out = String::new();
    out.push(chars[0]);
    out.push_str(&"*".repeat(chars.len() - 2));
    out.push(chars[chars.len() - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<String> {
        let s = Scanner::managed();
        s.scan(text, None)
            .iter()
            .map(|h| s.rule(h.rule).id.clone())
            .collect()
    }

    #[test]
    fn managed_identifiers_compile_and_are_many() {
        let s = Scanner::managed();
        let mut ids: Vec<&str> = s.rules().iter().map(|r| r.id.as_str()).collect();
        ids.dedup();
        assert!(ids.len() >= 45, "{} identifiers", ids.len());
    }

    #[test]
    fn finds_with_validators_and_keywords() {
        assert_eq!(
            ids("card: 4111 1111 1111 1111 exp 12/29"),
            ["CREDIT_CARD_NUMBER", "CREDIT_CARD_EXPIRATION"]
        );
        assert!(ids("order 4111 1111 1111 1112").is_empty());
        assert_eq!(ids("SSN 123-45-6789"), ["USA_SOCIAL_SECURITY_NUMBER"]);
        assert!(ids("SSN 666-45-6789").is_empty());
        assert_eq!(ids("ssn: 123456789"), ["USA_SOCIAL_SECURITY_NUMBER"]);
        assert!(ids("ref 123456789").is_empty());
        assert_eq!(ids("routing number 021000021"), ["USA_ROUTING_NUMBER"]);
        assert!(ids("invoice 021000021").is_empty());
        assert_eq!(
            ids("IBAN: GB82 WEST 1234 5698 7654 32"),
            ["INTERNATIONAL_BANK_ACCOUNT_NUMBER"]
        );
        assert_eq!(
            ids("NHS number 943 476 5919"),
            ["UK_NATIONAL_HEALTH_SERVICE_NUMBER"]
        );
        assert_eq!(ids("NI: AB 12 34 56 C"), ["UK_NATIONAL_INSURANCE_NUMBER"]);
        assert_eq!(ids("write to jane.doe@example.com"), ["EMAIL_ADDRESS"]);
        assert_eq!(ids("AKIAZ3MHQ2J7VX4L6RTE"), ["AWS_ACCESS_KEY_ID"]);
        // The keys in AWS's documentation are examples, not findings.
        assert!(ids("AKIAIOSFODNN7EXAMPLE").is_empty());
        assert_eq!(
            ids("aws_secret_access_key = 9drTJvcXLB89EXhRXqhlc4oZxXFsF2yTzDOhGWWF"),
            ["AWS_SECRET_ACCESS_KEY"]
        );
        // A 40-character hex hash near the same words is not a secret key.
        assert!(ids("secret key sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12").is_empty());
        assert_eq!(
            ids("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"),
            ["OPENSSH_PRIVATE_KEY"]
        );
        assert_eq!(
            ids("DATABASE_URL=postgres://app:hunter2@db.internal:5432/app"),
            ["BASIC_AUTH_URL"]
        );
        assert!(ids("business 130 692 544").is_empty());
        assert_eq!(ids("SIN: 130 692 544"), ["CANADA_SOCIAL_INSURANCE_NUMBER"]);
    }

    #[test]
    fn more_identifiers() {
        let cases: &[(&str, &str)] = &[
            ("DNI 12345678Z", "SPAIN_DNI_NUMBER"),
            ("NIE X1234567L", "SPAIN_NIE_NUMBER"),
            (
                "CF RSSMRA85T10A562S",
                "ITALY_NATIONAL_IDENTIFICATION_NUMBER",
            ),
            ("CPF 123.456.789-09", "BRAZIL_CPF_NUMBER"),
            ("BSN 111222333", "NETHERLANDS_CITIZEN_SERVICE_NUMBER"),
            ("pesel 44051401359", "POLAND_PESEL_NUMBER"),
            ("TFN 123 456 782", "AUSTRALIA_TAX_FILE_NUMBER"),
            ("Aadhaar 2341 2341 2346", "INDIA_AADHAAR_NUMBER"),
            (
                "Medicare MBI 1EG4-TE5-MK73",
                "USA_MEDICARE_BENEFICIARY_IDENTIFIER",
            ),
            ("passport number 340020013", "USA_PASSPORT_NUMBER"),
            ("SWIFT: DEUTDEFF500", "SWIFT_CODE"),
            ("call +44 20 7946 0958 today", "PHONE_NUMBER"),
            ("phone: (415) 555-0132", "PHONE_NUMBER"),
            ("host 2001:db8:85a3::8a2e:370:7334 up", "IPV6_ADDRESS"),
            ("from 192.168.10.34 port", "IPV4_ADDRESS"),
            ("hw 00:1A:2B:3C:4D:5E", "MAC_ADDRESS"),
            ("DOB: 1984-07-23", "DATE_OF_BIRTH"),
            (
                "ship to 1600 Amphitheatre Parkway, Mountain View, CA 94043",
                "ADDRESS",
            ),
            ("Patient name: Maria Garcia", "NAME"),
            ("cvv 123", "CREDIT_CARD_SECURITY_CODE"),
            (
                "token ghp_Zk9mQ2xvV3RyYjZ1c0hOa1pYa3ZhRk3x9b1Q",
                "GITHUB_TOKEN",
            ),
            ("glpat-Xq3vR8sK2mN7pL4tW9yZ", "GITLAB_TOKEN"),
            ("xoxb-2048203847-5928374659-QmVyeXNlY3JldA", "SLACK_TOKEN"),
            ("sk_live_51Hq8ZtK2eZvKYlo2C0bT5r6Q", "STRIPE_SECRET_KEY"),
            ("SK3f9a0c2b7e4d1f6a8b5c9e0d2f4a6b8c", "TWILIO_API_KEY"),
            ("AIzaSyD3kF9zQ2mLx7Rt5Vb8Nc1Wp4Hj6Gs0Ye2", "GOOGLE_API_KEY"),
            ("npm_R4nd0mT0k3nV4lu3Xq9Zp2Lk7Mj5Hg8Fd3Sa", "NPM_TOKEN"),
            (
                "\"private_key_id\": \"0f3a9c2e7b1d4f6a8c5e9b0d2f4a6c8e1b3d5f7a\"",
                "GCP_SERVICE_ACCOUNT_KEY",
            ),
            (
                "Server=db;Database=app;User Id=sa;Password=Tr0ub4dor&3;",
                "CONNECTION_STRING_PASSWORD",
            ),
            ("db_password: \"s3cr3t-Pa55\"", "CONFIG_PASSWORD"),
            ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "PGP_PRIVATE_KEY"),
            ("PuTTY-User-Key-File-3: ssh-ed25519", "PUTTY_PRIVATE_KEY"),
            (
                "Authorization: Bearer dGhpcyBpcyBhIHZlcnkgbG9uZyB0b2tlbg",
                "HTTP_AUTHORIZATION_HEADER",
            ),
            (
                "client_secret = \"Zq8vR2mX9kL4pT7wN3bY6cH1\"",
                "HIGH_ENTROPY_SECRET",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, id) in cases {
            if !ids(text).iter().any(|i| i == id) {
                wrong.push(format!("{text:?} wanted {id}, found {:?}", ids(text)));
            }
        }
        let negatives: &[&str] = &[
            "DNI 12345678A",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "version 1.2.3.4567 built",
            "commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
            "password: ${DB_PASSWORD}",
            "password = \"********\"",
            "ts 2026-11-23T07:30:22Z",
            "the task was to ask for a desk",
        ];
        for text in negatives {
            if !ids(text).is_empty() {
                wrong.push(format!("{text:?} wanted nothing, found {:?}", ids(text)));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn context_counts_as_a_keyword() {
        let s = Scanner::managed();
        assert!(s.scan("123456789", None).is_empty());
        let ctx = s.context("customer_ssn");
        let hits = s.scan("123456789", Some(&ctx));
        assert_eq!(s.rule(hits[0].rule).id, "USA_SOCIAL_SECURITY_NUMBER");
    }

    #[test]
    fn custom_identifiers_and_allow_lists() {
        let custom: CustomIdentifier = serde_json::from_str(
            r#"{"name": "EMPLOYEE_ID", "regex": "EMP-[0-9]{6}", "ignoreWords": ["EMP-000000"], "severity": "HIGH"}"#,
        )
        .expect("custom identifier");
        let mut allow = AllowList::default();
        allow.add_exact("jane@example.com");
        allow.add_regex(r".*@corp\.example").expect("regex");
        let s = Scanner::builder()
            .custom(custom)
            .allow(allow)
            .build()
            .expect("scanner");
        let found: Vec<String> = s
            .scan(
                "EMP-123456 EMP-000000 jane@example.com bob@corp.example joe@x.org",
                None,
            )
            .iter()
            .map(|h| s.rule(h.rule).id.clone())
            .collect();
        assert_eq!(found, ["EMPLOYEE_ID", "EMAIL_ADDRESS"]);
        let keyworded: CustomIdentifier = serde_json::from_str(
            r#"{"name": "PROJECT", "regex": "[A-Z]{3}[0-9]{4}", "keywords": ["project"], "maximumMatchDistance": 20}"#,
        )
        .expect("custom");
        let s = Scanner::builder()
            .custom(keyworded)
            .build()
            .expect("scanner");
        assert_eq!(s.scan("project code ABC1234", None).len(), 1);
        assert!(s.scan("ABC1234 elsewhere", None).is_empty());
        let bad: CustomIdentifier =
            serde_json::from_str(r#"{"name": "X", "regex": "a*"}"#).expect("parse");
        assert!(bad.compile().is_err());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("4111111111111111"), "4**************1");
        assert_eq!(redact("123"), "***");
    }
}

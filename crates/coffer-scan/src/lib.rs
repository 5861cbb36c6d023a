//! Sensitive-data discovery: managed identifiers (a pattern, a validator where one exists, and
//! keywords that must appear nearby where the pattern alone would be too loose), run over text,
//! with findings that say where, never what: every sample is redacted.
//!
//! This is the first slice of issue 8 (text only; more identifiers, readers for structured and
//! archive formats, jobs and anomaly detection follow).

pub mod validate;

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
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
}

/// A managed identifier.
#[derive(Debug)]
pub struct Identifier {
    pub id: &'static str,
    pub category: Category,
    pub severity: Severity,
    /// The pattern; with a capture group, group 1 is the value.
    pattern: &'static str,
    validator: Option<fn(&str) -> bool>,
    /// Lowercase keywords; when `keyword_required`, one must appear within `max_distance`
    /// characters before the value (or on the same line before it).
    keywords: &'static [&'static str],
    keyword_required: bool,
    max_distance: usize,
}

const fn id(
    id: &'static str,
    category: Category,
    severity: Severity,
    pattern: &'static str,
) -> Identifier {
    Identifier {
        id,
        category,
        severity,
        pattern,
        validator: None,
        keywords: &[],
        keyword_required: false,
        max_distance: 50,
    }
}

impl Identifier {
    const fn validated(mut self, f: fn(&str) -> bool) -> Self {
        self.validator = Some(f);
        self
    }

    const fn near(mut self, keywords: &'static [&'static str]) -> Self {
        self.keywords = keywords;
        self.keyword_required = true;
        self
    }
}

fn high_entropy_secret(s: &str) -> bool {
    // Guards against hashes, UUIDs and other structured ids: a mix of cases and digits, and
    // enough entropy.
    let has = |f: fn(&char) -> bool| s.chars().any(|c| f(&c));
    validate::entropy(s) > 4.0
        && has(char::is_ascii_lowercase)
        && has(char::is_ascii_uppercase)
        && has(char::is_ascii_digit)
}

use Category::*;
use Severity::*;

/// The managed identifiers.
pub static IDENTIFIERS: &[Identifier] = &[
    id(
        "CREDIT_CARD_NUMBER",
        FinancialInformation,
        High,
        r"\b(?:\d[ -]?){12,18}\d\b",
    )
    .validated(validate::card_number),
    id(
        "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
        FinancialInformation,
        High,
        r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
    )
    .validated(validate::iban),
    id(
        "USA_ROUTING_NUMBER",
        FinancialInformation,
        Medium,
        r"\b\d{9}\b",
    )
    .validated(validate::aba_routing)
    .near(&["routing", "aba", "rtn", "transit number", "bank"]),
    id(
        "USA_SOCIAL_SECURITY_NUMBER",
        PersonalInformation,
        High,
        r"\b\d{3}-\d{2}-\d{4}\b",
    )
    .validated(validate::us_ssn),
    id(
        "USA_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
        PersonalInformation,
        High,
        r"\b9\d{2}-\d{2}-\d{4}\b",
    )
    .validated(validate::us_itin),
    id(
        "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
        PersonalInformation,
        High,
        r"\b\d{3}[ -]?\d{3}[ -]?\d{4}\b",
    )
    .validated(validate::uk_nhs)
    .near(&["nhs", "health service", "patient"]),
    id(
        "UK_NATIONAL_INSURANCE_NUMBER",
        PersonalInformation,
        High,
        r"\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    )
    .validated(validate::uk_nino),
    id(
        "USA_NATIONAL_PROVIDER_IDENTIFIER",
        PersonalInformation,
        Medium,
        r"\b[12]\d{9}\b",
    )
    .validated(validate::us_npi)
    .near(&["npi", "provider"]),
    id(
        "USA_DRUG_ENFORCEMENT_AGENCY_NUMBER",
        PersonalInformation,
        Medium,
        r"\b[A-Z][A-Z9]\d{7}\b",
    )
    .validated(validate::us_dea)
    .near(&["dea"]),
    id(
        "CANADA_SOCIAL_INSURANCE_NUMBER",
        PersonalInformation,
        High,
        r"\b\d{3}[ -]?\d{3}[ -]?\d{3}\b",
    )
    .validated(validate::ca_sin)
    .near(&["sin", "social insurance", "numéro d'assurance sociale"]),
    id(
        "EMAIL_ADDRESS",
        PersonalInformation,
        Low,
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    ),
    id(
        "IPV4_ADDRESS",
        PersonalInformation,
        Low,
        r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
    ),
    id(
        "AWS_ACCESS_KEY_ID",
        Credentials,
        Medium,
        r"\b(?:AKIA|ASIA)[A-Z2-7]{16}\b",
    ),
    id(
        "AWS_SECRET_ACCESS_KEY",
        Credentials,
        High,
        r"(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+=]{40})(?:$|[^A-Za-z0-9/+=])",
    )
    .validated(high_entropy_secret)
    .near(&[
        "aws_secret",
        "secret_access_key",
        "secretaccesskey",
        "aws secret",
        "secret key",
    ]),
    id(
        "GITHUB_TOKEN",
        Credentials,
        High,
        r"\b(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b",
    ),
    id(
        "SLACK_TOKEN",
        Credentials,
        High,
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",
    ),
    id(
        "STRIPE_SECRET_KEY",
        Credentials,
        High,
        r"\b(?:sk|rk)_live_[A-Za-z0-9]{24,}\b",
    ),
    id(
        "GOOGLE_API_KEY",
        Credentials,
        High,
        r"\bAIza[0-9A-Za-z_-]{35}\b",
    ),
    id("NPM_TOKEN", Credentials, High, r"\bnpm_[A-Za-z0-9]{36}\b"),
    id(
        "SENDGRID_API_KEY",
        Credentials,
        High,
        r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b",
    ),
    id(
        "JSON_WEB_TOKEN",
        Credentials,
        Medium,
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    ),
    id(
        "PRIVATE_KEY",
        Credentials,
        High,
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
    ),
    id(
        "BASIC_AUTH_URL",
        Credentials,
        High,
        r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@[^\s/]+",
    ),
];

/// Where a value was found in a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based line and column (in characters).
    pub line: usize,
    pub column: usize,
    /// Byte range in the text.
    pub start: usize,
    pub end: usize,
}

/// One value an identifier matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    pub identifier: &'static str,
    pub category: Category,
    pub severity: Severity,
    pub location: Location,
    /// The value with all but its first and last characters masked (short values wholly).
    pub redacted: String,
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

fn compiled() -> &'static [Regex] {
    static C: OnceLock<Vec<Regex>> = OnceLock::new();
    C.get_or_init(|| {
        IDENTIFIERS
            .iter()
            // The patterns are constants tested below; a bad one is a build defect.
            .map(|i| Regex::new(i.pattern).unwrap_or_else(|e| panic!("{}: {e}", i.id)))
            .collect()
    })
}

/// Whether a keyword appears within `distance` characters before byte `at`.
fn keyword_near(text: &str, at: usize, distance: usize, keywords: &[&str]) -> bool {
    let mut from = at;
    for _ in 0..distance {
        match text[..from].char_indices().next_back() {
            Some((i, _)) => from = i,
            None => break,
        }
    }
    let window = text[from..at].to_lowercase();
    keywords.iter().any(|k| window.contains(k))
}

/// Every value in `text` a managed identifier finds, in text order.
pub fn scan(text: &str) -> Vec<Match> {
    let mut out = Vec::new();
    // Line starts, to turn byte offsets into lines and columns.
    let lines: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    for (ident, re) in IDENTIFIERS.iter().zip(compiled()) {
        for caps in re.captures_iter(text) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            let value = m.as_str();
            if ident.validator.is_some_and(|v| !v(value)) {
                continue;
            }
            if ident.keyword_required
                && !keyword_near(text, m.start(), ident.max_distance, ident.keywords)
            {
                continue;
            }
            let line = lines.partition_point(|&s| s <= m.start());
            let line_start = lines[line - 1];
            out.push(Match {
                identifier: ident.id,
                category: ident.category,
                severity: ident.severity,
                location: Location {
                    line,
                    column: text[line_start..m.start()].chars().count() + 1,
                    start: m.start(),
                    end: m.end(),
                },
                redacted: redact(value),
            });
        }
    }
    out.sort_by_key(|m| (m.location.start, m.identifier));
    // A value inside another identifier's (the host of a basic-auth URL that looks like an email
    // address) is that one's, not a finding of its own.
    let spans: Vec<(usize, usize, &str)> = out
        .iter()
        .map(|m| (m.location.start, m.location.end, m.identifier))
        .collect();
    out.retain(|m| {
        !spans.iter().any(|&(s, e, id)| {
            id != m.identifier
                && s <= m.location.start
                && m.location.end <= e
                && (e - s) > (m.location.end - m.location.start)
        })
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<&'static str> {
        scan(text).iter().map(|m| m.identifier).collect()
    }

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(compiled().len(), IDENTIFIERS.len());
    }

    #[test]
    fn finds_with_validators_and_keywords() {
        assert_eq!(
            ids("card: 4111 1111 1111 1111 exp 12/29"),
            ["CREDIT_CARD_NUMBER"]
        );
        assert!(ids("order 4111 1111 1111 1112").is_empty());
        assert_eq!(ids("SSN 123-45-6789"), ["USA_SOCIAL_SECURITY_NUMBER"]);
        assert!(ids("SSN 666-45-6789").is_empty());
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
        assert_eq!(ids("AKIAIOSFODNN7EXAMPLE"), ["AWS_ACCESS_KEY_ID"]);
        assert_eq!(
            ids("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ["AWS_SECRET_ACCESS_KEY"]
        );
        // A 40-character hex hash near the same words is not a secret key.
        assert!(ids("secret key sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12").is_empty());
        assert_eq!(
            ids("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"),
            ["PRIVATE_KEY"]
        );
        assert_eq!(
            ids("DATABASE_URL=postgres://app:hunter2@db.internal:5432/app"),
            ["BASIC_AUTH_URL"]
        );
    }

    #[test]
    fn locations_and_redaction() {
        let text = "first line\nsecond: 4111111111111111\n";
        let m = &scan(text)[0];
        assert_eq!((m.location.line, m.location.column), (2, 9));
        assert_eq!(&text[m.location.start..m.location.end], "4111111111111111");
        assert_eq!(m.redacted, "4**************1");
        assert!(!m.redacted.contains("4111111111111111"));
        assert_eq!(redact("123"), "***");
    }
}

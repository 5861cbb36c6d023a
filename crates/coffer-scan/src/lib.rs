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
#[cfg(feature = "vectorscan")]
mod vectorscan;

use serde::{Deserialize, Serialize};

pub use engine::{AllowList, BuildError, Context, Hit, Prefilter, Scanner, ScannerBuilder};
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

    /// The managed scanner on its default engine (Vectorscan when built with it) and on the
    /// pure-Rust one.
    fn scanners() -> &'static (Scanner, Scanner) {
        static BOTH: std::sync::OnceLock<(Scanner, Scanner)> = std::sync::OnceLock::new();
        BOTH.get_or_init(|| {
            // The other engine on the reference path (no run passed over on its masks, every
            // value confirmed by its regex): what the default scanner finds, found the slow way.
            let rust = Scanner::builder()
                .prefilter(engine::Prefilter::Rust)
                .reference(true)
                .build()
                .expect("managed identifiers");
            (Scanner::managed(), rust)
        })
    }

    fn found(s: &Scanner, text: &str) -> Vec<(String, usize, usize)> {
        s.scan(text, None)
            .iter()
            .map(|h| (s.rule(h.rule).id.clone(), h.start, h.end))
            .collect()
    }

    /// What the managed identifiers find in `text`. Also checks that both engines find exactly
    /// that, in the text as it is and padded past the length below which Vectorscan is not used.
    fn ids(text: &str) -> Vec<String> {
        let (auto, rust) = scanners();
        let plain = found(rust, text);
        assert_eq!(found(auto, text), plain, "{text:?}");
        let padded = format!("{text}\n{}", "plain words and nothing else. ".repeat(12));
        assert_eq!(found(auto, &padded), plain, "{text:?} padded");
        assert_eq!(found(rust, &padded), plain, "{text:?} padded");
        plain.into_iter().map(|h| h.0).collect()
    }

    /// Text as dense in digits as logs and records are (hex digests, UUIDs, timestamps, IPs,
    /// prices, versions) with values planted at random places, from a fixed seed.
    fn dense_text(seed: u64, values: &[&str]) -> String {
        let mut rng = anomaly::sim::Rng::new(seed);
        let mut pick = |n: usize| rng.below(n as u64) as usize;
        let hex = |pick: &mut dyn FnMut(usize) -> usize, n: usize| -> String {
            (0..n)
                .map(|_| char::from(b"0123456789abcdef"[pick(16)]))
                .collect()
        };
        let mut out = String::new();
        for i in 0..3000 {
            let line = match pick(9) {
                0 => format!(
                    "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z INFO ip=10.{}.{}.{} req={} ",
                    1 + pick(28),
                    pick(24),
                    pick(60),
                    pick(60),
                    pick(1000),
                    pick(256),
                    pick(256),
                    pick(256),
                    hex(&mut pick, 16)
                ),
                1 => format!(
                    "{{\"id\":\"{}-{}-{}\",\"sku\":\"SKU{}\",\"price\":{}.{:02}}} ",
                    hex(&mut pick, 8),
                    hex(&mut pick, 4),
                    hex(&mut pick, 12),
                    pick(99999),
                    pick(1000),
                    pick(100)
                ),
                2 => format!(
                    "version = \"1.{}.{}\" port = {} ",
                    pick(20),
                    pick(99),
                    pick(65536)
                ),
                3 => format!(
                    "{},Ana Ng,Lyon,{}.{:02},2026-{:02}-{:02} ",
                    pick(99999),
                    pick(9999),
                    pick(100),
                    1 + pick(12),
                    1 + pick(28)
                ),
                4 => format!(
                    "sha256 {} at {}:{} ",
                    hex(&mut pick, 64),
                    pick(99),
                    pick(99)
                ),
                5 => format!(
                    "{} {}-{} +{} {}@{} ",
                    pick(1 << 20),
                    pick(999),
                    pick(9999),
                    pick(99),
                    hex(&mut pick, 3),
                    pick(9)
                ),
                _ => values[pick(values.len())].to_owned(),
            };
            out.push_str(&line);
            if i % 3 == 0 {
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn the_engines_agree_on_what_the_fuzzer_found() {
        // fuzz/artifacts/scan_text/crash-6e3a7f90…: the automaton, matching leftmost-longest,
        // lost `secret` where it overlapped `social sec`; Vectorscan found the secret.
        let mut bytes = b"ca".to_vec();
        bytes.extend([0xcd; 85]);
        bytes.extend(b"rd[4444444444444\xef\xbf 4111 1cecsocial secret_a\0\0\0\0");
        bytes.extend(b"eyJasigning_keyK7MDENG/bPxRfi");
        let text = String::from_utf8_lossy(&bytes);
        let (auto, rust) = scanners();
        let want = found(rust, &text);
        assert_eq!(found(auto, &text), want);
        assert!(
            want.iter().any(|h| h.0 == "HIGH_ENTROPY_SECRET"),
            "{want:?}"
        );
    }

    /// The fast path passes over digit runs on what their bit masks and the bytes around them
    /// say (too few digits, no letters where an identifier wants them); the reference path
    /// tries every run. Random texts of the pieces that matter (letters glued to digits or one
    /// space or dash away, dates, times, check letters) find the same values both ways.
    #[test]
    fn the_fast_path_finds_what_the_reference_path_finds() {
        let pieces = [
            "GB82",
            "WEST",
            "AB",
            "ZZ",
            "X",
            "Y",
            "T",
            "SKU",
            "RSSMRA",
            "RSSMRALV",
            "85T10A562S",
            "12345678",
            "123456",
            "1234567",
            "98765432",
            "943",
            "4765919",
            "12",
            "34",
            "56",
            "2026-11-14",
            "07:55:50",
            "Z",
            "C",
            "L",
            "z",
            "a",
            "_",
            " ",
            " ",
            "-",
            "-",
            ".",
            "/",
            "\n",
            "é",
            "192.168.1.7",
            "000",
            "12345698765432",
            "X1234567L",
            "X-1234567-L",
            "AB123456C",
            "AB 12 34 56 C",
            "12345678Z",
            "12345678-Z",
            "RSSMRA85T10A562S",
            "GB82 WEST 1234 5698 7654 32",
        ];
        let found_any = fast_and_reference_agree(&pieces, 5, 16, 40);
        assert!(found_any > 1500, "{found_any} texts with values");
    }

    #[test]
    fn windows_cut_at_bytes_no_value_holds_lose_nothing() {
        // Email addresses, IPv6 and MAC addresses, IBANs and GitHub and GitLab tokens are
        // searched only within the bytes they are made of around their trigger; the reference
        // path searches the whole reach. Pieces of those values, glued and cut at random.
        let pieces = [
            "a.b+tag@mail.example.org",
            "x@y.io",
            "@",
            "%",
            ".",
            "fe80::1",
            "2001:db8::8a2e:370:7334",
            "::",
            ":",
            "::ffff:",
            "dead:beef:",
            "00:1A:2B:3C:4D:5E",
            "00-1a-2b-3c-4d-5e",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "glpat-abcDEF0123456789_-xyz",
            "GB82 WEST 1234 5698 7654 32",
            "GB82WEST12345698765432",
            "DE89370400440532013000",
            "_",
            "-",
            " ",
            "\n",
            "(",
            "Response",
            "é",
            "=",
        ];
        // Padded past the reach of an email address's window, so that the cut shows.
        let found_any = fast_and_reference_agree(&pieces, 11, 10, 140);
        assert!(found_any > 5000, "{found_any} texts with values");
    }

    /// 20,000 random texts of up to `most` pieces, as they are and after `pad` words: both
    /// scanners find the same values. Returns how many texts held any.
    fn fast_and_reference_agree(pieces: &[&str], seed: u64, most: u64, pad: usize) -> usize {
        let (auto, reference) = scanners();
        let mut rng = anomaly::sim::Rng::new(seed);
        let mut found_any = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..rng.below(most) {
                text.push_str(pieces[rng.below(pieces.len() as u64) as usize]);
            }
            let want = found(reference, &text);
            found_any += usize::from(!want.is_empty());
            assert_eq!(found(auto, &text), want, "{text:?}");
            let padded = format!("{}{text}", "x ".repeat(pad));
            assert_eq!(
                found(auto, &padded),
                found(reference, &padded),
                "{text:?} padded"
            );
        }
        found_any
    }

    #[test]
    fn a_few_identifiers_alone_on_texts_of_every_length() {
        // No identifier with a single-byte trigger, none with digits, neither: the byte pass has
        // nothing to look for at the padded end of the last block either.
        for only in [
            vec!["USA_SOCIAL_SECURITY_NUMBER".to_owned()],
            vec!["EMAIL_ADDRESS".to_owned()],
            vec!["GITHUB_TOKEN".to_owned()],
            vec![],
        ] {
            let s = Scanner::builder()
                .only(only.clone())
                .build()
                .expect("builds");
            let line = "ssn 123-45-6789 mail a.b@example.com\0\0 ";
            for n in 0..200 {
                let text: String = line.chars().cycle().take(n).collect();
                let hits = s.scan(&text, None);
                assert!(hits.iter().all(|h| h.end <= text.len()), "{only:?} {n}");
            }
            let long = line.repeat(40);
            let hits = s.scan(&long, None);
            match only.first().map(String::as_str) {
                Some("USA_SOCIAL_SECURITY_NUMBER") | Some("EMAIL_ADDRESS") => {
                    assert_eq!(hits.len(), 40, "{only:?}")
                }
                _ => assert!(hits.is_empty(), "{only:?}"),
            }
        }
    }

    #[test]
    fn both_engines_find_the_same_values_in_dense_text() {
        let values = [
            "card 4111 1111 1111 1111 exp 12/29 cvv 123 ",
            "SSN 123-45-6789 and ssn: 123456789 ",
            "routing number 021000021 bank account 12345678901 ",
            "IBAN GB82 WEST 1234 5698 7654 32 ",
            "NI AB 12 34 56 C, NHS number 943 476 5919 ",
            "DNI 12345678Z NIE X-1234567-L CF RSSMRA85T10A562S ",
            "CPF 123.456.789-09 phone: (415) 555-0132 call +44 20 7946 0958 ",
            "from 192.168.10.34 hw 00:1A:2B:3C:4D:5E host 2001:db8::7334 ",
            "DOB: 1984-07-23 write to jane.doe@example.com ",
            "AKIAZ3MHQ2J7VX4L6RTE token ghp_Zk9mQ2xvV3RyYjZ1c0hOa1pYa3ZhRk3x9b1Q ",
        ];
        let (auto, rust) = scanners();
        for seed in 1..=4 {
            let text = dense_text(seed, &values);
            let want = found(rust, &text);
            assert!(want.len() > 500, "{} values", want.len());
            assert_eq!(found(auto, &text), want, "seed {seed}");
            // Every planted value's identifiers are found.
            for id in [
                "CREDIT_CARD_NUMBER",
                "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
                "SPAIN_NIE_NUMBER",
                "IPV4_ADDRESS",
                "MAC_ADDRESS",
                "BRAZIL_CPF_NUMBER",
            ] {
                assert!(want.iter().any(|h| h.0 == id), "seed {seed}: no {id}");
            }
            // Nothing inside a digest, a UUID or a timestamp.
            for (id, start, end) in &want {
                let before = text[..*start].chars().next_back().unwrap_or(' ');
                assert!(
                    !before.is_ascii_hexdigit() || id == "IPV6_ADDRESS" || id == "MAC_ADDRESS",
                    "{id} at {start}..{end}: {:?}",
                    &text[start.saturating_sub(10)..*end]
                );
            }
        }
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
            // The last group of a run glued to letters both ways: the check letter's digits.
            ("ref WEST943-12345678Z", "SPAIN_DNI_NUMBER"),
            ("NIE X1234567L", "SPAIN_NIE_NUMBER"),
            ("NIE X-1234567-L", "SPAIN_NIE_NUMBER"),
            ("NINO AB123456C", "UK_NATIONAL_INSURANCE_NUMBER"),
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
            // A keyword overlapping another (`secret` begins inside `social sec`, an SSN
            // keyword) still counts: both engines report overlapping occurrences.
            (
                "social secret_a Zq8vR2mX9kL4pT7wN3bY6cH1",
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

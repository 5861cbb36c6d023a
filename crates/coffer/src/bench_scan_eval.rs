//! `coffer bench scan-accuracy`: the scanner's precision, recall and F1 per identifier over a
//! generated evaluation corpus — prose, logs, config and source-like text, CSV, JSON and JSON
//! Lines documents with planted, labelled values: valid ones, and hard negatives (numbers that
//! fail their checksum, UUIDs, digests, version strings, timestamps, the example keys of AWS's
//! documentation, placeholders) that must not be found. Each document is read through the same
//! readers `coffer scan` uses, and a finding counts only where a label puts that identifier.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use clap::Args;
use coffer_scan::validate as v;
use coffer_scan::{Limits, Place, Scanner};
use serde::Serialize;
use serde_json::json;

use crate::bench_scan::Rng;

#[derive(Debug, Args)]
pub struct AccuracyArgs {
    /// Documents generated.
    #[arg(long, default_value_t = 400)]
    docs: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the documents and their labels (labels.json) to this directory.
    #[arg(long, value_name = "DIR")]
    write_corpus: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// How to plant one identifier: draw a candidate, tell valid from not, and sentences to put it in.
struct Spec {
    id: &'static str,
    /// A checksum or a fixed structure: held to precision and recall of at least 0.95.
    structured: bool,
    draw: fn(&mut Rng) -> String,
    valid: Option<fn(&str) -> bool>,
    /// An invalid look-alike (else: a drawn candidate that fails `valid`).
    negative: Option<fn(&mut Rng) -> String>,
    contexts: &'static [&'static str],
}

fn digits(r: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + r.below(10) as u8))
        .collect()
}
fn upper(r: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'A' + r.below(26) as u8))
        .collect()
}
fn from(r: &mut Rng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| char::from(alphabet[r.below(alphabet.len())]))
        .collect()
}
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    for &n in sizes {
        out.push(&s[at..(at + n).min(s.len())]);
        at += n;
    }
    out.join(sep)
}

fn card(r: &mut Rng) -> String {
    let (prefix, len) = [
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("3528", 16),
    ][r.below(8)];
    let body = format!("{prefix}{}", digits(r, len - prefix.len()));
    match (r.below(3), len) {
        (0, 16) => group(&body, &[4, 4, 4, 4], " "),
        (1, 16) => group(&body, &[4, 4, 4, 4], "-"),
        (0 | 1, 15) => group(&body, &[4, 6, 5], " "),
        _ => body,
    }
}

fn iban(r: &mut Rng) -> String {
    let (cc, bban) = match r.below(3) {
        0 => ("DE", digits(r, 18)),
        1 => ("GB", format!("{}{}", upper(r, 4), digits(r, 14))),
        _ => ("FR", format!("{}{}", digits(r, 21), digits(r, 2))),
    };
    // Check digits: 98 minus the rearranged number (with 00) mod 97.
    let rearranged = format!("{bban}{cc}00");
    let mut rem = 0u64;
    for c in rearranged.chars() {
        let v = c.to_digit(36).unwrap_or(0) as u64;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    let mut s = format!("{cc}{:02}{bban}", 98 - rem);
    if r.below(2) == 0 {
        let chars: Vec<char> = s.chars().collect();
        s = chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ");
    }
    s
}

fn break_last_digit(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    if let Some(i) = b.iter().rposition(u8::is_ascii_digit) {
        b[i] = b'0' + (b[i] - b'0' + 1) % 10;
    }
    String::from_utf8(b).unwrap_or_default()
}

fn iban_bad(r: &mut Rng) -> String {
    break_last_digit(&iban(r))
}

fn routing(r: &mut Rng) -> String {
    format!(
        "{:02}{}",
        [1, 2, 3, 11, 21, 26, 31, 61, 71][r.below(9)],
        digits(r, 7)
    )
}
fn ssn(r: &mut Rng) -> String {
    group(&digits(r, 9), &[3, 2, 4], "-")
}
fn ssn_bad(r: &mut Rng) -> String {
    format!(
        "{}-{}-{}",
        ["666", "000"][r.below(2)],
        digits(r, 2),
        digits(r, 4)
    )
}
fn ssn_plain(r: &mut Rng) -> String {
    digits(r, 9)
}
fn itin(r: &mut Rng) -> String {
    format!(
        "9{}-{}-{}",
        digits(r, 2),
        [50, 65, 70, 88, 90, 94][r.below(6)],
        digits(r, 4)
    )
}
fn itin_bad(r: &mut Rng) -> String {
    format!(
        "9{}-{}-{}",
        digits(r, 2),
        [10, 20, 30, 45][r.below(4)],
        digits(r, 4)
    )
}
fn passport(r: &mut Rng) -> String {
    if r.below(2) == 0 {
        digits(r, 9)
    } else {
        format!("{}{}", upper(r, 1), digits(r, 8))
    }
}
fn passport_bad(_r: &mut Rng) -> String {
    "111111111".into()
}
fn mbi(r: &mut Rng) -> String {
    // C A AN N A AN N A A N N (letters never S, L, O, I, B, Z).
    const A: &[u8] = b"ACDEFGHJKMNPQRTUVWXY";
    const AN: &[u8] = b"ACDEFGHJKMNPQRTUVWXY0123456789";
    let s = [
        (1 + r.below(9)).to_string(),
        from(r, A, 1),
        from(r, AN, 1),
        digits(r, 1),
        from(r, A, 1),
        from(r, AN, 1),
        digits(r, 1),
        from(r, A, 2),
        digits(r, 2),
    ]
    .concat();
    if r.below(2) == 0 {
        group(&s, &[4, 3, 4], "-")
    } else {
        s
    }
}
fn mbi_bad(r: &mut Rng) -> String {
    format!("0S{}", digits(r, 9))
}
fn npi(r: &mut Rng) -> String {
    format!("{}{}", 1 + r.below(2), digits(r, 9))
}
fn dea(r: &mut Rng) -> String {
    format!("{}{}{}", from(r, b"ABFGM", 1), upper(r, 1), digits(r, 7))
}
fn nino(r: &mut Rng) -> String {
    let s = format!(
        "{}{}{}{}",
        from(r, b"ABCEGHJKLMNPRSTWXYZ", 1),
        from(r, b"ABCEGHJKLMNPRSTWXYZ", 1),
        digits(r, 6),
        from(r, b"ABCD", 1)
    );
    if r.below(2) == 0 {
        group(&s, &[2, 2, 2, 2, 1], " ")
    } else {
        s
    }
}
fn nino_bad(r: &mut Rng) -> String {
    format!("QQ{}E", digits(r, 6))
}
fn nhs(r: &mut Rng) -> String {
    group(&digits(r, 10), &[3, 3, 4], " ")
}
fn sin(r: &mut Rng) -> String {
    group(
        &format!("{}{}", 1 + r.below(7), digits(r, 8)),
        &[3, 3, 3],
        " ",
    )
}
fn dni(r: &mut Rng) -> String {
    format!("{}{}", digits(r, 8), upper(r, 1))
}
fn nie(r: &mut Rng) -> String {
    format!("{}{}{}", from(r, b"XYZ", 1), digits(r, 7), upper(r, 1))
}
fn nir(r: &mut Rng) -> String {
    let body = format!(
        "{}{}{:02}{:02}{}",
        1 + r.below(2),
        digits(r, 2),
        1 + r.below(12),
        1 + r.below(95),
        digits(r, 6)
    );
    let n: u64 = body.parse().unwrap_or(0);
    let key = 97 - n % 97;
    group(&format!("{body}{key:02}"), &[1, 2, 2, 2, 3, 3, 2], " ")
}
fn codice_fiscale(r: &mut Rng) -> String {
    let base = format!(
        "{}{}{}{:02}{}{}",
        upper(r, 6),
        digits(r, 2),
        from(r, b"ABCDEHLMPRST", 1),
        1 + r.below(31),
        upper(r, 1),
        digits(r, 3)
    );
    (b'A'..=b'Z')
        .map(|c| format!("{base}{}", char::from(c)))
        .find(|s| v::italy_codice_fiscale(s))
        .unwrap_or(base)
}
fn codice_fiscale_bad(r: &mut Rng) -> String {
    let good = codice_fiscale(r);
    let last = good.as_bytes()[15];
    format!(
        "{}{}",
        &good[..15],
        char::from(if last == b'Z' { b'A' } else { last + 1 })
    )
}
fn steuer_id(r: &mut Rng) -> String {
    let mut ds: Vec<u8> = (0..10).collect();
    for i in (1..ds.len()).rev() {
        ds.swap(i, r.below(i + 1));
    }
    let mut ten: Vec<u8> = ds[..9].to_vec();
    ten.push(ten[r.below(9)]);
    if ten[0] == 0 {
        ten.swap(0, 1);
    }
    let base: String = ten.iter().map(|d| char::from(b'0' + d)).collect();
    (0..10)
        .map(|c| format!("{base}{c}"))
        .find(|s| v::germany_tax_id(s))
        .unwrap_or(base)
}
fn cpf_formatted(r: &mut Rng) -> String {
    let d = digits(r, 11);
    format!("{}.{}.{}-{}", &d[..3], &d[3..6], &d[6..9], &d[9..])
}
fn cpf_plain(r: &mut Rng) -> String {
    digits(r, 11)
}
fn aadhaar(r: &mut Rng) -> String {
    group(
        &format!("{}{}", 2 + r.below(8), digits(r, 11)),
        &[4, 4, 4],
        " ",
    )
}
fn tfn(r: &mut Rng) -> String {
    group(&digits(r, 9), &[3, 3, 3], " ")
}
fn pesel(r: &mut Rng) -> String {
    format!(
        "{}{:02}{:02}{}",
        digits(r, 2),
        1 + r.below(12),
        1 + r.below(28),
        digits(r, 5)
    )
}
fn swift(r: &mut Rng) -> String {
    let bank = upper(r, 4);
    let country = ["DE", "FR", "GB", "US", "CH", "NL"][r.below(6)];
    let location = [upper(r, 1), digits(r, 1)].concat();
    let branch = if r.below(2) == 0 {
        digits(r, 3)
    } else {
        String::new()
    };
    format!("{bank}{country}{location}{branch}")
}
fn swift_bad(r: &mut Rng) -> String {
    format!("{}QQ{}", upper(r, 4), digits(r, 2))
}
fn bank_account(r: &mut Rng) -> String {
    let n = 8 + r.below(5);
    digits(r, n)
}
fn bank_account_bad(_r: &mut Rng) -> String {
    "12345678".into()
}
fn expiry(r: &mut Rng) -> String {
    format!("{:02}/{}", 1 + r.below(12), 26 + r.below(8))
}
fn expiry_bad(r: &mut Rng) -> String {
    format!("{}/{}", 13 + r.below(6), 26 + r.below(8))
}
fn cvv(r: &mut Rng) -> String {
    digits(r, 3)
}
fn cvv_bad(_r: &mut Rng) -> String {
    "n/a".into()
}
const FIRST: &[&str] = &[
    "Maria", "James", "Aiko", "Olu", "Priya", "Lukas", "Sofia", "Mateo", "Hannah", "Wei",
];
const LAST: &[&str] = &[
    "Garcia",
    "Okafor",
    "Tanaka",
    "Novak",
    "Schmidt",
    "Rossi",
    "Kowalski",
    "Fischer",
    "Lindqvist",
];
fn email(r: &mut Rng) -> String {
    format!(
        "{}.{}@{}.{}",
        r.pick(FIRST).to_lowercase(),
        r.pick(LAST).to_lowercase(),
        ["acme", "mail", "corp-example", "uni"][r.below(4)],
        ["com", "org", "de", "co.uk"][r.below(4)]
    )
}
fn email_bad(r: &mut Rng) -> String {
    format!("icon@{}x.png", 2 + r.below(2))
}
fn phone_e164(r: &mut Rng) -> String {
    match r.below(3) {
        0 => format!("+44 20 7946 {}", digits(r, 4)),
        1 => format!("+1 415 555 {}", digits(r, 4)),
        _ => format!("+49 30 {} {}", digits(r, 4), digits(r, 4)),
    }
}
fn phone_national(r: &mut Rng) -> String {
    format!(
        "({}{}) {}{}-{}",
        2 + r.below(8),
        digits(r, 2),
        2 + r.below(8),
        digits(r, 2),
        digits(r, 4)
    )
}
fn phone_bad(r: &mut Rng) -> String {
    format!("+0 {}", digits(r, 3))
}
fn ipv4(r: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        1 + r.below(223),
        r.below(256),
        r.below(256),
        1 + r.below(254)
    )
}
fn ipv4_bad(r: &mut Rng) -> String {
    format!("{}.{}.{}", 1 + r.below(9), r.below(20), r.below(100))
}
fn ipv6(r: &mut Rng) -> String {
    if r.below(2) == 0 {
        (0..8)
            .map(|_| from(r, HEX, 4))
            .collect::<Vec<_>>()
            .join(":")
    } else {
        format!("2001:db8:{}::{}", from(r, HEX, 4), from(r, HEX, 3))
    }
}
fn ipv6_bad(r: &mut Rng) -> String {
    format!("{:02}:{:02}:{:02}", r.below(24), r.below(60), r.below(60))
}
fn mac(r: &mut Rng) -> String {
    (0..6)
        .map(|_| from(r, b"0123456789ABCDEF", 2))
        .collect::<Vec<_>>()
        .join(":")
}
fn mac_bad(_r: &mut Rng) -> String {
    "00:00:00:00:00:00".into()
}
fn dob(r: &mut Rng) -> String {
    let (y, m, d) = (1940 + r.below(70), 1 + r.below(12), 1 + r.below(28));
    if r.below(2) == 0 {
        format!("{y}-{m:02}-{d:02}")
    } else {
        format!("{d:02}/{m:02}/{y}")
    }
}
fn dob_bad(r: &mut Rng) -> String {
    format!(
        "{}-{}-{}",
        1940 + r.below(70),
        13 + r.below(6),
        32 + r.below(5)
    )
}
fn address(r: &mut Rng) -> String {
    format!(
        "{} {} {}",
        1 + r.below(9999),
        ["Evergreen", "Maple", "Harbor", "Oak Hill", "Lincoln"][r.below(5)],
        ["Street", "Avenue", "Road", "Terrace", "Lane", "Drive"][r.below(6)]
    )
}
/// Capitalised phrases that are not people, in the places names go.
fn name_bad(r: &mut Rng) -> String {
    [
        "Quarterly Report",
        "Project Phoenix",
        "Customer Service",
        "Room Seven",
        "Annual Review Board",
        "Blue Team",
    ][r.below(6)]
    .into()
}

/// Numbered things that are not street addresses.
fn address_bad(r: &mut Rng) -> String {
    [
        "3 Way Handshake",
        "12 Angry Men Court",
        "2 Factor Authentication Drive",
        "404 Not Found Lane",
    ][r.below(4)]
    .into()
}

fn name(r: &mut Rng) -> String {
    format!("{} {}", r.pick(FIRST), r.pick(LAST))
}
fn aws_key_id(r: &mut Rng) -> String {
    format!("AKIA{}", from(r, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16))
}
fn aws_key_id_bad(_r: &mut Rng) -> String {
    "AKIAIOSFODNN7EXAMPLE".into()
}
fn random_secret(r: &mut Rng, alphabet: &[u8], n: usize) -> String {
    loop {
        let s = from(r, alphabet, n);
        if v::high_entropy_secret(&s) {
            return s;
        }
    }
}
fn aws_secret(r: &mut Rng) -> String {
    random_secret(r, B64, 40)
}
fn aws_secret_bad(r: &mut Rng) -> String {
    if r.below(2) == 0 {
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()
    } else {
        from(r, HEX, 40)
    }
}
fn gcp_key(r: &mut Rng) -> String {
    format!("\"private_key_id\": \"{}\"", from(r, HEX, 40))
}
fn google_api_key(r: &mut Rng) -> String {
    format!("AIza{}", from(r, B64URL, 35))
}
fn azure_key(r: &mut Rng) -> String {
    let bytes: Vec<u8> = (0..64).map(|_| r.below(256) as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
fn azure_sas(r: &mut Rng) -> String {
    format!(
        "sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2026-12-01T00:00:00Z&sig={}%3D",
        from(r, ALNUM, 43)
    )
}
fn github(r: &mut Rng) -> String {
    format!("ghp_{}", from(r, ALNUM, 36))
}
fn github_bad(r: &mut Rng) -> String {
    format!("ghp_{}", from(r, ALNUM, 12))
}
fn gitlab(r: &mut Rng) -> String {
    format!("glpat-{}", from(r, ALNUM, 20))
}
fn slack(r: &mut Rng) -> String {
    format!(
        "xoxb-{}-{}-{}",
        digits(r, 12),
        digits(r, 13),
        from(r, ALNUM, 24)
    )
}
fn slack_webhook(r: &mut Rng) -> String {
    format!(
        "https://hooks.slack.com/services/T{}/B{}/{}",
        from(r, b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", 8),
        from(r, b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", 8),
        from(r, ALNUM, 24)
    )
}
fn stripe(r: &mut Rng) -> String {
    let n = 24 + r.below(20);
    format!("sk_live_{}", from(r, ALNUM, n))
}
fn stripe_bad(r: &mut Rng) -> String {
    format!("sk_test_{}", from(r, ALNUM, 24))
}
fn twilio(r: &mut Rng) -> String {
    format!("SK{}", from(r, HEX, 32))
}
fn sendgrid(r: &mut Rng) -> String {
    format!("SG.{}.{}", from(r, B64URL, 22), from(r, B64URL, 43))
}
fn npm(r: &mut Rng) -> String {
    format!("npm_{}", from(r, ALNUM, 36))
}
fn pypi(r: &mut Rng) -> String {
    format!("pypi-AgEIcHlwaS5vcmc{}", from(r, B64URL, 70))
}
fn jwt(r: &mut Rng) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        e(r#"{"alg":"HS256","typ":"JWT"}"#),
        e(&format!(
            r#"{{"sub":"{}","iat":{}}}"#,
            digits(r, 6),
            digits(r, 10)
        )),
        from(r, B64URL, 43)
    )
}
fn jwt_bad(r: &mut Rng) -> String {
    format!("eyJub3QiOiJhIGp3dCJ9.{}", from(r, B64URL, 20))
}
fn pem(r: &mut Rng) -> String {
    format!(
        "-----BEGIN {}PRIVATE KEY-----",
        ["", "RSA ", "EC ", "ENCRYPTED "][r.below(4)]
    )
}
fn pem_bad(r: &mut Rng) -> String {
    ["-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----"][r.below(2)].into()
}
fn openssh(_r: &mut Rng) -> String {
    "-----BEGIN OPENSSH PRIVATE KEY-----".into()
}
fn pgp(_r: &mut Rng) -> String {
    "-----BEGIN PGP PRIVATE KEY BLOCK-----".into()
}
fn pgp_bad(_r: &mut Rng) -> String {
    "-----BEGIN PGP PUBLIC KEY BLOCK-----".into()
}
fn putty(r: &mut Rng) -> String {
    format!("PuTTY-User-Key-File-{}: ssh-rsa", 2 + r.below(2))
}
fn password(r: &mut Rng) -> String {
    format!("{}{}!{}", r.pick(LAST), digits(r, 3), from(r, ALNUM, 4))
}
fn password_bad(r: &mut Rng) -> String {
    ["${DB_PASSWORD}", "********", "<password>", "null"][r.below(4)].into()
}
fn basic_auth(r: &mut Rng) -> String {
    format!(
        "postgres://svc:{}@db{}.internal:5432",
        password(r),
        r.below(9)
    )
}
fn basic_auth_bad(r: &mut Rng) -> String {
    format!("https://docs.example.org:{}", 8000 + r.below(999))
}
fn bearer(r: &mut Rng) -> String {
    let n = 32 + r.below(16);
    from(r, B64URL, n)
}
fn bearer_bad(_r: &mut Rng) -> String {
    "<token>".into()
}
fn secret(r: &mut Rng) -> String {
    let n = 24 + r.below(12);
    random_secret(r, ALNUM, n)
}
fn secret_bad(r: &mut Rng) -> String {
    if r.below(2) == 0 {
        uuid(r)
    } else {
        from(r, HEX, 64)
    }
}

#[rustfmt::skip]
fn specs() -> Vec<Spec> {
    fn s(
        id: &'static str,
        structured: bool,
        draw: fn(&mut Rng) -> String,
        valid: Option<fn(&str) -> bool>,
        negative: Option<fn(&mut Rng) -> String>,
        contexts: &'static [&'static str],
    ) -> Spec {
        Spec {
            id,
            structured,
            draw,
            valid,
            negative,
            contexts,
        }
    }
    vec![
        s("CREDIT_CARD_NUMBER", true, card, Some(v::card_number), None, &["card number {}", "Paid with {} yesterday.", "cc={}", "{}"]),
        s("CREDIT_CARD_EXPIRATION", true, expiry, None, Some(expiry_bad), &["exp {}", "expiry date: {}", "valid thru {}"]),
        s("CREDIT_CARD_SECURITY_CODE", true, cvv, None, Some(cvv_bad), &["CVV {}", "security code: {}"]),
        s("INTERNATIONAL_BANK_ACCOUNT_NUMBER", true, iban, Some(v::iban), Some(iban_bad), &["IBAN {}", "transfer to {} by friday", "{}"]),
        s("USA_ROUTING_NUMBER", true, routing, Some(v::aba_routing), None, &["routing number {}", "ABA {}", "bank routing: {}"]),
        s("SWIFT_CODE", true, swift, Some(v::swift_bic), Some(swift_bad), &["SWIFT: {}", "BIC {}", "swift code {}"]),
        s("BANK_ACCOUNT_NUMBER", false, bank_account, Some(v::not_trivial), Some(bank_account_bad), &["account number {}", "acct {}", "bank account: {}"]),
        s("USA_SOCIAL_SECURITY_NUMBER", true, ssn, Some(v::us_ssn), Some(ssn_bad), &["SSN {}", "social security number: {}", "{}"]),
        s("USA_SOCIAL_SECURITY_NUMBER", true, ssn_plain, Some(v::us_ssn), None, &["ssn: {}", "SSN# {}"]),
        s("USA_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", true, itin, Some(v::us_itin), Some(itin_bad), &["ITIN {}", "taxpayer id {}"]),
        s("USA_PASSPORT_NUMBER", true, passport, Some(v::us_passport), Some(passport_bad), &["passport number {}", "Passport No. {}"]),
        s("USA_MEDICARE_BENEFICIARY_IDENTIFIER", true, mbi, Some(v::us_mbi), Some(mbi_bad), &["Medicare MBI {}", "medicare number: {}"]),
        s("USA_NATIONAL_PROVIDER_IDENTIFIER", true, npi, Some(v::us_npi), None, &["NPI {}", "provider NPI: {}"]),
        s("USA_DRUG_ENFORCEMENT_AGENCY_NUMBER", true, dea, Some(v::us_dea), None, &["DEA number {}", "DEA# {}"]),
        s("UK_NATIONAL_INSURANCE_NUMBER", true, nino, Some(v::uk_nino), Some(nino_bad), &["NI number {}", "National Insurance: {}", "{}"]),
        s("UK_NATIONAL_HEALTH_SERVICE_NUMBER", true, nhs, Some(v::uk_nhs), None, &["NHS number {}", "NHS No: {}"]),
        s("CANADA_SOCIAL_INSURANCE_NUMBER", true, sin, Some(v::ca_sin), None, &["SIN {}", "social insurance number {}"]),
        s("SPAIN_DNI_NUMBER", true, dni, Some(v::spain_dni), None, &["DNI {}", "{}"]),
        s("SPAIN_NIE_NUMBER", true, nie, Some(v::spain_nie), None, &["NIE {}", "{}"]),
        s("FRANCE_NATIONAL_IDENTIFICATION_NUMBER", true, nir, Some(v::france_nir), None, &["NIR {}", "INSEE {}"]),
        s("ITALY_NATIONAL_IDENTIFICATION_NUMBER", true, codice_fiscale, Some(v::italy_codice_fiscale), Some(codice_fiscale_bad), &["codice fiscale {}", "CF: {}", "{}"]),
        s("GERMANY_TAX_IDENTIFICATION_NUMBER", true, steuer_id, Some(v::germany_tax_id), None, &["Steuer-ID {}", "tax id {}"]),
        s("NETHERLANDS_CITIZEN_SERVICE_NUMBER", true, ssn_plain, Some(v::netherlands_bsn), None, &["BSN {}", "burgerservicenummer {}"]),
        s("BRAZIL_CPF_NUMBER", true, cpf_formatted, Some(v::brazil_cpf), None, &["CPF {}", "{}"]),
        s("BRAZIL_CPF_NUMBER", true, cpf_plain, Some(v::brazil_cpf), None, &["CPF: {}"]),
        s("INDIA_AADHAAR_NUMBER", true, aadhaar, Some(v::india_aadhaar), None, &["Aadhaar {}", "UIDAI {}"]),
        s("AUSTRALIA_TAX_FILE_NUMBER", true, tfn, Some(v::australia_tfn), None, &["TFN {}", "tax file number {}"]),
        s("POLAND_PESEL_NUMBER", true, pesel, Some(v::poland_pesel), None, &["PESEL {}"]),
        s("EMAIL_ADDRESS", true, email, None, Some(email_bad), &["contact {}", "email: {}", "{}"]),
        s("PHONE_NUMBER", false, phone_e164, Some(v::phone_e164), Some(phone_bad), &["call {}", "tel: {}", "{}"]),
        s("PHONE_NUMBER", false, phone_national, Some(v::phone_nanp), None, &["phone: {}", "mobile {}"]),
        s("IPV4_ADDRESS", true, ipv4, None, Some(ipv4_bad), &["from {}", "ip={}", "{}"]),
        s("IPV6_ADDRESS", true, ipv6, Some(v::ipv6), Some(ipv6_bad), &["addr {}", "{}"]),
        s("MAC_ADDRESS", true, mac, Some(v::mac_address), Some(mac_bad), &["hw {}", "mac={}"]),
        s("DATE_OF_BIRTH", false, dob, Some(v::birth_date), Some(dob_bad), &["DOB: {}", "date of birth {}", "born {}"]),
        s("ADDRESS", false, address, None, Some(address_bad), &["ship to {}", "lives at {}"]),
        s("NAME", false, name, None, Some(name_bad), &["Name: {}", "Patient: {}", "Dear {},"]),
        s("AWS_ACCESS_KEY_ID", true, aws_key_id, None, Some(aws_key_id_bad), &["aws_access_key_id = {}", "{}"]),
        s("AWS_SECRET_ACCESS_KEY", true, aws_secret, None, Some(aws_secret_bad), &["aws_secret_access_key = {}", "AWS secret key: {}"]),
        s("GCP_SERVICE_ACCOUNT_KEY", true, gcp_key, None, None, &["{\"type\": \"service_account\", {}}"]),
        s("GOOGLE_API_KEY", true, google_api_key, None, None, &["key={}", "{}"]),
        s("AZURE_STORAGE_ACCOUNT_KEY", true, azure_key, None, None, &[ "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={};EndpointSuffix=core.windows.net", ]),
        s("AZURE_SAS_TOKEN", true, azure_sas, None, None, &["https://acme.blob.core.windows.net/c/f.csv?{}"]),
        s("GITHUB_TOKEN", true, github, None, Some(github_bad), &["GITHUB_TOKEN={}", "token {}"]),
        s("GITLAB_TOKEN", true, gitlab, None, None, &["GITLAB_TOKEN={}", "{}"]),
        s("SLACK_TOKEN", true, slack, None, None, &["SLACK_BOT_TOKEN={}", "{}"]),
        s("SLACK_WEBHOOK_URL", true, slack_webhook, None, None, &["webhook: {}"]),
        s("STRIPE_SECRET_KEY", true, stripe, None, Some(stripe_bad), &["STRIPE_KEY={}", "{}"]),
        s("TWILIO_API_KEY", true, twilio, None, None, &["TWILIO_API_KEY={}", "{}"]),
        s("SENDGRID_API_KEY", true, sendgrid, None, None, &["SENDGRID_API_KEY={}"]),
        s("NPM_TOKEN", true, npm, None, None, &["//registry.npmjs.org/:_authToken={}"]),
        s("PYPI_TOKEN", true, pypi, None, None, &["password = {}"]),
        s("JSON_WEB_TOKEN", true, jwt, Some(v::jwt), Some(jwt_bad), &["jwt={}", "{}"]),
        s("PEM_PRIVATE_KEY", true, pem, None, Some(pem_bad), &["{}"]),
        s("OPENSSH_PRIVATE_KEY", true, openssh, None, None, &["{}"]),
        s("PGP_PRIVATE_KEY", true, pgp, None, Some(pgp_bad), &["{}"]),
        s("PUTTY_PRIVATE_KEY", true, putty, None, None, &["{}"]),
        s("CONNECTION_STRING_PASSWORD", false, password, Some(v::password_value), Some(password_bad), &["Server=db01;Database=app;User Id=svc;Password={};"]),
        s("CONFIG_PASSWORD", false, password, Some(v::password_value), Some(password_bad), &["db_password: {}", "SMTP_PASSWORD={}"]),
        s("BASIC_AUTH_URL", true, basic_auth, None, Some(basic_auth_bad), &["DATABASE_URL={}/app"]),
        s("HTTP_AUTHORIZATION_HEADER", true, bearer, None, Some(bearer_bad), &["Authorization: Bearer {}"]),
        s("HIGH_ENTROPY_SECRET", false, secret, Some(v::high_entropy_secret), Some(secret_bad), &["client_secret = \"{}\"", "api_key: {}"]),
    ]
}

/// Background that holds nothing to find, with the usual look-alikes.
fn uuid(r: &mut Rng) -> String {
    [
        from(r, HEX, 8),
        from(r, HEX, 4),
        format!("4{}", from(r, HEX, 3)),
        format!("a{}", from(r, HEX, 3)),
        from(r, HEX, 12),
    ]
    .join("-")
}

fn background(r: &mut Rng) -> String {
    match r.below(6) {
        0 => format!(
            "The {} review for order {} is due on 2026-{:02}-{:02}; build v{}.{}.{} passed.",
            ["quarterly", "annual", "weekly"][r.below(3)],
            digits(r, 5),
            1 + r.below(12),
            1 + r.below(28),
            r.below(9),
            r.below(30),
            r.below(99)
        ),
        1 => {
            let (day, h, m, sec, ms) = (1 + r.below(28), r.below(24), r.below(60), r.below(60), digits(r, 3));
            let id = uuid(r);
            let took = r.below(900);
            format!("2026-11-{day:02}T{h:02}:{m:02}:{sec:02}.{ms}Z INFO request_id={id} took {took} ms")
        }
        2 => format!("commit {} merged; checksum sha256:{}", from(r, HEX, 40), from(r, HEX, 64)),
        3 => {
            let (invoice, euros, cents) = (digits(r, 6), r.below(5000), r.below(100));
            let epoch = digits(r, 11);
            format!("invoice INV-2026-{invoice} total {euros}.{cents:02} EUR, epoch 17{epoch}")
        }
        4 => "See the docs: AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY are placeholders.".into(),
        _ => format!(
            "release {}.{}.{} of the {} service ships with {} workers",
            r.below(5),
            r.below(20),
            r.below(50),
            ["billing", "search", "auth"][r.below(3)],
            r.below(64)
        ),
    }
}

/// A planted value: the identifier, the sentence, and where in it the value is.
struct Plant {
    id: &'static str,
    positive: bool,
    sentence: String,
    at: (usize, usize),
}

fn plant(r: &mut Rng, spec: &Spec, positive: bool) -> Option<Plant> {
    let value = if positive {
        (0..2000)
            .map(|_| (spec.draw)(r))
            .find(|c| spec.valid.is_none_or(|f| f(c)))?
    } else if let Some(neg) = spec.negative {
        neg(r)
    } else {
        let f = spec.valid?;
        (0..2000).map(|_| (spec.draw)(r)).find(|c| !f(c))?
    };
    let ctx = r.pick(spec.contexts);
    let at = ctx.find("{}")?;
    let sentence = ctx.replacen("{}", &value, 1);
    Some(Plant {
        id: spec.id,
        positive,
        sentence,
        at: (at, at + value.len()),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Label {
    Text { start: usize, end: usize },
    Cell { row: usize, column: usize },
    Record { record: usize, json_path: String },
}

#[derive(Debug, Serialize)]
struct LabelEntry {
    document: String,
    identifier: &'static str,
    positive: bool,
    place: Label,
}

/// One document: its name, bytes, and labels.
fn document(r: &mut Rng, index: usize, specs: &[Spec]) -> (String, Vec<u8>, Vec<LabelEntry>) {
    let plants: Vec<Plant> = (0..(4 + r.below(8)))
        .filter_map(|_| {
            let spec = &specs[r.below(specs.len())];
            let positive = r.below(3) != 0;
            plant(r, spec, positive)
        })
        .collect();
    let kind = r.below(5);
    let ext = ["txt", "log", "csv", "json", "jsonl"][kind];
    let name = format!("doc{index:05}.{ext}");
    let mut labels = Vec::new();
    let mut label = |id: &'static str, positive: bool, place: Label| {
        labels.push(LabelEntry {
            document: name.clone(),
            identifier: id,
            positive,
            place,
        });
    };
    let bytes = match ext {
        "txt" | "log" => {
            let mut text = String::new();
            for p in &plants {
                for _ in 0..(1 + r.below(3)) {
                    text.push_str(&background(r));
                    text.push('\n');
                }
                let start = text.len() + p.at.0;
                label(
                    p.id,
                    p.positive,
                    Label::Text {
                        start,
                        end: text.len() + p.at.1,
                    },
                );
                text.push_str(&p.sentence);
                text.push('\n');
            }
            text.push_str(&background(r));
            text.push('\n');
            text.into_bytes()
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(["seq", "note"]);
            for (i, p) in plants.iter().enumerate() {
                let _ = w.write_record([format!("{}", 100 + i), p.sentence.clone()]);
                label(
                    p.id,
                    p.positive,
                    Label::Cell {
                        row: i + 2,
                        column: 2,
                    },
                );
            }
            w.into_inner().unwrap_or_default()
        }
        "json" => {
            let records: Vec<_> = plants
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    label(
                        p.id,
                        p.positive,
                        Label::Record {
                            record: 0,
                            json_path: format!("$.records[{i}].note"),
                        },
                    );
                    json!({"seq": 100 + i, "note": p.sentence, "comment": background(r)})
                })
                .collect();
            serde_json::to_vec_pretty(&json!({ "records": records })).unwrap_or_default()
        }
        _ => {
            let mut out = Vec::new();
            for (i, p) in plants.iter().enumerate() {
                label(
                    p.id,
                    p.positive,
                    Label::Record {
                        record: i,
                        json_path: "$.note".into(),
                    },
                );
                out.extend_from_slice(
                    json!({"seq": i, "note": p.sentence, "comment": background(r)})
                        .to_string()
                        .as_bytes(),
                );
                out.push(b'\n');
            }
            out
        }
    };
    (name, bytes, labels)
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Score {
    tp: u64,
    fp: u64,
    r#fn: u64,
}

impl Score {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.r#fn == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.r#fn) as f64
        }
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn matches(label: &Label, place: &Place) -> bool {
    match (label, place) {
        (
            Label::Text { start, end },
            Place::Text {
                start: s, end: e, ..
            },
        ) => s < end && start < e,
        (
            Label::Cell { row, column },
            Place::Cell {
                row: r, column: c, ..
            },
        ) => row == r && column == c,
        (
            Label::Record { record, json_path },
            Place::Record {
                record: r,
                json_path: p,
            },
        ) => record == r && json_path == p,
        _ => false,
    }
}

pub fn run(args: AccuracyArgs) -> anyhow::Result<()> {
    let specs = specs();
    let scanner = Scanner::managed();
    let limits = Limits::default();
    let mut r = Rng::new(args.seed);
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    for s in &specs {
        scores.entry(s.id.to_owned()).or_default();
    }
    let mut all_labels = Vec::new();
    if let Some(dir) = &args.write_corpus {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for i in 0..args.docs {
        let (name, bytes, labels) = document(&mut r, i, &specs);
        if let Some(dir) = &args.write_corpus {
            std::fs::write(dir.join(&name), &bytes)?;
        }
        let report = coffer_scan::read::scan_bytes(&scanner, &name, &bytes, &limits)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let mut matched = vec![false; labels.len()];
        for f in &report.findings {
            let mut true_hits = 0u64;
            for loc in &f.locations {
                let hit = labels.iter().enumerate().find(|(_, l)| {
                    l.positive && l.identifier == f.identifier && matches(&l.place, &loc.place)
                });
                if let Some((j, _)) = hit
                    && !matched[j]
                {
                    matched[j] = true;
                    true_hits += 1;
                }
            }
            let s = scores.entry(f.identifier.clone()).or_default();
            s.tp += true_hits;
            s.fp += f.count - true_hits;
        }
        for (j, l) in labels.iter().enumerate() {
            if l.positive && !matched[j] {
                scores.entry(l.identifier.to_owned()).or_default().r#fn += 1;
            }
        }
        all_labels.extend(labels);
    }
    if let Some(dir) = &args.write_corpus {
        std::fs::write(
            dir.join("labels.json"),
            serde_json::to_vec_pretty(&all_labels)?,
        )?;
    }
    let structured: Vec<&str> = specs
        .iter()
        .filter(|s| s.structured)
        .map(|s| s.id)
        .collect();
    let total = scores.values().fold(Score::default(), |a, s| Score {
        tp: a.tp + s.tp,
        fp: a.fp + s.fp,
        r#fn: a.r#fn + s.r#fn,
    });
    if args.json {
        let rows: Vec<_> = scores
            .iter()
            .map(|(id, s)| {
                json!({
                    "identifier": id,
                    "structured": structured.contains(&id.as_str()),
                    "tp": s.tp, "fp": s.fp, "fn": s.r#fn,
                    "precision": s.precision(), "recall": s.recall(), "f1": s.f1(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "documents": args.docs,
                "seed": args.seed,
                "labels": all_labels.len(),
                "identifiers": rows,
                "micro": {"tp": total.tp, "fp": total.fp, "fn": total.r#fn,
                          "precision": total.precision(), "recall": total.recall(), "f1": total.f1()},
            }))?
        );
    } else {
        println!(
            "{:<42} {:>5} {:>5} {:>5} {:>9} {:>7} {:>6}",
            "identifier", "TP", "FP", "FN", "precision", "recall", "F1"
        );
        for (id, s) in &scores {
            println!(
                "{:<42} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>6.3}{}",
                id,
                s.tp,
                s.fp,
                s.r#fn,
                s.precision(),
                s.recall(),
                s.f1(),
                if structured.contains(&id.as_str()) {
                    ""
                } else {
                    "  (keyword/context driven)"
                }
            );
        }
        println!(
            "{:<42} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>6.3}",
            "all (micro)",
            total.tp,
            total.fp,
            total.r#fn,
            total.precision(),
            total.recall(),
            total.f1()
        );
        println!(
            "{} documents, {} labels (seed {})",
            args.docs,
            all_labels.len(),
            args.seed
        );
    }
    Ok(())
}

//! Identifiers: the managed ones (a pattern, a validator where one exists, keywords, and the cheap
//! trigger that decides where the pattern is tried) and custom ones built from a user's regex.

use regex_automata::meta::Regex;
use serde::Deserialize;

use crate::validate as v;
use crate::{Category, Severity};

/// Where an identifier's pattern is tried. Nothing is run over the whole text: the prefilter
/// finds triggers in one pass, and each pattern runs only in a window around them.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// ASCII literals, one of which every match contains: lowercase and found ignoring case, or
    /// with `cased` found as written. With `word`, the literal must end a word (the next byte is
    /// not a letter or digit); with `bounded`, a literal beginning with a letter or digit must
    /// begin one (the pattern has `\b` before it).
    Literals {
        literals: Vec<String>,
        word: bool,
        cased: bool,
        bounded: bool,
    },
    /// A run of at least `min` digits (single spaces, dashes, dots or slashes between groups).
    Digits { min: usize },
    /// One of the identifier's keywords; the value follows within the maximum distance.
    Keywords,
    /// No literal at all (a custom regex without one and without keywords): the whole text.
    Everywhere,
}

/// A cheap test at a trigger, before any pattern runs.
pub type Precheck = fn(text: &[u8], start: usize, end: usize) -> bool;

/// A search that finds exactly what an identifier's pattern finds in `text[from..to]` (every
/// match, leftmost-first, each search starting where the last match ended), without the regex:
/// calls `found(start, end)` for each and returns true, or returns false without a call when the
/// regex must decide (a byte that is not ASCII, where the pattern's `\d` is Unicode-aware).
pub type Finder =
    fn(text: &[u8], from: usize, to: usize, found: &mut dyn FnMut(usize, usize)) -> bool;

/// An identifier, managed or custom.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub category: Category,
    pub severity: Severity,
    pub(crate) regex: Regex,
    /// Whether capture group 1, not the whole match, is the value.
    pub(crate) group: bool,
    pub(crate) validator: Option<fn(&str) -> bool>,
    pub(crate) trigger: Trigger,
    pub(crate) precheck: Option<Precheck>,
    /// The pattern's search in code, for identifiers found so often that the regex's set-up per
    /// window shows (an IPv4 address on every log line).
    pub(crate) finder: Option<Finder>,
    /// Lowercase keywords.
    pub(crate) keywords: Vec<String>,
    /// Whether a keyword is required near the value (else keywords only name the data).
    pub(crate) keyword_required: bool,
    /// Characters allowed between the end of a keyword and the end of the value (as Macie's
    /// `maximumMatchDistance`).
    pub(crate) max_distance: usize,
    /// Longest value; bounds the window searched around a trigger.
    pub(crate) max_len: usize,
    /// Values containing one of these (lowercase) are not findings.
    pub(crate) ignore_words: Vec<String>,
    /// 0 for a specific identifier; higher for generic ones, which yield to any less generic
    /// identifier whose value overlaps theirs.
    pub(crate) generic: u8,
    /// For digit-triggered identifiers: whether their digits may follow a letter (`GLUE_BEFORE`,
    /// an IBAN's `GB82`) or precede one (`GLUE_AFTER`, a DNI's check letter). Others are not
    /// tried on the digit group glued to a word (the digits of a hex digest or a UUID). With
    /// `LETTERS_BEFORE` or `LETTER_AFTER`, their digits always have letters there.
    pub(crate) glue: u8,
    /// With `LETTERS_BEFORE`: how many uppercase letters come right before the digits (fewest,
    /// most), after which a word boundary (an IBAN's `GB`, a codice fiscale's six or more).
    pub(crate) letters: (u8, u8),
    /// With `LETTERS_BEFORE` or `LETTER_AFTER`: a byte that may stand between the letters and
    /// the digits (a NINO's space, an NIE's or a DNI's dash); 0 for none.
    pub(crate) gap: u8,
    /// For identifiers triggered by a single byte: whether that byte always has a letter, a
    /// digit, `_` or another trigger byte right before or after it in a value (its precheck
    /// asks as much), so the byte pass may pass over the others.
    pub(crate) touching: bool,
    /// For identifiers triggered by a single byte: how many bytes on the same byte always comes
    /// again (a MAC address's second separator, 3 on); 0 when nothing is known.
    pub(crate) partner: u8,
    /// For digit-triggered identifiers: the dots and dashes a run needs (an IPv4 address has
    /// three dots, a formatted SSN two dashes).
    pub(crate) dots: u8,
    pub(crate) dashes: u8,
    /// How far before its trigger's start a value may begin, and past its trigger's end it may
    /// end: the window the pattern searches (`max_len` each unless the pattern says less).
    pub(crate) lead: usize,
    pub(crate) trail: usize,
    /// For identifiers triggered by a literal or a digit run: the bytes a value is made of (its
    /// trigger's among them). The window around a trigger then ends where one of the others
    /// comes, rather than a whole `lead` and `trail` away (an email address's window ends at the
    /// spaces around it).
    pub(crate) made_of: Option<fn(u8) -> bool>,
}

pub(crate) const GLUE_BEFORE: u8 = 1;
pub(crate) const GLUE_AFTER: u8 = 2;
/// The digits always follow uppercase letters (an IBAN's country code; see `letters`, `gap`):
/// not tried on a run without them.
pub(crate) const LETTERS_BEFORE: u8 = 4;
/// A letter always follows a group of at least the identifier's digits (a DNI's eight and its
/// check letter; see `gap`): not tried on a run without one.
pub(crate) const LETTER_AFTER: u8 = 8;

impl Rule {
    /// The keywords (lowercase).
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Whether a keyword must be near a value for it to count.
    pub fn keyword_required(&self) -> bool {
        self.keyword_required
    }

    /// Whether values are checked beyond their pattern (checksum or structure).
    pub fn validated(&self) -> bool {
        self.validator.is_some()
    }
}

/// An identifier being declared (managed table).
struct Decl {
    id: &'static str,
    category: Category,
    severity: Severity,
    pattern: &'static str,
    group: bool,
    validator: Option<fn(&str) -> bool>,
    trigger: Trigger,
    precheck: Option<Precheck>,
    finder: Option<Finder>,
    keywords: &'static [&'static str],
    keyword_required: bool,
    max_distance: usize,
    max_len: usize,
    generic: u8,
    glue: u8,
    letters: (u8, u8),
    gap: u8,
    touching: bool,
    partner: u8,
    dots: u8,
    dashes: u8,
    lead: Option<usize>,
    trail: Option<usize>,
    made_of: Option<fn(u8) -> bool>,
}

fn decl(
    id: &'static str,
    category: Category,
    severity: Severity,
    pattern: &'static str,
    trigger: Trigger,
    max_len: usize,
) -> Decl {
    Decl {
        id,
        category,
        severity,
        pattern,
        group: false,
        validator: None,
        trigger,
        precheck: None,
        finder: None,
        keywords: &[],
        keyword_required: false,
        max_distance: 50,
        max_len,
        generic: 0,
        glue: 0,
        letters: (0, 0),
        gap: 0,
        touching: false,
        partner: 0,
        dots: 0,
        dashes: 0,
        lead: None,
        trail: None,
        made_of: None,
    }
}

impl Decl {
    fn valid(mut self, f: fn(&str) -> bool) -> Self {
        self.validator = Some(f);
        self
    }
    /// Requires one of `keywords` within the maximum distance before the value.
    fn near(mut self, keywords: &'static [&'static str]) -> Self {
        self.keywords = keywords;
        self.keyword_required = true;
        self
    }
    fn distance(mut self, d: usize) -> Self {
        self.max_distance = d;
        self
    }
    fn pre(mut self, f: Precheck) -> Self {
        self.precheck = Some(f);
        self
    }
    fn finder(mut self, f: Finder) -> Self {
        self.finder = Some(f);
        self
    }
    fn group(mut self) -> Self {
        self.group = true;
        self
    }
    fn glue(mut self, glue: u8) -> Self {
        self.glue = glue;
        self
    }
    /// The digits always follow `min` to `max` uppercase letters, maybe after a `gap` byte.
    fn letters(mut self, min: u8, max: u8, gap: u8) -> Self {
        self.glue |= LETTERS_BEFORE;
        self.letters = (min, max);
        self.gap = gap;
        self
    }
    /// A letter always follows a group of the digits, maybe after a `gap` byte.
    fn letter_after(mut self, gap: u8) -> Self {
        self.glue |= LETTER_AFTER;
        self.gap = gap;
        self
    }
    /// The value begins at most `lead` bytes before its trigger and ends at most `trail` past
    /// it (a digit run's value lies within the run: 0 and 0).
    fn reach(mut self, lead: usize, trail: usize) -> Self {
        self.lead = Some(lead);
        self.trail = Some(trail);
        self
    }
    /// The value begins at its trigger literal.
    fn starts_at_trigger(mut self) -> Self {
        self.lead = Some(0);
        self
    }
    fn dots(mut self, n: u8) -> Self {
        self.dots = n;
        self
    }
    fn dashes(mut self, n: u8) -> Self {
        self.dashes = n;
        self
    }
    fn partner(mut self, distance: u8) -> Self {
        self.partner = distance;
        self
    }
    /// Every byte of a value is one of these (see `Rule::made_of`).
    fn made_of(mut self, bytes: fn(u8) -> bool) -> Self {
        self.made_of = Some(bytes);
        self
    }
    fn touching(mut self) -> Self {
        self.touching = true;
        self
    }
    /// The trigger literal begins a word (the pattern has `\b` before it).
    fn bounded(mut self) -> Self {
        if let Trigger::Literals { bounded, .. } = &mut self.trigger {
            *bounded = true;
        }
        self
    }
    /// The trigger literal ends a word (the next byte is not a letter or digit).
    fn word_end(mut self) -> Self {
        if let Trigger::Literals { word, .. } = &mut self.trigger {
            *word = true;
        }
        self
    }
    fn generic(mut self, level: u8) -> Self {
        self.generic = level;
        self
    }
}

fn lit(literals: &[&str]) -> Trigger {
    Trigger::Literals {
        literals: literals.iter().map(|s| s.to_ascii_lowercase()).collect(),
        word: false,
        cased: false,
        bounded: false,
    }
}

/// Literals the pattern matches only as written (`AKIA`, not `akia`): in mixed text a caseless
/// `sk` or ` st` is found thousands of times per MiB, `SK` and ` St` far less often.
fn cased(literals: &[&str]) -> Trigger {
    Trigger::Literals {
        literals: literals.iter().map(|s| (*s).to_owned()).collect(),
        word: false,
        cased: true,
        bounded: false,
    }
}

fn digits(min: usize) -> Trigger {
    Trigger::Digits { min }
}

const KEYWORDS: Trigger = Trigger::Keywords;

// Prechecks.

/// Two capital letters right before the digits, starting a word, as an IBAN's country code (a
/// real country).
fn pre_iban(t: &[u8], start: usize, _end: usize) -> bool {
    start >= 2
        && t[start - 1].is_ascii_uppercase()
        && t[start - 2].is_ascii_uppercase()
        && (start == 2 || !t[start - 3].is_ascii_alphanumeric())
        && v::country(&t[start - 2..start])
}

/// Six capital letters before the digits, as a codice fiscale's name and surname part.
fn pre_codice_fiscale(t: &[u8], start: usize, _end: usize) -> bool {
    start >= 6 && t[start - 6..start].iter().all(u8::is_ascii_uppercase)
}

/// Two capital letters starting a word before the digits (maybe with a space between), six
/// digits, and a suffix letter A-D after them (maybe after a space): a NINO's shape.
fn pre_nino(t: &[u8], start: usize, end: usize) -> bool {
    let prefix = |at: usize| {
        at >= 2
            && t[at - 1].is_ascii_uppercase()
            && t[at - 2].is_ascii_uppercase()
            && (at == 2 || !t[at - 3].is_ascii_alphanumeric())
    };
    if !(prefix(start) || (start >= 1 && t[start - 1] == b' ' && prefix(start - 1))) {
        return false;
    }
    let suffix = match t.get(end) {
        Some(b' ') => t.get(end + 1),
        other => other,
    };
    suffix.is_some_and(|b| matches!(b, b'A'..=b'D'))
        && t[start..end].iter().filter(|b| b.is_ascii_digit()).count() == 6
}

/// A dotted quad has three dots in its run.
fn pre_dotted_quad(t: &[u8], start: usize, end: usize) -> bool {
    t[start..end]
        .iter()
        .filter(|&&b| b == b'.')
        .nth(2)
        .is_some()
}

/// IPV4_ADDRESS's pattern in code: `\b`, four octets (`25[0-5]`, `2[0-4]\d`, `1\d\d`,
/// `[1-9]?\d`, tried in that order) joined by dots, `\b`; the word boundaries are ASCII ones and
/// see past the window, as the regex's do.
fn find_ipv4(t: &[u8], from: usize, to: usize, found: &mut dyn FnMut(usize, usize)) -> bool {
    if !t[from..to].is_ascii() {
        return false;
    }
    let mut s = from;
    while s < to {
        if t[s].is_ascii_digit()
            && !(s > 0 && is_word_byte(t[s - 1]))
            && let Some(e) = dotted_quad(t, s, to)
        {
            found(s, e);
            s = e;
        } else {
            s += 1;
        }
    }
    true
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the dotted quad starting at `p`. Each octet must be the whole digit group: an
/// alternative shorter than the group is followed by a digit, where the pattern wants a dot or
/// a word boundary, so the alternation never has a second way to match.
fn dotted_quad(t: &[u8], mut p: usize, to: usize) -> Option<usize> {
    for k in 0..4 {
        let mut q = p;
        while q < to && q - p < 4 && t[q].is_ascii_digit() {
            q += 1;
        }
        let octet = match t[p..q] {
            [_] => true,
            [a, _] => a != b'0',
            [a, b, c] => a == b'1' || (a == b'2' && (b <= b'4' || (b == b'5' && c <= b'5'))),
            _ => false,
        };
        if !octet {
            return None;
        }
        if k == 3 {
            return (!t.get(q).copied().is_some_and(is_word_byte)).then_some(q);
        }
        if q >= to || t[q] != b'.' {
            return None;
        }
        p = q + 1;
    }
    None
}

/// A dash in the run (formatted SSNs).
fn pre_dash(t: &[u8], start: usize, end: usize) -> bool {
    t[start..end].contains(&b'-')
}

fn pre_itin(t: &[u8], start: usize, end: usize) -> bool {
    t[start] == b'9' && pre_dash(t, start, end)
}

/// Exactly eight digits, then a letter ending the word (maybe after a dash): a DNI's shape.
fn pre_dni(t: &[u8], start: usize, end: usize) -> bool {
    let letter_at = |i: usize| {
        t.get(i).is_some_and(u8::is_ascii_alphabetic)
            && !t.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
    };
    end - start == 8
        && t[start..end].iter().all(u8::is_ascii_digit)
        && (letter_at(end) || (t.get(end) == Some(&b'-') && letter_at(end + 1)))
}

/// X, Y or Z before the digits (maybe with a dash), as an NIE's first letter.
fn pre_nie(t: &[u8], start: usize, _end: usize) -> bool {
    let xyz = |i: usize| matches!(t[i], b'X' | b'Y' | b'Z');
    (start >= 1 && xyz(start - 1)) || (start >= 2 && t[start - 1] == b'-' && xyz(start - 2))
}

/// Dots and a dash in the run (formatted CPFs).
fn pre_cpf(t: &[u8], start: usize, end: usize) -> bool {
    pre_dash(t, start, end) && t[start..end].contains(&b'.')
}

/// The first colon of an address: hex or a second colon around it, no colon just before (at
/// most four hex digits back: the colon would end the address's previous group), and at least
/// three colons (or a `::`) in the hex-and-colon run that follows.
fn pre_colon(t: &[u8], start: usize, _end: usize) -> bool {
    let hex = |i: usize| t.get(i).is_some_and(u8::is_ascii_hexdigit);
    let group = t[start.saturating_sub(5)..start]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if group < 5 && start > group && t[start - group - 1] == b':' {
        return false;
    }
    if !((start > 0 && hex(start - 1)) || hex(start + 1) || t.get(start + 1) == Some(&b':')) {
        return false;
    }
    // The hex-and-colon run of at most 40 bytes from here: three colons, or two in a row.
    let end = (start + 40).min(t.len());
    let mut colons = 0;
    let mut last_colon = false;
    for &b in &t[start..end] {
        if b == b':' {
            if last_colon {
                return true;
            }
            colons += 1;
            if colons == 3 {
                return true;
            }
            last_colon = true;
        } else if b.is_ascii_hexdigit() {
            last_colon = false;
        } else {
            return false;
        }
    }
    false
}

/// A digit after the plus.
fn pre_plus(t: &[u8], start: usize, _end: usize) -> bool {
    t.get(start + 1).is_some_and(u8::is_ascii_digit)
        && (start == 0 || !t[start - 1].is_ascii_alphanumeric())
}

/// Something before the `@` that can end a mailbox name, and a letter or digit after it.
fn pre_at(t: &[u8], start: usize, _end: usize) -> bool {
    start > 0
        && t[start - 1].is_ascii_alphanumeric()
        && t.get(start + 1).is_some_and(u8::is_ascii_alphanumeric)
}

/// A house number shortly before a street suffix.
fn pre_street(t: &[u8], start: usize, _end: usize) -> bool {
    t[start.saturating_sub(60)..start]
        .iter()
        .any(u8::is_ascii_digit)
}

/// Not the example keys printed in AWS's documentation.
fn aws_key_id(s: &str) -> bool {
    !s.ends_with("EXAMPLE")
}

fn aws_secret(s: &str) -> bool {
    !s.contains("EXAMPLE") && v::high_entropy_secret(s)
}

fn generic_secret(s: &str) -> bool {
    v::high_entropy_secret(s) && not_example(s)
}

fn not_example(s: &str) -> bool {
    let has = |word: &[u8]| {
        s.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    !has(b"example") && !has(b"xxxxxxxx") && !has(b"00000000")
}

fn name_words(s: &str) -> bool {
    const NOT_NAMES: &[&str] = &[
        "The",
        "This",
        "That",
        "And",
        "For",
        "With",
        "From",
        "Street",
        "Road",
        "Avenue",
        "Inc",
        "Ltd",
        "Company",
        "Corporation",
        "Department",
        "University",
        "Hospital",
        "Bank",
        "Account",
        "Number",
        "Name",
        "Date",
        "Address",
        "Phone",
        "Email",
        "Card",
        "Total",
        "Invoice",
        "Order",
        "Customer",
        "Patient",
        "Employee",
        "Unknown",
        "None",
        "Null",
        "Test",
        "User",
        "Admin",
    ];
    s.split([' ', '.'])
        .filter(|w| !w.is_empty())
        .all(|w| !NOT_NAMES.contains(&w))
}

/// The managed identifiers, in a fixed order (ids as Macie names them where Macie has one).
fn managed_decls() -> Vec<Decl> {
    use Category::*;
    use Severity::*;
    vec![
        // ---- Financial information
        decl("CREDIT_CARD_NUMBER", FinancialInformation, High,
            r"\b(?:\d[ -]?){12,18}\d\b", digits(13), 40)
            .valid(v::card_number).reach(0, 0),
        decl("CREDIT_CARD_EXPIRATION", FinancialInformation, Medium,
            r"\b(?:0[1-9]|1[0-2])[/-](?:20)?\d{2}\b", KEYWORDS, 8)
            .valid(v::card_expiry)
            .near(&["exp", "expiry", "expiration", "expires", "valid thru", "valid through", "good thru", "exp date"])
            .distance(20),
        decl("CREDIT_CARD_SECURITY_CODE", FinancialInformation, High,
            r"\b\d{3,4}\b", KEYWORDS, 4)
            .near(&["cvv", "cvv2", "cvc", "cvc2", "cid", "card verification", "security code", "csc"])
            .distance(12),
        decl("INTERNATIONAL_BANK_ACCOUNT_NUMBER", FinancialInformation, High,
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", digits(2), 42)
            .valid(v::iban).pre(pre_iban).glue(GLUE_BEFORE | GLUE_AFTER).letters(2, 2, 0)
            .made_of(upper_digit_or_space),
        decl("USA_ROUTING_NUMBER", FinancialInformation, Medium,
            r"\b\d{9}\b", digits(9), 9)
            .valid(v::aba_routing)
            .near(&["routing", "aba", "rtn", "routing number", "transit number", "bank"]).reach(0, 0),
        decl("SWIFT_CODE", FinancialInformation, Medium,
            r"\b[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b", KEYWORDS, 11)
            .valid(v::swift_bic)
            .near(&["swift", "bic", "swift code", "bank identifier code"])
            .distance(30),
        decl("BANK_ACCOUNT_NUMBER", FinancialInformation, High,
            r"\b\d{8,17}\b", digits(8), 17)
            .valid(v::not_trivial).generic(1)
            .near(&["account number", "account no", "acct", "bank account", "checking account", "savings account", "account #"])
            .distance(25).reach(0, 0),
        // ---- Personal information: national and tax identifiers
        decl("USA_SOCIAL_SECURITY_NUMBER", PersonalInformation, High,
            r"\b\d{3}-\d{2}-\d{4}\b", digits(9), 11)
            .valid(v::us_ssn).pre(pre_dash).dashes(2).reach(0, 0),
        decl("USA_SOCIAL_SECURITY_NUMBER", PersonalInformation, High,
            r"\b\d{9}\b", digits(9), 9)
            .valid(v::us_ssn)
            .near(&["ssn", "social security", "ss#", "ss #", "social sec", "ssn#"])
            .distance(25).reach(0, 0),
        decl("USA_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", PersonalInformation, High,
            r"\b9\d{2}-\d{2}-\d{4}\b", digits(9), 11)
            .valid(v::us_itin).pre(pre_itin).dashes(2).reach(0, 0),
        decl("USA_PASSPORT_NUMBER", PersonalInformation, High,
            r"\b[A-Z]?\d{8,9}\b", KEYWORDS, 9)
            .valid(v::us_passport)
            .near(&["passport", "passport number", "passport no", "passport #"])
            .distance(25),
        decl("USA_MEDICARE_BENEFICIARY_IDENTIFIER", PersonalInformation, High,
            r"\b[1-9][A-Z][A-Z0-9]\d-?[A-Z][A-Z0-9]\d-?[A-Z]{2}\d{2}\b", KEYWORDS, 13)
            .valid(v::us_mbi)
            .near(&["medicare", "mbi", "beneficiary"]),
        decl("USA_NATIONAL_PROVIDER_IDENTIFIER", PersonalInformation, Medium,
            r"\b[12]\d{9}\b", digits(10), 10)
            .valid(v::us_npi)
            .near(&["npi", "provider", "national provider"]).reach(0, 0),
        decl("USA_DRUG_ENFORCEMENT_AGENCY_NUMBER", PersonalInformation, Medium,
            r"\b[A-Z][A-Z9]\d{7}\b", KEYWORDS, 9)
            .valid(v::us_dea)
            .near(&["dea", "dea number", "dea registration"]),
        decl("UK_NATIONAL_INSURANCE_NUMBER", PersonalInformation, High,
            r"\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", digits(6), 13)
            .valid(v::uk_nino).pre(pre_nino).glue(GLUE_BEFORE | GLUE_AFTER).letters(2, 2, b' ')
            .reach(3, 2),
        decl("UK_NATIONAL_HEALTH_SERVICE_NUMBER", PersonalInformation, High,
            r"\b\d{3}[ -]?\d{3}[ -]?\d{4}\b", digits(10), 12)
            .valid(v::uk_nhs)
            .near(&["nhs", "health service", "patient", "nhs number"]).reach(0, 0),
        decl("CANADA_SOCIAL_INSURANCE_NUMBER", PersonalInformation, High,
            r"\b\d{3}[ -]?\d{3}[ -]?\d{3}\b", digits(9), 11)
            .valid(v::ca_sin)
            .near(&["sin", "social insurance", "numéro d'assurance sociale", "nas"]).reach(0, 0),
        decl("SPAIN_DNI_NUMBER", PersonalInformation, High,
            r"\b\d{8}-?[A-Za-z]\b", digits(8), 10)
            .valid(v::spain_dni).pre(pre_dni).glue(GLUE_AFTER).letter_after(b'-').reach(0, 2),
        decl("SPAIN_NIE_NUMBER", PersonalInformation, High,
            r"\b[XYZ]-?\d{7}-?[A-Z]\b", digits(7), 11)
            .valid(nie).pre(pre_nie).glue(GLUE_BEFORE | GLUE_AFTER).letters(1, 1, b'-')
            .reach(2, 2),
        decl("FRANCE_NATIONAL_IDENTIFICATION_NUMBER", PersonalInformation, High,
            r"\b[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b", digits(5), 21)
            .valid(v::france_nir)
            .near(&["nir", "sécurité sociale", "securite sociale", "insee", "social security", "carte vitale", "numéro de sécu"]),
        decl("ITALY_NATIONAL_IDENTIFICATION_NUMBER", PersonalInformation, High,
            r"\b[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]\b", digits(2), 16)
            .valid(v::italy_codice_fiscale).pre(pre_codice_fiscale).glue(GLUE_BEFORE | GLUE_AFTER)
            .letters(6, u8::MAX, 0),
        decl("GERMANY_TAX_IDENTIFICATION_NUMBER", PersonalInformation, High,
            r"\b\d{2} ?\d{3} ?\d{3} ?\d{3}\b", digits(11), 14)
            .valid(v::germany_tax_id)
            .near(&["steuer", "steuer-id", "steueridentifikationsnummer", "idnr", "tax id", "tin", "identifikationsnummer"]).reach(0, 0),
        decl("NETHERLANDS_CITIZEN_SERVICE_NUMBER", PersonalInformation, High,
            r"\b\d{4}\.?\d{2}\.?\d{3}\b|\b\d{9}\b", digits(9), 11)
            .valid(v::netherlands_bsn)
            .near(&["bsn", "burgerservicenummer", "citizen service", "sofinummer"]).reach(0, 0),
        decl("BRAZIL_CPF_NUMBER", PersonalInformation, High,
            r"\b\d{3}\.\d{3}\.\d{3}-\d{2}\b", digits(11), 14)
            .valid(v::brazil_cpf).pre(pre_cpf).dots(2).dashes(1).reach(0, 0),
        decl("BRAZIL_CPF_NUMBER", PersonalInformation, High,
            r"\b\d{11}\b", digits(11), 11)
            .valid(v::brazil_cpf)
            .near(&["cpf", "cadastro de pessoas"]).reach(0, 0),
        decl("INDIA_AADHAAR_NUMBER", PersonalInformation, High,
            r"\b[2-9]\d{3} ?\d{4} ?\d{4}\b", digits(12), 14)
            .valid(v::india_aadhaar)
            .near(&["aadhaar", "aadhar", "uidai", "uid"]).reach(0, 0),
        decl("AUSTRALIA_TAX_FILE_NUMBER", PersonalInformation, High,
            r"\b\d{3} ?\d{3} ?\d{3}\b", digits(9), 11)
            .valid(v::australia_tfn)
            .near(&["tfn", "tax file number", "tax file"]).reach(0, 0),
        decl("POLAND_PESEL_NUMBER", PersonalInformation, High,
            r"\b\d{11}\b", digits(11), 11)
            .valid(v::poland_pesel)
            .near(&["pesel"]).reach(0, 0),
        // ---- Personal information: contact and identity
        decl("EMAIL_ADDRESS", PersonalInformation, Low,
            r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b", lit(&["@"]), 320)
            .pre(pre_at).valid(email).touching().reach(64, 256).made_of(email_byte),
        decl("PHONE_NUMBER", PersonalInformation, Low,
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}\d", lit(&["+"]), 24)
            .pre(pre_plus).valid(v::phone_e164).touching().starts_at_trigger(),
        decl("PHONE_NUMBER", PersonalInformation, Low,
            r"(?:\b1[ .-]?)?(?:\(\d{3}\) ?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b|\b0\d{1,4}[ -]?\d{3,4}[ -]?\d{3,4}\b", digits(7), 18)
            .valid(phone_national)
            .near(&["phone", "tel", "telephone", "mobile", "cell", "fax", "call", "contact", "téléphone", "handy"])
            .distance(30).reach(8, 0),
        decl("IPV4_ADDRESS", PersonalInformation, Low,
            r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b", digits(4), 15)
            .pre(pre_dotted_quad).finder(find_ipv4).valid(ipv4).dots(3).reach(0, 0),
        decl("IPV6_ADDRESS", PersonalInformation, Low,
            r"(?i:\b(?:[0-9a-f]{1,4}:){1,7}(?::|(?::[0-9a-f]{1,4}){1,7}|[0-9a-f]{1,4})|::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4})", lit(&[":"]), 45)
            .pre(pre_colon).valid(v::ipv6).touching().made_of(hex_or_colon),
        decl("MAC_ADDRESS", PersonalInformation, Low,
            r"(?i:\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b)", lit(&[":", "-"]), 17)
            .valid(v::mac_address).pre(pre_mac).touching().partner(3).reach(2, 15)
            .made_of(hex_or_separator),
        decl("DATE_OF_BIRTH", PersonalInformation, Medium,
            r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{4})\b", KEYWORDS, 10)
            .valid(v::birth_date)
            .near(&["dob", "date of birth", "birth date", "birthdate", "birthday", "born", "d.o.b", "geburtsdatum", "date de naissance", "fecha de nacimiento"])
            .distance(30),
        decl("ADDRESS", PersonalInformation, Medium,
            r"\b\d{1,6}(?: [A-Z][A-Za-z]+| [NSEW]\.?){1,4} (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy|Highway|Hwy|Square|Sq)\b\.?(?:,? (?:Apt|Suite|Unit|#) ?[A-Za-z0-9-]+)?(?:, [A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)?)?(?:, [A-Z]{2} \d{5}(?:-\d{4})?)?",
            cased(&[" Street", " St", " Avenue", " Ave", " Road", " Rd", " Boulevard", " Blvd", " Lane", " Ln", " Drive", " Dr", " Court", " Ct", " Way", " Place", " Pl", " Terrace", " Parkway", " Pkwy", " Highway", " Hwy", " Square", " Sq"]), 120)
            .word_end().pre(pre_street),
        decl("NAME", PersonalInformation, Low,
            r"\b[A-Z][a-z]+(?:-[A-Z][a-z]+)?(?: [A-Z]\.)?(?: (?:[A-Z][a-z]+|[A-Z]'[A-Z][a-z]+|Mc[A-Z][a-z]+)(?:-[A-Z][a-z]+)?){1,2}\b", KEYWORDS, 50)
            .valid(name_words)
            .near(&["name", "full name", "first name", "last name", "surname", "patient", "dear", "mr.", "mrs.", "ms.", "dr.", "customer name", "employee name", "cardholder", "account holder", "signed", "nom", "nombre"])
            .distance(40),
        // ---- Credentials
        decl("AWS_ACCESS_KEY_ID", Credentials, Medium,
            r"\b(?:AKIA|ASIA|AROA|AIDA|ANPA|AGPA)[A-Z2-7]{16}\b", cased(&["AKIA", "ASIA", "AROA", "AIDA", "ANPA", "AGPA"]), 20)
            .bounded().valid(aws_key_id).starts_at_trigger(),
        decl("AWS_SECRET_ACCESS_KEY", Credentials, High,
            r"(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+=]{40})(?:$|[^A-Za-z0-9/+=])", KEYWORDS, 42)
            .group().valid(aws_secret)
            .near(&["aws_secret", "secret_access_key", "secretaccesskey", "aws secret", "secret key", "aws_secret_key", "secret access key"])
            .distance(60),
        decl("GCP_SERVICE_ACCOUNT_KEY", Credentials, High,
            r#""private_key_id"\s*:\s*"[0-9a-f]{40}""#, cased(&["\"private_key_id\""]), 70).starts_at_trigger(),
        decl("GOOGLE_API_KEY", Credentials, High,
            r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)", cased(&["AIza"]), 40)
            .bounded().group().valid(not_example).starts_at_trigger(),
        decl("AZURE_STORAGE_ACCOUNT_KEY", Credentials, High,
            r"(?i:AccountKey)=([A-Za-z0-9+/]{86}==)", lit(&["accountkey="]), 100)
            .group().valid(v::azure_storage_key).starts_at_trigger(),
        decl("AZURE_SAS_TOKEN", Credentials, High,
            r"\bsv=\d{4}-\d{2}-\d{2}&[^\s]{0,300}?\bsig=[A-Za-z0-9%+/=]{20,}", cased(&["sv=20"]), 400)
            .bounded().starts_at_trigger(),
        decl("GITHUB_TOKEN", Credentials, High,
            r"\b(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b", cased(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]), 93)
            .bounded().valid(not_example).starts_at_trigger().made_of(is_word_byte),
        decl("GITLAB_TOKEN", Credentials, High,
            r"\bglpat-[A-Za-z0-9_-]{20,}\b", cased(&["glpat-"]), 60)
            .bounded().valid(not_example).starts_at_trigger().made_of(word_or_dash),
        decl("SLACK_TOKEN", Credentials, High,
            r"\bxox[abprse]-[A-Za-z0-9-]{10,}\b", cased(&["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "xoxe-"]), 250)
            .bounded().valid(not_example).starts_at_trigger(),
        decl("SLACK_WEBHOOK_URL", Credentials, High,
            r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}", cased(&["hooks.slack.com/services/"]), 150),
        decl("STRIPE_SECRET_KEY", Credentials, High,
            r"\b(?:sk|rk)_live_[A-Za-z0-9]{24,}\b", cased(&["sk_live_", "rk_live_"]), 120)
            .bounded().starts_at_trigger(),
        decl("TWILIO_API_KEY", Credentials, High,
            // `SK` and its first hex digit: a three-byte literal costs the prefilter less than `SK`.
            r"\bSK[0-9a-f]{32}\b", cased(&["SK0", "SK1", "SK2", "SK3", "SK4", "SK5", "SK6", "SK7",
                "SK8", "SK9", "SKa", "SKb", "SKc", "SKd", "SKe", "SKf"]), 34)
            .bounded().starts_at_trigger(),
        decl("SENDGRID_API_KEY", Credentials, High,
            r"\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)", cased(&["SG."]), 70)
            .bounded().group().starts_at_trigger(),
        decl("NPM_TOKEN", Credentials, High,
            r"\bnpm_[A-Za-z0-9]{36}\b", cased(&["npm_"]), 40)
            .bounded().valid(not_example).starts_at_trigger(),
        decl("PYPI_TOKEN", Credentials, High,
            r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", cased(&["pypi-AgEIcHlwaS5vcmc"]), 300)
            .bounded().starts_at_trigger(),
        decl("JSON_WEB_TOKEN", Credentials, Medium,
            r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}", cased(&["eyJ"]), 4096)
            .bounded().valid(v::jwt).starts_at_trigger(),
        decl("PEM_PRIVATE_KEY", Credentials, High,
            r"-----BEGIN (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----", cased(&["PRIVATE KEY-----"]), 40),
        decl("OPENSSH_PRIVATE_KEY", Credentials, High,
            r"-----BEGIN OPENSSH PRIVATE KEY-----", cased(&["OPENSSH PRIVATE KEY"]), 40),
        decl("PGP_PRIVATE_KEY", Credentials, High,
            r"-----BEGIN PGP PRIVATE KEY BLOCK-----", cased(&["PGP PRIVATE KEY BLOCK"]), 40),
        decl("PUTTY_PRIVATE_KEY", Credentials, High,
            r"PuTTY-User-Key-File-[23]: [a-z0-9-]+", cased(&["PuTTY-User-Key-File-"]), 60).starts_at_trigger(),
        decl("CONNECTION_STRING_PASSWORD", Credentials, High,
            r"(?i:(?:^|[;\s])(?:password|pwd)\s*=\s*)([^;\s'\x22]{4,128})", lit(&["password", "pwd"]), 160)
            .group().valid(conn_string_password).pre(pre_connection_string),
        decl("CONFIG_PASSWORD", Credentials, High,
            r#"(?i:\b(?:[a-z0-9_.-]*pass(?:word|wd)?|[a-z0-9_.-]*_pwd)\x22?\s*[:=]\s*)("[^"\s]{4,128}"|'[^'\s]{4,128}'|[^\s"',;]{4,128})"#, lit(&["pass"]), 200)
            .group().valid(v::password_value).pre(pre_config_password).generic(1),
        decl("BASIC_AUTH_URL", Credentials, High,
            r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@[^\s/]+", lit(&["://"]), 300)
            .valid(basic_auth_password),
        decl("HTTP_AUTHORIZATION_HEADER", Credentials, High,
            r"(?i:authorization:\s*(?:basic|bearer)\s+)([A-Za-z0-9._~+/-]{16,}=*)", lit(&["authorization:"]), 2048)
            .group().valid(not_example).starts_at_trigger(),
        decl("HIGH_ENTROPY_SECRET", Credentials, Medium,
            r#"[A-Za-z0-9+/_\-][A-Za-z0-9+/_\-=.]{19,199}"#, KEYWORDS, 200)
            .valid(generic_secret).generic(2)
            .near(&["secret", "token", "api_key", "apikey", "api-key", "access_key", "client_secret", "auth_token", "private_key", "signing_key", "encryption_key"])
            .distance(60),
    ]
}

/// What an email address is made of: its local part's bytes, `@`, and its domain's (a subset).
fn email_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'@')
}

fn hex_or_colon(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':'
}

fn hex_or_separator(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b':' | b'-')
}

fn upper_digit_or_space(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
}

fn word_or_dash(b: u8) -> bool {
    is_word_byte(b) || b == b'-'
}

fn nie(s: &str) -> bool {
    v::spain_nie(&s.replace('-', ""))
}

fn email(s: &str) -> bool {
    let domain = s.rsplit('@').next().unwrap_or("");
    // Not file names with an @ (image@2x.png) or package pins (name@1.2.3).
    !domain.rsplit('.').next().is_some_and(|tld| {
        matches!(
            tld.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "gif" | "svg" | "js" | "css" | "ts" | "json"
        )
    })
}

fn phone_national(s: &str) -> bool {
    v::phone_nanp(s) || v::phone_national(s)
}

fn ipv4(s: &str) -> bool {
    // Version strings have fewer or more parts; 0.0.0.0 and 255.255.255.255 are not addresses.
    s != "0.0.0.0" && s != "255.255.255.255"
}

/// The first separator of `hh:hh:hh:hh:hh:hh` (or with dashes): the whole shape is there, and
/// no separator comes before it.
fn pre_mac(t: &[u8], start: usize, _end: usize) -> bool {
    let sep = t[start];
    if start < 2 || start + 15 > t.len() || (start > 2 && t[start - 3] == sep) {
        return false;
    }
    let s = &t[start - 2..start + 15];
    // The separators first: most runs with a dash or colon (dates, times, UUIDs) fail there.
    [5, 8, 11, 14].iter().all(|&i| s[i] == sep)
        && (0..17)
            .filter(|i| i % 3 != 2)
            .all(|i| s[i].is_ascii_hexdigit())
}

/// `password=` in a line of `key=value;` pairs.
fn pre_connection_string(t: &[u8], start: usize, end: usize) -> bool {
    let line_start = t[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line_end = t[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(t.len(), |i| end + i);
    t[end..(end + 8).min(t.len())].contains(&b'=')
        && t[line_start.max(start.saturating_sub(200))..line_end.min(end + 200)].contains(&b';')
}

fn pre_config_password(t: &[u8], _start: usize, end: usize) -> bool {
    t[end..(end + 12).min(t.len())]
        .iter()
        .any(|&b| b == b'=' || b == b':')
}

fn conn_string_password(s: &str) -> bool {
    v::password_value(s)
}

fn basic_auth_password(s: &str) -> bool {
    // scheme://user:password@host: the password is not a placeholder.
    let Some(rest) = s.split_once("://").map(|x| x.1) else {
        return false;
    };
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return false;
    };
    let password = userinfo.split_once(':').map_or("", |x| x.1);
    v::password_value(password) && !password.eq_ignore_ascii_case("pass")
}

/// Compiles the managed identifiers. Their patterns are constants covered by tests, so a failure
/// is a build defect.
pub(crate) fn managed() -> Vec<Rule> {
    managed_decls()
        .into_iter()
        .map(|d| Rule {
            id: d.id.to_owned(),
            category: d.category,
            severity: d.severity,
            // ASCII word boundaries: the values are ASCII, and a Unicode `\b` keeps the fast
            // DFA engines from running (the regex would fall back to the PikeVM).
            regex: Regex::new(&d.pattern.replace(r"\b", r"(?-u:\b)"))
                .unwrap_or_else(|e| panic!("{}: {e}", d.id)),
            group: d.group,
            validator: d.validator,
            trigger: d.trigger,
            precheck: d.precheck,
            finder: d.finder,
            keywords: d.keywords.iter().map(|k| k.to_lowercase()).collect(),
            keyword_required: d.keyword_required,
            max_distance: d.max_distance,
            max_len: d.max_len,
            ignore_words: Vec::new(),
            generic: d.generic,
            glue: d.glue,
            letters: d.letters,
            gap: d.gap,
            touching: d.touching,
            partner: d.partner,
            dots: d.dots,
            dashes: d.dashes,
            lead: d.lead.unwrap_or(d.max_len),
            trail: d.trail.unwrap_or(d.max_len),
            made_of: d.made_of,
        })
        .collect()
}

/// A custom identifier, as Macie's `CreateCustomDataIdentifier` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomIdentifier {
    pub name: String,
    pub regex: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub ignore_words: Vec<String>,
    #[serde(default = "default_distance")]
    pub maximum_match_distance: usize,
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

fn default_distance() -> usize {
    50
}

fn default_severity() -> Severity {
    Severity::Medium
}

/// Why a custom identifier was refused.
#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    #[error("custom identifier '{name}': {what}")]
    Invalid { name: String, what: String },
}

/// The longest match looked for around a literal of a custom regex that has no bounded length.
const CUSTOM_WINDOW: usize = 4096;

impl CustomIdentifier {
    /// Checks the limits Macie enforces and compiles the identifier.
    pub fn compile(&self) -> Result<Rule, CustomError> {
        let bad = |what: String| CustomError::Invalid {
            name: self.name.clone(),
            what,
        };
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(bad("the name must be 1 to 128 characters".into()));
        }
        if self.regex.is_empty() || self.regex.len() > 512 {
            return Err(bad("the regex must be 1 to 512 characters".into()));
        }
        if self.keywords.len() > 50 || self.ignore_words.len() > 10 {
            return Err(bad(
                "at most 50 keywords and 10 ignore words are allowed".into()
            ));
        }
        for k in self.keywords.iter().chain(&self.ignore_words) {
            if !(3..=90).contains(&k.chars().count()) {
                return Err(bad(format!(
                    "keyword or ignore word '{k}' must be 3 to 90 characters"
                )));
            }
        }
        if !(1..=300).contains(&self.maximum_match_distance) {
            return Err(bad("maximumMatchDistance must be 1 to 300".into()));
        }
        let regex = Regex::new(&self.regex).map_err(|e| bad(format!("invalid regex: {e}")))?;
        let hir =
            regex_syntax::parse(&self.regex).map_err(|e| bad(format!("invalid regex: {e}")))?;
        if hir.properties().minimum_len() == Some(0) {
            return Err(bad("the regex matches the empty string".into()));
        }
        let max_len = hir
            .properties()
            .maximum_len()
            .unwrap_or(CUSTOM_WINDOW)
            .min(CUSTOM_WINDOW);
        let trigger = if !self.keywords.is_empty() {
            Trigger::Keywords
        } else {
            required_literals(&hir).map_or(Trigger::Everywhere, |literals| Trigger::Literals {
                literals,
                word: false,
                cased: false,
                bounded: false,
            })
        };
        Ok(Rule {
            id: self.name.clone(),
            category: Category::CustomIdentifier,
            severity: self.severity,
            regex,
            group: false,
            validator: None,
            trigger,
            precheck: None,
            finder: None,
            keywords: self.keywords.iter().map(|k| k.to_lowercase()).collect(),
            keyword_required: !self.keywords.is_empty(),
            max_distance: self.maximum_match_distance,
            max_len,
            ignore_words: self.ignore_words.iter().map(|k| k.to_lowercase()).collect(),
            generic: 0,
            glue: 0,
            letters: (0, 0),
            gap: 0,
            touching: false,
            partner: 0,
            dots: 0,
            dashes: 0,
            lead: max_len,
            trail: max_len,
            made_of: None,
        })
    }
}

/// Literals one of which every match of `hir` contains (its prefixes, else its suffixes), when
/// they are few and long enough to be a useful trigger.
fn required_literals(hir: &regex_syntax::hir::Hir) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let mut ex = Extractor::new();
        ex.kind(kind);
        let seq = ex.extract(hir);
        let Some(lits) = seq.literals() else { continue };
        if lits.is_empty() || lits.len() > 64 {
            continue;
        }
        let mut out: Vec<String> = Vec::new();
        for l in lits {
            match std::str::from_utf8(l.as_bytes()) {
                Ok(s) if s.len() >= 2 && s.is_ascii() => out.push(s.to_ascii_lowercase()),
                _ => {
                    out.clear();
                    break;
                }
            }
        }
        if !out.is_empty() {
            out.sort();
            out.dedup();
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use regex_automata::Input;

    use super::*;

    /// Every finder finds what its identifier's regex finds, in any window of any text: texts
    /// drawn from the bytes that matter to an address (digits, dots, word bytes, separators, a
    /// Unicode digit and letter).
    #[test]
    fn finders_find_what_the_regexes_find() {
        let pieces = [
            "0",
            "1",
            "2",
            "5",
            "9",
            "25",
            "255",
            "256",
            "249",
            "199",
            "1.",
            ".",
            ".",
            "..",
            " ",
            "a",
            "_",
            "-",
            "é",
            "٣",
            "10.0.0.1",
            "192.168.1.254",
        ];
        let rules: Vec<Rule> = managed()
            .into_iter()
            .filter(|r| r.finder.is_some())
            .collect();
        assert!(!rules.is_empty());
        let mut rng = crate::anomaly::sim::Rng::new(11);
        for _ in 0..40_000 {
            let mut text = String::new();
            for _ in 0..rng.below(14) {
                text.push_str(pieces[rng.below(pieces.len() as u64) as usize]);
            }
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            let a = bounds[rng.below(bounds.len() as u64) as usize];
            let b = bounds[rng.below(bounds.len() as u64) as usize];
            let (from, to) = (a.min(b), a.max(b));
            for r in &rules {
                let expected: Vec<(usize, usize)> = r
                    .regex
                    .find_iter(Input::new(&text).range(from..to))
                    .map(|m| (m.start(), m.end()))
                    .collect();
                let mut got = Vec::new();
                let find = r.finder.unwrap_or(|_, _, _, _| false);
                if find(text.as_bytes(), from, to, &mut |s, e| got.push((s, e))) {
                    assert_eq!(got, expected, "{} in {text:?}[{from}..{to}]", r.id);
                } else {
                    assert!(got.is_empty());
                    assert!(
                        !text[from..to].is_ascii(),
                        "{text:?}: declined an ASCII window"
                    );
                }
            }
        }
    }
}

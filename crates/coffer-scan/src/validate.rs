//! Checksums and structural rules that tell a real identifier from a look-alike. Each takes the
//! candidate as matched (separators included) and never panics.

/// The decimal digits of `s`, skipping spaces and dashes; `None` if anything else appears.
pub fn digits(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => out.push(c as u8 - b'0'),
            ' ' | '-' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The Luhn (mod 10) check over all digits, the last being the check digit.
pub fn luhn(d: &[u8]) -> bool {
    if d.is_empty() {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A payment card number: 13–19 digits, Luhn, and a known issuer range.
pub fn card_number(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if !(13..=19).contains(&d.len()) || !luhn(&d) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let prefix = |n: usize| d[..n].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let len = d.len();
    match d[0] {
        // Visa
        4 => matches!(len, 13 | 16 | 19),
        // Mastercard 51–55 and 2221–2720
        5 => (51..=55).contains(&prefix(2)) && len == 16,
        2 => (2221..=2720).contains(&prefix(4)) && len == 16,
        // American Express 34, 37; Diners 36, 38, 300–305
        3 => match prefix(2) {
            34 | 37 => len == 15,
            36 | 38 => (14..=19).contains(&len),
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len), // JCB
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&len),
            _ => false,
        },
        // Discover 6011, 644–649, 65; UnionPay 62
        6 => {
            (prefix(4) == 6011
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 65
                || prefix(2) == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// IBAN: the country's length, then mod 97 of the rearranged number is 1.
pub fn iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let b = compact.as_bytes();
    if b.len() < 15 || b.len() > 34 || !b[..2].iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let Some(expected) = iban_length(&compact[..2]) else {
        return false;
    };
    if b.len() != expected || !b[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// IBAN length by country (SWIFT's IBAN registry, the countries most often seen).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "AD" => 24,
        "AE" => 23,
        "AT" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BR" => 29,
        "CH" => 21,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DK" => 18,
        "EE" => 20,
        "ES" => 24,
        "FI" => 18,
        "FR" => 27,
        "GB" => 22,
        "GI" => 23,
        "GR" => 27,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IS" => 26,
        "IT" => 27,
        "KW" => 30,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "MC" => 27,
        "MT" => 31,
        "NL" => 18,
        "NO" => 15,
        "PL" => 28,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "SA" => 24,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "TR" => 26,
        "UA" => 29,
        _ => return None,
    })
}

/// US ABA routing number: 9 digits, weights 3-7-1, a valid Federal Reserve prefix.
pub fn aba_routing(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() != 9 {
        return false;
    }
    let prefix = u32::from(d[0]) * 10 + u32::from(d[1]);
    if !(matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80)) {
        return false;
    }
    let w = [3, 7, 1];
    let sum: u32 = d
        .iter()
        .enumerate()
        .map(|(i, &x)| u32::from(x) * w[i % 3])
        .sum();
    sum.is_multiple_of(10) && d.iter().any(|&x| x != 0)
}

/// US Social Security number: area not 000, 666 or 900–999; group not 00; serial not 0000.
pub fn us_ssn(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() != 9 {
        return false;
    }
    let n = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let (area, group, serial) = (n(0..3), n(3..5), n(5..9));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
        // Numbers the SSA used in advertising, never issued.
        && !matches!(n(0..9), 78_051_120 | 219_099_999)
}

/// US ITIN: 9 digits starting with 9, fourth and fifth digits in the ranges the IRS assigns.
pub fn us_itin(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() != 9 || d[0] != 9 {
        return false;
    }
    let mid = u32::from(d[3]) * 10 + u32::from(d[4]);
    matches!(mid, 50..=65 | 70..=88 | 90..=92 | 94..=99)
}

/// UK NHS number: 10 digits, mod 11 check (weights 10 down to 2), check digit 10 invalid.
pub fn uk_nhs(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() != 10 || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .enumerate()
        .map(|(i, &x)| u32::from(x) * (10 - i as u32))
        .sum();
    let check = 11 - sum % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == u32::from(d[9])
}

/// UK National Insurance number: two prefix letters (not D, F, I, Q, U, V; second not O; not the
/// reserved pairs), six digits, suffix A–D.
pub fn uk_nino(s: &str) -> bool {
    let c: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if c.len() != 9 {
        return false;
    }
    let bad = |x: char| matches!(x, 'D' | 'F' | 'I' | 'Q' | 'U' | 'V');
    let pair: String = c[..2].iter().collect();
    c[0].is_ascii_uppercase()
        && c[1].is_ascii_uppercase()
        && !bad(c[0])
        && !bad(c[1])
        && c[1] != 'O'
        && !matches!(
            pair.as_str(),
            "BG" | "GB" | "KN" | "NK" | "NT" | "TN" | "ZZ"
        )
        && c[2..8].iter().all(char::is_ascii_digit)
        && matches!(c[8], 'A'..='D')
}

/// US National Provider Identifier: 10 digits, Luhn over "80840" followed by the number.
pub fn us_npi(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if d.len() != 10 || !matches!(d[0], 1 | 2) {
        return false;
    }
    let mut full = vec![8, 0, 8, 4, 0];
    full.extend_from_slice(&d);
    luhn(&full)
}

/// US DEA registration number: two letters and seven digits; (d1+d3+d5) + 2·(d2+d4+d6) ends in d7.
pub fn us_dea(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 9
        || !b[0].is_ascii_uppercase()
        || !(b[1].is_ascii_uppercase() || b[1] == b'9')
        || !b[2..].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    if !b"ABCDEFGHJKLMPRSTUX".contains(&b[0]) {
        return false;
    }
    let d: Vec<u32> = b[2..].iter().map(|&x| u32::from(x - b'0')).collect();
    let sum = d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5]);
    sum % 10 == d[6]
}

/// Canadian Social Insurance Number: 9 digits, Luhn, not starting with 0 or 8.
pub fn ca_sin(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    d.len() == 9 && !matches!(d[0], 0 | 8) && luhn(&d)
}

/// Shannon entropy of a string, in bits per character.
pub fn entropy(s: &str) -> f64 {
    // H = log2(n) - (sum of c * log2(c) over the byte counts c) / n, the sum kept as the counts
    // grow, from a table for the small counts (the values are short; this runs per candidate).
    static C_LOG2_C: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
        (0..=256u32)
            .map(|c| {
                if c == 0 {
                    0.0
                } else {
                    f64::from(c) * f64::from(c).log2()
                }
            })
            .collect()
    });
    let table = &*C_LOG2_C;
    let c_log2_c = |c: u32| {
        table
            .get(c as usize)
            .copied()
            .unwrap_or_else(|| f64::from(c) * f64::from(c).log2())
    };
    let mut counts = [0u32; 256];
    let mut sum = 0.0;
    for b in s.bytes() {
        let c = &mut counts[usize::from(b)];
        sum += c_log2_c(*c + 1) - c_log2_c(*c);
        *c += 1;
    }
    let n = s.len();
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    (n.log2() - sum / n).max(0.0)
}

/// The decimal digits of `s` with any of `seps` skipped; `None` if anything else appears.
fn digits_sep(s: &str, seps: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => out.push(b - b'0'),
            _ if seps.contains(&b) => {}
            _ => return None,
        }
    }
    Some(out)
}

fn number(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |a, &x| a * 10 + u64::from(x))
}

fn all_same(d: &[u8]) -> bool {
    d.iter().all(|&x| x == d[0])
}

/// Spain DNI: eight digits and the letter of the number mod 23.
pub fn spain_dni(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&letter) = b.last() else {
        return false;
    };
    let Some(d) = digits_sep(&s[..s.len() - 1], b"- ") else {
        return false;
    };
    d.len() == 8 && !all_same(&d) && dni_letter(number(&d)) == letter.to_ascii_uppercase()
}

fn dni_letter(n: u64) -> u8 {
    b"TRWAGMYFPDXBNJZSQVHLCKE"[(n % 23) as usize]
}

/// Spain NIE: X, Y or Z (standing for 0, 1, 2), seven digits, and the DNI letter of the whole.
pub fn spain_nie(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 9 {
        return false;
    }
    let lead = match b[0].to_ascii_uppercase() {
        b'X' => 0,
        b'Y' => 1,
        b'Z' => 2,
        _ => return false,
    };
    let Some(d) = digits_sep(&s[1..s.len() - 1], b"- ") else {
        return false;
    };
    d.len() == 7
        && dni_letter(lead * 10_000_000 + number(&d)) == b[b.len() - 1].to_ascii_uppercase()
}

/// France NIR (numéro de sécurité sociale): 13 characters and a two-digit key, 97 minus the
/// number mod 97. Corsica's departments 2A and 2B count as 19 and 18, less one and two million.
pub fn france_nir(s: &str) -> bool {
    let mut c: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if c.len() != 15 || !matches!(c[0], b'1' | b'2' | b'3' | b'4' | b'7' | b'8') {
        return false;
    }
    let correction = match &c[5..7] {
        b"2A" => 1_000_000,
        b"2B" => 2_000_000,
        _ => 0,
    };
    if correction != 0 {
        c[5] = b'1';
        c[6] = if correction == 1_000_000 { b'9' } else { b'8' };
    }
    let Some(d) = digits_sep(std::str::from_utf8(&c).unwrap_or("x"), b"") else {
        return false;
    };
    let month = number(&d[3..5]);
    if !(matches!(month, 1..=12 | 20..=42 | 50..=99)) {
        return false;
    }
    let n = number(&d[..13]) - correction;
    97 - n % 97 == number(&d[13..])
}

/// Italy codice fiscale: 16 characters in the fixed layout (omocodia letters allowed in the
/// digit places) and its check letter.
pub fn italy_codice_fiscale(s: &str) -> bool {
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let b: Vec<u8> = s.bytes().map(|x| x.to_ascii_uppercase()).collect();
    if b.len() != 16 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let digit_place = |x: u8| x.is_ascii_digit() || b"LMNPQRSTUV".contains(&x);
    let layout = b[..6].iter().all(u8::is_ascii_uppercase)
        && digit_place(b[6])
        && digit_place(b[7])
        && b"ABCDEHLMPRST".contains(&b[8])
        && digit_place(b[9])
        && digit_place(b[10])
        && b[11].is_ascii_uppercase()
        && b[12..15].iter().all(|&x| digit_place(x))
        && b[15].is_ascii_uppercase();
    if !layout {
        return false;
    }
    let value = |x: u8| -> u32 {
        if x.is_ascii_digit() {
            u32::from(x - b'0')
        } else {
            u32::from(x - b'A')
        }
    };
    let sum: u32 = b[..15]
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 0 {
                ODD[value(x) as usize]
            } else {
                value(x)
            }
        })
        .sum();
    b[15] == b'A' + (sum % 26) as u8
}

/// Germany's tax identification number (Steuer-IdNr): 11 digits, no leading zero, one digit
/// repeated two or three times in the first ten, and the ISO 7064 MOD 11,10 check digit.
pub fn germany_tax_id(s: &str) -> bool {
    let Some(d) = digits_sep(s, b" /") else {
        return false;
    };
    if d.len() != 11 || d[0] == 0 {
        return false;
    }
    let mut counts = [0u8; 10];
    for &x in &d[..10] {
        counts[usize::from(x)] += 1;
    }
    let repeated = counts.iter().filter(|&&c| c >= 2).count();
    if repeated != 1 || counts.iter().any(|&c| c > 3) {
        return false;
    }
    let mut product = 10u32;
    for &x in &d[..10] {
        let mut sum = (u32::from(x) + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let check = (11 - product) % 10;
    check == u32::from(d[10])
}

/// Netherlands citizen service number (BSN): nine digits passing the "elfproef".
pub fn netherlands_bsn(s: &str) -> bool {
    let Some(d) = digits_sep(s, b". ") else {
        return false;
    };
    if d.len() != 9 || all_same(&d) {
        return false;
    }
    let sum: i64 = d[..8]
        .iter()
        .enumerate()
        .map(|(i, &x)| i64::from(x) * (9 - i as i64))
        .sum::<i64>()
        - i64::from(d[8]);
    sum % 11 == 0
}

/// Brazil CPF: eleven digits (ddd.ddd.ddd-dd) with its two mod-11 check digits.
pub fn brazil_cpf(s: &str) -> bool {
    let Some(d) = digits_sep(s, b".-") else {
        return false;
    };
    if d.len() != 11 || all_same(&d) {
        return false;
    }
    let check = |n: usize| {
        let sum: u32 = d[..n]
            .iter()
            .enumerate()
            .map(|(i, &x)| u32::from(x) * (n as u32 + 1 - i as u32))
            .sum();
        let r = (sum * 10) % 11;
        if r == 10 { 0 } else { r }
    };
    check(9) == u32::from(d[9]) && check(10) == u32::from(d[10])
}

/// India Aadhaar: twelve digits, not starting with 0 or 1, with the Verhoeff check digit.
pub fn india_aadhaar(s: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let Some(d) = digits_sep(s, b" -") else {
        return false;
    };
    if d.len() != 12 || d[0] < 2 || all_same(&d) {
        return false;
    }
    let mut c = 0u8;
    for (i, &x) in d.iter().rev().enumerate() {
        c = D[usize::from(c)][usize::from(P[i % 8][usize::from(x)])];
    }
    c == 0
}

/// Australia tax file number: nine digits with weights 1,4,3,7,5,8,6,9,10 summing to a multiple
/// of 11.
pub fn australia_tfn(s: &str) -> bool {
    const W: [u32; 9] = [1, 4, 3, 7, 5, 8, 6, 9, 10];
    let Some(d) = digits_sep(s, b" -") else {
        return false;
    };
    d.len() == 9
        && !all_same(&d)
        && d.iter()
            .zip(W)
            .map(|(&x, w)| u32::from(x) * w)
            .sum::<u32>()
            .is_multiple_of(11)
}

/// Poland PESEL: eleven digits, a real month (with the century offset) and the weighted check.
pub fn poland_pesel(s: &str) -> bool {
    const W: [u32; 10] = [1, 3, 7, 9, 1, 3, 7, 9, 1, 3];
    let Some(d) = digits_sep(s, b"") else {
        return false;
    };
    if d.len() != 11 || all_same(&d) {
        return false;
    }
    let month = (u32::from(d[2]) * 10 + u32::from(d[3])) % 20;
    let day = u32::from(d[4]) * 10 + u32::from(d[5]);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    let sum: u32 = d[..10].iter().zip(W).map(|(&x, w)| u32::from(x) * w).sum();
    (10 - sum % 10) % 10 == u32::from(d[10])
}

/// US Medicare Beneficiary Identifier: 11 characters in CMS's fixed layout (letters never S, L,
/// O, I, B or Z), dashes allowed after the fourth and seventh.
pub fn us_mbi(s: &str) -> bool {
    let c: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if c.len() != 11 {
        return false;
    }
    let alpha = |x: u8| x.is_ascii_uppercase() && !b"SLOIBZ".contains(&x);
    let num = |x: u8| x.is_ascii_digit();
    let an = |x: u8| alpha(x) || num(x);
    matches!(c[0], b'1'..=b'9')
        && alpha(c[1])
        && an(c[2])
        && num(c[3])
        && alpha(c[4])
        && an(c[5])
        && num(c[6])
        && alpha(c[7])
        && alpha(c[8])
        && num(c[9])
        && num(c[10])
}

/// The ISO 3166-1 alpha-2 country codes (for SWIFT/BIC codes).
const COUNTRIES: &str = "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVIVNVUWFWSXKYEYTZAZMZW";

/// A country code from ISO 3166-1.
pub fn country(code: &[u8]) -> bool {
    code.len() == 2 && COUNTRIES.as_bytes().chunks(2).any(|c| c == code)
}

/// SWIFT/BIC: four letters for the bank, a real country, two characters of location (the second
/// never O, which marks test codes), and an optional three-character branch.
pub fn swift_bic(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() == 8 || b.len() == 11)
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && country(&b[4..6])
        && b[6..].iter().all(|x| x.is_ascii_uppercase() || x.is_ascii_digit())
        && b[7] != b'O'
        // A word in capitals ("SOFTWARE") is not a bank code: a real one has a digit or is not a
        // dictionary-looking run of letters; require a digit or the branch.
        && (b[6..].iter().any(u8::is_ascii_digit) || b.len() == 11 || b[6] == b[7])
}

/// US passport number: nine digits, or a letter and eight digits, not one digit repeated.
pub fn us_passport(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = if b.first().is_some_and(u8::is_ascii_uppercase) {
        &b[1..]
    } else {
        b
    };
    (b.len() == 9)
        && digits.iter().all(u8::is_ascii_digit)
        && !digits.iter().all(|&x| x == digits[0])
}

/// A phone number in E.164 form: a plus, a country code not starting with 0, 8 to 15 digits.
pub fn phone_e164(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('+') else {
        return false;
    };
    let Some(d) = digits_sep(rest, b" -.()") else {
        return false;
    };
    (8..=15).contains(&d.len()) && d[0] != 0 && !all_same(&d[1..])
}

/// A North American number: area code and exchange starting 2–9, not 555-01xx fictional...
/// those are still numbers people write, so only the structure is checked.
pub fn phone_nanp(s: &str) -> bool {
    let Some(mut d) = digits_sep(s, b" -.()+") else {
        return false;
    };
    if d.len() == 11 && d[0] == 1 {
        d.remove(0);
    }
    d.len() == 10 && d[0] >= 2 && d[3] >= 2 && !all_same(&d[3..])
}

/// A national phone number outside North America: 9 to 12 digits, leading trunk zero.
pub fn phone_national(s: &str) -> bool {
    let Some(d) = digits_sep(s, b" -.()") else {
        return false;
    };
    (9..=12).contains(&d.len()) && d[0] == 0 && d[1] != 0 && !all_same(&d[1..])
}

/// An IPv6 address (what the standard library parses), with at least three groups written.
pub fn ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok()
        && s.bytes().filter(|&b| b == b':').count() >= 2
        && s.len() > 4
}

/// A MAC address: six hex pairs with one separator throughout, not all zero or all ones.
pub fn mac_address(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 17 {
        return false;
    }
    let sep = b[2];
    let hex: Vec<u8> = b.iter().copied().filter(|&x| x != sep).collect();
    (2..17).step_by(3).all(|i| b[i] == sep)
        && hex.len() == 12
        && hex.iter().all(u8::is_ascii_hexdigit)
        && !hex.iter().all(|&x| x == b'0')
        && !hex.iter().all(|&x| x == b'f' || x == b'F')
}

/// A calendar date written as yyyy-mm-dd, dd/mm/yyyy, mm/dd/yyyy or with dots, between 1900 and
/// this century.
pub fn birth_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split(['-', '/', '.']).collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let n = |p: &str| p.parse::<u32>().unwrap_or(0);
    let (y, a, b) = if parts[0].len() == 4 {
        (n(parts[0]), n(parts[1]), n(parts[2]))
    } else if parts[2].len() == 4 {
        (n(parts[2]), n(parts[0]), n(parts[1]))
    } else {
        return false;
    };
    let day_month = |d: u32, m: u32| (1..=12).contains(&m) && (1..=31).contains(&d);
    (1900..=2100).contains(&y) && (day_month(a, b) || day_month(b, a))
}

/// A card expiry: MM/YY or MM/YYYY.
pub fn card_expiry(s: &str) -> bool {
    let Some((m, y)) = s.split_once(['/', '-']) else {
        return false;
    };
    matches!(m.parse::<u32>(), Ok(1..=12))
        && (y.len() == 2 || (y.len() == 4 && y.starts_with("20")))
}

/// A JSON Web Token: the header segment decodes (base64url) to a JSON object naming an `alg`.
pub fn jwt(s: &str) -> bool {
    use base64::Engine as _;
    let Some(header) = s.split('.').next() else {
        return false;
    };
    let Ok(raw) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('='))
    else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(&raw) else {
        return false;
    };
    text.trim_start().starts_with('{') && text.contains("\"alg\"")
}

/// An Azure storage account key: 88 characters of base64 that decode to 64 bytes.
pub fn azure_storage_key(s: &str) -> bool {
    use base64::Engine as _;
    s.len() == 88
        && base64::engine::general_purpose::STANDARD
            .decode(s)
            .is_ok_and(|k| k.len() == 64)
}

/// Whether a string is shaped like a UUID, a hex digest or a build id rather than a secret.
fn structured_id(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |x: &u8| x.is_ascii_hexdigit();
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, x)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *x == b'-'
            } else {
                hex(x)
            }
        });
    let digest = b.iter().all(hex) || b.iter().all(|x| hex(x) || *x == b'-' || *x == b':');
    let numeric = b
        .iter()
        .all(|x| x.is_ascii_digit() || matches!(x, b'.' | b'-' | b'_'));
    uuid || digest || numeric
}

/// A secret-looking value: long enough, not a UUID, digest or build id, with upper case, lower
/// case and digits, and high Shannon entropy.
pub fn high_entropy_secret(s: &str) -> bool {
    let has = |f: fn(&u8) -> bool| s.as_bytes().iter().any(f);
    s.len() >= 20
        && !structured_id(s)
        && has(u8::is_ascii_lowercase)
        && has(u8::is_ascii_uppercase)
        && has(u8::is_ascii_digit)
        && entropy(s) > 4.0
}

/// A password written as a value, not a placeholder, reference or mask.
pub fn password_value(s: &str) -> bool {
    let v = s.trim_matches(|c| c == '"' || c == '\'');
    let lower = v.to_ascii_lowercase();
    v.chars().count() >= 4
        && !v.starts_with(['$', '{', '<', '%', '*', '['])
        && !v
            .chars()
            .all(|c| c == '*' || c == 'x' || c == 'X' || c == '.')
        && !matches!(
            lower.as_str(),
            "null"
                | "none"
                | "true"
                | "false"
                | "password"
                | "redacted"
                | "required"
                | "string"
                | "secret"
                | "your_password"
                | "yourpassword"
                | "example"
                | "undefined"
                | "empty"
        )
        && !lower.starts_with("env:")
        && !lower.starts_with("vault:")
}

/// A number in a fixed structure that is really a run of one digit or counts up (1234567890).
pub fn not_trivial(s: &str) -> bool {
    let d: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if d.len() < 2 {
        return true;
    }
    let counting = d.windows(2).all(|w| w[1] == (w[0] + 1) % 10);
    !all_same(&d) && !counting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards() {
        for ok in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
        ] {
            assert!(card_number(ok), "{ok}");
        }
        for bad in [
            "4111 1111 1111 1112",
            "1234567812345678",
            "0000000000000000",
            "4111-1111-111",
        ] {
            assert!(!card_number(bad), "{bad}");
        }
    }

    #[test]
    fn ibans() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban("XX82WEST12345698765432"));
        assert!(!iban("DE8937040044053201300"));
    }

    #[test]
    fn national_numbers() {
        assert!(aba_routing("011000015") && aba_routing("021000021"));
        assert!(!aba_routing("021000022") && !aba_routing("991000021"));
        assert!(us_ssn("123-45-6789") && !us_ssn("666-45-6789") && !us_ssn("123-00-6789"));
        assert!(!us_ssn("900-12-3456") && !us_ssn("078-05-1120"));
        assert!(us_itin("912-70-1234") && !us_itin("912-40-1234"));
        assert!(uk_nhs("943 476 5919") && !uk_nhs("943 476 5918"));
        assert!(uk_nino("AB123456C") && !uk_nino("QQ123456C") && !uk_nino("AB123456E"));
        assert!(us_npi("1234567893") && !us_npi("1234567890"));
        assert!(us_dea("AB1234563") && !us_dea("AB1234567"));
        assert!(ca_sin("130 692 544") && !ca_sin("130 692 545") && !ca_sin("046 454 286"));
    }

    #[test]
    fn national_ids_with_checksums() {
        assert!(spain_dni("12345678Z") && spain_dni("12345678-z") && !spain_dni("12345678A"));
        assert!(spain_nie("X1234567L") && !spain_nie("X1234567M") && !spain_nie("A1234567L"));
        assert!(france_nir("1 84 12 76 451 089 46") && !france_nir("1 84 12 76 451 089 47"));
        assert!(france_nir("269052A005012 25"), "Corsica's 2A");
        assert!(
            italy_codice_fiscale("RSSMRA85T10A562S") && !italy_codice_fiscale("RSSMRA85T10A562T")
        );
        assert!(germany_tax_id("86095742719") && !germany_tax_id("86095742718"));
        assert!(!germany_tax_id("12345678903"), "no digit repeated");
        assert!(netherlands_bsn("111222333") && !netherlands_bsn("111222334"));
        assert!(
            brazil_cpf("123.456.789-09")
                && !brazil_cpf("123.456.789-08")
                && !brazil_cpf("111.111.111-11")
        );
        assert!(
            india_aadhaar("2341 2341 2346")
                && !india_aadhaar("2341 2341 2347")
                && !india_aadhaar("1341 2341 2346")
        );
        assert!(australia_tfn("123 456 782") && !australia_tfn("123 456 783"));
        assert!(
            poland_pesel("44051401359")
                && !poland_pesel("44051401358")
                && !poland_pesel("44151401359")
        );
        assert!(us_mbi("1EG4-TE5-MK73") && !us_mbi("1SG4-TE5-MK73") && !us_mbi("0EG4-TE5-MK73"));
        assert!(swift_bic("DEUTDEFF500") && swift_bic("NEDSZAJJ") && !swift_bic("SOFTWARE"));
        assert!(!swift_bic("DEUTXXFF500"), "no country XX");
    }

    #[test]
    fn contact_and_network_shapes() {
        assert!(
            phone_e164("+44 20 7946 0958")
                && !phone_e164("+0 20 7946 0958")
                && !phone_e164("+1234")
        );
        assert!(phone_nanp("(415) 555-0132") && !phone_nanp("(115) 555-0132"));
        assert!(ipv6("2001:db8::1") && ipv6("fe80::1ff:fe23:4567:890a") && !ipv6("12:34:56"));
        assert!(mac_address("00:1A:2B:3C:4D:5E") && !mac_address("00:00:00:00:00:00"));
        assert!(
            !mac_address("00:1A-2B:3C:4D:5E"),
            "one separator throughout"
        );
        assert!(birth_date("1984-07-23") && birth_date("23/07/1984") && !birth_date("1984-13-40"));
        assert!(card_expiry("12/29") && card_expiry("01/2031") && !card_expiry("13/29"));
        assert!(
            jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
                && !jwt("eyJub3RhbGciOjF9.x.y")
        );
    }

    #[test]
    fn secrets_and_look_alikes() {
        assert!(high_entropy_secret("Zq8vR2mX9kL4pT7wN3bY6cH1"));
        for not_secret in [
            "550e8400-e29b-41d4-a716-446655440000",
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "20261123.073022.123456",
        ] {
            assert!(!high_entropy_secret(not_secret), "{not_secret}");
        }
        assert!(password_value("Tr0ub4dor&3") && password_value("\"hunter22\""));
        for placeholder in [
            "${DB_PASSWORD}",
            "<password>",
            "********",
            "null",
            "xxxx",
            "env:SECRET",
        ] {
            assert!(!password_value(placeholder), "{placeholder}");
        }
        assert!(not_trivial("48213377") && !not_trivial("1234567890") && !not_trivial("00000000"));
    }

    #[test]
    fn entropy_orders_randomness() {
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") > 4.0);
    }
}

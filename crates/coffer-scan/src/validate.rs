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
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / f64::from(n);
            -p * p.log2()
        })
        .sum()
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
    fn entropy_orders_randomness() {
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") > 4.0);
    }
}

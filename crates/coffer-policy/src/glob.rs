//! Wildcard matching as the policy language does it: `*` matches any run of characters (also
//! none), `?` exactly one. Linear in the input for any pattern (no backtracking blow-up).

/// Whether `text` matches `pattern`, comparing characters exactly or ASCII-case-insensitively.
pub fn matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// ARN matching (`ArnLike`, `ArnEquals`): the six colon-separated parts are matched one by one, so
/// a wildcard never spans a colon of the first five.
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| matches(p, a, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("kms:*", "kms:Encrypt", false));
        assert!(matches("kms:Get*", "kms:GetKeyPolicy", false));
        assert!(!matches("kms:Get*", "kms:Encrypt", false));
        assert!(matches("kms:*crypt", "kms:ReEncrypt", false));
        assert!(matches("k?s:Encrypt", "kms:Encrypt", false));
        assert!(!matches("k?s:Encrypt", "ks:Encrypt", false));
        assert!(matches("*", "", false));
        assert!(matches("", "", false));
        assert!(!matches("", "a", false));
        assert!(matches("KMS:encrypt", "kms:Encrypt", true));
        assert!(!matches("KMS:encrypt", "kms:Encrypt", false));
        assert!(matches("a*b*c", "aXXbYYc", false));
        assert!(!matches("a*b*c", "aXXbYY", false));
        // A pathological pattern stays fast.
        let text = "a".repeat(5000);
        assert!(!matches(&format!("{}b", "*a".repeat(200)), &text, false));
    }

    #[test]
    fn arns() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(arn_matches("arn:aws:kms:*:111122223333:key/*", arn));
        assert!(arn_matches("arn:aws:kms:us-east-1:111122223333:*", arn));
        assert!(!arn_matches("arn:aws:kms:*:444455556666:key/*", arn));
        assert!(!arn_matches("arn:aws:*", arn));
        assert!(!arn_matches("*", arn));
    }
}

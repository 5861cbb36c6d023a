use super::*;

const ACCOUNT: &str = "111122223333";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const ROOT: &str = "arn:aws:iam::111122223333:root";

fn key_policy(text: &str) -> Policy {
    Policy::parse(text, PolicyKind::Resource).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn decide(p: &Policy, who: &str, action: &str, ctx: &Context) -> Decision {
    p.evaluate(&Request {
        caller: Caller {
            arn: who,
            account: ACCOUNT,
        },
        action,
        resource: KEY,
        context: ctx,
    })
}

fn allowed(p: &Policy, who: &str, action: &str, ctx: &Context) -> bool {
    let d = decide(p, who, action, ctx);
    d.allowed && !d.denied
}

fn one(stmt: &str) -> Policy {
    key_policy(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{stmt}]}}"#
    ))
}

fn malformed(text: &str) -> String {
    match Policy::parse(text, PolicyKind::Resource) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.0,
    }
}

#[test]
fn default_key_policy_allows_root_and_delegates_to_the_account() {
    let p = key_policy(&format!(
        r#"{{"Version":"2012-10-17","Id":"key-default-1","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
    ));
    let ctx = Context::new();
    assert!(allowed(&p, ROOT, "kms:PutKeyPolicy", &ctx));
    let d = decide(&p, ALICE, "kms:Encrypt", &ctx);
    assert!(!d.allowed && d.account_allowed && !d.denied);
    // Another account's users get nothing.
    let other = p.evaluate(&Request {
        caller: Caller {
            arn: "arn:aws:iam::444455556666:user/bob",
            account: "444455556666",
        },
        action: "kms:Encrypt",
        resource: KEY,
        context: &ctx,
    });
    assert_eq!(other, Decision::default());
}

#[test]
fn account_id_principal_means_the_account() {
    let p = one(
        r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}"#,
    );
    assert!(allowed(&p, ROOT, "kms:Decrypt", &Context::new()));
}

#[test]
fn users_actions_and_wildcards() {
    let p = one(&format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":["{ALICE}"]}},"Action":["kms:Encrypt","kms:Generate*","KMS:re?ncrypt*"],"Resource":"*"}}"#
    ));
    let ctx = Context::new();
    assert!(allowed(&p, ALICE, "kms:Encrypt", &ctx));
    assert!(allowed(&p, ALICE, "kms:GenerateDataKey", &ctx));
    assert!(allowed(&p, ALICE, "kms:ReEncryptFrom", &ctx));
    assert!(!allowed(&p, ALICE, "kms:Decrypt", &ctx));
    assert!(!allowed(&p, ROOT, "kms:Encrypt", &ctx));
    assert!(!allowed(
        &p,
        "arn:aws:iam::111122223333:user/alice2",
        "kms:Encrypt",
        &ctx
    ));
}

#[test]
fn not_action_not_resource_not_principal() {
    let p = one(
        r#"{"Effect":"Allow","Principal":"*","NotAction":["kms:ScheduleKeyDeletion","kms:Put*"],"Resource":"*"}"#,
    );
    let ctx = Context::new();
    assert!(allowed(&p, ALICE, "kms:Decrypt", &ctx));
    assert!(!allowed(&p, ALICE, "kms:PutKeyPolicy", &ctx));
    let p = one(
        r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","NotResource":"arn:aws:kms:*:111122223333:key/1234abcd-*"}"#,
    );
    assert!(!allowed(&p, ALICE, "kms:Decrypt", &ctx));
    let p = one(&format!(
        r#"{{"Effect":"Deny","NotPrincipal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
    ));
    assert!(decide(&p, ROOT, "kms:Decrypt", &ctx).denied);
    assert!(!decide(&p, ALICE, "kms:Decrypt", &ctx).denied);
}

#[test]
fn resources_match_arn_patterns() {
    let ctx = Context::new();
    for (pattern, hit) in [
        ("*", true),
        (KEY, true),
        ("arn:aws:kms:*:111122223333:key/*", true),
        (
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890a?",
            true,
        ),
        ("arn:aws:kms:us-west-2:111122223333:key/*", false),
        ("arn:aws:kms:*:111122223333:alias/*", false),
    ] {
        let p = one(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"{pattern}"}}"#
        ));
        assert_eq!(allowed(&p, ALICE, "kms:Decrypt", &ctx), hit, "{pattern}");
    }
}

fn with_condition(cond: &str) -> Policy {
    one(&format!(
        r#"{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{cond}}}"#
    ))
}

fn holds(cond: &str, ctx: &Context) -> bool {
    allowed(&with_condition(cond), ALICE, "kms:Decrypt", ctx)
}

#[test]
fn string_conditions_and_missing_keys() {
    let mut ctx = Context::new();
    ctx.set("kms:EncryptionContext:department", "Finance");
    ctx.set("aws:username", "alice");
    assert!(holds(
        r#"{"StringEquals":{"kms:EncryptionContext:Department":"Finance"}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"StringEquals":{"kms:EncryptionContext:Department":"finance"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Department":"FINANCE"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"StringLike":{"kms:EncryptionContext:Department":["Fin*","HR"]}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"StringNotLike":{"kms:EncryptionContext:Department":"Fin*"}}"#,
        &ctx
    ));
    // Absent key: positive operators fail, negated ones hold, IfExists holds.
    assert!(!holds(
        r#"{"StringEquals":{"kms:EncryptionContext:Project":"x"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"StringNotEquals":{"kms:EncryptionContext:Project":"x"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"StringEqualsIfExists":{"kms:EncryptionContext:Project":"x"}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"StringEqualsIfExists":{"kms:EncryptionContext:Department":"x"}}"#,
        &ctx
    ));
    // Several keys in one operator, several operators: all must hold.
    assert!(!holds(
        r#"{"StringEquals":{"kms:EncryptionContext:Department":"Finance","aws:username":"bob"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"StringEquals":{"kms:EncryptionContext:Department":"Finance"},"StringLike":{"aws:username":"a*"}}"#,
        &ctx
    ));
    // Policy variables.
    assert!(holds(
        r#"{"StringEquals":{"kms:EncryptionContext:Department":"${aws:username}x"}}"#,
        &{
            let mut c = ctx.clone();
            c.set("kms:EncryptionContext:Department", "alicex");
            c
        }
    ));
}

#[test]
fn set_qualifiers() {
    let mut ctx = Context::new();
    ctx.set_multi(
        "kms:EncryptionContextKeys",
        vec!["Department".into(), "Project".into()],
    );
    assert!(holds(
        r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Department","Project","Team"]}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Department"]}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["Project"]}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["Team"]}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"ForAnyValue:StringNotEquals":{"kms:EncryptionContextKeys":["Project"]}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"ForAllValues:StringNotEquals":{"kms:EncryptionContextKeys":["Project"]}}"#,
        &ctx
    ));
    // An absent multivalued key: ForAllValues holds (AWS's documented pitfall), ForAnyValue fails.
    let empty = Context::new();
    assert!(holds(
        r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Department"]}}"#,
        &empty
    ));
    assert!(!holds(
        r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["Department"]}}"#,
        &empty
    ));
}

#[test]
fn numeric_date_bool_ip_arn_null() {
    let mut ctx = Context::new();
    ctx.set("kms:NumberOfBytes", "32");
    ctx.set("aws:CurrentTime", "2026-11-22T12:00:00Z");
    ctx.set("aws:SecureTransport", "true");
    ctx.set("aws:SourceIp", "10.1.2.3");
    ctx.set("aws:PrincipalArn", ALICE);
    assert!(holds(
        r#"{"NumericLessThanEquals":{"kms:NumberOfBytes":32}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"NumericLessThan":{"kms:NumberOfBytes":"32"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"NumericNotEquals":{"kms:NumberOfBytes":"64"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"NumericGreaterThan":{"kms:NumberOfBytes":"16.5"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"DateLessThan":{"aws:CurrentTime":"2027-01-01"}}"#,
        &ctx
    ));
    assert!(holds(
        r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-11-22T11:59:59Z"}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"1893456000"}}"#,
        &ctx
    ));
    assert!(holds(r#"{"Bool":{"aws:SecureTransport":"true"}}"#, &ctx));
    assert!(holds(r#"{"Bool":{"aws:SecureTransport":true}}"#, &ctx));
    assert!(!holds(r#"{"Bool":{"aws:SecureTransport":"false"}}"#, &ctx));
    assert!(holds(
        r#"{"IpAddress":{"aws:SourceIp":["192.0.2.0/24","10.0.0.0/8"]}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        &ctx
    ));
    assert!(holds(r#"{"IpAddress":{"aws:SourceIp":"10.1.2.3"}}"#, &ctx));
    assert!(holds(r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#, &ctx));
    let mut v6 = Context::new();
    v6.set("aws:SourceIp", "::ffff:10.1.2.3");
    assert!(holds(r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &v6));
    v6.set("aws:SourceIp", "2001:db8::1");
    assert!(holds(
        r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#,
        &v6
    ));
    assert!(holds(
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/*"}}"#,
        &ctx
    ));
    assert!(!holds(
        r#"{"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::*:user/alice"}}"#,
        &ctx
    ));
    assert!(holds(r#"{"Null":{"kms:GrantOperations":"true"}}"#, &ctx));
    assert!(!holds(r#"{"Null":{"aws:SourceIp":"true"}}"#, &ctx));
    assert!(holds(r#"{"Null":{"aws:SourceIp":"false"}}"#, &ctx));
}

#[test]
fn deny_is_reported_beside_allow() {
    let p = key_policy(&format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Deny","Principal":{{"AWS":"{ACCOUNT}"}},"Action":"kms:Decrypt","Resource":"*",
              "Condition":{{"Bool":{{"aws:SecureTransport":"false"}}}}}}]}}"#
    ));
    let mut ctx = Context::new();
    ctx.set("aws:SecureTransport", "false");
    let d = decide(&p, ALICE, "kms:Decrypt", &ctx);
    assert!(d.allowed && d.denied);
    ctx.set("aws:SecureTransport", "true");
    let d = decide(&p, ALICE, "kms:Decrypt", &ctx);
    assert!(d.allowed && !d.denied);
}

#[test]
fn identity_policies() {
    let p = Policy::parse(
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:Encrypt","Resource":"arn:aws:kms:*:111122223333:key/*"}}"#,
        PolicyKind::Identity,
    )
    .unwrap();
    assert!(allowed(&p, ALICE, "kms:Encrypt", &Context::new()));
    let e = Policy::parse(
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}}"#,
        PolicyKind::Identity,
    )
    .unwrap_err();
    assert!(e.0.contains("names no Principal"), "{e}");
    let e = Policy::parse(
        r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
        PolicyKind::Identity,
    )
    .unwrap_err();
    assert!(e.0.contains("no Action"), "{e}");
}

#[test]
fn key_policy_statements_without_action_or_resource_match_nothing() {
    let p = one(r#"{"Effect":"Allow","Principal":"*","Resource":"*"}"#);
    assert!(!allowed(&p, ALICE, "kms:Encrypt", &Context::new()));
    let p = one(r#"{"Effect":"Allow","Principal":"*","Action":"kms:*"}"#);
    assert!(!allowed(&p, ALICE, "kms:Encrypt", &Context::new()));
}

#[test]
fn malformed_policies_are_named() {
    let cases: &[(&str, &str)] = &[
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        (r#"{"Version":"2012-10-17"}"#, "no Statement"),
        (r#"{"Statement":[]}"#, "empty"),
        (r#"{"Statement":[1]}"#, "JSON object"),
        (r#"{"Version":"2020-01-01","Statement":[]}"#, "Version"),
        (r#"{"Statment":[]}"#, "unknown element 'Statment'"),
        (
            r#"{"Statement":{"Effect":"Permit","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
            "Effect",
        ),
        (
            r#"{"Statement":{"Efect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
            "unknown element 'Efect'",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*"}}"#,
            "no Principal",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*","Resource":"*"}}"#,
            "not a valid principal",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/*"},"Action":"kms:*","Resource":"*"}}"#,
            "not a valid principal",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"Federated":"x"},"Action":"kms:*","Resource":"*"}}"#,
            "not supported",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"Encrypt","Resource":"*"}}"#,
            "not an action",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}}"#,
            "not both",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"key/1"}}"#,
            "not a resource",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEqualz":{"a:b":"c"}}}}"#,
            "'StringEqualz' is not a condition operator",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NumericLessThan":{"kms:NumberOfBytes":"many"}}}}"#,
            "'many' is not a number",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"tomorrow"}}}}"#,
            "not a date",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}}"#,
            "not an IP address",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"yes"}}}}"#,
            "not true or false",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NullIfExists":{"a:b":"true"}}}}"#,
            "Null takes neither",
        ),
        (
            r#"{"Statement":{"Sid":"S1","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"a:b":{"x":1}}}}}"#,
            "In statement 1 (Sid \"S1\")",
        ),
    ];
    for (text, want) in cases {
        let got = malformed(text);
        assert!(got.contains(want), "{text}\n  gave: {got}\n  want: {want}");
    }
    // Deep nesting is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    assert!(malformed(&deep).contains("not valid JSON"));
    let big = format!(r#"{{"Id":"{}"}}"#, "x".repeat(MAX_DOCUMENT));
    assert!(malformed(&big).contains("limit"));
}

//! The condition evaluator's inputs: request-context values come from requests (encryption
//! context pairs, source addresses, user agents), so any string a client sends is evaluated by
//! every operator, set qualifier and policy variable without panicking.
#![no_main]

use std::sync::LazyLock;

use coffer_policy::{Caller, Context, Policy, PolicyKind, Request};
use libfuzzer_sys::fuzz_target;

/// One statement per operator family, each on the keys the fuzzer fills.
static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let ops = [
        r#""StringEquals":{"k:a":"${k:b}x"}"#,
        r#""StringNotEqualsIgnoreCase":{"k:a":"ÄBC"}"#,
        r#""StringLike":{"k:a":"*a?b*${k:c, 'd'}"}"#,
        r#""ForAllValues:StringLike":{"k:m":["a*","*b"]}"#,
        r#""ForAnyValue:StringNotLike":{"k:m":"${*}x${?}"}"#,
        r#""NumericLessThanEquals":{"k:a":"1e308"}"#,
        r#""NumericGreaterThanIfExists":{"k:b":-5}"#,
        r#""DateLessThan":{"k:a":"2026-11-22T12:00:00Z"}"#,
        r#""DateGreaterThanEquals":{"k:b":"1700000000"}"#,
        r#""Bool":{"k:a":"true"}"#,
        r#""IpAddress":{"k:a":["10.0.0.0/8","2001:db8::/32"]}"#,
        r#""NotIpAddress":{"k:b":"0.0.0.0/0"}"#,
        r#""ArnLike":{"k:a":"arn:aws:iam::*:user/${k:c}"}"#,
        r#""ArnNotEquals":{"k:b":"arn:*:*:*:*:*"}"#,
        r#""BinaryEquals":{"k:a":"AAAA"}"#,
        r#""Null":{"k:c":"false"}"#,
    ];
    let statements: Vec<String> = ops
        .iter()
        .map(|c| {
            format!(
                r#"{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{{{c}}}}}"#
            )
        })
        .collect();
    let text = format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    );
    Policy::parse(&text, PolicyKind::Resource).expect("the fuzz policy is valid")
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{0}');
    let mut ctx = Context::new();
    for key in ["k:a", "k:b", "k:c"] {
        if let Some(v) = parts.next() {
            ctx.set(key, v);
        }
    }
    ctx.set_multi("k:m", parts.map(str::to_owned).collect());
    let _ = POLICY.evaluate(&Request {
        caller: Caller {
            arn: "arn:aws:iam::111122223333:user/alice",
            account: "111122223333",
        },
        action: "kms:Encrypt",
        resource: "arn:aws:kms:us-east-1:111122223333:key/k",
        context: &ctx,
    });
});

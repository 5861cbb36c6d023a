//! Any bytes as a key policy or an identity policy: parsing returns a policy or an error, never
//! panics; whatever parses is evaluated against a request without panicking.
#![no_main]

use coffer_policy::{Caller, Context, Policy, PolicyKind, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut ctx = Context::new();
    ctx.set("aws:username", "alice");
    ctx.set("aws:SourceIp", "10.1.2.3");
    ctx.set("aws:CurrentTime", "2026-11-22T12:00:00Z");
    ctx.set("kms:EncryptionContext:department", "Finance");
    ctx.set_multi("kms:EncryptionContextKeys", vec!["Department".into()]);
    for kind in [PolicyKind::Resource, PolicyKind::Identity] {
        if let Ok(p) = Policy::parse(text, kind) {
            for caller in [
                "arn:aws:iam::111122223333:root",
                "arn:aws:iam::111122223333:user/alice",
            ] {
                let _ = p.evaluate(&Request {
                    caller: Caller {
                        arn: caller,
                        account: "111122223333",
                    },
                    action: "kms:Decrypt",
                    resource: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                    context: &ctx,
                });
            }
        }
    }
});

//! Any bytes as an S3 request document (CreateBucketConfiguration, Delete, Tagging, …): the
//! parser returns an element tree or MalformedXML, never panics, whatever the nesting.
#![no_main]

use coffer_api::s3::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = xml::parse(data) {
        // Walking what came back is safe too.
        let mut stack = vec![&root];
        while let Some(e) = stack.pop() {
            let _ = e.child_text("Key");
            stack.extend(e.children.iter());
        }
    }
});

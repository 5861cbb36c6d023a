//! Untrusted request parts as SigV4 sees them: the Authorization header, the path and the query.
#![no_main]

use coffer_api::sigv4;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let auth = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let query = parts.next();
    if let Ok(a) = sigv4::parse_authorization(auth) {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", http::HeaderValue::from_static("localhost"));
        let request = sigv4::RequestParts {
            method: "POST",
            raw_path: path,
            raw_query: query,
            headers: &headers,
            authority: Some("localhost"),
            payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            double_encode_path: a.service != "s3",
        };
        if let Ok(canonical) = sigv4::canonical_request(&request, &a.signed_headers) {
            let _ = sigv4::sign(
                b"secret",
                a.date,
                a.region,
                a.service,
                "20150830T123600Z",
                &canonical,
            );
        }
    }
    let _ = sigv4::canonical_uri(path, true);
    let _ = sigv4::canonical_uri(path, false);
    let _ = sigv4::canonical_query(query);
    let _ = sigv4::parse_amz_date(auth);
});

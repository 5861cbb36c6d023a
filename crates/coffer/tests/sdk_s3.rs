//! The real `coffer` binary driven by the official AWS SDK for Rust (`aws-sdk-s3`) with its
//! defaults (flexible checksums in `aws-chunked` trailers, path-style for an IP endpoint): buckets,
//! objects, ranges, listings, copies, multipart with SSE-KMS, SSE-C, versioning and errors.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
    ServerSideEncryption, VersioningConfiguration,
};
use base64::Engine;

mod common;

use common::{Server, credentials, start};

fn client(s: &Server) -> Client {
    let data = s.data();
    let (id, secret) = credentials(&data);
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&s.endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "coffer-test"))
        .http_client(common::http_client(&data))
        .build();
    Client::from_conf(conf)
}

fn kms_client(s: &Server) -> aws_sdk_kms::Client {
    let data = s.data();
    let (id, secret) = credentials(&data);
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(&s.endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "coffer-test",
        ))
        .http_client(common::http_client(&data))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ seed)
        .collect()
}

async fn read(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

#[tokio::test]
async fn sdk_s3_round_trip() {
    let s = start();
    let s3 = client(&s);

    s3.create_bucket()
        .bucket("sdk-bucket")
        .send()
        .await
        .expect("CreateBucket");
    let buckets = s3.list_buckets().send().await.expect("ListBuckets");
    assert!(
        buckets
            .buckets()
            .iter()
            .any(|b| b.name() == Some("sdk-bucket"))
    );

    // PutObject with the SDK's default checksum (CRC32 in an aws-chunked trailer), read back
    // whole and by a range across a package boundary.
    let data = pattern(300_000, 1);
    let put = s3
        .put_object()
        .bucket("sdk-bucket")
        .key("dir/one.bin")
        .content_type("application/x-test")
        .metadata("owner", "sdk")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("PutObject");
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    let got = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("dir/one.bin")
        .send()
        .await
        .expect("GetObject");
    assert_eq!(got.content_type(), Some("application/x-test"));
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("sdk")
    );
    assert_eq!(read(got).await, data);
    let ranged = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("dir/one.bin")
        .range("bytes=65530-131080")
        .send()
        .await
        .expect("ranged GET");
    assert_eq!(ranged.content_range(), Some("bytes 65530-131080/300000"));
    assert_eq!(read(ranged).await, data[65530..=131080]);
    let head = s3
        .head_object()
        .bucket("sdk-bucket")
        .key("dir/one.bin")
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(head.content_length(), Some(300_000));

    // Listings with a delimiter; copies.
    for k in ["dir/two.txt", "top.txt"] {
        s3.put_object()
            .bucket("sdk-bucket")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("PutObject");
    }
    let listed = s3
        .list_objects_v2()
        .bucket("sdk-bucket")
        .delimiter("/")
        .send()
        .await
        .expect("ListObjectsV2");
    let prefixes: Vec<_> = listed
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["dir/"]);
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["top.txt"]);
    s3.copy_object()
        .bucket("sdk-bucket")
        .key("copy.bin")
        .copy_source("sdk-bucket/dir/one.bin")
        .send()
        .await
        .expect("CopyObject");
    let copy = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("copy.bin")
        .send()
        .await
        .expect("GET copy");
    assert_eq!(read(copy).await, data);

    // Multipart with SSE-KMS under a named key.
    let key_arn = kms_client(&s)
        .create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("arn");
    let up = s3
        .create_multipart_upload()
        .bucket("sdk-bucket")
        .key("big.bin")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_arn)
        .send()
        .await
        .expect("CreateMultipartUpload");
    let upload_id = up.upload_id().expect("upload id").to_owned();
    let parts = [pattern(5 * 1024 * 1024, 2), pattern(100_000, 3)];
    let mut completed = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let r = s3
            .upload_part()
            .bucket("sdk-bucket")
            .key("big.bin")
            .upload_id(&upload_id)
            .part_number(n)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .expect("UploadPart");
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().expect("etag"))
                .build(),
        );
    }
    let done = s3
        .complete_multipart_upload()
        .bucket("sdk-bucket")
        .key("big.bin")
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("CompleteMultipartUpload");
    assert!(done.e_tag().expect("etag").ends_with("-2\""));
    let big = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("big.bin")
        .send()
        .await
        .expect("GET big");
    assert_eq!(
        big.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(big.ssekms_key_id(), Some(key_arn.as_str()));
    assert_eq!(read(big).await, [&parts[0][..], &parts[1][..]].concat());

    // SSE-C: the key is needed to read, and checked.
    let customer = [7u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_b64 = b64.encode(customer);
    let md5 = b64.encode(coffer_crypto::digest::md5(&customer));
    s3.put_object()
        .bucket("sdk-bucket")
        .key("customer.bin")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key_b64)
        .sse_customer_key_md5(&md5)
        .body(ByteStream::from_static(b"customer secret"))
        .send()
        .await
        .expect("PutObject SSE-C");
    let e = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("customer.bin")
        .send()
        .await
        .expect_err("no key, no read");
    assert_eq!(
        e.as_service_error()
            .and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::code(s)),
        Some("InvalidRequest")
    );
    let got = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("customer.bin")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key_b64)
        .sse_customer_key_md5(&md5)
        .send()
        .await
        .expect("GET SSE-C");
    assert_eq!(read(got).await, b"customer secret");

    // Versioning, delete markers, batch delete, errors.
    s3.put_bucket_versioning()
        .bucket("sdk-bucket")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("PutBucketVersioning");
    let v1 = s3
        .put_object()
        .bucket("sdk-bucket")
        .key("versioned")
        .body(ByteStream::from_static(b"one"))
        .send()
        .await
        .expect("put v1")
        .version_id
        .expect("version id");
    let del = s3
        .delete_object()
        .bucket("sdk-bucket")
        .key("versioned")
        .send()
        .await
        .expect("DeleteObject");
    assert_eq!(del.delete_marker(), Some(true));
    let e = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("versioned")
        .send()
        .await
        .expect_err("deleted");
    assert!(e.as_service_error().is_some_and(|s| s.is_no_such_key()));
    let old = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("versioned")
        .version_id(&v1)
        .send()
        .await
        .expect("GET by version");
    assert_eq!(read(old).await, b"one");
    let batch = s3
        .delete_objects()
        .bucket("sdk-bucket")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("top.txt")
                        .build()
                        .expect("id"),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("copy.bin")
                        .build()
                        .expect("id"),
                )
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("DeleteObjects");
    assert_eq!(batch.deleted().len(), 2);
    let e = s3
        .delete_bucket()
        .bucket("sdk-bucket")
        .send()
        .await
        .expect_err("not empty");
    assert_eq!(
        e.as_service_error()
            .and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::code(s)),
        Some("BucketNotEmpty")
    );
}

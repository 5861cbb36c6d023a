//! The real `coffer` binary, started on port 0, driven over TLS by the official AWS SDK for Rust
//! (`aws-sdk-kms`), trusting only the CA that Coffer generated.

use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState, Tag};

mod common;

use common::{Server, credentials, start};

fn client(s: &Server, secret_override: Option<&str>) -> Client {
    let data = s.data();
    let http = common::http_client(&data);
    let (id, secret) = credentials(&data);
    let secret = secret_override.map(str::to_owned).unwrap_or(secret);
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&s.endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "coffer-test"))
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

fn code<E, R>(e: &aws_sdk_kms::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kms::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_owned)
        .unwrap_or_else(|| "no service error".into())
}

#[tokio::test]
async fn sdk_round_trip_every_operation() {
    let s = start();
    let kms = client(&s, None);

    let md = kms
        .create_key()
        .description("sdk")
        .tags(
            Tag::builder()
                .tag_key("env")
                .tag_value("test")
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("metadata");
    let key_id = md.key_id().to_owned();
    let arn = md.arn().expect("arn").to_owned();
    assert_eq!(
        arn,
        format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}")
    );
    assert_eq!(md.key_state(), Some(&KeyState::Enabled));

    kms.create_alias()
        .alias_name("alias/sdk")
        .target_key_id(&key_id)
        .send()
        .await
        .expect("CreateAlias");
    let described = kms
        .describe_key()
        .key_id("alias/sdk")
        .send()
        .await
        .expect("DescribeKey");
    assert_eq!(described.key_metadata().expect("md").key_id(), key_id);

    let enc = kms
        .encrypt()
        .key_id("alias/sdk")
        .plaintext(Blob::new(b"from the rust sdk".to_vec()))
        .encryption_context("purpose", "sdk-test")
        .send()
        .await
        .expect("Encrypt");
    assert_eq!(enc.key_id(), Some(arn.as_str()));
    let blob = enc.ciphertext_blob().expect("blob").clone();
    let dec = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("purpose", "sdk-test")
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(
        dec.plaintext().expect("plaintext").as_ref(),
        b"from the rust sdk"
    );

    let wrong = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .expect_err("context required");
    assert_eq!(code(&wrong), "InvalidCiphertextException");

    let other = kms
        .create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("md");
    let re = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .source_encryption_context("purpose", "sdk-test")
        .destination_key_id(other.key_id())
        .send()
        .await
        .expect("ReEncrypt");
    assert_eq!(re.source_key_id(), Some(arn.as_str()));

    let dk = kms
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .expect("GenerateDataKey");
    assert_eq!(dk.plaintext().expect("plaintext").as_ref().len(), 32);
    let dk2 = kms
        .generate_data_key_without_plaintext()
        .key_id(&key_id)
        .number_of_bytes(64)
        .send()
        .await
        .expect("GenerateDataKeyWithoutPlaintext");
    assert!(dk2.ciphertext_blob().is_some());
    let random = kms
        .generate_random()
        .number_of_bytes(48)
        .send()
        .await
        .expect("GenerateRandom");
    assert_eq!(random.plaintext().expect("bytes").as_ref().len(), 48);

    kms.update_key_description()
        .key_id(&key_id)
        .description("renamed")
        .send()
        .await
        .expect("UpdateKeyDescription");
    kms.tag_resource()
        .key_id(&key_id)
        .tags(
            Tag::builder()
                .tag_key("owner")
                .tag_value("me")
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("TagResource");
    kms.untag_resource()
        .key_id(&key_id)
        .tag_keys("env")
        .send()
        .await
        .expect("UntagResource");
    let tags = kms
        .list_resource_tags()
        .key_id(&key_id)
        .send()
        .await
        .expect("ListResourceTags");
    assert_eq!(tags.tags().len(), 1);

    kms.enable_key_rotation()
        .key_id(&key_id)
        .rotation_period_in_days(180)
        .send()
        .await
        .expect("EnableKeyRotation");
    let status = kms
        .get_key_rotation_status()
        .key_id(&key_id)
        .send()
        .await
        .expect("GetKeyRotationStatus");
    assert!(status.key_rotation_enabled());
    assert_eq!(status.rotation_period_in_days(), Some(180));
    kms.rotate_key_on_demand()
        .key_id(&key_id)
        .send()
        .await
        .expect("RotateKeyOnDemand");
    let rotations = kms
        .list_key_rotations()
        .key_id(&key_id)
        .send()
        .await
        .expect("ListKeyRotations");
    assert_eq!(rotations.rotations().len(), 1);
    kms.disable_key_rotation()
        .key_id(&key_id)
        .send()
        .await
        .expect("DisableKeyRotation");

    kms.update_alias()
        .alias_name("alias/sdk")
        .target_key_id(other.key_id())
        .send()
        .await
        .expect("UpdateAlias");
    let aliases = kms.list_aliases().send().await.expect("ListAliases");
    assert!(
        aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/sdk")
                && a.target_key_id() == Some(other.key_id()))
    );
    kms.delete_alias()
        .alias_name("alias/sdk")
        .send()
        .await
        .expect("DeleteAlias");

    kms.disable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("DisableKey");
    let e = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .expect_err("disabled");
    assert_eq!(code(&e), "DisabledException");
    kms.enable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("EnableKey");

    let sched = kms
        .schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    assert_eq!(sched.key_state(), Some(&KeyState::PendingDeletion));
    let e = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .expect_err("pending");
    assert_eq!(code(&e), "KMSInvalidStateException");
    kms.cancel_key_deletion()
        .key_id(&key_id)
        .send()
        .await
        .expect("CancelKeyDeletion");

    let keys = kms.list_keys().limit(1).send().await.expect("ListKeys");
    assert_eq!(keys.keys().len(), 1);
    assert!(keys.truncated());
    let all: Vec<_> = kms
        .list_keys()
        .into_paginator()
        .page_size(1)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("paginate");
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn sdk_sees_aws_auth_errors() {
    let s = start();
    let bad = client(&s, Some("0000000000000000000000000000000000000000"));
    let e = bad.list_keys().send().await.expect_err("wrong secret");
    assert_eq!(code(&e), "InvalidSignatureException");
    let e = client(&s, None)
        .describe_key()
        .key_id("alias/missing")
        .send()
        .await
        .expect_err("missing alias");
    assert_eq!(code(&e), "NotFoundException");
}

#[tokio::test]
async fn sdk_sign_verify_and_mac() {
    use aws_sdk_kms::types::{
        KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType, SigningAlgorithmSpec,
    };
    let s = start();
    let kms = client(&s, None);

    let key = kms
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("md");
    assert_eq!(
        key.signing_algorithms(),
        &[SigningAlgorithmSpec::EcdsaSha256]
    );
    let public = kms
        .get_public_key()
        .key_id(key.key_id())
        .send()
        .await
        .expect("GetPublicKey");
    assert!(public.public_key().expect("der").as_ref().len() > 64);
    let sig = kms
        .sign()
        .key_id(key.key_id())
        .message(Blob::new(b"sdk message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect("Sign");
    let verified = kms
        .verify()
        .key_id(key.key_id())
        .message(Blob::new(b"sdk message".to_vec()))
        .signature(sig.signature().expect("signature").clone())
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect("Verify");
    assert!(verified.signature_valid());
    let e = kms
        .verify()
        .key_id(key.key_id())
        .message(Blob::new(b"other message".to_vec()))
        .signature(sig.signature().expect("signature").clone())
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect_err("wrong message");
    assert_eq!(code(&e), "KMSInvalidSignatureException");

    let hmac = kms
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("md");
    let mac = kms
        .generate_mac()
        .key_id(hmac.key_id())
        .message(Blob::new(b"m".to_vec()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .expect("GenerateMac");
    let ok = kms
        .verify_mac()
        .key_id(hmac.key_id())
        .message(Blob::new(b"m".to_vec()))
        .mac(mac.mac().expect("mac").clone())
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .expect("VerifyMac");
    assert!(ok.mac_valid());
}

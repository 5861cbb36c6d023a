"""Bucket policies and Block Public Access, with boto3 and anonymous requests: the policies users
write to force encryption, share with another user, fence by network, or publish a bucket."""

import json
import ssl
import urllib.error
import urllib.request

import botocore.exceptions
import pytest

from conftest import audit_events


@pytest.fixture(scope="module")
def s3(coffer):
    return coffer.client("s3")


def code(e):
    return e.value.response["Error"]["Code"]


def user_client(coffer, name, policy=None):
    iam = coffer.client("iam")
    iam.create_user(UserName=name)
    if policy:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return coffer.client("s3", access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])


def account_of(coffer):
    return coffer.client("sts").get_caller_identity()["Account"]


def test_policy_that_requires_kms_encryption(s3):
    s3.create_bucket(Bucket="must-kms")
    s3.put_bucket_policy(Bucket="must-kms", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "DenyWrongEncryption", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::must-kms/*",
             "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
            {"Sid": "DenyUnencryptedHeaders", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::must-kms/*",
             "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}},
        ]}))
    for extra in [{}, {"ServerSideEncryption": "AES256"}]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket="must-kms", Key="k", Body=b"x", **extra)
        assert code(e) == "AccessDenied", extra
        assert "explicit deny in a resource-based policy" in e.value.response["Error"]["Message"]
    put = s3.put_object(Bucket="must-kms", Key="k", Body=b"x", ServerSideEncryption="aws:kms")
    assert put["ServerSideEncryption"] == "aws:kms"
    assert json.loads(s3.get_bucket_policy(Bucket="must-kms")["Policy"])["Statement"][0]["Sid"] == "DenyWrongEncryption"
    s3.delete_bucket_policy(Bucket="must-kms")
    s3.put_object(Bucket="must-kms", Key="k2", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_policy(Bucket="must-kms")
    assert code(e) == "NoSuchBucketPolicy"


def test_policy_grants_another_user_exactly_what_it_says(coffer, s3):
    account = account_of(coffer)
    partner = user_client(coffer, "partner")  # no identity policy at all
    s3.create_bucket(Bucket="shared-with-partner")
    for k in ["shared/a.txt", "shared/b.txt", "private/c.txt"]:
        s3.put_object(Bucket="shared-with-partner", Key=k, Body=k.encode())
    with pytest.raises(botocore.exceptions.ClientError) as e:
        partner.get_object(Bucket="shared-with-partner", Key="shared/a.txt")
    assert code(e) == "AccessDenied"
    s3.put_bucket_policy(Bucket="shared-with-partner", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/partner"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared-with-partner/shared/*"},
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/partner"},
             "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::shared-with-partner",
             "Condition": {"StringEquals": {"s3:prefix": "shared/"}}},
        ]}))
    assert partner.get_object(Bucket="shared-with-partner", Key="shared/a.txt")["Body"].read() == b"shared/a.txt"
    listed = partner.list_objects_v2(Bucket="shared-with-partner", Prefix="shared/")
    assert [o["Key"] for o in listed["Contents"]] == ["shared/a.txt", "shared/b.txt"]
    for call in [
        lambda: partner.get_object(Bucket="shared-with-partner", Key="private/c.txt"),
        lambda: partner.list_objects_v2(Bucket="shared-with-partner"),
        lambda: partner.list_objects_v2(Bucket="shared-with-partner", Prefix="private/"),
        lambda: partner.put_object(Bucket="shared-with-partner", Key="shared/new.txt", Body=b"x"),
        lambda: partner.delete_object(Bucket="shared-with-partner", Key="shared/a.txt"),
        lambda: partner.get_bucket_policy(Bucket="shared-with-partner"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "AccessDenied"


def test_network_fence_and_owner_lockout_protection(s3):
    s3.create_bucket(Bucket="fenced")
    s3.put_object(Bucket="fenced", Key="k", Body=b"x")
    s3.put_bucket_policy(Bucket="fenced", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                       "Resource": ["arn:aws:s3:::fenced", "arn:aws:s3:::fenced/*"],
                       "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="fenced", Key="k")
    assert code(e) == "AccessDenied"
    # Even fenced out, the account root can still remove the policy.
    s3.delete_bucket_policy(Bucket="fenced")
    assert s3.get_object(Bucket="fenced", Key="k")["Body"].read() == b"x"
    # A policy that insists on TLS changes nothing: Coffer serves only TLS.
    s3.put_bucket_policy(Bucket="fenced", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                       "Resource": ["arn:aws:s3:::fenced", "arn:aws:s3:::fenced/*"],
                       "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    assert s3.get_object(Bucket="fenced", Key="k")["Body"].read() == b"x"


def test_policy_validation(coffer, s3):
    s3.create_bucket(Bucket="validated")
    account = account_of(coffer)
    bad = [
        "not json",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                    "Action": "s3:GetObject", "Resource": "arn:aws:s3:::another-bucket/*"}]}),
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:user/nobody-by-this-name"},
                    "Action": "s3:GetObject", "Resource": "arn:aws:s3:::validated/*"}]}),
    ]
    for policy in bad:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_policy(Bucket="validated", Policy=policy)
        assert code(e) == "MalformedPolicy", policy


def test_block_public_access_and_anonymous_reads(coffer, s3):
    s3.create_bucket(Bucket="website")
    s3.put_object(Bucket="website", Key="index.html", Body=b"<h1>hello</h1>", ContentType="text/html")
    pab = s3.get_public_access_block(Bucket="website")["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    public_read = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::website/*"}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_policy(Bucket="website", Policy=public_read)
    assert code(e) == "AccessDenied" and "BlockPublicPolicy" in e.value.response["Error"]["Message"]
    ctx = ssl.create_default_context(cafile=coffer.ca)
    url = coffer.endpoint + "/website/index.html"

    def anonymous(method="GET", data=None):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method, data=data), context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert anonymous()[0] == 403
    s3.delete_public_access_block(Bucket="website")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_public_access_block(Bucket="website")
    assert code(e) == "NoSuchPublicAccessBlockConfiguration"
    s3.put_bucket_policy(Bucket="website", Policy=public_read)
    assert s3.get_bucket_policy_status(Bucket="website")["PolicyStatus"]["IsPublic"] is True
    assert anonymous() == (200, b"<h1>hello</h1>")
    status, body = anonymous("PUT", b"defaced")
    assert status == 403 and b"AccessDenied" in body
    # RestrictPublicBuckets shuts anonymous access again without touching the policy.
    s3.put_public_access_block(Bucket="website", PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
        "RestrictPublicBuckets": True})
    assert anonymous()[0] == 403
    # Anonymous requests are audited as such.
    assert any((e.get("userIdentity") or {}).get("type") == "AnonymousPrincipal"
               and (e.get("requestParameters") or {}).get("bucketName") == "website"
               for e in audit_events(coffer.data_dir))

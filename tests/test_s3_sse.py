"""Server-side encryption with KMS keys (SSE-KMS) and with customer keys (SSE-C), through boto3:
the keys used, the errors S3 gives when a KMS key cannot be used, the KMS calls S3 makes on the
caller's behalf in the audit log, and customer keys that are never kept."""

import base64
import json
import os
import time

import botocore.exceptions
import pytest

from conftest import audit_events

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(coffer):
    c = coffer.client("s3")
    c.create_bucket(Bucket="sse")
    return c


@pytest.fixture(scope="module")
def kms(coffer):
    return coffer.client("kms")


def code(e):
    return e.value.response["Error"]["Code"]


def kms_events(coffer, context_arn):
    """The KMS events S3 caused for objects (or a bucket key) with this `aws:s3:arn`."""
    return [
        e for e in audit_events(coffer.data_dir)
        if e.get("eventSource") == "kms.amazonaws.com"
        and ((e.get("requestParameters") or {}).get("encryptionContext") or {}).get("aws:s3:arn") == context_arn
    ]


def test_sse_kms_with_a_named_key(s3, kms):
    key = kms.create_key(Description="s3 objects")["KeyMetadata"]
    kms.create_alias(AliasName="alias/s3-objects", TargetKeyId=key["KeyId"])
    data = os.urandom(200_000)
    for i, ref in enumerate([key["KeyId"], key["Arn"], "alias/s3-objects"]):
        put = s3.put_object(Bucket="sse", Key=f"kms{i}", Body=data, ServerSideEncryption="aws:kms", SSEKMSKeyId=ref)
        assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == key["Arn"]
        got = s3.get_object(Bucket="sse", Key=f"kms{i}")
        assert got["Body"].read() == data
        assert got["ServerSideEncryption"] == "aws:kms" and got["SSEKMSKeyId"] == key["Arn"]
    # A client encryption context rides along with aws:s3:arn.
    ctx = base64.b64encode(json.dumps({"project": "apollo"}).encode()).decode()
    s3.put_object(Bucket="sse", Key="ctx", Body=b"with context", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=key["KeyId"], SSEKMSEncryptionContext=ctx)
    assert s3.get_object(Bucket="sse", Key="ctx")["Body"].read() == b"with context"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="sse", Key="bad", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/does-not-exist")
    assert code(e) == "KMS.NotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="sse", Key="bad", Body=b"x", SSEKMSKeyId=key["KeyId"])
    assert code(e) == "InvalidArgument"


def test_sse_kms_default_key_is_made_on_first_use(s3, kms):
    put = s3.put_object(Bucket="sse", Key="managed", Body=b"managed key", ServerSideEncryption="aws:kms")
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert "alias/aws/s3" in aliases
    meta = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]
    assert meta["KeyManager"] == "AWS" and put["SSEKMSKeyId"] == meta["Arn"]
    again = s3.put_object(Bucket="sse", Key="managed2", Body=b"same key", ServerSideEncryption="aws:kms")
    assert again["SSEKMSKeyId"] == meta["Arn"]
    assert s3.get_object(Bucket="sse", Key="managed")["Body"].read() == b"managed key"


def test_unusable_kms_keys_fail_reads_with_s3_errors(s3, kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    s3.put_object(Bucket="sse", Key="gated", Body=b"gated", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    kms.disable_key(KeyId=key)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="sse", Key="gated")
    assert code(e) == "KMS.DisabledException" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="sse", Key="gated2", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert code(e) == "KMS.DisabledException"
    kms.enable_key(KeyId=key)
    assert s3.get_object(Bucket="sse", Key="gated")["Body"].read() == b"gated"
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="sse", Key="gated")
    assert code(e) == "KMS.KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key)
    kms.enable_key(KeyId=key)
    assert s3.get_object(Bucket="sse", Key="gated")["Body"].read() == b"gated"


def test_key_policy_governs_s3_use_of_the_key(coffer, s3, kms):
    iam = coffer.client("iam")
    iam.create_user(UserName="s3-worker")
    iam.put_user_policy(UserName="s3-worker", PolicyName="s3-all", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    creds = iam.create_access_key(UserName="s3-worker")["AccessKey"]
    worker = coffer.client("s3", access_key=creds["AccessKeyId"], secret_key=creds["SecretAccessKey"])
    account = kms.describe_key(KeyId=kms.create_key()["KeyMetadata"]["KeyId"])["KeyMetadata"]["AWSAccountId"]
    # Only through S3 may the worker use this key, and only to encrypt.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/s3-worker"},
             "Action": "kms:GenerateDataKey", "Resource": "*",
             "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}},
        ],
    }
    key = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    worker.put_object(Bucket="sse", Key="write-only", Body=b"sealed", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        worker.get_object(Bucket="sse", Key="write-only")
    assert code(e) == "AccessDenied" and "kms:Decrypt" in e.value.response["Error"]["Message"]
    # The account (root) may read it.
    assert s3.get_object(Bucket="sse", Key="write-only")["Body"].read() == b"sealed"
    # Directly, not through S3, the worker may not use the key at all.
    direct = coffer.client("kms", access_key=creds["AccessKeyId"], secret_key=creds["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        direct.generate_data_key(KeyId=key, KeySpec="AES_256")
    assert code(e) == "AccessDeniedException"


def test_kms_calls_are_audited(coffer, s3, kms):
    key = kms.create_key()["KeyMetadata"]
    s3.put_object(Bucket="sse", Key="audited-kms", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key["KeyId"])
    s3.get_object(Bucket="sse", Key="audited-kms")["Body"].read()
    arn = "arn:aws:s3:::sse/audited-kms"
    found = {}
    deadline = time.time() + 10
    while time.time() < deadline and len(found) < 2:
        found = {e["eventName"]: e for e in kms_events(coffer, arn)}
        time.sleep(0.2)
    assert set(found) == {"GenerateDataKey", "Decrypt"}
    assert found["GenerateDataKey"]["resources"][0]["ARN"] == key["Arn"]
    # The data key is never in the log.
    assert all("Plaintext" not in json.dumps(e.get("responseElements")) for e in found.values())


def test_bucket_default_kms_and_multipart(s3, kms):
    key = kms.create_key()["KeyMetadata"]
    s3.create_bucket(Bucket="sse-default")
    s3.put_bucket_encryption(Bucket="sse-default", ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["KeyId"]}}]})
    rule = s3.get_bucket_encryption(Bucket="sse-default")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == key["KeyId"]
    put = s3.put_object(Bucket="sse-default", Key="plain-put", Body=b"defaulted")
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == key["Arn"]
    # Explicit SSE-S3 still wins.
    assert s3.put_object(Bucket="sse-default", Key="s3", Body=b"x", ServerSideEncryption="AES256")["ServerSideEncryption"] == "AES256"
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    up = s3.create_multipart_upload(Bucket="sse-default", Key="mp")
    assert up["ServerSideEncryption"] == "aws:kms"
    tags = [s3.upload_part(Bucket="sse-default", Key="mp", UploadId=up["UploadId"], PartNumber=i + 1, Body=p)["ETag"]
            for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket="sse-default", Key="mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(tags)]})
    got = s3.get_object(Bucket="sse-default", Key="mp", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 9}")
    assert got["Body"].read() == (parts[0] + parts[1])[5 * MIB - 10:5 * MIB + 10]
    assert got["SSEKMSKeyId"] == key["Arn"]


def test_sse_c(coffer, s3):
    customer = os.urandom(32)
    other = os.urandom(32)
    data = os.urandom(150_000)
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer}
    put = s3.put_object(Bucket="sse", Key="customer", Body=data, **sse_c)
    assert put["SSECustomerAlgorithm"] == "AES256" and "ServerSideEncryption" not in put
    got = s3.get_object(Bucket="sse", Key="customer", **sse_c)
    assert got["Body"].read() == data
    assert s3.head_object(Bucket="sse", Key="customer", **sse_c)["ContentLength"] == len(data)
    # Without the key, or with another, nothing is read.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="sse", Key="customer")
    assert code(e) == "InvalidRequest"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="sse", Key="customer")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="sse", Key="customer", SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert code(e) == "AccessDenied"
    # A key whose MD5 does not match what was sent.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="sse", Key="bad-md5", Body=b"x", SSECustomerAlgorithm="AES256",
                      SSECustomerKey=base64.b64encode(customer).decode(),
                      SSECustomerKeyMD5=base64.b64encode(b"0" * 16).decode())
    assert code(e) == "InvalidArgument"
    # Copy out of SSE-C into SSE-S3, and ranges.
    s3.copy_object(Bucket="sse", Key="from-customer", CopySource={"Bucket": "sse", "Key": "customer"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=customer)
    assert s3.get_object(Bucket="sse", Key="from-customer")["Body"].read() == data
    r = s3.get_object(Bucket="sse", Key="customer", Range="bytes=65530-65545", **sse_c)
    assert r["Body"].read() == data[65530:65546]
    # Multipart with SSE-C: every part brings the key.
    parts = [os.urandom(5 * MIB), os.urandom(777)]
    up = s3.create_multipart_upload(Bucket="sse", Key="customer-mp", **sse_c)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket="sse", Key="customer-mp", UploadId=up["UploadId"], PartNumber=1, Body=parts[0])
    assert code(e) == "InvalidRequest"
    tags = [s3.upload_part(Bucket="sse", Key="customer-mp", UploadId=up["UploadId"], PartNumber=i + 1, Body=p,
                           **sse_c)["ETag"] for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket="sse", Key="customer-mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(tags)]})
    assert s3.get_object(Bucket="sse", Key="customer-mp", **sse_c)["Body"].read() == b"".join(parts)
    # The key itself is nowhere on disk.
    for path in coffer.data_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert customer not in blob and base64.b64encode(customer) not in blob, path


def test_blocked_encryption_types(s3):
    s3.create_bucket(Bucket="no-sse-c")
    s3.put_bucket_encryption(Bucket="no-sse-c", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
        "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="no-sse-c", Key="k", Body=b"x", SSECustomerAlgorithm="AES256", SSECustomerKey=os.urandom(32))
    assert code(e) == "AccessDenied"
    assert s3.put_object(Bucket="no-sse-c", Key="k", Body=b"x")["ServerSideEncryption"] == "AES256"


def test_bucket_keys_cut_kms_calls(coffer, s3, kms):
    key = kms.create_key()["KeyMetadata"]
    s3.create_bucket(Bucket="bucket-keys")
    bodies = {f"k{i}": os.urandom(1000 + i) for i in range(6)}
    for k, body in bodies.items():
        put = s3.put_object(Bucket="bucket-keys", Key=k, Body=body, ServerSideEncryption="aws:kms",
                            SSEKMSKeyId=key["KeyId"], BucketKeyEnabled=True)
        assert put["BucketKeyEnabled"] is True and put["SSEKMSKeyId"] == key["Arn"]
    for k, body in bodies.items():
        got = s3.get_object(Bucket="bucket-keys", Key=k)
        assert got["Body"].read() == body and got["BucketKeyEnabled"] is True
    time.sleep(0.5)
    # One GenerateDataKey for six objects, bound to the bucket; reads reuse the bucket key.
    assert [e["eventName"] for e in kms_events(coffer, "arn:aws:s3:::bucket-keys")] == ["GenerateDataKey"]
    # A multipart upload under the bucket default with bucket keys on.
    s3.put_bucket_encryption(Bucket="bucket-keys", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["KeyId"]},
        "BucketKeyEnabled": True}]})
    parts = [os.urandom(5 * MIB), os.urandom(10)]
    up = s3.create_multipart_upload(Bucket="bucket-keys", Key="mp")
    tags = [s3.upload_part(Bucket="bucket-keys", Key="mp", UploadId=up["UploadId"], PartNumber=i + 1, Body=p)["ETag"]
            for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket="bucket-keys", Key="mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(tags)]})
    got = s3.get_object(Bucket="bucket-keys", Key="mp")
    assert got["Body"].read() == b"".join(parts) and got["BucketKeyEnabled"] is True
    assert [e["eventName"] for e in kms_events(coffer, "arn:aws:s3:::bucket-keys")] == ["GenerateDataKey"]

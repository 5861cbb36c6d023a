"""The S3 API with boto3 and raw SigV4 requests: buckets, objects, ranges across package
boundaries, conditional requests, checksums and payload modes, presigned URLs, listings,
versioning, tagging, identity policies, data events, and what is on disk."""

import base64
import datetime
import hashlib
import hmac
import json
import os
import ssl
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import pytest

from conftest import audit_events

PACKAGE = 64 * 1024


@pytest.fixture(scope="module")
def s3(coffer):
    return coffer.client("s3")


def code(e):
    return e.value.response["Error"]["Code"]


def status(e):
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def _reflected_crc(data, poly, width):
    mask = (1 << width) - 1
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    crc = mask
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return (crc ^ mask).to_bytes(width // 8, "big")


def crc32c(data):
    return base64.b64encode(_reflected_crc(data, 0x82F63B78, 32)).decode()


def crc64nvme(data):
    return base64.b64encode(_reflected_crc(data, 0x9A6C9329AC4BC9B5, 64)).decode()


def test_reference_checksums():
    # The catalogue's check values for "123456789".
    assert base64.b64decode(crc32c(b"123456789")).hex() == "e3069283"
    assert base64.b64decode(crc64nvme(b"123456789")).hex() == "ae8b14860a799888"


def raw(coffer, method, path, body=b"", headers=None, payload_hash=None, sign=True, sent=None):
    """A request signed by botocore's own S3 signer (or not signed at all), sent as is; with
    `sent`, that body goes out instead of the one signed."""
    url = coffer.endpoint + path
    headers = dict(headers or {})
    if sign:
        ident, secret = coffer.credentials()
        req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=headers)
        if payload_hash is not None:
            req.headers["X-Amz-Content-SHA256"] = payload_hash
        botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(ident, secret), "s3", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
    ctx = ssl.create_default_context(cafile=coffer.ca)
    body = body if sent is None else sent
    r = urllib.request.Request(url, data=body if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, context=ctx, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_bucket_lifecycle(s3):
    s3.create_bucket(Bucket="life")
    assert "life" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    head = s3.head_bucket(Bucket="life")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    assert s3.get_bucket_location(Bucket="life")["LocationConstraint"] is None
    # us-east-1 answers 200 to re-creating a bucket you own, as S3 does.
    s3.create_bucket(Bucket="life")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket="life", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code(e) == "IllegalLocationConstraintException"
    for bad in ["Upper", "ab", "a..b", "192.168.0.1", "-dash"]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.create_bucket(Bucket=bad)
        assert code(e) == "InvalidBucketName", bad
    s3.put_object(Bucket="life", Key="k", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket="life")
    assert code(e) == "BucketNotEmpty" and status(e) == 409
    s3.delete_object(Bucket="life", Key="k")
    s3.delete_bucket(Bucket="life")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_bucket(Bucket="life")
    assert status(e) == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="life", Key="k", Body=b"x")
    assert code(e) == "NoSuchBucket"


def test_objects_round_trip_with_metadata(s3):
    s3.create_bucket(Bucket="objs")
    data = os.urandom(3 * PACKAGE + 123)
    put = s3.put_object(
        Bucket="objs", Key="dir/file name ü.bin", Body=data, ContentType="application/x-test",
        Metadata={"owner": "alice", "purpose": "tests"}, CacheControl="no-cache", ContentDisposition="inline",
    )
    assert put["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert put["ServerSideEncryption"] == "AES256"
    got = s3.get_object(Bucket="objs", Key="dir/file name ü.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"owner": "alice", "purpose": "tests"}
    assert got["CacheControl"] == "no-cache" and got["ContentDisposition"] == "inline"
    assert got["ServerSideEncryption"] == "AES256" and got["ContentLength"] == len(data)
    head = s3.head_object(Bucket="objs", Key="dir/file name ü.bin")
    assert head["ETag"] == put["ETag"] and head["ContentLength"] == len(data)
    # Empty objects too.
    s3.put_object(Bucket="objs", Key="empty", Body=b"")
    assert s3.get_object(Bucket="objs", Key="empty")["Body"].read() == b""
    # Overwrite replaces.
    s3.put_object(Bucket="objs", Key="empty", Body=b"now full")
    assert s3.get_object(Bucket="objs", Key="empty")["Body"].read() == b"now full"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="missing")
    assert code(e) == "NoSuchKey" and status(e) == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="objs", Key="missing")
    assert status(e) == 404
    s3.delete_object(Bucket="objs", Key="empty")
    s3.delete_object(Bucket="objs", Key="empty")  # deleting what is gone is not an error
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="objs", Key="empty")
    assert code(e) == "NoSuchKey"


def test_ranges_across_package_boundaries(s3):
    s3.create_bucket(Bucket="ranges")
    data = os.urandom(5 * PACKAGE + 777)
    s3.put_object(Bucket="ranges", Key="r", Body=data)
    n = len(data)
    for first, last in [(0, 0), (PACKAGE - 3, PACKAGE + 2), (PACKAGE, 2 * PACKAGE - 1), (10, 4 * PACKAGE + 5),
                        (n - 1, n - 1), (3 * PACKAGE - 1, 3 * PACKAGE)]:
        got = s3.get_object(Bucket="ranges", Key="r", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == data[first:last + 1], (first, last)
        assert got["ContentRange"] == f"bytes {first}-{last}/{n}"
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket="ranges", Key="r", Range="bytes=-100")["Body"].read() == data[-100:]
    assert s3.get_object(Bucket="ranges", Key="r", Range=f"bytes={n - 10}-")["Body"].read() == data[-10:]
    assert s3.get_object(Bucket="ranges", Key="r", Range=f"bytes=5-{n + 1000}")["Body"].read() == data[5:]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="ranges", Key="r", Range=f"bytes={n}-")
    assert code(e) == "InvalidRange" and status(e) == 416


def test_conditional_requests(s3):
    s3.create_bucket(Bucket="cond")
    etag = s3.put_object(Bucket="cond", Key="c", Body=b"conditional")["ETag"]
    assert s3.get_object(Bucket="cond", Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="cond", Key="c", IfMatch='"0000"')
    assert status(e) == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="cond", Key="c", IfNoneMatch=etag)
    assert status(e) == 304
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="cond", Key="c", IfModifiedSince=future)
    assert status(e) == 304
    assert s3.get_object(Bucket="cond", Key="c", IfModifiedSince=past)["Body"].read() == b"conditional"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="cond", Key="c", IfUnmodifiedSince=past)
    assert status(e) == 412
    # Write only if absent.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="cond", Key="c", Body=b"again", IfNoneMatch="*")
    assert status(e) == 412
    s3.put_object(Bucket="cond", Key="new", Body=b"first", IfNoneMatch="*")


def test_checksums_and_digests(coffer, s3):
    s3.create_bucket(Bucket="sums")
    body = b"checksummed body " * 5000
    # Current boto3 streams aws-chunked with a CRC32 trailer by default.
    s3.put_object(Bucket="sums", Key="default", Body=body)
    listed = s3.list_objects_v2(Bucket="sums")["Contents"][0]
    assert listed["ChecksumAlgorithm"] == ["CRC32"]
    for alg in ["CRC32", "SHA1", "SHA256"]:
        r = s3.put_object(Bucket="sums", Key=alg, Body=body, ChecksumAlgorithm=alg)
        got = s3.get_object(Bucket="sums", Key=alg, ChecksumMode="ENABLED")
        assert got["Body"].read() == body
        assert got[f"Checksum{alg}"] == r[f"Checksum{alg}"]
    # CRC32C and CRC64NVME (botocore needs awscrt for them; computed here instead).
    for alg, value in [("CRC32C", crc32c(body)), ("CRC64NVME", crc64nvme(body))]:
        header = {f"x-amz-checksum-{alg.lower()}": value}
        st, _, resp = raw(coffer, "PUT", f"/sums/{alg}", body, header, payload_hash="UNSIGNED-PAYLOAD")
        assert st == 200, resp
        got = s3.get_object(Bucket="sums", Key=alg, ChecksumMode="ENABLED")
        assert got["Body"].read() == body and got[f"Checksum{alg}"] == value
        bad = {f"x-amz-checksum-{alg.lower()}": crc32c(b"other") if alg == "CRC32C" else crc64nvme(b"other")}
        st, _, resp = raw(coffer, "PUT", f"/sums/{alg}-bad", body, bad, payload_hash="UNSIGNED-PAYLOAD")
        assert st == 400 and b"BadDigest" in resp
    # A wrong checksum or Content-MD5 is refused and stores nothing.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="sums", Key="bad", Body=body, ChecksumSHA256=base64.b64encode(b"\0" * 32).decode())
    assert code(e) == "BadDigest"
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    st, _, resp = raw(coffer, "PUT", "/sums/bad", body, {"Content-MD5": wrong_md5}, payload_hash="UNSIGNED-PAYLOAD")
    assert st == 400 and b"<Code>BadDigest</Code>" in resp
    # A malformed header is refused before the body is read: a small body, so that the client
    # has sent it all before the refusal closes the connection (with 85 KB the send could fail).
    st, _, resp = raw(coffer, "PUT", "/sums/bad", b"small body", {"Content-MD5": "not base64!"},
                      payload_hash="UNSIGNED-PAYLOAD")
    assert st == 400 and b"<Code>InvalidDigest</Code>" in resp
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="sums", Key="bad")
    assert status(e) == 404
    # A signed payload hash must match the body.
    st, _, resp = raw(coffer, "PUT", "/sums/bad", body, sent=body[:-5] + b"XXXXX")
    assert st == 400 and b"XAmzContentSHA256Mismatch" in resp
    st, _, _ = raw(coffer, "PUT", "/sums/signed", body, payload_hash=hashlib.sha256(body).hexdigest())
    assert st == 200
    assert s3.get_object(Bucket="sums", Key="signed")["Body"].read() == body
    # A signed payload, as boto3 sends it when asked to sign the body.
    signing = coffer.client("s3")
    signing.meta.config.s3 = {"payload_signing_enabled": True}
    signing.put_object(Bucket="sums", Key="signed2", Body=body, ChecksumAlgorithm="SHA256")
    assert s3.get_object(Bucket="sums", Key="signed2")["Body"].read() == body


def _signed_chunks(coffer, path, data, chunk=64 * 1024, tamper=False):
    """A PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD, chunk signatures computed as the AWS
    documentation describes."""
    ident, secret = coffer.credentials()
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    host = coffer.endpoint.split("://")[1]
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    encoded_len = sum(len(f"{len(c):x};chunk-signature=") + 64 + 2 + len(c) + 2 for c in chunks)
    headers = {
        "host": host, "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(len(data)), "content-encoding": "aws-chunked",
        "content-length": str(encoded_len),
    }
    names = sorted(headers)
    canonical = "\n".join(["PUT", path, "", *[f"{n}:{headers[n]}" for n in names], "", ";".join(names),
                           "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"])
    def h(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()
    key = h(h(h(h(("AWS4" + secret).encode(), day), "us-east-1"), "s3"), "aws4_request")
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    seed = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ident}/{scope}, SignedHeaders={';'.join(names)}, "
                                f"Signature={seed}")
    body, prev = b"", seed
    empty = hashlib.sha256(b"").hexdigest()
    for i, c in enumerate(chunks):
        sts = f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{empty}\n{hashlib.sha256(c).hexdigest()}"
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        if tamper and i == 1:
            c = bytes([c[0] ^ 1]) + c[1:]
        body += f"{len(c):x};chunk-signature={prev}\r\n".encode() + c + b"\r\n"
    del headers["host"]
    return raw(coffer, "PUT", path, body, headers, sign=False)


def test_signed_chunked_upload(coffer, s3):
    s3.create_bucket(Bucket="chunks")
    data = os.urandom(150_000)
    st, _, resp = _signed_chunks(coffer, "/chunks/signed", data)
    assert st == 200, resp
    assert s3.get_object(Bucket="chunks", Key="signed")["Body"].read() == data
    st, _, resp = _signed_chunks(coffer, "/chunks/tampered", data, tamper=True)
    assert st == 403 and b"SignatureDoesNotMatch" in resp
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket="chunks", Key="tampered")
    assert status(e) == 404


def test_authentication_failures(coffer, s3):
    s3.create_bucket(Bucket="authn")
    st, _, resp = raw(coffer, "GET", "/authn", sign=False)
    assert st == 403 and b"<Code>AccessDenied</Code>" in resp
    bad = coffer.client("s3", access_key=coffer.credentials()[0], secret_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_objects_v2(Bucket="authn")
    assert code(e) == "SignatureDoesNotMatch" and status(e) == 403
    unknown = coffer.client("s3", access_key="AKIAXXXXXXXXXXXXXXXX", secret_key="x" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_buckets()
    assert code(e) == "InvalidAccessKeyId"


def test_presigned_urls(coffer, s3):
    s3.create_bucket(Bucket="presign")
    # Query-string SigV4 (boto3 may presign some operations with the retired SigV2 otherwise,
    # which Coffer refuses as S3 does for new buckets).
    ident, secret = coffer.credentials()
    s3 = boto3.client("s3", endpoint_url=coffer.endpoint, verify=coffer.ca, aws_access_key_id=ident,
                      aws_secret_access_key=secret, region_name="us-east-1",
                      config=botocore.config.Config(signature_version="s3v4"))
    s3.put_object(Bucket="presign", Key="doc.txt", Body=b"shared by link")
    ctx = ssl.create_default_context(cafile=coffer.ca)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "doc.txt"}, ExpiresIn=300)
    with urllib.request.urlopen(url, context=ctx) as r:
        assert r.read() == b"shared by link"
    # Response header overrides ride on the signed query.
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "presign", "Key": "doc.txt", "ResponseContentType": "text/plain"}, ExpiresIn=300)
    with urllib.request.urlopen(url, context=ctx) as r:
        assert r.headers["Content-Type"] == "text/plain"
    # A presigned PUT.
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "up.txt"}, ExpiresIn=300)
    assert "X-Amz-Signature=" in url
    req = urllib.request.Request(url, data=b"uploaded by link", method="PUT")
    with urllib.request.urlopen(req, context=ctx) as r:
        assert r.status == 200
    assert s3.get_object(Bucket="presign", Key="up.txt")["Body"].read() == b"uploaded by link"
    # Tampered and expired links are refused.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "doc.txt"}, ExpiresIn=300)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("doc.txt", "up.txt"), context=ctx)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "doc.txt"}, ExpiresIn=1)
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, context=ctx)
    body = e.value.read()
    assert e.value.code == 403 and b"Request has expired" in body


def test_listings(s3):
    s3.create_bucket(Bucket="lists")
    keys = sorted([f"photos/2024/{i:03}.jpg" for i in range(25)] + [f"docs/{i}.txt" for i in range(7)]
                  + ["top.txt", "a b/c+d.txt", "ünï/cödé.txt"])
    for k in keys:
        s3.put_object(Bucket="lists", Key=k, Body=k.encode())
    # Every key, through pages of 10.
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="lists", MaxKeys=10, **kw)
        seen += [o["Key"] for o in r["Contents"]]
        pages += 1
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert seen == keys and pages == 4
    # Delimiter and prefix.
    r = s3.list_objects_v2(Bucket="lists", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a b/", "docs/", "photos/", "ünï/"]
    assert [o["Key"] for o in r["Contents"]] == ["top.txt"]
    r = s3.list_objects_v2(Bucket="lists", Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["photos/2024/"] and "Contents" not in r
    r = s3.list_objects_v2(Bucket="lists", Prefix="docs/", StartAfter="docs/3.txt")
    assert [o["Key"] for o in r["Contents"]] == ["docs/4.txt", "docs/5.txt", "docs/6.txt"]
    # Prefixes count toward MaxKeys and pages resume after them.
    r = s3.list_objects_v2(Bucket="lists", Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a b/", "docs/"] and r["IsTruncated"]
    r = s3.list_objects_v2(Bucket="lists", Delimiter="/", MaxKeys=2, ContinuationToken=r["NextContinuationToken"])
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["photos/"] and [o["Key"] for o in r["Contents"]] == ["top.txt"]
    # Version 1, with markers.
    paginator = s3.get_paginator("list_objects")
    v1 = [o["Key"] for page in paginator.paginate(Bucket="lists", PaginationConfig={"PageSize": 7}) for o in page["Contents"]]
    assert v1 == keys
    r = s3.list_objects(Bucket="lists", Delimiter="/", MaxKeys=1)
    assert r["IsTruncated"] and r["NextMarker"] == "a b/"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_objects_v2(Bucket="lists", MaxKeys=-1)
    assert code(e) == "InvalidArgument"


def test_versioning(s3):
    s3.create_bucket(Bucket="vers")
    assert "Status" not in s3.get_bucket_versioning(Bucket="vers")
    s3.put_object(Bucket="vers", Key="k", Body=b"before versioning")
    s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="vers")["Status"] == "Enabled"
    v1 = s3.put_object(Bucket="vers", Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket="vers", Key="k", Body=b"two")["VersionId"]
    assert v1 != v2
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"two"
    assert s3.get_object(Bucket="vers", Key="k", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket="vers", Key="k", VersionId="null")["Body"].read() == b"before versioning"
    d = s3.delete_object(Bucket="vers", Key="k")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="vers", Key="k")
    assert code(e) == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker") == "true"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="vers", Key="k", VersionId=marker)
    assert status(e) == 405
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="vers", Key="k", VersionId="nosuchversion")
    assert code(e) == "NoSuchVersion"
    listed = s3.list_object_versions(Bucket="vers")
    assert [v["VersionId"] for v in listed["Versions"]] == [v2, v1, "null"]
    assert [m["VersionId"] for m in listed["DeleteMarkers"]] == [marker]
    assert listed["DeleteMarkers"][0]["IsLatest"] is True
    # Removing the delete marker brings the object back.
    s3.delete_object(Bucket="vers", Key="k", VersionId=marker)
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"two"
    # Deleting a version for good.
    s3.delete_object(Bucket="vers", Key="k", VersionId=v2)
    assert s3.get_object(Bucket="vers", Key="k")["Body"].read() == b"one"
    # Suspended: new writes are the null version, replacing the old null version.
    s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="vers", Key="k", Body=b"suspended")
    ids = [v["VersionId"] for v in s3.list_object_versions(Bucket="vers")["Versions"]]
    assert ids == ["null", v1]
    assert s3.get_object(Bucket="vers", Key="k", VersionId="null")["Body"].read() == b"suspended"


def test_delete_objects_and_tagging(s3):
    s3.create_bucket(Bucket="batch")
    for i in range(5):
        s3.put_object(Bucket="batch", Key=f"k{i}", Body=b"x")
    r = s3.delete_objects(Bucket="batch", Delete={"Objects": [{"Key": f"k{i}"} for i in range(3)] + [{"Key": "absent"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["absent", "k0", "k1", "k2"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="batch")["Contents"]] == ["k3", "k4"]
    r = s3.delete_objects(Bucket="batch", Delete={"Objects": [{"Key": "k3"}], "Quiet": True})
    assert "Deleted" not in r
    s3.put_object(Bucket="batch", Key="tagged", Body=b"t", Tagging="team=blue&env=test")
    assert s3.head_object(Bucket="batch", Key="tagged")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="batch", Key="tagged")["TagSet"]}
    assert tags == {"team": "blue", "env": "test"}
    s3.put_object_tagging(Bucket="batch", Key="tagged", Tagging={"TagSet": [{"Key": "only", "Value": "one"}]})
    assert s3.get_object_tagging(Bucket="batch", Key="tagged")["TagSet"] == [{"Key": "only", "Value": "one"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_tagging(Bucket="batch", Key="tagged",
                              Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    assert status(e) == 400
    s3.delete_object_tagging(Bucket="batch", Key="tagged")
    assert s3.get_object_tagging(Bucket="batch", Key="tagged")["TagSet"] == []


def test_bucket_default_encryption(s3):
    s3.create_bucket(Bucket="enc")
    rule = s3.get_bucket_encryption(Bucket="enc")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    s3.put_bucket_encryption(Bucket="enc", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
    rule = s3.get_bucket_encryption(Bucket="enc")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["BucketKeyEnabled"] is True
    s3.delete_bucket_encryption(Bucket="enc")
    # Unencrypted is not an option: every object is sealed whatever the client asks.
    assert s3.put_object(Bucket="enc", Key="k", Body=b"x")["ServerSideEncryption"] == "AES256"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="enc", Key="k", Body=b"x", ServerSideEncryption="rot13")
    assert code(e) == "InvalidArgument"


def test_identity_policies_govern_users(coffer, s3):
    iam = coffer.client("iam")
    s3.create_bucket(Bucket="team")
    s3.put_object(Bucket="team", Key="shared/readme.txt", Body=b"hello team")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read-shared", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::team/shared/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::team",
             "Condition": {"StringLike": {"s3:prefix": "shared/*"}}},
        ]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    reader = coffer.client("s3", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    assert reader.get_object(Bucket="team", Key="shared/readme.txt")["Body"].read() == b"hello team"
    assert [o["Key"] for o in reader.list_objects_v2(Bucket="team", Prefix="shared/")["Contents"]] == ["shared/readme.txt"]
    for call in [
        lambda: reader.put_object(Bucket="team", Key="shared/new.txt", Body=b"no"),
        lambda: reader.list_objects_v2(Bucket="team"),
        lambda: reader.delete_object(Bucket="team", Key="shared/readme.txt"),
        lambda: reader.create_bucket(Bucket="readers-own"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "AccessDenied" and status(e) == 403


def test_data_events_are_audited(coffer, s3):
    s3.create_bucket(Bucket="audited")
    s3.put_object(Bucket="audited", Key="evidence.txt", Body=b"x")
    s3.get_object(Bucket="audited", Key="evidence.txt")["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError):
        s3.get_object(Bucket="audited", Key="absent.txt")
    events = []
    deadline = time.time() + 10
    while time.time() < deadline and len(events) < 4:
        events = [e for e in audit_events(coffer.data_dir) if e.get("eventSource") == "s3.amazonaws.com"
                  and (e.get("requestParameters") or {}).get("bucketName") == "audited"]
        time.sleep(0.2)
    by_name = {}
    for e in events:
        by_name.setdefault(e["eventName"], []).append(e)
    put = by_name["PutObject"][0]
    assert put["eventCategory"] == "Data" and put["managementEvent"] is False
    assert {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::audited/evidence.txt", "accountId": put["recipientAccountId"]} in put["resources"]
    assert put["responseElements"]["x-amz-server-side-encryption"] == "AES256"
    gets = by_name["GetObject"]
    assert any(g.get("errorCode") == "NoSuchKey" for g in gets)
    assert any("errorCode" not in g and g["readOnly"] for g in gets)
    assert by_name["CreateBucket"][0]["eventCategory"] == "Management"


def test_bucket_tagging(s3):
    s3.create_bucket(Bucket="tagged-bucket")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_tagging(Bucket="tagged-bucket")
    assert code(e) == "NoSuchTagSet"
    s3.put_bucket_tagging(Bucket="tagged-bucket", Tagging={"TagSet": [{"Key": "cost-center", "Value": "42"}]})
    assert s3.get_bucket_tagging(Bucket="tagged-bucket")["TagSet"] == [{"Key": "cost-center", "Value": "42"}]
    s3.delete_bucket_tagging(Bucket="tagged-bucket")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_tagging(Bucket="tagged-bucket")
    assert code(e) == "NoSuchTagSet"


def test_virtual_host_style(data_dir, monkeypatch):
    """`bucket.<domain>` addressing, as boto3 uses it by default against a named endpoint."""
    import socket

    from conftest import Coffer

    c = Coffer(data_dir, extra_args=["--s3-domain", "s3.coffer.test", "--tls-san", "s3.coffer.test",
                                     "--tls-san", "*.s3.coffer.test"]).start()
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if isinstance(host, str) and (host == "s3.coffer.test" or host.endswith(".s3.coffer.test")):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        port = c.endpoint.rsplit(":", 1)[1]
        ident, secret = c.credentials()
        s3 = boto3.client("s3", endpoint_url=f"https://s3.coffer.test:{port}", verify=c.ca,
                          aws_access_key_id=ident, aws_secret_access_key=secret, region_name="us-east-1",
                          config=botocore.config.Config(s3={"addressing_style": "virtual"}))
        seen = []
        s3.meta.events.register("before-send", lambda request, **kw: seen.append(request.url))
        s3.create_bucket(Bucket="vhost")
        s3.put_object(Bucket="vhost", Key="dir/k.txt", Body=b"virtual")
        assert s3.get_object(Bucket="vhost", Key="dir/k.txt")["Body"].read() == b"virtual"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="vhost")["Contents"]] == ["dir/k.txt"]
        assert any(u.startswith(f"https://vhost.s3.coffer.test:{port}/dir/k.txt") for u in seen), seen
        # Path style still works on the same server.
        path = c.client("s3")
        assert path.get_object(Bucket="vhost", Key="dir/k.txt")["Body"].read() == b"virtual"
    finally:
        c.stop()


def test_version_listing_pages_and_delimiter(s3):
    s3.create_bucket(Bucket="vlist")
    s3.put_bucket_versioning(Bucket="vlist", VersioningConfiguration={"Status": "Enabled"})
    expected = []
    for k in ["a/1", "a/2", "b", "c/x/y", "d"]:
        for i in range(3):
            v = s3.put_object(Bucket="vlist", Key=k, Body=f"{k}-{i}".encode())["VersionId"]
            expected.append((k, v))
    s3.delete_object(Bucket="vlist", Key="d")
    # Newest first within a key, keys in order; pages of 4 lose and repeat nothing.
    seen = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket="vlist", PaginationConfig={"PageSize": 4}):
        seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
    want = []
    for k in ["a/1", "a/2", "b", "c/x/y", "d"]:
        want += list(reversed([e for e in expected if e[0] == k]))
    assert seen == want
    r = s3.list_object_versions(Bucket="vlist", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    assert sorted({v["Key"] for v in r["Versions"]}) == ["b", "d"]
    assert [m["Key"] for m in r["DeleteMarkers"]] == ["d"]
    r = s3.list_object_versions(Bucket="vlist", Delimiter="/", MaxKeys=1)
    assert r["IsTruncated"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/"]
    r = s3.list_object_versions(Bucket="vlist", Delimiter="/", MaxKeys=2, KeyMarker=r["NextKeyMarker"])
    assert [v["Key"] for v in r.get("Versions", [])] == ["b", "b"]

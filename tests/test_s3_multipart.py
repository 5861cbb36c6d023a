"""Multipart uploads and copies with boto3: S3's ETags, part rules, ranges across parts, copies
onto other keys and onto the object itself."""

import hashlib
import os

import boto3.s3.transfer
import botocore.exceptions
import pytest

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(coffer):
    c = coffer.client("s3")
    c.create_bucket(Bucket="mpu")
    return c


def code(e):
    return e.value.response["Error"]["Code"]


def multipart_etag(parts):
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))


def test_multipart_upload_by_hand(s3):
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB + 17), os.urandom(123_457)]
    up = s3.create_multipart_upload(Bucket="mpu", Key="big.bin", ContentType="application/x-big",
                                    Metadata={"origin": "test"})
    uid = up["UploadId"]
    assert up["ServerSideEncryption"] == "AES256"
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="mpu")["Uploads"]] == [uid]
    etags = []
    for i, p in enumerate(parts, start=1):
        r = s3.upload_part(Bucket="mpu", Key="big.bin", UploadId=uid, PartNumber=i, Body=p)
        assert r["ETag"] == '"%s"' % hashlib.md5(p).hexdigest()
        etags.append(r["ETag"])
    # Re-uploading a part replaces it.
    r = s3.upload_part(Bucket="mpu", Key="big.bin", UploadId=uid, PartNumber=3, Body=parts[2])
    listed = s3.list_parts(Bucket="mpu", Key="big.bin", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(i + 1, len(p)) for i, p in enumerate(parts)]
    # Out of order, unknown ETags and small middle parts are refused.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="big.bin", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="big.bin", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]})
    assert code(e) == "InvalidPart"
    # Any subset in order will do (part 1 is 5 MiB): the object is parts 1 and 3.
    s3.complete_multipart_upload(Bucket="mpu", Key="big.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 3, "ETag": etags[2]}]})
    done_early = s3.head_object(Bucket="mpu", Key="big.bin")
    assert done_early["ContentLength"] == len(parts[0]) + len(parts[2])
    assert s3.get_object(Bucket="mpu", Key="big.bin")["Body"].read() == parts[0] + parts[2]
    # The upload is gone once completed.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket="mpu", Key="big.bin", UploadId=uid, PartNumber=1, Body=b"x")
    assert code(e) == "NoSuchUpload"

    # Again, with all three parts, and a tiny middle part refused.
    uid = s3.create_multipart_upload(Bucket="mpu", Key="big.bin", ContentType="application/x-big")["UploadId"]
    etags = [s3.upload_part(Bucket="mpu", Key="big.bin", UploadId=uid, PartNumber=i, Body=p)["ETag"]
             for i, p in enumerate(parts, start=1)]
    small = s3.upload_part(Bucket="mpu", Key="big.bin", UploadId=uid, PartNumber=4, Body=b"tiny")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpu", Key="big.bin", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 4, "ETag": small}]})
    assert code(e) == "EntityTooSmall"
    done = s3.complete_multipart_upload(Bucket="mpu", Key="big.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(etags)]})
    assert done["ETag"] == multipart_etag(parts)
    whole = b"".join(parts)
    got = s3.get_object(Bucket="mpu", Key="big.bin")
    assert got["ETag"] == done["ETag"] and got["ContentType"] == "application/x-big"
    assert got["Body"].read() == whole
    # Ranges that cross part boundaries, and GET by part number.
    edge = len(parts[0])
    for a, b in [(edge - 5, edge + 5), (0, len(whole) - 1), (edge + len(parts[1]) - 1, edge + len(parts[1]) + 100)]:
        assert s3.get_object(Bucket="mpu", Key="big.bin", Range=f"bytes={a}-{b}")["Body"].read() == whole[a:b + 1]
    p2 = s3.get_object(Bucket="mpu", Key="big.bin", PartNumber=2)
    assert p2["Body"].read() == parts[1] and p2["PartsCount"] == 3
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="mpu")


def test_abort_leaves_nothing(coffer, s3):
    uid = s3.create_multipart_upload(Bucket="mpu", Key="aborted")["UploadId"]
    s3.upload_part(Bucket="mpu", Key="aborted", UploadId=uid, PartNumber=1, Body=os.urandom(MIB))
    s3.abort_multipart_upload(Bucket="mpu", Key="aborted", UploadId=uid)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket="mpu", Key="aborted", UploadId=uid)
    assert code(e) == "NoSuchUpload"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.abort_multipart_upload(Bucket="mpu", Key="aborted", UploadId="nosuchupload")
    assert code(e) == "NoSuchUpload"


def test_transfer_manager_upload_and_download(s3, tmp_path):
    """boto3's managed transfers: parallel multipart upload with checksums, ranged download."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(23 * MIB + 5))
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB,
                                              max_concurrency=4)
    s3.upload_file(str(src), "mpu", "managed.bin", Config=config)
    head = s3.head_object(Bucket="mpu", Key="managed.bin")
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == src.stat().st_size
    dst = tmp_path / "dst.bin"
    s3.download_file("mpu", "managed.bin", str(dst), Config=config)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_copies(s3):
    data = os.urandom(300_000)
    s3.put_object(Bucket="mpu", Key="orig", Body=data, Metadata={"a": "1"}, Tagging="t=1")
    r = s3.copy_object(Bucket="mpu", Key="copy", CopySource={"Bucket": "mpu", "Key": "orig"})
    assert r["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    got = s3.get_object(Bucket="mpu", Key="copy")
    assert got["Body"].read() == data and got["Metadata"] == {"a": "1"}
    assert s3.get_object_tagging(Bucket="mpu", Key="copy")["TagSet"] == [{"Key": "t", "Value": "1"}]
    # Replacing metadata; keys with characters that need encoding.
    s3.copy_object(Bucket="mpu", Key="dir/cöpy 2", CopySource={"Bucket": "mpu", "Key": "orig"},
                   MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/x-new")
    got = s3.head_object(Bucket="mpu", Key="dir/cöpy 2")
    assert got["Metadata"] == {"b": "2"} and got["ContentType"] == "text/x-new"
    # Onto itself: refused unless something changes; re-encrypting in place is allowed.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="mpu", Key="orig", CopySource={"Bucket": "mpu", "Key": "orig"})
    assert code(e) == "InvalidRequest"
    s3.copy_object(Bucket="mpu", Key="orig", CopySource={"Bucket": "mpu", "Key": "orig"}, ServerSideEncryption="AES256")
    assert s3.get_object(Bucket="mpu", Key="orig")["Body"].read() == data
    # Copy conditions.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="mpu", Key="copy3", CopySource={"Bucket": "mpu", "Key": "orig"},
                       CopySourceIfMatch='"0000"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket="mpu", Key="copy3", CopySource={"Bucket": "mpu", "Key": "missing"})
    assert code(e) == "NoSuchKey"
    # UploadPartCopy: a multipart object assembled from ranges of others.
    big = os.urandom(6 * MIB)
    s3.put_object(Bucket="mpu", Key="big-src", Body=big)
    uid = s3.create_multipart_upload(Bucket="mpu", Key="assembled")["UploadId"]
    p1 = s3.upload_part_copy(Bucket="mpu", Key="assembled", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": "mpu", "Key": "big-src"},
                             CopySourceRange=f"bytes=0-{5 * MIB}")["CopyPartResult"]["ETag"]
    p2 = s3.upload_part_copy(Bucket="mpu", Key="assembled", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": "mpu", "Key": "orig"})["CopyPartResult"]["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket="mpu", Key="assembled", UploadId=uid, PartNumber=3,
                            CopySource={"Bucket": "mpu", "Key": "orig"}, CopySourceRange="bytes=0-99999999")
    assert code(e) == "InvalidRequest"
    s3.complete_multipart_upload(Bucket="mpu", Key="assembled", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
    assert s3.get_object(Bucket="mpu", Key="assembled")["Body"].read() == big[:5 * MIB + 1] + data
    # A multipart object copied whole.
    s3.copy_object(Bucket="mpu", Key="assembled-copy", CopySource={"Bucket": "mpu", "Key": "assembled"})
    assert s3.get_object(Bucket="mpu", Key="assembled-copy")["Body"].read() == big[:5 * MIB + 1] + data


def test_upload_listing_with_delimiter(s3):
    s3.create_bucket(Bucket="uplist")
    ids = {k: s3.create_multipart_upload(Bucket="uplist", Key=k)["UploadId"] for k in ["a/1", "a/2", "b", "c/d"]}
    r = s3.list_multipart_uploads(Bucket="uplist", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    assert [u["Key"] for u in r["Uploads"]] == ["b"]
    seen = []
    marker = {}
    while True:
        r = s3.list_multipart_uploads(Bucket="uplist", MaxUploads=1, **marker)
        seen += [u["UploadId"] for u in r.get("Uploads", [])]
        if not r["IsTruncated"]:
            break
        marker = {"KeyMarker": r["NextKeyMarker"], "UploadIdMarker": r["NextUploadIdMarker"]}
    assert seen == [ids[k] for k in sorted(ids)]
    for k, uid in ids.items():
        s3.abort_multipart_upload(Bucket="uplist", Key=k, UploadId=uid)


def test_full_object_checksum_of_a_multipart_object(coffer, s3):
    import base64
    import zlib

    s3.create_bucket(Bucket="mp-sums")
    parts = [os.urandom(5 * MIB), os.urandom(12345)]
    whole = b"".join(parts)
    full = base64.b64encode(zlib.crc32(whole).to_bytes(4, "big")).decode()
    up = s3.create_multipart_upload(Bucket="mp-sums", Key="k", ChecksumAlgorithm="CRC32")
    tags = [s3.upload_part(Bucket="mp-sums", Key="k", UploadId=up["UploadId"], PartNumber=i + 1, Body=p,
                           ChecksumAlgorithm="CRC32")["ETag"] for i, p in enumerate(parts)]
    done = [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(tags)]
    # A wrong full-object checksum refuses the completion and leaves the upload in place.
    wrong = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket="mp-sums", Key="k", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": done}, ChecksumCRC32=wrong, ChecksumType="FULL_OBJECT")
    assert code(e) == "BadDigest"
    r = s3.complete_multipart_upload(Bucket="mp-sums", Key="k", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": done}, ChecksumCRC32=full, ChecksumType="FULL_OBJECT")
    assert r["ChecksumCRC32"] == full
    got = s3.get_object(Bucket="mp-sums", Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == whole and got["ChecksumCRC32"] == full

"""What the object store leaves on disk: never a readable byte of an object, damage that is
refused rather than returned, and acknowledged writes that survive kill -9."""

import hashlib
import os
import pathlib
import threading
import time

import botocore.exceptions
import pytest

from conftest import Coffer

PACKAGE = 64 * 1024


def blob_files(data_dir: pathlib.Path):
    return [p for p in (data_dir / "objects").glob("??/*") if p.is_file()]


def test_nothing_readable_at_rest(data_dir):
    c = Coffer(data_dir).start()
    try:
        s3 = c.client("s3")
        s3.create_bucket(Bucket="secrets")
        patterns = [b"PATIENT-RECORD-4417-", b"card 4111 1111 1111 1111 ", b"\x00\x01ZZZ-binary-marker-\xff"]
        for i, p in enumerate(patterns):
            # Small, exactly one package, and many packages.
            for size in [len(p) * 3, PACKAGE, 5 * PACKAGE + 9]:
                body = (p * (size // len(p) + 1))[:size]
                s3.put_object(Bucket="secrets", Key=f"p{i}-{size}", Body=body)
                assert s3.get_object(Bucket="secrets", Key=f"p{i}-{size}")["Body"].read() == body
    finally:
        c.stop()
    searched = 0
    for path in data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            searched += len(data)
            for p in patterns:
                assert p not in data, f"{p!r} found in {path}"
    assert searched > 10 * PACKAGE


def test_altered_bytes_are_refused_never_returned(data_dir):
    c = Coffer(data_dir).start()
    try:
        s3 = c.client("s3")
        s3.create_bucket(Bucket="tamper")
        small = os.urandom(1000)
        s3.put_object(Bucket="tamper", Key="small", Body=small)
        [small_blob] = blob_files(data_dir)
        big = os.urandom(6 * PACKAGE)
        s3.put_object(Bucket="tamper", Key="big", Body=big)
        [big_blob] = [b for b in blob_files(data_dir) if b != small_blob]

        def flip(path, at):
            b = bytearray(path.read_bytes())
            b[at] ^= 0x01
            path.write_bytes(bytes(b))

        flip(small_blob, 500)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket="tamper", Key="small")
        assert e.value.response["Error"]["Code"] == "InternalError"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        flip(small_blob, 500)  # restored: it reads again
        assert s3.get_object(Bucket="tamper", Key="small")["Body"].read() == small

        # Damage in the fifth package: the first four may be sent, the damaged one never is.
        flip(big_blob, 4 * (PACKAGE + 16) + 1000)
        got = b""
        with pytest.raises(Exception):
            r = s3.get_object(Bucket="tamper", Key="big")
            stream = r["Body"]
            while chunk := stream.read(8192):
                got += chunk
            stream.close()
            raise AssertionError("the damaged object was read to the end")
        assert big.startswith(got) and len(got) <= 4 * PACKAGE
        # A range that avoids the damaged package still reads; one that touches it does not.
        r = s3.get_object(Bucket="tamper", Key="big", Range=f"bytes=0-{PACKAGE - 1}")
        assert r["Body"].read() == big[:PACKAGE]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket="tamper", Key="big", Range=f"bytes={4 * PACKAGE}-{4 * PACKAGE + 10}")
        assert e.value.response["Error"]["Code"] == "InternalError"
        # A cut-short blob is refused at once.
        with open(big_blob, "r+b") as f:
            f.truncate(PACKAGE)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket="tamper", Key="big")
        assert e.value.response["Error"]["Code"] == "InternalError"
    finally:
        c.stop()
    log = c.stderr_path.read_text()
    assert "damaged" in log


def test_kill_during_puts_loses_no_acknowledged_object(data_dir):
    c = Coffer(data_dir).start()
    s3 = c.client("s3", retries=0)
    s3.create_bucket(Bucket="durable")
    acked = {}
    stop = threading.Event()

    def writer(n):
        i = 0
        while not stop.is_set():
            body = os.urandom(1000 + (i * 7919) % (3 * PACKAGE))
            key = f"w{n}/{i}"
            try:
                s3.put_object(Bucket="durable", Key=key, Body=body)
                acked[key] = hashlib.sha256(body).hexdigest()
            except Exception:
                return
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    c.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 10
    c = Coffer(data_dir).start()
    try:
        s3 = c.client("s3")
        for key, digest in acked.items():
            body = s3.get_object(Bucket="durable", Key=key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest, key
        listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="durable")
                  for o in p.get("Contents", [])]
        assert set(acked) <= set(listed)
        # No half-written or unnamed blob is left behind.
        assert list((data_dir / "objects" / "tmp").iterdir()) == []
        assert len(blob_files(data_dir)) == len(listed)
    finally:
        c.stop()


def test_root_rotation_keeps_every_object_readable(data_dir):
    c = Coffer(data_dir).start()
    try:
        s3 = c.client("s3")
        s3.create_bucket(Bucket="rotating")
        customer = os.urandom(32)
        sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer}
        s3.put_object(Bucket="rotating", Key="s3", Body=b"sse-s3 body")
        s3.put_object(Bucket="rotating", Key="kms", Body=b"sse-kms body", ServerSideEncryption="aws:kms")
        s3.put_object(Bucket="rotating", Key="c", Body=b"sse-c body", **sse_c)
        out = c.operator("rotate-root", "--json").stdout
        assert '"RootGeneration": 2' in out or '"RootGeneration":2' in out
        c.stop()
        c.start()
        s3 = c.client("s3")
        assert s3.get_object(Bucket="rotating", Key="s3")["Body"].read() == b"sse-s3 body"
        assert s3.get_object(Bucket="rotating", Key="kms")["Body"].read() == b"sse-kms body"
        assert s3.get_object(Bucket="rotating", Key="c", **sse_c)["Body"].read() == b"sse-c body"
        s3.put_object(Bucket="rotating", Key="after", Body=b"written after")
        assert s3.get_object(Bucket="rotating", Key="after")["Body"].read() == b"written after"
    finally:
        c.stop()


def test_sse_c_never_travels_in_the_clear(data_dir):
    """Coffer listens only for TLS: a request carrying a customer key over plain HTTP is never
    understood, so nothing is stored and the key is never read."""
    import base64
    import urllib3

    c = Coffer(data_dir).start()
    try:
        s3 = c.client("s3")
        s3.create_bucket(Bucket="plain")
        customer = os.urandom(32)
        plain = c.endpoint.replace("https://", "http://")
        http = urllib3.PoolManager(retries=False)
        with pytest.raises(Exception):
            http.request("PUT", plain + "/plain/k", body=b"secret", timeout=5, headers={
                "x-amz-server-side-encryption-customer-algorithm": "AES256",
                "x-amz-server-side-encryption-customer-key": base64.b64encode(customer).decode(),
                "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(customer).digest()).decode(),
            })
        assert "Contents" not in s3.list_objects_v2(Bucket="plain")
    finally:
        c.stop()

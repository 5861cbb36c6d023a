"""The audit log through the real binary: one CloudTrail-shaped event per request (allowed, refused,
unauthenticated, malformed), nothing secret in it, `coffer audit verify/query/export`, no event of an
acknowledged request lost to kill -9, and requests refused while the log cannot be written."""

import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.request
import ssl

import pytest
from botocore.exceptions import ClientError

from conftest import Coffer, coffer_bin


def audit(data_dir, *args, check=True):
    r = subprocess.run([coffer_bin(), "audit", *args, "--data-dir", str(data_dir)],
                       capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"coffer audit {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def events(data_dir, *filters):
    out = audit(data_dir, "query", "--json", *filters).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def health(c):
    ctx = ssl.create_default_context(cafile=c.ca)
    with urllib.request.urlopen(c.endpoint + "/_coffer/health", context=ctx, timeout=10) as r:
        return json.loads(r.read())


def test_every_request_is_recorded_without_secrets(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    key = kms.create_key(Description="audited")["KeyMetadata"]
    secret = b"the-plaintext-that-must-not-be-logged-" + os.urandom(8).hex().encode()
    out = kms.encrypt(KeyId=key["KeyId"], Plaintext=secret, EncryptionContext={"dept": "finance"})
    encrypt_id = out["ResponseMetadata"]["RequestId"]
    kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"dept": "finance"})
    with pytest.raises(ClientError):
        kms.describe_key(KeyId="alias/does-not-exist")
    with pytest.raises(ClientError) as e:
        c.client(secret_key="wrong" * 8).list_keys()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(ClientError) as e:
        c.client(access_key="AKIAUNKNOWNUNKNOWN00").list_keys()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert health(c)["audit"] == "ok"
    c.stop()

    log_text = "".join(p.read_text() for p in (data_dir / "audit").glob("segment-*.log"))
    assert secret.decode() not in log_text
    import base64
    assert base64.b64encode(secret).decode() not in log_text
    assert base64.b64encode(out["CiphertextBlob"]).decode() not in log_text

    evs = events(data_dir)
    names = [e["eventName"] for e in evs]
    assert names == ["CreateKey", "Encrypt", "Decrypt", "DescribeKey", "ListKeys", "ListKeys"], names
    enc = next(e for e in evs if e["requestID"] == encrypt_id)
    assert enc["eventSource"] == "kms.amazonaws.com"
    assert enc["userIdentity"]["type"] == "Root"
    assert enc["userIdentity"]["arn"] == "arn:aws:iam::111122223333:root"
    assert enc["sourceIPAddress"] == "127.0.0.1"
    assert "Boto3" in enc["userAgent"] or "botocore" in enc["userAgent"]
    assert enc["requestParameters"]["encryptionContext"] == {"dept": "finance"}
    assert enc["requestParameters"]["keyId"] == key["KeyId"]
    assert enc["resources"] == [{"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": key["Arn"]}]
    assert enc["readOnly"] is True and enc["responseElements"] is None
    assert enc["tlsDetails"]["tlsVersion"] in ("TLSv1.2", "TLSv1.3")
    assert enc["tlsDetails"]["cipherSuite"].startswith("TLS_")
    for field in ("eventVersion", "eventTime", "awsRegion", "eventID", "eventType", "recipientAccountId"):
        assert field in enc, field
    create = evs[0]
    assert create["responseElements"]["keyMetadata"]["Arn"] == key["Arn"]
    assert evs[3]["errorCode"] == "NotFoundException"
    assert evs[4]["errorCode"] == "InvalidSignatureException"
    assert evs[4]["userIdentity"]["type"] == "Unknown"
    assert evs[4]["userIdentity"]["accessKeyId"] == c.credentials()[0]
    assert evs[5]["errorCode"] == "UnrecognizedClientException"

    # Filters and the table form.
    assert [e["eventName"] for e in events(data_dir, "--outcome", "denied")] == ["ListKeys", "ListKeys"]
    assert [e["eventName"] for e in events(data_dir, "--key", key["KeyId"])] == ["CreateKey", "Encrypt", "Decrypt"]
    assert len(events(data_dir, "--event", "Decrypt", "--outcome", "success")) == 1
    assert events(data_dir, "--until", "2000-01-01") == []
    assert len(events(data_dir, "--since", enc["eventTime"][:10])) == 6
    assert len(events(data_dir, "--principal", "arn:aws:iam::111122223333:root")) == 4
    assert len(events(data_dir, "--source-ip", "127.0.0.1", "--limit", "2")) == 2
    table = audit(data_dir, "query").stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "EVENT", "OUTCOME"] and len(table) == 7

    # Export as CloudTrail files.
    out_dir = data_dir.parent / "export"
    audit(data_dir, "export", "--out", str(out_dir))
    records = [r for f in sorted(out_dir.glob("*.json")) for r in json.loads(f.read_text())["Records"]]
    assert [r["eventName"] for r in records] == names
    assert all(f.name.startswith("111122223333_CloudTrail_us-east-1_") for f in out_dir.glob("*.json"))

    # Intact, and the public key can be exported and used from elsewhere.
    pem = data_dir.parent / "audit.pem"
    pem.write_text(audit(data_dir, "public-key").stdout)
    r = audit(data_dir, "verify", "--public-key", str(pem))
    assert "audit log intact" in r.stdout
    report = json.loads(audit(data_dir, "verify", "--json").stdout)
    assert report["problem"] is None and report["events"] == 6 and report["head_checked"]


def test_verify_locates_tampering(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    for _ in range(5):
        kms.list_keys()
    c.stop()
    seg = data_dir / "audit" / "segment-00000001.log"
    lines = seg.read_text().splitlines()
    lines[3] = lines[3].replace('"ListKeys"', '"ListAliases"', 1)
    seg.write_text("\n".join(lines) + "\n")
    r = audit(data_dir, "verify", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "segment-00000001.log line 5" in r.stdout and "seq 4 was altered" in r.stdout, r.stdout


def test_kill_9_under_load_loses_no_acknowledged_event(data_dir):
    c = Coffer(data_dir).start()
    key = c.client().create_key()["KeyMetadata"]["KeyId"]
    acked, stop = [], threading.Event()
    lock = threading.Lock()

    def load():
        kms = c.client()
        while not stop.is_set():
            try:
                r = kms.encrypt(KeyId=key, Plaintext=b"x")
            except Exception:
                return
            with lock:
                acked.append(r["ResponseMetadata"]["RequestId"])

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    while len(acked) < 300:
        time.sleep(0.01)
    c.kill()
    stop.set()
    for t in threads:
        t.join()
    logged = {e["requestID"] for e in events(data_dir, "--event", "Encrypt")}
    missing = [r for r in acked if r not in logged]
    assert not missing, f"{len(missing)} acknowledged requests have no event"
    # The next start repairs and closes the crashed segment; the whole chain verifies.
    c = Coffer(data_dir).start()
    c.client().list_keys()
    c.stop()
    r = audit(data_dir, "verify")
    assert "audit log intact" in r.stdout, r.stdout


def test_requests_fail_closed_when_the_log_cannot_be_written(data_dir):
    c = Coffer(data_dir, extra_args=["--audit-segment-mib", "1"]).start()
    kms = c.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    # The segment after the first is taken by something that cannot be written: rotation fails.
    blocker = data_dir / "audit" / "segment-00000002.log"
    blocker.symlink_to("/dev/full")
    context = {f"k{i}": "v" * 200 for i in range(16)}
    refused = None
    for _ in range(2000):
        try:
            kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=context)
        except ClientError as e:
            refused = e
            break
    assert refused is not None, "the log never filled"
    assert refused.response["Error"]["Code"] == "KMSInternalException"
    assert refused.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "audit log" in refused.response["Error"]["Message"]
    h = health(c)
    assert h["status"] == "degraded" and h["audit"].startswith("failing")
    with pytest.raises(ClientError):  # refused before it is carried out
        kms.create_key(Description="must not exist")
    blocker.unlink()
    kms.list_keys()  # the writer opens the segment again
    assert health(c)["audit"] == "ok"
    descriptions = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["Description"]
                    for k in kms.list_keys()["Keys"]]
    assert "must not exist" not in descriptions
    c.stop()
    assert "audit log intact" in audit(data_dir, "verify").stdout


def test_audit_off(data_dir):
    c = Coffer(data_dir, extra_args=["--audit", "off"]).start()
    c.client().list_keys()
    assert health(c)["audit"] == "off"
    c.stop()
    assert list((data_dir / "audit").glob("segment-*.log")) == []

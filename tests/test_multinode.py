"""Several Coffer nodes on one PostgreSQL database (`--metadata postgres://…`), driven with boto3.

Each node has a data dir of its own (TLS, audit log, credentials) and the same root of trust
(root.key copied from the first node). Keys, aliases, policies and identities live in the
database, so every request works on any node, and a change on one node reaches the others'
caches within a second.
"""

import os
import pathlib
import shutil
import subprocess
import threading
import time
import uuid

import botocore.exceptions
import pytest

from conftest import Coffer


def fresh_database() -> str:
    """A new, empty database on the test server (scripts/test.sh starts one)."""
    base = os.environ.get("COFFER_TEST_POSTGRES")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("COFFER_TEST_POSTGRES is not set; scripts/test.sh starts a PostgreSQL server for these tests")
        pytest.skip("no PostgreSQL (run scripts/test.sh, or set COFFER_TEST_POSTGRES)")
    name = "coffer_" + uuid.uuid4().hex[:16]
    subprocess.run(["psql", base, "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture()
def nodes(tmp_path):
    url = fresh_database()
    started = []

    def start(name, copy_root_from=None, extra_args=()):
        data = tmp_path / name
        if copy_root_from is not None:
            data.mkdir(mode=0o700)
            shutil.copy2(copy_root_from.data_dir / "root.key", data / "root.key")
        node = Coffer(data, extra_args=["--metadata", url, *extra_args])
        node.start()
        started.append(node)
        return node

    start.url = url
    yield start
    for n in started:
        n.stop()


def client_for(node, creds, service="kms"):
    return node.client(service, access_key=creds[0], secret_key=creds[1])


def wait_until(what, predicate, limit):
    """Seconds until `predicate()` holds, failing after `limit` seconds."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            pytest.fail(f"{what}: not within {limit} s")
        time.sleep(0.02)


def test_keys_work_on_every_node_and_a_disable_reaches_the_other_within_a_second(nodes):
    a = nodes("a")
    b = nodes("b", copy_root_from=a)
    creds = a.credentials()
    kms_a, kms_b = client_for(a, creds), client_for(b, creds)

    key = kms_a.create_key(Description="shared")["KeyMetadata"]
    kms_a.create_alias(AliasName="alias/shared", TargetKeyId=key["KeyId"])
    blob = kms_a.encrypt(KeyId="alias/shared", Plaintext=b"across nodes", EncryptionContext={"n": "1"})["CiphertextBlob"]
    # Node B serves the same key (and caches it: this use loads it on B).
    assert kms_b.decrypt(CiphertextBlob=blob, EncryptionContext={"n": "1"})["Plaintext"] == b"across nodes"
    assert kms_b.describe_key(KeyId="alias/shared")["KeyMetadata"]["Arn"] == key["Arn"]
    kms_b.encrypt(KeyId=key["KeyId"], Plaintext=b"x")

    kms_a.disable_key(KeyId=key["KeyId"])

    def refused_on_b():
        try:
            kms_b.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
            return False
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "DisabledException", e.response
            return True

    took = wait_until("node B refuses the key node A disabled", refused_on_b, 1.0)
    print(f"disable on A refused on B after {took * 1000:.0f} ms")

    # And back: enabled on B, usable on A.
    kms_b.enable_key(KeyId=key["KeyId"])
    wait_until("node A uses the key node B enabled", lambda: bool(kms_a.encrypt(KeyId=key["KeyId"], Plaintext=b"y")), 1.0)

    # An alias moved on A is followed by B.
    other = kms_a.create_key()["KeyMetadata"]
    kms_a.update_alias(AliasName="alias/shared", TargetKeyId=other["KeyId"])
    wait_until(
        "node B follows the moved alias",
        lambda: kms_b.describe_key(KeyId="alias/shared")["KeyMetadata"]["KeyId"] == other["KeyId"],
        1.0,
    )


def test_concurrent_create_alias_on_two_nodes_has_exactly_one_winner(nodes):
    a = nodes("a")
    b = nodes("b", copy_root_from=a)
    creds = a.credentials()
    clients = [client_for(a, creds), client_for(b, creds)]
    keys = [clients[0].create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
    for round_ in range(10):
        name = f"alias/race-{round_}"
        results = [None, None]
        go = threading.Barrier(2)

        def create(i):
            go.wait()
            try:
                clients[i].create_alias(AliasName=name, TargetKeyId=keys[i])
                results[i] = "ok"
            except botocore.exceptions.ClientError as e:
                results[i] = e.response["Error"]["Code"]

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["AlreadyExistsException", "ok"], results
        winner = keys[results.index("ok")]
        for c in clients:
            assert c.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == winner


def test_an_access_key_deactivated_on_one_node_stops_working_on_the_other(nodes):
    a = nodes("a")
    b = nodes("b", copy_root_from=a)
    creds = a.credentials()
    iam = a.client("iam", access_key=creds[0], secret_key=creds[1])
    iam.create_user(UserName="worker")
    iam.put_user_policy(
        UserName="worker",
        PolicyName="kms",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}',
    )
    ak = iam.create_access_key(UserName="worker")["AccessKey"]
    worker_b = client_for(b, (ak["AccessKeyId"], ak["SecretAccessKey"]))
    worker_b.list_keys()  # cached on B now

    iam.update_access_key(UserName="worker", AccessKeyId=ak["AccessKeyId"], Status="Inactive")

    def refused():
        try:
            worker_b.list_keys()
            return False
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] in ("UnrecognizedClientException", "InvalidClientTokenId"), e.response
            return True

    took = wait_until("node B refuses the access key node A deactivated", refused, 1.0)
    print(f"deactivation on A refused on B after {took * 1000:.0f} ms")

    # An identity policy changed on A is applied on B.
    iam.update_access_key(UserName="worker", AccessKeyId=ak["AccessKeyId"], Status="Active")
    wait_until("reactivated", lambda: bool(worker_b.list_keys()), 1.0)
    iam.put_user_policy(
        UserName="worker",
        PolicyName="kms",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:*","Resource":"*"}]}',
    )

    def denied():
        try:
            worker_b.list_keys()
            return False
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDeniedException", e.response
            return True

    wait_until("node B applies the policy changed on A", denied, 1.0)


def test_a_node_without_the_shared_root_refuses_to_start(nodes, tmp_path):
    a = nodes("a")
    a.client().create_key()
    lonely = Coffer(tmp_path / "lonely", extra_args=["--metadata", nodes.url])
    with pytest.raises(RuntimeError) as e:
        lonely.start(timeout=20)
    log = lonely.stderr_path.read_text()
    assert "every node must use the same root" in log, log
    assert "root.key" in log
    # It made no root of its own.
    assert not (tmp_path / "lonely" / "root.key").exists()
    del e


def test_a_bad_metadata_url_is_refused_with_the_flag_named(tmp_path):
    r = subprocess.run(
        [
            os.environ.get("COFFER_BIN", str(pathlib.Path(__file__).resolve().parent.parent / "target/debug/coffer")),
            "server",
            "--data-dir",
            str(tmp_path / "d"),
            "--metadata",
            "mysql://user:hunter2@db/coffer",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "--metadata takes `sqlite` or a PostgreSQL URL" in r.stderr, r.stderr
    assert "hunter2" not in r.stderr


@pytest.fixture()
def remote_store(tmp_path):
    """A second Coffer acting as the S3-compatible store the nodes keep object bytes in."""
    r = Coffer(tmp_path / "remote").start()
    r.client("s3").create_bucket(Bucket="blobs")
    try:
        yield r
    finally:
        r.stop()


def blob_args(remote):
    ident, secret = remote.credentials()
    args = ["--blobs", "s3://blobs/coffer", "--blobs-endpoint", remote.endpoint, "--blobs-ca", remote.ca]
    env = {"COFFER_BLOBS_ACCESS_KEY_ID": ident, "COFFER_BLOBS_SECRET_ACCESS_KEY": secret}
    return args, env


def remote_blobs(remote):
    s3 = remote.client("s3")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="blobs", Prefix="coffer/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return s3, keys


def test_objects_in_a_shared_remote_store_are_served_by_every_node_and_stored_sealed(tmp_path, remote_store):
    url = fresh_database()
    args, env = blob_args(remote_store)
    a = Coffer(tmp_path / "a", extra_args=["--metadata", url, *args], extra_env=env).start()
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy2(tmp_path / "a" / "root.key", tmp_path / "b" / "root.key")
    b = Coffer(tmp_path / "b", extra_args=["--metadata", url, *args], extra_env=env).start()
    try:
        creds = a.credentials()
        s3a, s3b = client_for(a, creds, "s3"), client_for(b, creds, "s3")
        s3a.create_bucket(Bucket="data")
        marker = b"PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()
        small = marker * 10
        # Over 8 MiB in one PUT: the node sends it to the store as a multipart upload.
        big = (marker + os.urandom(4096)) * 3000
        assert len(big) > 8 << 20
        s3a.put_object(Bucket="data", Key="small.txt", Body=small)
        s3a.put_object(Bucket="data", Key="big.bin", Body=big)
        # And a multipart object through the S3 API.
        up = s3b.create_multipart_upload(Bucket="data", Key="parts.bin")["UploadId"]
        p1 = s3b.upload_part(Bucket="data", Key="parts.bin", UploadId=up, PartNumber=1, Body=big[: 5 << 20])
        p2 = s3a.upload_part(Bucket="data", Key="parts.bin", UploadId=up, PartNumber=2, Body=marker)
        s3a.complete_multipart_upload(
            Bucket="data",
            Key="parts.bin",
            UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]},
        )

        assert s3b.get_object(Bucket="data", Key="small.txt")["Body"].read() == small
        assert s3b.get_object(Bucket="data", Key="big.bin")["Body"].read() == big
        ranged = s3b.get_object(Bucket="data", Key="big.bin", Range="bytes=5000000-5999999")["Body"].read()
        assert ranged == big[5000000:6000000]
        assert s3a.get_object(Bucket="data", Key="parts.bin")["Body"].read() == big[: 5 << 20] + marker

        # The store holds ciphertext only: the marker is in no blob.
        raw_s3, keys = remote_blobs(remote_store)
        assert len(keys) == 4, keys
        for k in keys:
            raw = raw_s3.get_object(Bucket="blobs", Key=k)["Body"].read()
            assert marker not in raw, k
        # A deletion on one node removes the blob from the store.
        s3b.delete_object(Bucket="data", Key="big.bin")
        _, after = remote_blobs(remote_store)
        assert len(after) == 3

        # A blob no object names (a node died before committing its row) is removed at start
        # once it is older than the grace period, and only then.
        orphan = "coffer/ab/ab" + uuid.uuid4().hex[:30]
        raw_s3.put_object(Bucket="blobs", Key=orphan, Body=b"left over")
        b.stop()
        b.start()  # default grace: an hour; the orphan is too young
        assert orphan in remote_blobs(remote_store)[1]
        b.stop()
        b.extra_args += ["--blobs-orphan-grace", "0s"]
        b.start()
        left = remote_blobs(remote_store)[1]
        assert orphan not in left and len(left) == 3, left
        s3b = client_for(b, creds, "s3")  # b listens on a new port
        assert s3b.get_object(Bucket="data", Key="small.txt")["Body"].read() == small
    finally:
        b.stop()
        a.stop()


def test_remote_blobs_need_their_credentials_and_https(tmp_path):
    exe = os.environ.get("COFFER_BIN", str(pathlib.Path(__file__).resolve().parent.parent / "target/debug/coffer"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    r = subprocess.run(
        [exe, "server", "--data-dir", str(tmp_path / "d"), "--blobs", "s3://b/p", "--blobs-endpoint", "https://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert r.returncode != 0 and "COFFER_BLOBS_ACCESS_KEY_ID" in r.stderr, r.stderr
    env.update(COFFER_BLOBS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE12", COFFER_BLOBS_SECRET_ACCESS_KEY="x" * 40)
    r = subprocess.run(
        [exe, "server", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--blobs", "s3://b/p",
         "--blobs-endpoint", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert r.returncode != 0 and "must be https://" in r.stderr, r.stderr


def start_cluster(tmp_path, remote, count=3, extra_args=()):
    url = fresh_database()
    args, env = blob_args(remote)
    first = Coffer(tmp_path / "n0", extra_args=["--metadata", url, *args, *extra_args], extra_env=env).start()
    out = [first]
    for i in range(1, count):
        d = tmp_path / f"n{i}"
        d.mkdir(mode=0o700)
        shutil.copy2(first.data_dir / "root.key", d / "root.key")
        out.append(Coffer(d, extra_args=["--metadata", url, *args, *extra_args], extra_env=env).start())
    return out


def test_kill_9_of_one_node_under_load_loses_no_acknowledged_write(tmp_path, remote_store):
    """Steady load through three nodes; one is killed with SIGKILL and restarted while the other
    two carry on. Every write any client saw acknowledged is there afterwards, on every node, and
    no read ever returned wrong bytes."""
    import hashlib
    import random

    cluster = start_cluster(tmp_path, remote_store)
    creds = cluster[0].credentials()
    cluster[0].client("s3", access_key=creds[0], secret_key=creds[1]).create_bucket(Bucket="load")
    acked = {"keys": [], "aliases": [], "objects": {}}
    lock = threading.Lock()
    corrupt = []
    errors = {"down": 0}
    stop = threading.Event()

    def worker(node_index, seed):
        rnd = random.Random(seed)
        node = cluster[node_index]
        n = 0
        clients = {}
        while not stop.is_set():
            n += 1
            try:
                # A restarted node listens on a new port: new clients then.
                if node.endpoint not in clients:
                    clients[node.endpoint] = (client_for(node, creds), client_for(node, creds, "s3"))
                kms, s3 = clients[node.endpoint]
                op = n % 3
                if op == 0:
                    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
                    alias = f"alias/w{seed}-{n}"
                    with lock:
                        acked["keys"].append(key_id)
                    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
                    with lock:
                        acked["aliases"].append((alias, key_id))
                elif op == 1:
                    body = rnd.randbytes(rnd.choice([100, 70_000, 300_000]))
                    key = f"w{seed}/{n}"
                    s3.put_object(Bucket="load", Key=key, Body=body)
                    with lock:
                        acked["objects"][key] = hashlib.sha256(body).hexdigest()
                else:
                    with lock:
                        known = list(acked["objects"].items())
                    if known:
                        key, digest = rnd.choice(known)
                        got = s3.get_object(Bucket="load", Key=key)["Body"].read()
                        if hashlib.sha256(got).hexdigest() != digest:
                            corrupt.append(key)
            except Exception:  # the node is down (or the request was cut): not acknowledged
                with lock:
                    errors["down"] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(i % 3, i)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)
    victim = cluster[2]
    victim.proc.kill()  # SIGKILL, mid-request
    victim.proc.wait()
    time.sleep(3)
    victim.start()
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()

    assert not corrupt, corrupt
    assert len(acked["keys"]) > 10 and len(acked["objects"]) > 10, acked
    print(
        f"acknowledged: {len(acked['keys'])} keys, {len(acked['aliases'])} aliases, "
        f"{len(acked['objects'])} objects; {errors['down']} requests failed while a node was down"
    )
    # Everything acknowledged is there, seen from every node (the restarted one included).
    for node in cluster:
        kms = client_for(node, creds)
        s3 = client_for(node, creds, "s3")
        for key_id in acked["keys"][::7]:
            assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Enabled"]
        for alias, key_id in acked["aliases"][::5]:
            assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == key_id
        for key, digest in list(acked["objects"].items())[::3]:
            got = s3.get_object(Bucket="load", Key=key)["Body"].read()
            assert hashlib.sha256(got).hexdigest() == digest, key
    # All of them from one node.
    kms = client_for(cluster[2], creds)
    s3 = client_for(cluster[2], creds, "s3")
    for key_id in acked["keys"]:
        kms.describe_key(KeyId=key_id)
    for alias, key_id in acked["aliases"]:
        assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == key_id
    for key, digest in acked["objects"].items():
        assert hashlib.sha256(s3.get_object(Bucket="load", Key=key)["Body"].read()).hexdigest() == digest
    for n in cluster:
        n.stop()
    # Each node kept its own audit chain (the killed one too); all of them verify together.
    from conftest import audit_events, coffer_bin

    for n in cluster:
        assert len(audit_events(n.data_dir)) > 50
    dirs = [a for n in cluster for a in ("--data-dir", str(n.data_dir))]
    r = subprocess.run([coffer_bin(), "audit", "verify", *dirs], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all 3 chains intact" in r.stdout, r.stdout
    # A change in any one chain is found and named.
    seg = sorted((cluster[1].data_dir / "audit").glob("segment-*.log"))[0]
    raw = bytearray(seg.read_bytes())
    i = raw.index(b'"eventName"')
    raw[i + 1] ^= 0x20
    seg.write_bytes(bytes(raw))
    r = subprocess.run([coffer_bin(), "audit", "verify", *dirs], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert "1 of 3 chains BROKEN" in r.stdout and f"{cluster[1].data_dir}: audit log BROKEN" in r.stdout, r.stdout


def health(node):
    import json
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=node.ca)
    try:
        with urllib.request.urlopen(node.endpoint + "/_coffer/health", context=ctx, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_nodes_report_unhealthy_while_postgres_is_down_and_reconnect_by_themselves(tmp_path, remote_store):
    pg_dir = os.environ.get("COFFER_TEST_POSTGRES_DIR")
    if not pg_dir:
        if os.environ.get("CI"):
            pytest.fail("COFFER_TEST_POSTGRES_DIR is not set; scripts/test.sh sets it")
        pytest.skip("the PostgreSQL server is not ours to restart (run scripts/test.sh)")
    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
    a, b = start_cluster(tmp_path, remote_store, count=2)
    creds = a.credentials()
    kms_a, kms_b = client_for(a, creds), client_for(b, creds)
    key_id = kms_a.create_key()["KeyMetadata"]["KeyId"]
    blob = kms_b.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]
    assert health(a)[0] == 200
    assert health(a)[1]["metadata"] == {"engine": "postgres", "status": "ok"}

    subprocess.run([str(script), "stop", pg_dir], check=True, capture_output=True)
    try:
        status, body = health(a)
        assert status == 503, body
        assert body["status"] == "unavailable" and body["metadata"]["status"].startswith("failing"), body
        assert health(b)[0] == 503
        # What needs the database fails cleanly meanwhile.
        with pytest.raises(botocore.exceptions.ClientError) as e:
            kms_a.create_key()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500
    finally:
        subprocess.run([str(script), "start", pg_dir], check=True, capture_output=True)

    wait_until("node A healthy again", lambda: health(a)[0] == 200, 20)
    wait_until("node B healthy again", lambda: health(b)[0] == 200, 20)
    # Both work again without a restart, and nothing was lost.
    kms_a.create_key()
    assert kms_a.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    assert kms_b.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
    a.stop()
    b.stop()


def make_ca_and_server_cert(d: pathlib.Path):
    """A CA and a certificate for 127.0.0.1 signed by it (PEM files in d)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coffer test PostgreSQL CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d / "ca.pem", d / "server.crt", d / "server.key"


def test_postgres_over_tls_is_required_and_verified(tmp_path):
    if not os.environ.get("COFFER_TEST_POSTGRES"):
        if os.environ.get("CI"):
            pytest.fail("COFFER_TEST_POSTGRES is not set; scripts/test.sh starts PostgreSQL")
        pytest.skip("no PostgreSQL here (run scripts/test.sh)")
    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
    import tempfile

    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    # Not under pytest's private temp dir: the server runs as Debian's postgres user when we are root.
    pg = pathlib.Path(tempfile.mkdtemp(prefix="coffer-test-pg-tls."))
    url = subprocess.run(
        [str(script), "start", str(pg), str(cert), str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        tls_url = url + "?sslmode=require"
        # The certificate is checked: without the CA that signed it, the node refuses to start.
        untrusting = Coffer(tmp_path / "untrusting", extra_args=["--metadata", tls_url])
        with pytest.raises(RuntimeError):
            untrusting.start(timeout=20)
        log = untrusting.stderr_path.read_text()
        assert "--metadata-ca" in log and "not trusted" in log, log
        # The server takes TLS connections only (hostssl): a node that will not use TLS is refused.
        plain = Coffer(tmp_path / "plain", extra_args=["--metadata", url + "?sslmode=disable"])
        with pytest.raises(RuntimeError):
            plain.start(timeout=20)
        # With the CA, everything goes over TLS: requests, and the change listener.
        a = Coffer(tmp_path / "a", extra_args=["--metadata", tls_url, "--metadata-ca", str(ca)]).start()
        (tmp_path / "b").mkdir(mode=0o700)
        shutil.copy2(tmp_path / "a" / "root.key", tmp_path / "b" / "root.key")
        b = Coffer(tmp_path / "b", extra_args=["--metadata", tls_url, "--metadata-ca", str(ca)]).start()
        try:
            creds = a.credentials()
            kms_a, kms_b = client_for(a, creds), client_for(b, creds)
            key_id = kms_a.create_key()["KeyMetadata"]["KeyId"]
            kms_b.encrypt(KeyId=key_id, Plaintext=b"x")
            kms_a.disable_key(KeyId=key_id)

            def refused():
                try:
                    kms_b.encrypt(KeyId=key_id, Plaintext=b"x")
                    return False
                except botocore.exceptions.ClientError:
                    return True

            wait_until("the disable reaches node B over TLS", refused, 1.0)
            # The offline import works on the shared database too.
            iam = a.client("iam", access_key=creds[0], secret_key=creds[1])
            iam.create_user(UserName="migrated")
            from conftest import coffer_bin

            r = subprocess.run(
                [coffer_bin(), "iam", "import-access-key", "--data-dir", str(a.data_dir), "--metadata", tls_url,
                 "--metadata-ca", str(ca), "--user-name", "migrated", "--access-key-id", "AKIAMIGRATEDFROMAWS1",
                 "--secret-access-key-stdin"],
                input="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", capture_output=True, text=True, timeout=60,
            )
            assert r.returncode == 0, r.stderr
            sts = b.client("sts", access_key="AKIAMIGRATEDFROMAWS1", secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
            assert sts.get_caller_identity()["Arn"].endswith(":user/migrated")
        finally:
            b.stop()
            a.stop()
    finally:
        subprocess.run([str(script), "stop", str(pg)], capture_output=True)
        shutil.rmtree(pg, ignore_errors=True)


def test_remote_blobs_in_another_s3_implementation(tmp_path):
    """The remote blob backend against moto's S3 (another implementation than Coffer's own)."""
    import sys

    import boto3

    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    moto = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).resolve().parent / "moto_s3.py"), str(cert), str(key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(moto.stdout.readline())
        endpoint = f"https://127.0.0.1:{port}"
        store = boto3.client(
            "s3", endpoint_url=endpoint, verify=str(ca), region_name="us-east-1",
            aws_access_key_id="AKIAMOTOEXAMPLE00001", aws_secret_access_key="moto-secret",
        )
        store.create_bucket(Bucket="objects")
        args = ["--blobs", "s3://objects/n", "--blobs-endpoint", endpoint, "--blobs-ca", str(ca)]
        env = {"COFFER_BLOBS_ACCESS_KEY_ID": "AKIAMOTOEXAMPLE00001", "COFFER_BLOBS_SECRET_ACCESS_KEY": "moto-secret"}
        url = fresh_database()
        a = Coffer(tmp_path / "a", extra_args=["--metadata", url, *args], extra_env=env).start()
        (tmp_path / "b").mkdir(mode=0o700)
        shutil.copy2(tmp_path / "a" / "root.key", tmp_path / "b" / "root.key")
        b = Coffer(tmp_path / "b", extra_args=["--metadata", url, *args, "--blobs-orphan-grace", "0s"], extra_env=env)
        try:
            creds = a.credentials()
            s3a = client_for(a, creds, "s3")
            s3a.create_bucket(Bucket="data")
            marker = b"MOTO-MARKER-" + uuid.uuid4().hex.encode()
            big = (marker + os.urandom(1000)) * 10_000  # over 8 MiB: a multipart upload to moto
            s3a.put_object(Bucket="data", Key="big", Body=big)
            s3a.put_object(Bucket="data", Key="small", Body=marker)
            # An orphan and an abandoned upload in the store, for b's start-up sweep.
            store.put_object(Bucket="objects", Key="n/cd/cd" + uuid.uuid4().hex[:30], Body=b"orphan")
            store.create_multipart_upload(Bucket="objects", Key="n/ef/ef" + uuid.uuid4().hex[:30])
            b.start()
            s3b = client_for(b, creds, "s3")
            assert s3b.get_object(Bucket="data", Key="big")["Body"].read() == big
            assert s3b.get_object(Bucket="data", Key="big", Range="bytes=9000000-9000999")["Body"].read() == big[9000000:9001000]
            assert s3b.get_object(Bucket="data", Key="small")["Body"].read() == marker
            stored = store.list_objects_v2(Bucket="objects", Prefix="n/").get("Contents", [])
            assert len(stored) == 2, stored  # the orphan is gone, the two blobs stay
            assert not store.list_multipart_uploads(Bucket="objects").get("Uploads")
            for o in stored:
                assert marker not in store.get_object(Bucket="objects", Key=o["Key"])["Body"].read()
            s3b.delete_object(Bucket="data", Key="big")
            assert len(store.list_objects_v2(Bucket="objects", Prefix="n/").get("Contents", [])) == 1
        finally:
            b.stop()
            a.stop()
    finally:
        moto.kill()
        moto.wait()


def test_changes_to_one_key_from_two_nodes_lose_nothing(nodes):
    """Read-modify-write changes of a key made at the same instant on two nodes — its state on
    one, its description on the other — over and over: every time, both changes stand; neither
    node writes the key back with what it read before the other's change."""
    a = nodes("a")
    b = nodes("b", copy_root_from=a)
    creds = a.credentials()
    kms_a, kms_b = client_for(a, creds), client_for(b, creds)
    key_id = kms_a.create_key()["KeyMetadata"]["KeyId"]
    go = threading.Barrier(2)
    for i in range(40):
        disable = i % 2 == 0

        def state():
            go.wait()
            (kms_a.disable_key if disable else kms_a.enable_key)(KeyId=key_id)

        def describe():
            go.wait()
            kms_b.update_key_description(KeyId=key_id, Description=f"round {i}")

        threads = [threading.Thread(target=state), threading.Thread(target=describe)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        meta = kms_a.describe_key(KeyId=key_id)["KeyMetadata"]
        assert meta["KeyState"] == ("Disabled" if disable else "Enabled"), (i, meta)
        assert meta["Description"] == f"round {i}", (i, meta)


def test_coffer_backup_refuses_shared_metadata_and_says_what_to_use(nodes, tmp_path):
    from conftest import coffer_bin

    a = nodes("a")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COFFER_"))}
    r = subprocess.run(
        [coffer_bin(), "backup", "create", str(tmp_path / "x.cfbk"), "--endpoint", a.endpoint, "--data-dir", str(a.data_dir)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert r.returncode != 0
    assert "pg_dump" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "x.cfbk").exists()
    # Root rotation is refused too: the other nodes would lose every rewrapped secret.
    r = a.operator("rotate-root", check=False)
    assert r.returncode != 0 and "several nodes share PostgreSQL metadata" in r.stdout + r.stderr, r.stdout + r.stderr
    assert a.client().list_keys()


def test_the_database_holds_no_secret_in_the_clear(nodes):
    """Secret access keys and key material reach PostgreSQL only wrapped under the root key: a
    dump of the whole database holds none of them."""
    a = nodes("a")
    creds = a.credentials()
    iam = a.client("iam", access_key=creds[0], secret_key=creds[1])
    iam.create_user(UserName="holder")
    ak = iam.create_access_key(UserName="holder")["AccessKey"]
    kms = client_for(a, creds)
    # Imported key material is known to the test: it must not appear either.
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    material = os.urandom(32)
    wrapped = load_der_public_key(params["PublicKey"]).encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE"
    )
    kms.encrypt(KeyId=key_id, Plaintext=b"x")
    dump = subprocess.run(["pg_dump", "--data-only", nodes.url], check=True, capture_output=True).stdout
    assert b"holder" in dump  # the dump is of the right database
    for secret in (ak["SecretAccessKey"].encode(), creds[1].encode()):
        assert secret not in dump
    # bytea is dumped as hex.
    assert material.hex().encode() not in dump
    assert base64.b64encode(material) not in dump


def test_help_never_shows_the_metadata_password():
    from conftest import coffer_bin

    env = {**os.environ, "COFFER_METADATA": "postgres://coffer:hunter2-secret@db/coffer"}
    for args in (["server", "--help"], ["iam", "import-access-key", "--help"]):
        r = subprocess.run([coffer_bin(), *args], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "--metadata" in r.stdout
        assert "hunter2" not in r.stdout + r.stderr, args

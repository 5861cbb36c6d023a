"""Restarts, crashes, graceful shutdown, and what lands on disk."""

import concurrent.futures
import os
import pathlib
import signal
import sqlite3
import stat
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Coffer


def test_restart_keeps_keys_aliases_and_ciphertexts(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    key = kms.create_key(Description="survives")["KeyMetadata"]
    kms.create_alias(AliasName="alias/survivor", TargetKeyId=key["KeyId"])
    kms.enable_key_rotation(KeyId=key["KeyId"])
    blob = kms.encrypt(KeyId="alias/survivor", Plaintext=b"before restart", EncryptionContext={"x": "y"})["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    creds = c.credentials()
    first_endpoint = c.endpoint
    assert c.stop() == 0

    c2 = Coffer(data_dir).start()
    try:
        assert c2.credentials() == creds, "the administrator's credentials are reused"
        kms = c2.client()
        assert kms.describe_key(KeyId="alias/survivor")["KeyMetadata"]["Description"] == "survives"
        assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"x": "y"})["Plaintext"] == b"before restart"
        assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
        assert len(kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"]) == 1
        assert (data_dir / "tls" / "ca.pem").exists()
    finally:
        c2.stop()
    assert first_endpoint  # both runs served


def test_kill_during_create_key_burst_loses_nothing_acknowledged(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()

    def worker():
        client = c.client()
        while not stop.is_set():
            try:
                kid = client.create_key(Description="burst")["KeyMetadata"]["KeyId"]
            except Exception:
                return
            with lock:
                acknowledged.append(kid)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(acknowledged) < 60 and time.time() < deadline:
        time.sleep(0.01)
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 60

    c2 = Coffer(data_dir).start()
    try:
        kms = c2.client()
        listed = {k["KeyId"] for p in kms.get_paginator("list_keys").paginate() for k in p["Keys"]}
        missing = set(acknowledged) - listed
        assert not missing, f"{len(missing)} acknowledged keys lost"
        for kid in acknowledged[-5:]:
            assert kms.encrypt(KeyId=kid, Plaintext=b"ok")["KeyId"].endswith(kid)
    finally:
        c2.stop()


def test_graceful_shutdown_finishes_in_flight_requests(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    results = []

    def call(i):
        client = c.client()
        try:
            out = client.encrypt(KeyId=key, Plaintext=b"x" * 1000)
            return "ok" if out["CiphertextBlob"] else "empty"
        except (EndpointConnectionError, ConnectionError):
            return "refused"
        except ClientError as e:
            return e.response["Error"]["Code"]
        except Exception as e:  # a connection reset mid-request would land here
            return type(e).__name__

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(call, i) for i in range(200)]
        time.sleep(0.2)
        c.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert c.proc.wait(30) == 0
    assert "ok" in results
    assert set(results) <= {"ok", "refused"}, results


def unwrap_material(root_keys: dict, key_id: str, version: int, wrapped: bytes) -> bytes:
    """Opens a wrapped key-material record (version 2) as docs/formats.md describes it."""
    assert wrapped[0] == 2
    header, nonce, sealed = wrapped[:5], wrapped[5:17], wrapped[17:]
    generation = int.from_bytes(wrapped[1:5], "big")
    aad = header + f"coffer/kms/key-material/v1/{key_id}/{version}".encode()
    return AESGCM(root_keys[generation]).decrypt(nonce, sealed, aad)


def read_dev_keyring(root_file: bytes) -> dict:
    """The dev key file (version 2) as docs/formats.md describes it: generation -> key."""
    assert root_file[:5] == b"CFRK\x02" and root_file[5] == 1
    count = int.from_bytes(root_file[10:12], "big")
    entries = root_file[12:]
    assert len(entries) == 36 * count
    return {
        int.from_bytes(entries[i : i + 4], "big"): entries[i + 4 : i + 36] for i in range(0, len(entries), 36)
    }


def all_files(d: pathlib.Path):
    return [p for p in d.rglob("*") if p.is_file()]


def test_no_key_material_or_plaintext_on_disk(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    plaintexts = [b"PLAINTEXT-MARKER-%d-never-on-disk" % i for i in range(5)]
    data_keys = []
    key_ids = []
    for p in plaintexts:
        kid = kms.create_key()["KeyMetadata"]["KeyId"]
        key_ids.append(kid)
        kms.rotate_key_on_demand(KeyId=kid)
        kms.encrypt(KeyId=kid, Plaintext=p)
        data_keys.append(kms.generate_data_key(KeyId=kid, KeySpec="AES_256")["Plaintext"])
    ident, secret = c.credentials()
    assert c.stop() == 0

    root_keys = read_dev_keyring((data_dir / "root.key").read_bytes())
    assert list(root_keys) == [1]
    root_key = root_keys[1]
    db = sqlite3.connect(data_dir / "meta.db")
    materials = []
    for kid, version, wrapped in db.execute("SELECT key_id, version, wrapped FROM kms_key_materials"):
        raw = unwrap_material(root_keys, kid, version, wrapped)
        assert len(raw) == 32
        materials.append(raw)
    db.close()
    assert len(materials) == 2 * len(key_ids)

    for f in all_files(data_dir):
        content = f.read_bytes()
        for needle in materials + data_keys + plaintexts:
            assert needle not in content, f"{f.name} holds a secret in the clear"
        if f.name != "root.key":
            assert root_key not in content, f"{f.name} holds the root key"
        if f.name != "credentials":
            assert secret.encode() not in content, f"{f.name} holds the admin secret in the clear"

    for name in ("root.key", "credentials", "tls/ca.key", "tls/server.key"):
        mode = stat.S_IMODE((data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    log = c.stderr_path.read_text()
    for needle in plaintexts:
        assert needle.decode() not in log
    assert secret not in log
    assert "DEVELOPMENT MODE" in log


def test_admin_credentials_from_environment(data_dir):
    env = {"COFFER_ADMIN_ACCESS_KEY_ID": "AKIAAUTOMATION000001", "COFFER_ADMIN_SECRET_ACCESS_KEY": "automation-secret-0123456789"}
    c = Coffer(data_dir, extra_env=env).start()
    try:
        assert not (data_dir / "credentials").exists()
        assert c.client().list_keys()["Keys"] == []
        assert any("AWS_ACCESS_KEY_ID=AKIAAUTOMATION000001" in l for l in c.banner)
        assert not any("automation-secret" in l for l in c.banner)
    finally:
        c.stop()
    db = (data_dir / "meta.db").read_bytes() + (data_dir / "meta.db-wal").read_bytes() if (data_dir / "meta.db-wal").exists() else (data_dir / "meta.db").read_bytes()
    assert b"automation-secret" not in db


def test_bad_settings_fail_with_a_clear_message(data_dir, tmp_path):
    import subprocess
    from conftest import coffer_bin

    cfg = tmp_path / "c.toml"
    cfg.write_text('listen = "127.0.0.1:0"\nregion = "eu-west-1"\nbogus = true\n')
    p = subprocess.run([coffer_bin(), "server", "--data-dir", str(data_dir), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "bogus" in p.stderr
    p = subprocess.run([coffer_bin(), "server", "--data-dir", str(data_dir), "--account-id", "12"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "12 digits" in p.stderr


def test_settings_from_config_file_and_environment(data_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('region = "eu-west-1"\naccount_id = "000011112222"\n')
    c = Coffer(data_dir, extra_args=["--config", str(cfg)], extra_env={"COFFER_REGION": "eu-central-1"}).start()
    try:
        md = c.client(region="eu-central-1").create_key()["KeyMetadata"]
        assert md["Arn"].startswith("arn:aws:kms:eu-central-1:000011112222:key/")
    finally:
        c.stop()

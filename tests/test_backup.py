"""Backup and restore through the real binary: a running server backs itself up; the archive restores
into a new data dir under the right root only, and the old ciphertexts decrypt there."""

import json
import os
import shutil
import subprocess
import threading

import pytest
from botocore.exceptions import ClientError

from conftest import SOFTHSM_MODULE, Coffer, coffer_bin
from test_root_of_trust import files_under, import_known_material, init, softhsm  # noqa: F401


def backup(*args, env=None, input=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COFFER_"))}
    e.update(env or {})
    return subprocess.run([coffer_bin(), "backup", *args], capture_output=True, text=True, env=e, input=input, timeout=120)


def populate(c):
    """Keys of several kinds, an alias, a user with an access key, and ciphertexts to check later."""
    kms = c.client()
    keys = [kms.create_key(Description=f"k{i}")["KeyMetadata"]["KeyId"] for i in range(3)]
    kms.rotate_key_on_demand(KeyId=keys[0])
    kms.create_alias(AliasName="alias/kept", TargetKeyId=keys[1])
    material = os.urandom(32)
    imported = import_known_material(kms, material)
    blobs = {k: kms.encrypt(KeyId=k, Plaintext=k.encode(), EncryptionContext={"k": k})["CiphertextBlob"] for k in keys + [imported]}
    iam = c.client("iam")
    iam.create_user(UserName="dana")
    ak = iam.create_access_key(UserName="dana")["AccessKey"]
    return blobs, ak, material


def check(c, blobs, ak):
    kms = c.client()
    for k, b in blobs.items():
        assert kms.decrypt(CiphertextBlob=b, EncryptionContext={"k": k})["Plaintext"] == k.encode()
    assert kms.describe_key(KeyId="alias/kept")["KeyMetadata"]["Description"] == "k1"
    dana = c.client("sts", access_key=ak["AccessKeyId"], secret_key=ak["SecretAccessKey"])
    assert dana.get_caller_identity()["Arn"].endswith(":user/dana")


def test_dev_file_backup_while_serving_then_wipe_and_restore(tmp_path, data_dir):
    c = Coffer(data_dir).start()
    blobs, ak, material = populate(c)
    # Requests keep flowing while the backup is made.
    stop = threading.Event()

    def load():
        kms = c.client()
        k = next(iter(blobs))
        while not stop.is_set():
            kms.encrypt(KeyId=k, Plaintext=b"x")

    t = threading.Thread(target=load)
    t.start()
    archive = tmp_path / "coffer.cfbk"
    try:
        r = backup("create", str(archive), "--endpoint", c.endpoint, "--data-dir", str(data_dir), "--json")
        assert r.returncode == 0, r.stderr
    finally:
        stop.set()
        t.join()
    out = json.loads(r.stdout)
    assert out["root_mode"] == "dev-file" and out["audit_head"]["lastSeq"] > 0
    assert os.stat(archive).st_mode & 0o777 == 0o600
    data = archive.read_bytes()
    assert data[:5] == b"CFBK\x01"
    assert material not in data and ak["SecretAccessKey"].encode() not in data and b"BEGIN PRIVATE KEY" not in data
    info = json.loads(backup("inspect", str(archive), "--json").stdout)
    assert info["root_mode"] == "dev-file" and "meta.db" in info["entries"] and "archive_key" not in info
    c.stop()

    # The operator keeps the root key apart from the archive; the data dir is lost.
    kept_root = tmp_path / "root.key.kept"
    shutil.copy(data_dir / "root.key", kept_root)
    os.chmod(kept_root, 0o600)
    shutil.rmtree(data_dir)

    # The wrong root key: a clear error, nothing written.
    other = Coffer(tmp_path / "other").start()
    other.stop()
    new = tmp_path / "restored"
    r = backup("restore", str(archive), "--data-dir", str(new), "--root-key", str(tmp_path / "other" / "root.key"))
    assert r.returncode != 0 and "does not open this backup" in r.stderr
    assert not new.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".coffer-restor")]
    r = backup("restore", str(archive), "--data-dir", str(new))
    assert r.returncode != 0 and "--root-key" in r.stderr and not new.exists()

    r = backup("restore", str(archive), "--data-dir", str(new), "--root-key", str(kept_root))
    assert r.returncode == 0, r.stderr
    assert (new / "audit" / "restored-from-head.json").exists()
    c2 = Coffer(new).start()
    try:
        check(c2, blobs, ak)
        # The restored server keeps the CA, so clients keep their CA bundle, and audits on.
        assert (new / "tls" / "ca.pem").read_bytes()
    finally:
        c2.stop()
    r = subprocess.run([coffer_bin(), "audit", "verify", "--data-dir", str(new)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    # A restore never overwrites: the target must be empty.
    r = backup("restore", str(archive), "--data-dir", str(new), "--root-key", str(kept_root))
    assert r.returncode != 0 and "not empty" in r.stderr


def test_damaged_archive_writes_nothing(tmp_path, data_dir):
    c = Coffer(data_dir).start()
    c.client().create_key()
    archive = tmp_path / "a.cfbk"
    assert backup("create", str(archive), "--endpoint", c.endpoint, "--data-dir", str(data_dir)).returncode == 0
    c.stop()
    data = bytearray(archive.read_bytes())
    data[-100] ^= 1
    bad = tmp_path / "bad.cfbk"
    bad.write_bytes(bytes(data))
    new = tmp_path / "new"
    r = backup("restore", str(bad), "--data-dir", str(new), "--root-key", str(data_dir / "root.key"))
    assert r.returncode != 0 and "damaged or was altered" in r.stderr and not new.exists()
    r = backup("restore", str(tmp_path / "nope"), "--data-dir", str(new), "--root-key", str(data_dir / "root.key"))
    assert r.returncode != 0 and not new.exists()
    not_archive = tmp_path / "text"
    not_archive.write_text("hello")
    r = backup("inspect", str(not_archive))
    assert r.returncode != 0 and "not a Coffer backup archive" in r.stderr


def test_backup_needs_permission(data_dir, tmp_path):
    c = Coffer(data_dir).start()
    try:
        iam = c.client("iam")
        iam.create_user(UserName="eve")
        k = iam.create_access_key(UserName="eve")["AccessKey"]
        r = backup(
            "create", str(tmp_path / "x.cfbk"), "--endpoint", c.endpoint, "--data-dir", str(data_dir),
            env={"AWS_ACCESS_KEY_ID": k["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"]},
        )
        assert r.returncode != 0 and "AccessDenied" in r.stderr and "coffer:CreateBackup" in r.stderr
        assert not (tmp_path / "x.cfbk").exists()
    finally:
        c.stop()


def test_shamir_backup_restores_with_shares(tmp_path):
    data = tmp_path / "data"
    r = init(data, "--mode", "shamir", "--shares", "3", "--threshold", "2", "--json")
    shares = json.loads(r.stdout)["share_values"]
    c = Coffer(data).start()
    c.operator("unseal", "--stdin", input="\n".join(shares[:2]) + "\n")
    blobs, ak, _ = populate(c)
    archive = tmp_path / "s.cfbk"
    assert backup("create", str(archive), "--endpoint", c.endpoint, "--data-dir", str(data)).returncode == 0
    c.stop()
    shutil.rmtree(data)
    new = tmp_path / "restored"
    r = backup("restore", str(archive), "--data-dir", str(new))
    assert r.returncode != 0 and "unseal shares" in r.stderr and not new.exists()
    foreign = json.loads(init(tmp_path / "x", "--mode", "shamir", "--shares", "3", "--threshold", "2", "--json").stdout)["share_values"]
    r = backup("restore", str(archive), "--data-dir", str(new), "--stdin", input="\n".join(foreign[:2]) + "\n")
    assert r.returncode != 0 and "another Coffer root" in r.stderr and not new.exists()
    r = backup("restore", str(archive), "--data-dir", str(new), "--stdin", input="\n".join(shares[1:]) + "\n")
    assert r.returncode == 0, r.stderr
    c2 = Coffer(new).start()
    try:
        assert c2.sealed
        c2.operator("unseal", "--stdin", input=shares[0] + "\n" + shares[2] + "\n")
        check(c2, blobs, ak)
    finally:
        c2.stop()


def test_pkcs11_backup_restores_with_the_token(tmp_path, softhsm):  # noqa: F811
    env, pin, _ = softhsm
    data = tmp_path / "data"
    assert init(data, "--mode", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--token-label", "coffer-test", "--pin-file", str(pin), env=env).returncode == 0
    c = Coffer(data, extra_env=env).start()
    blobs, ak, material = populate(c)
    archive = tmp_path / "p.cfbk"
    assert backup("create", str(archive), "--endpoint", c.endpoint, "--data-dir", str(data), env=env).returncode == 0
    c.stop()
    shutil.rmtree(data)
    new = tmp_path / "restored"
    r = backup("restore", str(archive), "--data-dir", str(new), env=env)
    assert r.returncode == 0, r.stderr
    for path, content in files_under(new):
        assert material not in content, path
    c2 = Coffer(new, extra_env=env).start()
    try:
        check(c2, blobs, ak)
    finally:
        c2.stop()

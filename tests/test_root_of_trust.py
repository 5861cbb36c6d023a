"""Roots of trust through the real binary: shamir (sealed start, unseal, seal), pkcs11 on SoftHSM2,
and root rotation, including a crash at every step of it."""

import json
import os
import pathlib
import shutil
import subprocess
import urllib.request
import ssl

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import SOFTHSM_MODULE, Coffer, coffer_bin, softhsm_token

TEST_PIN = "coffer-test-pin-7731"


def code(e):
    return e.response["Error"]["Code"]


def health(c):
    ctx = ssl.create_default_context(cafile=c.ca)
    try:
        with urllib.request.urlopen(c.endpoint + "/_coffer/health", context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def init(data_dir, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COFFER_"))}
    e.update(env or {})
    r = subprocess.run(
        [coffer_bin(), "operator", "init", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=60,
    )
    return r


def files_under(d: pathlib.Path):
    for p in d.rglob("*"):
        if p.is_file():
            yield p, p.read_bytes()


def import_known_material(kms, material: bytes) -> str:
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    public = serialization.load_der_public_key(params["PublicKey"])
    wrapped = public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    return key_id


# ---- shamir ---------------------------------------------------------------------------------------


@pytest.fixture()
def shamir_dir(tmp_path):
    data = tmp_path / "data"
    r = init(data, "--mode", "shamir", "--shares", "5", "--threshold", "3", "--share-dir", str(tmp_path / "shares"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "shamir" and out["threshold"] == 3 and len(out["share_files"]) == 5
    shares = [pathlib.Path(f).read_text().strip() for f in out["share_files"]]
    for f in out["share_files"]:
        assert os.stat(f).st_mode & 0o777 == 0o600
    return data, shares, tmp_path


def test_init_refuses_a_used_data_dir_and_bad_parameters(tmp_path):
    data = tmp_path / "data"
    c = Coffer(data).start()
    c.stop()
    r = init(data, "--mode", "shamir", "--shares", "3", "--threshold", "2")
    assert r.returncode != 0 and "already has a root of trust" in r.stderr and "migrate-root" in r.stderr
    r = init(tmp_path / "other", "--mode", "shamir", "--shares", "3", "--threshold", "4")
    assert r.returncode != 0 and "--threshold" in r.stderr
    r = init(tmp_path / "third", "--mode", "shamir", "--shares", "3", "--threshold", "1")
    assert r.returncode != 0


def test_init_prints_shares_once_and_keeps_none(tmp_path):
    data = tmp_path / "data"
    r = init(data, "--mode", "shamir", "--shares", "3", "--threshold", "2")
    assert r.returncode == 0, r.stderr
    shares = [line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.strip().startswith("share ")]
    assert len(shares) == 3 and all(s.startswith("cfs1-") for s in shares)
    for _, content in files_under(data):
        for s in shares:
            assert s.encode() not in content and s[5:].encode() not in content
    cfg = json.loads((data / "root.json").read_text())
    assert cfg["mode"] == "shamir" and "keyring" in cfg["shamir"] and not (data / "root.key").exists()


def test_shamir_sealed_start_unseal_seal_and_unseal_again(shamir_dir):
    data, shares, tmp = shamir_dir
    c = Coffer(data).start()
    try:
        assert c.sealed
        status, h = health(c)
        assert status == 503 and h["status"] == "sealed" and h["sealed"] is True
        assert h["root_of_trust"] == "shamir" and h["threshold"] == 3 and h["progress"] == 0
        # Nothing else answers while sealed, and nothing was created: no credentials yet.
        assert not (data / "credentials").exists()
        kms = c.client(access_key="AKIAEXAMPLEEXAMPLE00", secret_key="x" * 40)
        with pytest.raises(ClientError) as e:
            kms.list_keys()
        assert code(e.value) == "ServiceUnavailableException" and "sealed" in str(e.value)
        iam = c.client("iam", access_key="AKIAEXAMPLEEXAMPLE00", secret_key="x" * 40)
        with pytest.raises(ClientError) as e:
            iam.list_users()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

        # Wrong shares are refused with the reason; good ones are kept.
        other = tmp / "other"
        r = init(other, "--mode", "shamir", "--shares", "3", "--threshold", "2", "--json")
        foreign = json.loads(r.stdout)["share_values"][0]
        typo = shares[0][:-1] + ("0" if shares[0][-1] != "0" else "1")
        r = c.operator("unseal", "--stdin", input=f"{shares[0]}\n{typo}\nnot-a-share\n{foreign}\n{shares[0]}\n", check=False)
        assert r.returncode != 0
        assert "line 1: accepted (1 of 3)" in r.stdout
        assert "typo" in r.stderr and "checksum" in r.stderr
        assert "not a Coffer unseal share" in r.stderr
        assert "another Coffer root" in r.stderr
        assert "share 1 was already submitted" in r.stderr
        st = json.loads(c.operator("status", "--json").stdout)
        assert st["sealed"] is True and st["progress"] == 1

        # Reset forgets; then any three unseal.
        c.operator("unseal", "--reset", "--stdin", input="")
        assert json.loads(c.operator("status", "--json").stdout)["progress"] == 0
        r = c.operator("unseal", "--share-file", str(tmp / "shares" / "share-2.txt"), "--share-file", str(tmp / "shares" / "share-5.txt"))
        assert "accepted (2 of 3)" in r.stdout
        r = c.operator("unseal", "--share-file", str(tmp / "shares" / "share-4.txt"))
        assert "Coffer is unsealed" in r.stdout
        status, h = health(c)
        assert status == 200 and h["sealed"] is False and h["root_of_trust"] == "shamir"

        kms = c.client()
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key, Plaintext=b"under shamir")["CiphertextBlob"]

        # Seal: signed, audited; afterwards only health and unseal answer.
        r = c.operator("seal")
        assert "sealed" in r.stdout
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=blob)
        assert code(e.value) == "ServiceUnavailableException"
        # Another subset unseals again, and the old ciphertext decrypts.
        c.operator("unseal", "--stdin", input="\n".join([shares[0], shares[2], shares[3]]) + "\n")
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"under shamir"
        # A restart is sealed again.
        c.stop()
        c.start()
        assert c.sealed
        c.operator("unseal", "--stdin", input="\n".join(shares[2:]) + "\n")
        assert c.client().decrypt(CiphertextBlob=blob)["Plaintext"] == b"under shamir"
        events = subprocess.run(
            [coffer_bin(), "audit", "query", "--data-dir", str(data), "--json"], capture_output=True, text=True, check=True
        ).stdout
        seals = [json.loads(l) for l in events.splitlines() if '"Seal"' in l]
        assert seals and seals[0]["eventSource"] == "coffer.operator"
        unseals = [json.loads(l) for l in events.splitlines() if '"eventName":"Unseal"' in l]
        assert len(unseals) == 3, "each unseal is recorded"
        assert unseals[0]["sourceIPAddress"] == "127.0.0.1" and unseals[0]["userIdentity"]["type"] == "Operator"
        r = subprocess.run([coffer_bin(), "audit", "verify", "--data-dir", str(data)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        c.stop()


def test_seal_needs_permission_and_a_shamir_root(shamir_dir, data_dir):
    data, shares, _ = shamir_dir
    c = Coffer(data).start()
    try:
        c.operator("unseal", "--stdin", input="\n".join(shares[:3]) + "\n")
        iam = c.client("iam")
        iam.create_user(UserName="bob")
        k = iam.create_access_key(UserName="bob")["AccessKey"]
        env_bob = {"AWS_ACCESS_KEY_ID": k["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"]}
        c.extra_env.update(env_bob)
        r = c.operator("seal", check=False)
        assert r.returncode != 0 and "AccessDenied" in r.stderr and "coffer:Seal" in r.stderr
        iam.put_user_policy(
            UserName="bob",
            PolicyName="seal",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "coffer:Seal", "Resource": "*"}]}),
        )
        c.operator("seal")
        assert health(c)[1]["sealed"] is True
    finally:
        c.stop()
    dev = Coffer(data_dir).start()
    try:
        r = dev.operator("seal", check=False)
        assert r.returncode != 0 and "shamir" in r.stderr
    finally:
        dev.stop()


# ---- pkcs11 (SoftHSM2) ----------------------------------------------------------------------------


@pytest.fixture()
def softhsm(tmp_path):
    env = softhsm_token(tmp_path, "coffer-test", TEST_PIN)
    tokens = tmp_path / "tokens"
    pin = tmp_path / "pin"
    pin.write_text(TEST_PIN + "\n")
    pin.chmod(0o600)
    return env, pin, tokens


def test_pkcs11_root_keys_stay_in_the_token(tmp_path, softhsm):
    env, pin, tokens = softhsm
    data = tmp_path / "data"
    r = init(data, "--mode", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--token-label", "coffer-test", "--pin-file", str(pin), env=env)
    assert r.returncode == 0, r.stderr
    c = Coffer(data, extra_env=env).start()
    try:
        status, h = health(c)
        assert status == 200 and h["root_of_trust"] == "pkcs11" and h["root_keys_non_extractable"] is True
        kms = c.client()
        material = os.urandom(32)
        imported = import_known_material(kms, material)
        generated = kms.create_key()["KeyMetadata"]["KeyId"]
        blobs = {k: kms.encrypt(KeyId=k, Plaintext=b"hsm " + k.encode())["CiphertextBlob"] for k in (imported, generated)}
        iam = c.client("iam")
        iam.create_user(UserName="alice")
        secret = iam.create_access_key(UserName="alice")["AccessKey"]["SecretAccessKey"]
        c.stop()
        # No unwrapped key material, secret or PIN anywhere in the data dir.
        for path, content in files_under(data):
            assert material not in content, path
            assert secret.encode() not in content, path
            assert TEST_PIN.encode() not in content, path
        c.start()
        kms = c.client()
        for k, b in blobs.items():
            assert kms.decrypt(CiphertextBlob=b)["Plaintext"] == b"hsm " + k.encode()
        # Rotation makes a second key inside the token and removes the first.
        r = c.operator("rotate-root", "--json")
        out = json.loads(r.stdout)
        assert out["RootGeneration"] == 2 and out["RemovedGenerations"] == [1] and out["Rewrapped"] >= 3
        c.stop()
        c.start()
        assert health(c)[1]["root_generation"] == 2
        for k, b in blobs.items():
            assert c.client().decrypt(CiphertextBlob=b)["Plaintext"] == b"hsm " + k.encode()
    finally:
        c.stop()


def test_pkcs11_wrong_pin_or_label_is_a_clear_error(tmp_path, softhsm):
    env, pin, _ = softhsm
    bad = tmp_path / "bad-pin"
    bad.write_text("9999\n")
    r = init(tmp_path / "a", "--mode", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--token-label", "coffer-test", "--pin-file", str(bad), env=env)
    assert r.returncode != 0 and "refused the PIN" in r.stderr
    r = init(tmp_path / "b", "--mode", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--token-label", "nope", "--pin-file", str(pin), env=env)
    assert r.returncode != 0 and 'no PKCS#11 token labelled "nope"' in r.stderr and '"coffer-test"' in r.stderr
    r = init(tmp_path / "c", "--mode", "pkcs11", "--pkcs11-module", "/nonexistent/lib.so", "--token-label", "x", "--pin-file", str(pin), env=env)
    assert r.returncode != 0 and "cannot load the PKCS#11 module" in r.stderr
    # A server whose PIN changed under it refuses to start, and says why.
    data = tmp_path / "d"
    assert init(data, "--mode", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--token-label", "coffer-test", "--pin-env", "HSM_PIN", env={**env, "HSM_PIN": TEST_PIN}).returncode == 0
    c = Coffer(data, extra_env={**env, "HSM_PIN": "4321"})
    with pytest.raises(RuntimeError):
        c.start(timeout=15)
    assert "refused the PIN" in c.stderr_path.read_text()


# ---- rotation under crashes -----------------------------------------------------------------------


FAILPOINTS = [
    "rotate-root:after-new-generation",
    "rotate-root:after-one-rewrap",
    "rotate-root:after-rewrap",
    "rotate-root:before-retire",
]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_killed_rotation_leaves_a_store_that_starts_and_decrypts(data_dir, failpoint):
    c = Coffer(data_dir, extra_env={"COFFER_TEST_FAILPOINT": failpoint}).start()
    kms = c.client()
    keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    imported = import_known_material(kms, os.urandom(32))
    kms.rotate_key_on_demand(KeyId=keys[0])
    blobs = {k: kms.encrypt(KeyId=k, Plaintext=k.encode())["CiphertextBlob"] for k in keys + [imported]}
    signature = kms.sign(KeyId=rsa, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    iam = c.client("iam")
    iam.create_user(UserName="carol")
    ak = iam.create_access_key(UserName="carol")["AccessKey"]
    r = c.operator("rotate-root", check=False)
    assert r.returncode != 0, "the failpoint should have stopped the server"
    assert c.proc.wait(30) != 0
    assert f"failpoint {failpoint} reached" in c.stderr_path.read_text()

    c.extra_env.pop("COFFER_TEST_FAILPOINT")
    c.start()
    kms = c.client()
    for k, b in blobs.items():
        assert kms.decrypt(CiphertextBlob=b)["Plaintext"] == k.encode()
    assert kms.verify(KeyId=rsa, Message=b"m", Signature=signature, SigningAlgorithm="RSASSA_PSS_SHA_256")["SignatureValid"]
    carol = c.client(access_key=ak["AccessKeyId"], secret_key=ak["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        carol.list_keys()
    assert code(e.value) == "AccessDeniedException", "carol authenticates (her secret unwraps), and has no permission"
    # Running it again finishes the job: one generation left, everything still opens.
    out = json.loads(c.operator("rotate-root", "--json").stdout)
    assert out["RemovedGenerations"], out
    c.stop()
    c.start()
    kms = c.client()
    for k, b in blobs.items():
        assert kms.decrypt(CiphertextBlob=b)["Plaintext"] == k.encode()
    assert health(c)[1]["root_generation"] == out["RootGeneration"]
    c.stop()
    r = subprocess.run([coffer_bin(), "audit", "verify", "--data-dir", str(data_dir)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rotation_in_shamir_mode_keeps_the_same_shares(shamir_dir):
    data, shares, _ = shamir_dir
    c = Coffer(data).start()
    try:
        c.operator("unseal", "--stdin", input="\n".join(shares[:3]) + "\n")
        kms = c.client()
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
        keyring_before = json.loads((data / "root.json").read_text())["shamir"]["keyring"]
        out = json.loads(c.operator("rotate-root", "--json").stdout)
        assert out["RootGeneration"] == 2 and out["RemovedGenerations"] == [1]
        assert json.loads((data / "root.json").read_text())["shamir"]["keyring"] != keyring_before
        c.stop()
        c.start()
        c.operator("unseal", "--stdin", input="\n".join(shares[2:]) + "\n")
        assert c.client().decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
        assert health(c)[1]["root_generation"] == 2
    finally:
        c.stop()


# ---- migrate-root ---------------------------------------------------------------------------------


def migrate(data_dir, *args, env=None, input=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COFFER_"))}
    e.update(env or {})
    return subprocess.run(
        [coffer_bin(), "operator", "migrate-root", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, env=e, input=input, timeout=120,
    )


def populate_for_migration(c):
    kms = c.client()
    keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
    imported = import_known_material(kms, os.urandom(32))
    blobs = {k: kms.encrypt(KeyId=k, Plaintext=k.encode())["CiphertextBlob"] for k in keys + [imported]}
    iam = c.client("iam")
    iam.create_user(UserName="mig")
    ak = iam.create_access_key(UserName="mig")["AccessKey"]
    return blobs, ak


def check_after_migration(c, blobs, ak):
    kms = c.client()
    for k, b in blobs.items():
        assert kms.decrypt(CiphertextBlob=b)["Plaintext"] == k.encode()
    sts = c.client("sts", access_key=ak["AccessKeyId"], secret_key=ak["SecretAccessKey"])
    assert sts.get_caller_identity()["Arn"].endswith(":user/mig")


def test_migrate_dev_file_to_shamir_to_pkcs11(data_dir, tmp_path, softhsm):
    env, pin, _ = softhsm
    c = Coffer(data_dir, extra_env=env).start()
    blobs, ak = populate_for_migration(c)
    r = migrate(data_dir, "--to", "shamir", "--shares", "3", "--threshold", "2", "--share-dir", str(tmp_path / "s"))
    assert r.returncode != 0 and "stop it first" in r.stderr
    c.stop()
    r = migrate(data_dir, "--to", "shamir", "--shares", "3", "--threshold", "2", "--share-dir", str(tmp_path / "s"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["from"] == "dev-file" and out["to"] == "shamir" and out["root_generation"] == 2 and out["rewrapped"] >= 4
    assert not (data_dir / "root.key").exists(), "the dev key file is gone"
    shares = [(tmp_path / "s" / f"share-{i}.txt").read_text().strip() for i in (1, 2, 3)]
    c.start()
    assert c.sealed
    c.operator("unseal", "--stdin", input="\n".join(shares[1:]) + "\n")
    check_after_migration(c, blobs, ak)
    c.stop()

    # shamir to pkcs11: the current root needs its shares.
    base = ["--to", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--token-label", "coffer-test", "--pin-file", str(pin)]
    r = migrate(data_dir, *base, env=env)
    assert r.returncode != 0 and "unseal shares" in r.stderr
    r = migrate(data_dir, *base, "--current-shares-stdin", "--json", env=env, input=shares[0] + "\n" + shares[2] + "\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["root_generation"] == 3
    c.start()
    assert not c.sealed and health(c)[1]["root_of_trust"] == "pkcs11"
    check_after_migration(c, blobs, ak)
    c.stop()
    events = subprocess.run(
        [coffer_bin(), "audit", "query", "--data-dir", str(data_dir), "--event", "MigrateRoot", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    moves = [(json.loads(l)["requestParameters"]["from"], json.loads(l)["requestParameters"]["to"]) for l in events]
    assert moves == [("dev-file", "shamir"), ("shamir", "pkcs11")]
    r = subprocess.run([coffer_bin(), "audit", "verify", "--data-dir", str(data_dir)], capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "failpoint,finished",
    [
        ("migrate-root:after-prepare", False),
        ("migrate-root:before-commit", False),
        ("migrate-root:after-commit", True),
        ("migrate-root:during-install", True),
    ],
)
def test_killed_migration_is_finished_or_rolled_back_at_start(data_dir, tmp_path, failpoint, finished):
    c = Coffer(data_dir).start()
    blobs, ak = populate_for_migration(c)
    c.stop()
    r = migrate(
        data_dir, "--to", "shamir", "--shares", "3", "--threshold", "2", "--share-dir", str(tmp_path / "s"),
        env={"COFFER_TEST_FAILPOINT": failpoint},
    )
    assert r.returncode != 0 and f"failpoint {failpoint} reached" in r.stderr
    assert (data_dir / "root-migration.json").exists()
    c.start()
    assert not (data_dir / "root-migration.json").exists()
    if finished:
        assert c.sealed and not (data_dir / "root.key").exists()
        shares = [(tmp_path / "s" / f"share-{i}.txt").read_text().strip() for i in (1, 3)]
        c.operator("unseal", "--stdin", input="\n".join(shares) + "\n")
    else:
        assert not c.sealed and (data_dir / "root.key").exists() and not (data_dir / "root.json").exists()
    check_after_migration(c, blobs, ak)
    c.stop()


def test_a_lost_root_key_is_not_silently_replaced(data_dir):
    c = Coffer(data_dir).start()
    c.client().create_key()
    c.stop()
    kept = (data_dir / "root.key").read_bytes()
    (data_dir / "root.key").unlink()
    with pytest.raises(RuntimeError):
        c.start(timeout=15)
    assert "holds metadata but no root of trust" in c.stderr_path.read_text()
    assert not (data_dir / "root.key").exists(), "no new root key was made"
    (data_dir / "root.key").write_bytes(kept)
    (data_dir / "root.key").chmod(0o600)
    c.start()
    c.stop()

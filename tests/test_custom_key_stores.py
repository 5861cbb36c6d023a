"""Custom key stores through boto3 against the real binary: a SoftHSM2 token as the HSM cluster, keys
generated and used inside it, AWS's connection states and exceptions."""

import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import SOFTHSM_MODULE, Coffer, coffer_bin, softhsm_token
from test_root_of_trust import files_under

CLUSTER = "cluster-softhsmkeys2"
OTHER_CLUSTER = "cluster-missingtokn2"
PIN = "ks-pin-93517"


def code(e):
    return e.response["Error"]["Code"]


@pytest.fixture()
def hsm_coffer(tmp_path):
    env = softhsm_token(tmp_path, "coffer-ks", PIN)
    c = Coffer(
        tmp_path / "data",
        extra_args=[
            "--hsm-cluster", f"{CLUSTER}={SOFTHSM_MODULE}#coffer-ks",
            "--hsm-cluster", f"{OTHER_CLUSTER}={SOFTHSM_MODULE}#no-such-token",
        ],
        extra_env=env,
    ).start()
    try:
        yield c
    finally:
        c.stop()


def trust_anchor(c):
    """A trust anchor certificate: the server's own CA will do (a SoftHSM2 token has none to compare with)."""
    return (c.data_dir / "tls" / "ca.pem").read_text()


def store_of(kms, store_id):
    return kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]


def test_custom_key_store_lifecycle_and_keys_inside_the_token(hsm_coffer, tmp_path):
    c = hsm_coffer
    kms = c.client()
    TRUST_ANCHOR = trust_anchor(c)
    with pytest.raises(ClientError) as e:
        kms.create_custom_key_store(CustomKeyStoreName="ks", CloudHsmClusterId="cluster-notconfigure", TrustAnchorCertificate=TRUST_ANCHOR, KeyStorePassword=PIN)
    assert code(e.value) == "CloudHsmClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        kms.create_custom_key_store(CustomKeyStoreName="ks", CloudHsmClusterId=CLUSTER, TrustAnchorCertificate="not a cert", KeyStorePassword=PIN)
    assert code(e.value) == "IncorrectTrustAnchorException"
    with pytest.raises(ClientError) as e:
        kms.create_custom_key_store(CustomKeyStoreName="ks", CloudHsmClusterId="cluster-bad!", TrustAnchorCertificate=TRUST_ANCHOR, KeyStorePassword=PIN)
    assert code(e.value) == "ValidationException" and "cloudHsmClusterId" in str(e.value)
    with pytest.raises(ClientError) as e:
        kms.create_custom_key_store(CustomKeyStoreName="x", CustomKeyStoreType="EXTERNAL_KEY_STORE")
    assert code(e.value) == "UnsupportedOperationException"

    # A wrong password first, to see AWS's FAILED state and its way out.
    sid = kms.create_custom_key_store(
        CustomKeyStoreName="ks", CloudHsmClusterId=CLUSTER, TrustAnchorCertificate=TRUST_ANCHOR, KeyStorePassword="wrong-pin-1"
    )["CustomKeyStoreId"]
    assert sid.startswith("cks-") and len(sid) == 21
    with pytest.raises(ClientError) as e:
        kms.create_custom_key_store(CustomKeyStoreName="ks", CloudHsmClusterId=OTHER_CLUSTER, TrustAnchorCertificate=TRUST_ANCHOR, KeyStorePassword=PIN)
    assert code(e.value) == "CustomKeyStoreNameInUseException"
    with pytest.raises(ClientError) as e:
        kms.create_custom_key_store(CustomKeyStoreName="ks2", CloudHsmClusterId=CLUSTER, TrustAnchorCertificate=TRUST_ANCHOR, KeyStorePassword=PIN)
    assert code(e.value) == "CloudHsmClusterInUseException"

    s = store_of(kms, sid)
    assert s["ConnectionState"] == "DISCONNECTED" and s["CloudHsmClusterId"] == CLUSTER and s["CustomKeyStoreType"] == "AWS_CLOUDHSM"
    assert kms.describe_custom_key_stores(CustomKeyStoreName="ks")["CustomKeyStores"][0]["CustomKeyStoreId"] == sid
    with pytest.raises(ClientError) as e:
        kms.describe_custom_key_stores(CustomKeyStoreId="cks-00000000000000000")
    assert code(e.value) == "CustomKeyStoreNotFoundException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=sid)
    assert code(e.value) == "CustomKeyStoreInvalidStateException"

    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    s = store_of(kms, sid)
    assert s["ConnectionState"] == "FAILED" and s["ConnectionErrorCode"] == "INVALID_CREDENTIALS"
    with pytest.raises(ClientError) as e:
        kms.connect_custom_key_store(CustomKeyStoreId=sid)
    assert code(e.value) == "CustomKeyStoreInvalidStateException"
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)
    kms.update_custom_key_store(CustomKeyStoreId=sid, KeyStorePassword=PIN, NewCustomKeyStoreName="keys")
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    s = store_of(kms, sid)
    assert s["ConnectionState"] == "CONNECTED" and s["CustomKeyStoreName"] == "keys" and "ConnectionErrorCode" not in s
    with pytest.raises(ClientError) as e:
        kms.update_custom_key_store(CustomKeyStoreId=sid, KeyStorePassword="another-pin")
    assert code(e.value) == "CustomKeyStoreInvalidStateException"

    # Keys inside the token.
    with pytest.raises(ClientError) as e:
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=sid, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    assert code(e.value) == "UnsupportedOperationException"
    md = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=sid, Description="in the HSM")["KeyMetadata"]
    assert md["Origin"] == "AWS_CLOUDHSM" and md["CustomKeyStoreId"] == sid and md["CloudHsmClusterId"] == CLUSTER
    kid = md["KeyId"]
    ctx = {"tenant": "a"}
    blob = kms.encrypt(KeyId=kid, Plaintext=b"inside the token", EncryptionContext=ctx)["CiphertextBlob"]
    assert blob[0] == 2, "HSM keys make version 2 blobs"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"inside the token"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "b"})
    assert code(e.value) == "InvalidCiphertextException"
    dk = kms.generate_data_key(KeyId=kid, KeySpec="AES_256", EncryptionContext=ctx)
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == dk["Plaintext"]
    no_plain = kms.generate_data_key_without_plaintext(KeyId=kid, NumberOfBytes=16)
    assert len(kms.decrypt(CiphertextBlob=no_plain["CiphertextBlob"])["Plaintext"]) == 16
    soft = kms.create_key()["KeyMetadata"]["KeyId"]
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx, DestinationKeyId=soft)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=moved)["Plaintext"] == b"inside the token"
    back = kms.re_encrypt(CiphertextBlob=moved, DestinationKeyId=kid, DestinationEncryptionContext=ctx)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=back, EncryptionContext=ctx)["Plaintext"] == b"inside the token"
    with pytest.raises(ClientError) as e:
        kms.enable_key_rotation(KeyId=kid)
    assert code(e.value) == "UnsupportedOperationException"
    assert len(kms.generate_random(NumberOfBytes=48, CustomKeyStoreId=sid)["Plaintext"]) == 48

    # Disconnected: the key is Unavailable, and comes back on reconnect.
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Unavailable"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
    assert code(e.value) == "KMSInvalidStateException" and "unavailable" in str(e.value)
    with pytest.raises(ClientError) as e:
        kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=sid)
    assert code(e.value) == "CustomKeyStoreInvalidStateException"
    with pytest.raises(ClientError) as e:
        kms.delete_custom_key_store(CustomKeyStoreId=sid)
    assert code(e.value) == "CustomKeyStoreHasCMKsException"
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"inside the token"
    with pytest.raises(ClientError) as e:
        kms.delete_custom_key_store(CustomKeyStoreId=sid)
    assert code(e.value) == "CustomKeyStoreInvalidStateException"

    # A restart reconnects the store by itself.
    c.stop()
    c.start()
    kms = c.client()
    assert store_of(kms, sid)["ConnectionState"] == "CONNECTED"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"inside the token"
    # Rotating the root rewraps the store's password too: it still connects.
    out = json.loads(c.operator("rotate-root", "--json").stdout)
    assert out["RemovedGenerations"] == [1]
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    assert store_of(kms, sid)["ConnectionState"] == "CONNECTED"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"inside the token"

    # A backup restored elsewhere reconnects to the same token and decrypts.
    archive = tmp_path / "ks.cfbk"
    r = subprocess.run(
        [coffer_bin(), "backup", "create", str(archive), "--endpoint", c.endpoint, "--data-dir", str(c.data_dir)],
        capture_output=True, text=True, env={**os.environ, **c.extra_env},
    )
    assert r.returncode == 0, r.stderr
    c.stop()
    for path, content in files_under(c.data_dir):
        assert PIN.encode() not in content, f"{path} holds the key store password in the clear"
    assert PIN.encode() not in archive.read_bytes()
    restored = tmp_path / "restored"
    r = subprocess.run(
        [coffer_bin(), "backup", "restore", str(archive), "--data-dir", str(restored), "--root-key", str(c.data_dir / "root.key")],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    twin = Coffer(restored, extra_args=c.extra_args, extra_env=c.extra_env).start()
    try:
        assert twin.client().decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"inside the token"
    finally:
        twin.stop()
    c.start()


def test_failed_connection_to_a_missing_token(hsm_coffer):
    kms = hsm_coffer.client()
    TRUST_ANCHOR = trust_anchor(hsm_coffer)
    sid = kms.create_custom_key_store(
        CustomKeyStoreName="missing", CloudHsmClusterId=OTHER_CLUSTER, TrustAnchorCertificate=TRUST_ANCHOR, KeyStorePassword=PIN
    )["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    s = store_of(kms, sid)
    assert s["ConnectionState"] == "FAILED" and s["ConnectionErrorCode"] == "CLUSTER_NOT_FOUND"
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)
    kms.delete_custom_key_store(CustomKeyStoreId=sid)
    assert kms.describe_custom_key_stores()["CustomKeyStores"] == []

"""Bring your own key: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial.

Key material is wrapped here exactly as the AWS documentation tells users to wrap it (openssl
pkeyutl for RSAES-OAEP, and RSA-OAEP of an AES key plus AES key wrap with padding for
RSA_AES_KEY_WRAP), and data made outside Coffer with that material is read by Coffer."""

import datetime
import hashlib
import hmac
import os
import shutil
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def code(e):
    return e.value.response["Error"]["Code"]


def wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    h = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    aes = os.urandom(32)
    return public.encrypt(aes, oaep) + aes_key_wrap_with_padding(aes, material)


def wrap_with_openssl(public_der: bytes, material: bytes, tmp_path) -> bytes:
    """The AWS guide's command: openssl pkeyutl with OAEP SHA-256."""
    (tmp_path / "pub.der").write_bytes(public_der)
    (tmp_path / "material.bin").write_bytes(material)
    subprocess.run(
        ["openssl", "pkeyutl", "-encrypt", "-in", str(tmp_path / "material.bin"), "-out", str(tmp_path / "wrapped.bin"),
         "-inkey", str(tmp_path / "pub.der"), "-keyform", "DER", "-pubin",
         "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"],
        check=True, capture_output=True,
    )
    return (tmp_path / "wrapped.bin").read_bytes()


def context_encoding(ctx: dict) -> bytes:
    out = len(ctx).to_bytes(2, "big")
    for k in sorted(ctx, key=lambda k: k.encode()):
        for s in (k.encode(), ctx[k].encode()):
            out += len(s).to_bytes(2, "big") + s
    return out


def seal_blob(material: bytes, key_id: str, plaintext: bytes, ctx: dict, version: int = 1) -> bytes:
    """A ciphertext blob made outside Coffer, from docs/formats.md alone."""
    kid = uuid.UUID(key_id).bytes
    salt, nonce = os.urandom(16), os.urandom(12)
    header = b"\x01" + kid + version.to_bytes(4, "big") + salt + nonce
    info = b"coffer kms blob v1" + kid + version.to_bytes(4, "big")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)
    return header + AESGCM(key).encrypt(nonce, plaintext, header + context_encoding(ctx))


def open_blob(material: bytes, blob: bytes, ctx: dict) -> bytes:
    header, sealed = blob[:49], blob[49:]
    salt, nonce = header[21:37], header[37:49]
    info = b"coffer kms blob v1" + header[1:17] + header[17:21]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)
    return AESGCM(key).decrypt(nonce, sealed, header + context_encoding(ctx))


def import_material(kms, key_id, material, algorithm="RSAES_OAEP_SHA_256", spec="RSA_2048", **kw):
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec)
    return kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material), **kw)


def test_symmetric_import_round_trip(kms, tmp_path):
    md = kms.create_key(Origin="EXTERNAL", Description="byok")["KeyMetadata"]
    key_id = md["KeyId"]
    assert md["KeyState"] == "PendingImport" and md["Origin"] == "EXTERNAL" and not md["Enabled"]
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert code(e) == "KMSInvalidStateException"

    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    assert params["KeyId"] == md["Arn"]
    validity = params["ParametersValidTo"] - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=23, minutes=59) < validity <= datetime.timedelta(hours=24, minutes=1)
    material = os.urandom(32)
    if shutil.which("openssl"):
        wrapped = wrap_with_openssl(params["PublicKey"], material, tmp_path)
    else:
        wrapped = wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material)
    out = kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                                  ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert out["KeyId"] == md["Arn"] and len(out["KeyMaterialId"]) == 64
    d = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert d["KeyState"] == "Enabled" and d["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"

    # Data encrypted outside Coffer with the same material is readable, and the other way round.
    outside = seal_blob(material, key_id, b"sealed elsewhere", {"app": "byok"})
    assert kms.decrypt(CiphertextBlob=outside, EncryptionContext={"app": "byok"})["Plaintext"] == b"sealed elsewhere"
    inside = kms.encrypt(KeyId=key_id, Plaintext=b"sealed by coffer", EncryptionContext={"app": "byok"})["CiphertextBlob"]
    assert open_blob(material, inside, {"app": "byok"}) == b"sealed by coffer"

    # Re-importing the same material (any wrapping) is fine; different material is refused.
    import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_3072")
    with pytest.raises(ClientError) as e:
        import_material(kms, key_id, os.urandom(32))
    assert code(e) == "IncorrectKeyMaterialException"

    # Deleting the material makes the key wait again; the same material brings old data back.
    kms.delete_imported_key_material(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=inside, EncryptionContext={"app": "byok"})
    assert code(e) == "KMSInvalidStateException"
    import_material(kms, key_id, material, "RSAES_OAEP_SHA_1", "RSA_4096")
    assert kms.decrypt(CiphertextBlob=inside, EncryptionContext={"app": "byok"})["Plaintext"] == b"sealed by coffer"


def test_import_refusals(kms):
    a = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    b = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params_b = kms.get_parameters_for_import(KeyId=b, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    material = os.urandom(32)
    with pytest.raises(ClientError) as e:  # a token of another key
        kms.import_key_material(KeyId=a, ImportToken=params_b["ImportToken"],
                                EncryptedKeyMaterial=wrap(params_b["PublicKey"], "RSAES_OAEP_SHA_256", material))
    assert code(e) == "InvalidImportTokenException"
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=b, ImportToken=b"\x01" + os.urandom(32),
                                EncryptedKeyMaterial=wrap(params_b["PublicKey"], "RSAES_OAEP_SHA_256", material))
    assert code(e) == "InvalidImportTokenException"
    with pytest.raises(ClientError) as e:  # wrapped for the wrong algorithm
        kms.import_key_material(KeyId=b, ImportToken=params_b["ImportToken"],
                                EncryptedKeyMaterial=wrap(params_b["PublicKey"], "RSAES_OAEP_SHA_1", material))
    assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:  # 16 bytes is no SYMMETRIC_DEFAULT material
        kms.import_key_material(KeyId=b, ImportToken=params_b["ImportToken"],
                                EncryptedKeyMaterial=wrap(params_b["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(16)))
    assert code(e) == "InvalidCiphertextException"
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=b, ImportToken=params_b["ImportToken"], ValidTo=past,
                                EncryptedKeyMaterial=wrap(params_b["PublicKey"], "RSAES_OAEP_SHA_256", material))
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=b, ImportToken=params_b["ImportToken"], ExpirationModel="KEY_MATERIAL_EXPIRES",
                                EncryptedKeyMaterial=wrap(params_b["PublicKey"], "RSAES_OAEP_SHA_256", material))
    assert code(e) == "ValidationException"
    native = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.get_parameters_for_import(KeyId=native, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    assert code(e) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.enable_key(KeyId=a)
    assert code(e) == "KMSInvalidStateException"
    # A key pending import can be scheduled for deletion, and cancelling leaves it pending import.
    kms.schedule_key_deletion(KeyId=a, PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=a)
    assert kms.describe_key(KeyId=a)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_material_with_valid_to(kms):
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    import_material(kms, key_id, os.urandom(32), ValidTo=valid_to, ExpirationModel="KEY_MATERIAL_EXPIRES")
    d = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert d["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((d["ValidTo"] - valid_to).total_seconds()) < 2


def test_import_hmac_and_ecc_material(kms):
    hkey = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    secret = os.urandom(48)  # AWS accepts 32 to 64 bytes for HMAC_256
    import_material(kms, hkey, secret)
    mac = kms.generate_mac(KeyId=hkey, Message=b"msg", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert mac == hmac.new(secret, b"msg", hashlib.sha256).digest()

    ekey = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    import_material(kms, ekey, pkcs8, "RSA_AES_KEY_WRAP_SHA_256", "RSA_2048")
    spki = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kms.get_public_key(KeyId=ekey)["PublicKey"] == spki
    sig = kms.sign(KeyId=ekey, Message=b"msg", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private.public_key().verify(sig, b"msg", ec.ECDSA(hashes.SHA256()))


def test_rotate_imported_material(kms):
    """ImportType NEW_KEY_MATERIAL, then RotateKeyOnDemand: new encryptions use the new material,
    both decrypt, ListKeyRotations shows each material's import state, and deleting or re-importing
    a material works per material."""
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    first, second = os.urandom(32), os.urandom(32)
    first_id = import_material(kms, key_id, first)["KeyMaterialId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == first_id
    old = kms.encrypt(KeyId=key_id, Plaintext=b"under the first")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:  # nothing to rotate to yet
        kms.rotate_key_on_demand(KeyId=key_id)
    assert code(e) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as e:  # the same material is not new
        import_material(kms, key_id, first, ImportType="NEW_KEY_MATERIAL")
    assert code(e) == "IncorrectKeyMaterialException"
    with pytest.raises(ClientError) as e:  # different material is not existing
        import_material(kms, key_id, second)
    assert code(e) == "IncorrectKeyMaterialException"
    with pytest.raises(ClientError) as e:  # imported keys do not rotate automatically
        kms.enable_key_rotation(KeyId=key_id)
    assert code(e) == "UnsupportedOperationException"

    second_id = import_material(kms, key_id, second, ImportType="NEW_KEY_MATERIAL",
                                KeyMaterialDescription="second material")["KeyMaterialId"]
    assert second_id != first_id
    with pytest.raises(ClientError) as e:  # one pending material at a time
        import_material(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    assert code(e) == "KMSInvalidStateException"
    listing = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert [(r["KeyMaterialId"], r["KeyMaterialState"], r["ImportState"]) for r in listing] == [
        (first_id, "CURRENT", "IMPORTED"), (second_id, "PENDING_ROTATION", "IMPORTED")]
    assert listing[1]["KeyMaterialDescription"] == "second material"
    assert "RotationDate" not in listing[1]
    # Still the first material until the rotation.
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    assert open_blob(first, blob, {}) == b"x"

    kms.rotate_key_on_demand(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == second_id
    out = kms.encrypt(KeyId=key_id, Plaintext=b"under the second")
    assert open_blob(second, out["CiphertextBlob"], {}) == b"under the second"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"under the first"
    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [(r["KeyMaterialId"], r["KeyMaterialState"], r["RotationType"]) for r in rotations] == [
        (second_id, "CURRENT", "ON_DEMAND")]

    # Deleting the old material makes the key unusable until that same material comes back.
    assert kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=first_id)["KeyMaterialId"] == first_id
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "PendingImport"
    listing = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert [r["ImportState"] for r in listing] == ["PENDING_IMPORT", "IMPORTED"]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=old)
    assert code(e) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as e:  # the wrong material for that id
        import_material(kms, key_id, os.urandom(32), KeyMaterialId=first_id)
    assert code(e) == "IncorrectKeyMaterialException"
    assert import_material(kms, key_id, first)["KeyMaterialId"] == first_id  # found by its content
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"under the first"

    # Material pending rotation can be deleted outright, and other material imported in its place.
    third_id = import_material(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
    kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=third_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert len(kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]) == 2
    import_material(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    with pytest.raises(ClientError) as e:
        kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId="0" * 64)
    assert code(e) == "NotFoundException"

    # Keys other than symmetric ones hold exactly one material.
    hkey = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        import_material(kms, hkey, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    assert code(e) == "ValidationException"

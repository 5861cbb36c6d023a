"""Asymmetric and HMAC keys: Sign/Verify, GetPublicKey, RSA-OAEP, GenerateMac/VerifyMac — with the
results checked by tools no one here wrote (Python `cryptography`, the `openssl` command)."""

import hashlib
import shutil
import subprocess

import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
HASHLIB = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
ECC_ALGS = {
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
    "ECC_SECG_P256K1": "ECDSA_SHA_256",
}
RSA_ALGS = [f"RSASSA_{p}_SHA_{n}" for p in ("PSS", "PKCS1_V1_5") for n in ("256", "384", "512")]


def code(e):
    return e.value.response["Error"]["Code"]


def local_verify(public, alg, message, signature):
    """Verifies with Python cryptography; raises InvalidSignature when it does not hold."""
    bits = alg.rsplit("_", 1)[1]
    h = HASHES[bits]
    if alg.startswith("ECDSA"):
        public.verify(signature, message, ec.ECDSA(h))
    elif alg.startswith("RSASSA_PSS"):
        public.verify(signature, message, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    else:
        public.verify(signature, message, padding.PKCS1v15(), h)


@pytest.fixture(scope="module")
def ecc_keys(kms):
    return {spec: kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"] for spec in ECC_ALGS}


@pytest.fixture(scope="module")
def rsa_sign_key(kms):
    return kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]


@pytest.fixture(scope="module")
def rsa_encrypt_key(kms):
    return kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]


def test_ecc_sign_verifies_everywhere(kms, ecc_keys):
    message = b"the quick brown fox"
    for spec, md in ecc_keys.items():
        alg = ECC_ALGS[spec]
        assert md["SigningAlgorithms"] == [alg] and "EncryptionAlgorithms" not in md
        pub = kms.get_public_key(KeyId=md["KeyId"])
        assert pub["KeySpec"] == spec and pub["KeyUsage"] == "SIGN_VERIFY" and pub["SigningAlgorithms"] == [alg]
        public = serialization.load_der_public_key(pub["PublicKey"])
        raw = kms.sign(KeyId=md["KeyId"], Message=message, SigningAlgorithm=alg)
        assert raw["KeyId"] == md["Arn"] and raw["SigningAlgorithm"] == alg
        local_verify(public, alg, message, raw["Signature"])
        digest = HASHLIB[alg.rsplit("_", 1)[1]](message).digest()
        pre = kms.sign(KeyId=md["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm=alg)
        local_verify(public, alg, message, pre["Signature"])
        assert kms.verify(KeyId=md["KeyId"], Message=message, Signature=pre["Signature"], SigningAlgorithm=alg)["SignatureValid"]
        # A tampered signature, and a signature over another message, are refused.
        bad = bytearray(raw["Signature"])
        bad[-1] ^= 1
        with pytest.raises(ClientError) as e:
            kms.verify(KeyId=md["KeyId"], Message=message, Signature=bytes(bad), SigningAlgorithm=alg)
        assert code(e) == "KMSInvalidSignatureException"
        with pytest.raises(ClientError) as e:
            kms.verify(KeyId=md["KeyId"], Message=b"another message", Signature=raw["Signature"], SigningAlgorithm=alg)
        assert code(e) == "KMSInvalidSignatureException"


def test_rsa_sign_every_algorithm(kms, rsa_sign_key):
    md = rsa_sign_key
    assert sorted(md["SigningAlgorithms"]) == sorted(RSA_ALGS)
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=md["KeyId"])["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    for alg in RSA_ALGS:
        sig = kms.sign(KeyId=md["KeyId"], Message=b"payload", SigningAlgorithm=alg)["Signature"]
        assert len(sig) == 256
        local_verify(public, alg, b"payload", sig)
        bits = alg.rsplit("_", 1)[1]
        digest = HASHLIB[bits](b"payload").digest()
        assert kms.verify(KeyId=md["KeyId"], Message=digest, MessageType="DIGEST", Signature=sig, SigningAlgorithm=alg)["SignatureValid"]
        with pytest.raises(InvalidSignature):
            local_verify(public, alg, b"payloaD", sig)


def test_signature_interop_with_openssl(kms, ecc_keys, rsa_sign_key, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    msg = tmp_path / "msg.bin"
    msg.write_bytes(b"signed by coffer, checked by openssl")
    cases = [
        (ecc_keys["ECC_NIST_P256"], "ECDSA_SHA_256", []),
        (ecc_keys["ECC_NIST_P384"], "ECDSA_SHA_384", []),
        (rsa_sign_key, "RSASSA_PKCS1_V1_5_SHA_256", []),
        (rsa_sign_key, "RSASSA_PSS_SHA_512", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"]),
    ]
    for md, alg, opts in cases:
        pem = tmp_path / f"{md['KeyId']}.pem"
        der = kms.get_public_key(KeyId=md["KeyId"])["PublicKey"]
        pem.write_bytes(serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        sig = tmp_path / "sig.bin"
        sig.write_bytes(kms.sign(KeyId=md["KeyId"], Message=msg.read_bytes(), SigningAlgorithm=alg)["Signature"])
        dgst = "-sha" + alg.rsplit("_", 1)[1]
        p = subprocess.run(["openssl", "dgst", dgst, "-verify", str(pem), *opts, "-signature", str(sig), str(msg)],
                           capture_output=True, text=True)
        assert p.returncode == 0 and "Verified OK" in p.stdout, (alg, p.stdout, p.stderr)


def test_signing_refusals(kms, ecc_keys, rsa_sign_key):
    p256 = ecc_keys["ECC_NIST_P256"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=p256, Message=b"m", SigningAlgorithm="ECDSA_SHA_384")
    assert code(e) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=p256, Message=b"short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert code(e) == "ValidationException" and "Digest is invalid length" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=p256, Message=b"x" * 4097, SigningAlgorithm="ECDSA_SHA_256")
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=p256, Plaintext=b"x")
    assert code(e) == "InvalidKeyUsageException"
    assert e.value.response["Error"]["Message"].endswith("key usage is SIGN_VERIFY which is not valid for Encrypt.")
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=p256, KeySpec="AES_256")
    assert code(e) == "InvalidKeyUsageException"
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=symmetric, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert code(e) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as e:
        kms.get_public_key(KeyId=symmetric)
    assert code(e) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.enable_key_rotation(KeyId=p256)
    assert code(e) == "UnsupportedOperationException"
    kms.disable_key(KeyId=rsa_sign_key["KeyId"])
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=rsa_sign_key["KeyId"], Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert code(e) == "DisabledException"
    kms.enable_key(KeyId=rsa_sign_key["KeyId"])


def test_create_key_combinations(kms):
    for kw, expected in (
        ({"KeySpec": "ECC_NIST_P256"}, "ValidationException"),  # default usage ENCRYPT_DECRYPT
        ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "GENERATE_VERIFY_MAC"}, "ValidationException"),
        ({"KeySpec": "HMAC_256", "KeyUsage": "SIGN_VERIFY"}, "ValidationException"),
        ({"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "SIGN_VERIFY"}, "ValidationException"),
        ({"KeySpec": "SM2", "KeyUsage": "SIGN_VERIFY"}, "UnsupportedOperationException"),
        ({"KeySpec": "NOPE", "KeyUsage": "SIGN_VERIFY"}, "ValidationException"),
    ):
        with pytest.raises(ClientError) as e:
            kms.create_key(**kw)
        assert code(e) == expected, kw
    for spec, size in (("RSA_3072", 384), ("RSA_4096", 512)):
        md = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        sig = kms.sign(KeyId=md["KeyId"], Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_384")["Signature"]
        assert len(sig) == size


def test_rsa_oaep_interop(kms, rsa_encrypt_key):
    md = rsa_encrypt_key
    assert sorted(md["EncryptionAlgorithms"]) == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=md["KeyId"])["PublicKey"])
    for alg, h in (("RSAES_OAEP_SHA_256", hashes.SHA256()), ("RSAES_OAEP_SHA_1", hashes.SHA1())):
        # Encrypted client-side with the public key, decrypted by Coffer.
        ct = public.encrypt(b"made outside", padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None))
        out = kms.decrypt(CiphertextBlob=ct, KeyId=md["KeyId"], EncryptionAlgorithm=alg)
        assert out["Plaintext"] == b"made outside" and out["EncryptionAlgorithm"] == alg and out["KeyId"] == md["Arn"]
        # Encrypted by Coffer, decrypted by Coffer again.
        enc = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"made inside", EncryptionAlgorithm=alg)
        assert enc["EncryptionAlgorithm"] == alg and len(enc["CiphertextBlob"]) == 256
        assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], KeyId=md["KeyId"], EncryptionAlgorithm=alg)["Plaintext"] == b"made inside"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct)  # no KeyId: an RSA ciphertext names no key
    assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct, KeyId=md["KeyId"], EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x")  # SYMMETRIC_DEFAULT on an RSA key
    assert code(e) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256", EncryptionContext={"a": "b"})
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x" * 191, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert code(e) == "ValidationException"
    # ReEncrypt from RSA to a symmetric key and back.
    sym = kms.create_key()["KeyMetadata"]
    enc = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"hop", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    re = kms.re_encrypt(CiphertextBlob=enc, SourceKeyId=md["KeyId"], SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                        DestinationKeyId=sym["KeyId"])
    assert re["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256" and re["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"hop"


def test_hmac_keys(kms):
    for bits in ("224", "256", "384", "512"):
        md = kms.create_key(KeySpec=f"HMAC_{bits}", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
        alg = f"HMAC_SHA_{bits}"
        assert md["MacAlgorithms"] == [alg] and "EncryptionAlgorithms" not in md
        out = kms.generate_mac(KeyId=md["KeyId"], Message=b"data", MacAlgorithm=alg)
        assert len(out["Mac"]) == int(bits) // 8 and out["KeyId"] == md["Arn"]
        assert kms.generate_mac(KeyId=md["KeyId"], Message=b"data", MacAlgorithm=alg)["Mac"] == out["Mac"]
        assert kms.verify_mac(KeyId=md["KeyId"], Message=b"data", Mac=out["Mac"], MacAlgorithm=alg)["MacValid"]
        bad = bytearray(out["Mac"])
        bad[0] ^= 0x80
        with pytest.raises(ClientError) as e:
            kms.verify_mac(KeyId=md["KeyId"], Message=b"data", Mac=bytes(bad), MacAlgorithm=alg)
        assert code(e) == "KMSInvalidMacException"
        with pytest.raises(ClientError) as e:
            kms.verify_mac(KeyId=md["KeyId"], Message=b"data", Mac=out["Mac"][:-1], MacAlgorithm=alg)
        assert code(e) == "KMSInvalidMacException"
    with pytest.raises(ClientError) as e:
        kms.generate_mac(KeyId=md["KeyId"], Message=b"data", MacAlgorithm="HMAC_SHA_256")
    assert code(e) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x")
    assert code(e) == "InvalidKeyUsageException"
    other = kms.create_key(KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    assert kms.generate_mac(KeyId=other, Message=b"data", MacAlgorithm="HMAC_SHA_512")["Mac"] != out["Mac"]


def test_derive_shared_secret_matches_local_ecdh(kms):
    for spec, curve in (("ECC_NIST_P256", ec.SECP256R1()), ("ECC_NIST_P384", ec.SECP384R1()), ("ECC_NIST_P521", ec.SECP521R1())):
        md = kms.create_key(KeySpec=spec, KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
        assert md["KeyAgreementAlgorithms"] == ["ECDH"] and "SigningAlgorithms" not in md
        pub = kms.get_public_key(KeyId=md["KeyId"])
        assert pub["KeyAgreementAlgorithms"] == ["ECDH"]
        ours = serialization.load_der_public_key(pub["PublicKey"])
        peer = ec.generate_private_key(curve)
        peer_der = peer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out = kms.derive_shared_secret(KeyId=md["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=peer_der)
        assert out["SharedSecret"] == peer.exchange(ec.ECDH(), ours)
        assert out["KeyId"] == md["Arn"] and out["KeyOrigin"] == "AWS_KMS"
        with pytest.raises(ClientError) as e:
            kms.derive_shared_secret(KeyId=md["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=b"not a key")
        assert code(e) == "ValidationException"
        with pytest.raises(ClientError) as e:
            kms.sign(KeyId=md["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
        assert code(e) == "InvalidKeyUsageException"
    wrong_curve = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ClientError) as e:
        kms.derive_shared_secret(KeyId=md["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=wrong_curve)
    assert code(e) == "ValidationException"
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.derive_shared_secret(KeyId=signer, KeyAgreementAlgorithm="ECDH", PublicKey=wrong_curve)
    assert code(e) == "InvalidKeyUsageException"


def test_generate_data_key_pair(kms):
    cmk = kms.create_key()["KeyMetadata"]
    for spec in ("ECC_NIST_P256", "ECC_SECG_P256K1", "RSA_2048"):
        out = kms.generate_data_key_pair(KeyId=cmk["KeyId"], KeyPairSpec=spec, EncryptionContext={"pair": spec})
        assert out["KeyPairSpec"] == spec and out["KeyId"] == cmk["Arn"]
        private = serialization.load_der_private_key(out["PrivateKeyPlaintext"], password=None)
        public = serialization.load_der_public_key(out["PublicKey"])
        assert private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == out["PublicKey"]
        # The sealed private key opens to the same PKCS#8, under the same context only.
        opened = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext={"pair": spec})
        assert opened["Plaintext"] == out["PrivateKeyPlaintext"]
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])
        assert code(e) == "InvalidCiphertextException"
        if spec.startswith("ECC"):
            sig = private.sign(b"m", ec.ECDSA(hashes.SHA256()))
            public.verify(sig, b"m", ec.ECDSA(hashes.SHA256()))
    out = kms.generate_data_key_pair_without_plaintext(KeyId=cmk["KeyId"], KeyPairSpec="ECC_NIST_P384")
    assert "PrivateKeyPlaintext" not in out and out["PublicKey"]
    private = serialization.load_der_private_key(kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])["Plaintext"], password=None)
    assert private.curve.name == "secp384r1"
    with pytest.raises(ClientError) as e:
        kms.generate_data_key_pair(KeyId=cmk["KeyId"], KeyPairSpec="SM2")
    assert code(e) == "UnsupportedOperationException"
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.generate_data_key_pair(KeyId=signer, KeyPairSpec="ECC_NIST_P256")
    assert code(e) == "InvalidKeyUsageException"


def test_ed25519(kms):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    md = kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert md["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=md["KeyId"])["PublicKey"])
    assert isinstance(public, Ed25519PublicKey)
    sig = kms.sign(KeyId=md["KeyId"], Message=b"edwards", SigningAlgorithm="ED25519_SHA_512")["Signature"]
    public.verify(sig, b"edwards")
    assert kms.verify(KeyId=md["KeyId"], Message=b"edwards", Signature=sig, SigningAlgorithm="ED25519_SHA_512")["SignatureValid"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=md["KeyId"], Message=hashlib.sha512(b"edwards").digest(), MessageType="DIGEST",
                 SigningAlgorithm="ED25519_SHA_512")
    assert code(e) == "ValidationException"
    # Ed25519ph takes a SHA-512 digest, which AWS hashes once more (FIPS 186-5 7.8.1): the signature
    # is HashEdDSA over the 64 submitted bytes. PyCryptodome verifies it from an SHA512 object.
    from Crypto.Hash import SHA512
    from Crypto.PublicKey import ECC
    from Crypto.Signature import eddsa

    digest = hashlib.sha512(b"edwards").digest()
    sig = kms.sign(KeyId=md["KeyId"], Message=digest, MessageType="DIGEST",
                   SigningAlgorithm="ED25519_PH_SHA_512")["Signature"]
    verifier = eddsa.new(ECC.import_key(kms.get_public_key(KeyId=md["KeyId"])["PublicKey"]), "rfc8032")
    verifier.verify(SHA512.new(digest), sig)
    with pytest.raises(ValueError):
        verifier.verify(SHA512.new(hashlib.sha512(b"other").digest()), sig)
    with pytest.raises(ValueError):  # it is not a pure Ed25519 signature of the digest
        verifier.verify(digest, sig)
    assert kms.verify(KeyId=md["KeyId"], Message=digest, MessageType="DIGEST", Signature=sig,
                      SigningAlgorithm="ED25519_PH_SHA_512")["SignatureValid"]
    with pytest.raises(ClientError) as e:
        kms.verify(KeyId=md["KeyId"], Message=hashlib.sha512(b"x").digest(), MessageType="DIGEST",
                   Signature=sig, SigningAlgorithm="ED25519_PH_SHA_512")
    assert code(e) == "KMSInvalidSignatureException"
    for message, message_type in ((b"edwards", "RAW"), (digest[:32], "DIGEST")):
        with pytest.raises(ClientError) as e:
            kms.sign(KeyId=md["KeyId"], Message=message, MessageType=message_type,
                     SigningAlgorithm="ED25519_PH_SHA_512")
        assert code(e) == "ValidationException", message_type
    cmk = kms.create_key()["KeyMetadata"]["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=cmk, KeyPairSpec="ECC_NIST_EDWARDS25519")
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    serialization.load_der_public_key(pair["PublicKey"]).verify(private.sign(b"m"), b"m")


@pytest.mark.parametrize("spec", ["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"])
def test_ml_dsa(kms, spec):
    from cryptography.hazmat.primitives.asymmetric import mldsa

    md = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert md["SigningAlgorithms"] == ["ML_DSA_SHAKE_256"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=md["KeyId"])["PublicKey"])
    assert isinstance(public, getattr(mldsa, f"MLDSA{spec[-2:]}PublicKey"))
    key = md["KeyId"]
    alg = "ML_DSA_SHAKE_256"
    sig = kms.sign(KeyId=key, Message=b"post-quantum", SigningAlgorithm=alg)["Signature"]
    public.verify(sig, b"post-quantum")
    with pytest.raises(InvalidSignature):
        public.verify(sig, b"post-quantuM")
    assert kms.verify(KeyId=key, Message=b"post-quantum", Signature=sig, SigningAlgorithm=alg)["SignatureValid"]

    # EXTERNAL_MU: the client computes mu (FIPS 204 6.2) from the public key and its message; the
    # signature is an ordinary ML-DSA signature of that message.
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(b"a large document, hashed where it lives")
    mu = hasher.finalize()
    sig = kms.sign(KeyId=key, Message=mu, MessageType="EXTERNAL_MU", SigningAlgorithm=alg)["Signature"]
    public.verify(sig, b"a large document, hashed where it lives")
    assert kms.verify(KeyId=key, Message=mu, MessageType="EXTERNAL_MU", Signature=sig,
                      SigningAlgorithm=alg)["SignatureValid"]
    with pytest.raises(ClientError) as e:
        kms.verify(KeyId=key, Message=bytes(64), MessageType="EXTERNAL_MU", Signature=sig, SigningAlgorithm=alg)
    assert code(e) == "KMSInvalidSignatureException"
    for message, message_type in ((mu[:32], "EXTERNAL_MU"), (hashlib.sha256(b"m").digest(), "DIGEST")):
        with pytest.raises(ClientError) as e:
            kms.sign(KeyId=key, Message=message, MessageType=message_type, SigningAlgorithm=alg)
        assert code(e) == "ValidationException", message_type
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert code(e) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec=spec, KeyUsage="ENCRYPT_DECRYPT")
    assert code(e) == "ValidationException"

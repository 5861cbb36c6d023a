"""AWS Encryption SDK test vectors with the Python aws-encryption-sdk, in the layout of the official
test-vector framework (an `awses-decrypt` manifest, version 2, and its `keys.json`).

    python tests/esdk_vectors.py generate DIR   # keys, messages, expected plaintexts and errors
    python tests/esdk_vectors.py check DIR      # decrypt every test of DIR/manifest.json

`generate` writes a message for every suite x framed/non-framed x frame size x raw key (AES-128,
AES-192, AES-256; RSA with PKCS #1, OAEP-SHA1 and OAEP-SHA256 padding), one under several keys,
and negative cases made from good messages (bit flips in every part, a wrong commitment, a
truncated final frame, bytes after the end, a changed encryption context, a wrong key).
`check` decrypts a manifest somebody else wrote (Coffer's, from `coffer test-vectors encrypt`)
and fails on any mismatch.
"""

import base64
import json
import os
import pathlib
import sys

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey, RawMasterKeyProvider
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PROVIDER = "aws-raw-vectors-persistant"
FRAME_SIZES = [0, 128, 512, 4096]  # the Python SDK writes only multiples of 128
PLAINTEXT_SIZE = 10240

AES_WRAPPING = {
    128: WrappingAlgorithm.AES_128_GCM_IV12_TAG16_NO_PADDING,
    192: WrappingAlgorithm.AES_192_GCM_IV12_TAG16_NO_PADDING,
    256: WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
}
RSA_WRAPPING = {
    ("pkcs1", None): WrappingAlgorithm.RSA_PKCS1,
    ("oaep-mgf1", "sha1"): WrappingAlgorithm.RSA_OAEP_SHA1_MGF1,
    ("oaep-mgf1", "sha256"): WrappingAlgorithm.RSA_OAEP_SHA256_MGF1,
    ("oaep-mgf1", "sha384"): WrappingAlgorithm.RSA_OAEP_SHA384_MGF1,
    ("oaep-mgf1", "sha512"): WrappingAlgorithm.RSA_OAEP_SHA512_MGF1,
}


def master_key(spec, keys):
    """A Python raw master key for a manifest master-key entry."""
    key = keys["keys"][spec["key"]]
    key_id = spec.get("key-id", key.get("key-id", spec["key"]))
    if spec["encryption-algorithm"] == "aes":
        wrapping = WrappingKey(
            wrapping_algorithm=AES_WRAPPING[key["bits"]],
            wrapping_key=base64.b64decode(key["material"]),
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )
    else:
        algorithm = RSA_WRAPPING[(spec["padding-algorithm"], spec.get("padding-hash"))]
        kind = EncryptionKeyType.PRIVATE if key["type"] == "private" else EncryptionKeyType.PUBLIC
        wrapping = WrappingKey(
            wrapping_algorithm=algorithm, wrapping_key=key["material"].encode(), wrapping_key_type=kind
        )
    return RawMasterKey(provider_id=spec["provider-id"], key_id=key_id.encode(), wrapping_key=wrapping)


def provider_for(specs, keys):
    if len(specs) == 1:
        return master_key(specs[0], keys)
    # Several keys of one namespace: a provider that holds them all (the first is the generator).
    wrapping = {}
    for s in specs:
        mk = master_key(s, keys)
        wrapping[mk.key_id] = mk.config.wrapping_key

    class Provider(RawMasterKeyProvider):
        provider_id = specs[0]["provider-id"]

        def _get_raw_key(self, key_id):
            return wrapping[key_id]

    provider = Provider()
    for key_id in wrapping:
        provider.add_master_key(key_id)
    return provider


def generate(out: pathlib.Path):
    (out / "ciphertexts").mkdir(parents=True, exist_ok=True)
    (out / "plaintexts").mkdir(exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    keys = {"manifest": {"type": "keys", "version": 3}, "keys": {}}
    for bits in (128, 192, 256):
        keys["keys"][f"aes-{bits}"] = {
            "encrypt": True, "decrypt": True, "algorithm": "aes", "type": "symmetric", "bits": bits,
            "encoding": "base64", "material": base64.b64encode(os.urandom(bits // 8)).decode(), "key-id": f"aes-{bits}",
        }
    keys["keys"]["rsa-2048-private"] = {
        "encrypt": True, "decrypt": True, "algorithm": "rsa", "type": "private", "bits": 2048,
        "encoding": "pem", "material": pem, "key-id": "rsa-2048",
    }
    keys["keys"]["rsa-2048-public"] = {
        "encrypt": True, "decrypt": False, "algorithm": "rsa", "type": "public", "bits": 2048,
        "encoding": "pem", "material": public_pem, "key-id": "rsa-2048",
    }
    keys["keys"]["aes-256-other"] = {
        "encrypt": True, "decrypt": True, "algorithm": "aes", "type": "symmetric", "bits": 256,
        "encoding": "base64", "material": base64.b64encode(os.urandom(32)).decode(), "key-id": "aes-256",
    }
    (out / "keys.json").write_text(json.dumps(keys, indent=2))
    plaintext = os.urandom(PLAINTEXT_SIZE)
    (out / "plaintexts" / "small").write_bytes(plaintext)
    (out / "plaintexts" / "empty").write_bytes(b"")

    key_specs = {f"aes-{b}": [{"type": "raw", "key": f"aes-{b}", "provider-id": PROVIDER, "encryption-algorithm": "aes"}]
                 for b in (128, 192, 256)}
    for padding, hash_ in (("pkcs1", None), ("oaep-mgf1", "sha1"), ("oaep-mgf1", "sha256")):
        spec = {"type": "raw", "key": "rsa-2048-private", "provider-id": PROVIDER, "encryption-algorithm": "rsa",
                "padding-algorithm": padding}
        if hash_:
            spec["padding-hash"] = hash_
        key_specs[f"rsa-{padding}{'-' + hash_ if hash_ else ''}"] = [spec]
    # Encryption with the public key only; decryption needs the private one.
    public_spec = {"type": "raw", "key": "rsa-2048-public", "provider-id": PROVIDER, "encryption-algorithm": "rsa",
                   "padding-algorithm": "oaep-mgf1", "padding-hash": "sha256"}

    tests = {}

    def encrypt(name, algorithm, frame, specs, decrypt_specs=None, context=None, source=plaintext, plain="small"):
        policy = (CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT if algorithm.is_committing()
                  else CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
        client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)
        kwargs = dict(source=source, key_provider=provider_for(specs, keys), algorithm=algorithm,
                      encryption_context=context if context is not None else {"purpose": "vectors", "suite": f"{algorithm.algorithm_id:04X}"})
        kwargs["frame_length"] = frame
        ciphertext, _ = client.encrypt(**kwargs)
        (out / "ciphertexts" / name).write_bytes(ciphertext)
        tests[name] = {
            "description": f"{algorithm.name} frame {frame}",
            "ciphertext": f"file://ciphertexts/{name}",
            "master-keys": decrypt_specs or specs,
            "result": {"output": {"plaintext": f"file://plaintexts/{plain}"}},
        }
        return ciphertext

    for algorithm in Algorithm:
        for frame in FRAME_SIZES:
            for label, specs in key_specs.items():
                encrypt(f"py-{algorithm.algorithm_id:04x}-frame{frame}-{label}", algorithm, frame, specs)
    default = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
    encrypt("py-0578-public-key-only", default, 4096, [public_spec], decrypt_specs=key_specs["rsa-oaep-mgf1-sha256"])
    encrypt("py-0578-empty", default, 4096, key_specs["aes-256"], source=b"", plain="empty")
    encrypt("py-0578-empty-context", default, 4096, key_specs["aes-256"], context={})
    encrypt("py-0578-multi-key", default, 4096,
            key_specs["aes-128"] + key_specs["rsa-oaep-mgf1-sha256"] + key_specs["aes-256"],
            decrypt_specs=key_specs["aes-256"])
    exact = os.urandom(4096 * 2)
    (out / "plaintexts" / "exact").write_bytes(exact)
    encrypt("py-0578-exact-frames", default, 4096, key_specs["aes-256"], source=exact, plain="exact")

    def negative(name, source_name, mutate, description, specs=None):
        data = bytearray((out / "ciphertexts" / source_name).read_bytes())
        data = mutate(data)
        (out / "ciphertexts" / name).write_bytes(bytes(data))
        tests[name] = {
            "description": description,
            "ciphertext": f"file://ciphertexts/{name}",
            "master-keys": specs or tests[source_name]["master-keys"],
            "result": {"error": {"error-description": description}},
        }

    def flip(offset):
        def f(d):
            d[offset % len(d)] ^= 0x01
            return d
        return f

    signed = "py-0578-frame512-aes-256"
    unsigned_v2 = "py-0478-frame512-aes-256"
    legacy = "py-0178-frame512-aes-256"
    nonframed = "py-0578-frame0-aes-256"
    for src in (signed, unsigned_v2, legacy, nonframed):
        size = len((out / "ciphertexts" / src).read_bytes())
        for i, offset in enumerate([0, 1, 3, 20, 60, 150, 200, 230, 260, 300, size // 2, size - 120, size - 40, size - 17, size - 1]):
            negative(f"neg-{src}-bitflip-{i}", src, flip(offset), f"bit flipped at byte {offset % size}")
        negative(f"neg-{src}-trailing", src, lambda d: d + b"\x00", "a byte after the end of the message")
        negative(f"neg-{src}-truncated", src, lambda d: d[:-1], "the last byte missing")
    # The commitment key sits right before the 16-byte header tag in a version 2 header; find it
    # by parsing the header with the SDK's own deserializer.
    from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
    import io

    for src in (signed, unsigned_v2):
        raw = (out / "ciphertexts" / src).read_bytes()
        _, header_bytes = deserialize_header(io.BytesIO(raw))
        commit_at = len(header_bytes) - 32
        negative(f"neg-{src}-wrong-commitment", src, flip(commit_at), "the key commitment changed")
        # Truncate inside the final frame (the signature footer, if any, removed too).
        negative(f"neg-{src}-truncated-final-frame", src, lambda d: d[: len(header_bytes) + 16 + 600], "message cut inside the body")
        # Change one character of the encryption context ("vectors" -> "vectorz").
        idx = raw.index(b"vectors")
        negative(f"neg-{src}-changed-context", src, lambda d, idx=idx: d[:idx] + b"vectorz" + d[idx + 7:], "encryption context changed")
    other = [{"type": "raw", "key": "aes-256-other", "provider-id": PROVIDER, "encryption-algorithm": "aes"}]
    negative("neg-wrong-key", signed, lambda d: d, "decrypted with a different key of the same name", specs=other)

    manifest = {
        "manifest": {"type": "awses-decrypt", "version": 2},
        "client": {"name": "aws/aws-encryption-sdk-python", "version": aws_encryption_sdk.__version__},
        "keys": "file://keys.json",
        "tests": tests,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    positives = sum(1 for t in tests.values() if "output" in t["result"])
    print(f"wrote {len(tests)} tests ({positives} messages, {len(tests) - positives} negative cases) to {out}")


def check(directory: pathlib.Path) -> int:
    manifest = json.loads((directory / "manifest.json").read_text())
    keys = json.loads((directory / manifest["keys"].removeprefix("file://")).read_text())
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT)
    failures, passed = [], 0
    for name, test in manifest["tests"].items():
        ciphertext = (directory / test["ciphertext"].removeprefix("file://")).read_bytes()
        try:
            plaintext, _ = client.decrypt(source=ciphertext, key_provider=provider_for(test["master-keys"], keys))
        except Exception as e:  # noqa: BLE001 - any failure is a result to compare
            if "error" in test["result"]:
                passed += 1
            else:
                failures.append(f"{name}: did not decrypt: {e!r}")
            continue
        if "error" in test["result"]:
            failures.append(f"{name}: decrypted a message that must be rejected")
            continue
        want = (directory / test["result"]["output"]["plaintext"].removeprefix("file://")).read_bytes()
        if plaintext != want:
            failures.append(f"{name}: plaintext differs")
        else:
            passed += 1
    for f in failures:
        print(f"fail: {f}")
    print(f"{passed} passed, {len(failures)} failed of {len(manifest['tests'])} tests")
    return 1 if failures or passed == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("generate", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "generate":
        generate(pathlib.Path(sys.argv[2]))
    else:
        sys.exit(check(pathlib.Path(sys.argv[2])))

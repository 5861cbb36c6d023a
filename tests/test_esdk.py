"""Client-side encryption in the AWS Encryption SDK message format, proven against the Python
aws-encryption-sdk and the aws-encryption-cli both ways: raw-key test vectors (every suite,
framed and non-framed, AES and RSA keys, negative cases), and KMS-keyring messages through a
running Coffer server."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import coffer_bin

HERE = pathlib.Path(__file__).parent


def run(args, env=None, input=None, check=True):
    p = subprocess.run(args, env=env, input=input, capture_output=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr.decode()}\n{p.stdout.decode()}")
    return p


def run_coffer(*args, env=None, input=None, check=True):
    return run([coffer_bin(), *map(str, args)], env=env, input=input, check=check)


def test_python_vectors_decrypt_with_coffer(tmp_path):
    run([sys.executable, HERE / "esdk_vectors.py", "generate", tmp_path])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    negatives = [n for n, t in manifest["tests"].items() if "error" in t["result"]]
    assert len(manifest["tests"]) > 300 and len(negatives) > 50
    p = run_coffer("test-vectors", "decrypt", tmp_path / "manifest.json", "--json")
    results = [json.loads(l) for l in p.stdout.decode().splitlines()]
    assert {r["status"] for r in results} == {"pass"}, [r for r in results if r["status"] != "pass"][:5]
    assert len(results) == len(manifest["tests"])
    by_name = {r["test"]: r for r in results}
    assert all(by_name[n]["detail"] == "rejected as expected" for n in negatives)
    # Every one of the 11 suites was among the messages, framed and non-framed.
    suites = {n.split("-")[1] for n in manifest["tests"] if n.startswith("py-") and "-frame" in n}
    assert len(suites) == 11
    # A test that expects the wrong plaintext is reported as a failure, not passed.
    first = next(n for n in manifest["tests"] if n.startswith("py-0578-frame512"))
    (tmp_path / "plaintexts" / "small").write_bytes(b"something else")
    p = run_coffer("test-vectors", "decrypt", tmp_path / "manifest.json", check=False)
    assert p.returncode != 0 and f"fail: {first}" in p.stdout.decode()


def test_coffer_vectors_decrypt_with_python(tmp_path):
    python_dir = tmp_path / "py"
    run([sys.executable, HERE / "esdk_vectors.py", "generate", python_dir])
    out = tmp_path / "coffer"
    run_coffer("test-vectors", "encrypt", "--keys", python_dir / "keys.json", "--output", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["manifest"] == {"type": "awses-decrypt", "version": 2}
    assert len(manifest["tests"]) == 11 * 3 * (4 + 3)  # suites x frame lengths x (4 AES + 3 RSA paddings)
    p = run([sys.executable, HERE / "esdk_vectors.py", "check", out])
    assert f"{len(manifest['tests'])} passed, 0 failed" in p.stdout.decode()
    # The checker is not a rubber stamp: a flipped byte in one message fails it.
    name = next(iter(manifest["tests"]))
    path = out / "ciphertexts" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    p = run([sys.executable, HERE / "esdk_vectors.py", "check", out], check=False)
    assert p.returncode != 0 and f"fail: {name}" in p.stdout.decode()


def raw_key(tmp_path, n=32, name="aes.key"):
    path = tmp_path / name
    path.write_bytes(os.urandom(n))
    return path


def test_cli_files_directories_and_streams(tmp_path):
    key = raw_key(tmp_path)
    spec = f"ns/app={key}"
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.txt": b"alpha\n" * 1000,
        "sub/b.bin": os.urandom(100_000),
        "sub/deeper/c.csv": b"id,card\n1,4111111111111111\n",
        "empty": b"",
    }
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    enc = tmp_path / "enc"
    p = run_coffer("encrypt", "--raw-aes-key", spec, "-r", tree, "-o", enc, "-c", "tenant=acme", "--json")
    meta = [json.loads(l) for l in p.stdout.decode().splitlines()]
    assert len(meta) == 4
    assert {m["suite_id"] for m in meta} == {"0x0578"}
    assert all(m["encryption_context"]["tenant"] == "acme" and "aws-crypto-public-key" in m["encryption_context"] for m in meta)
    for rel, data in files.items():
        sealed = (enc / (rel + ".encrypted")).read_bytes()
        assert data == b"" or data not in sealed
    dec = tmp_path / "dec"
    run_coffer("decrypt", "--raw-aes-key", spec, "-r", enc, "-o", dec, "-c", "tenant=acme", "--suffix", "")
    for rel, data in files.items():
        assert (dec / (rel + ".encrypted")).read_bytes() == data
    # Standard input to standard output, with another suite and frame length.
    p = run_coffer("encrypt", "--raw-aes-key", spec, "--suite", "0x0478", "--frame-length", "100", "-", "-o", "-", input=b"streamed bytes" * 50)
    message = p.stdout
    p = run_coffer("decrypt", "--raw-aes-key", spec, "-", "-o", "-", input=message)
    assert p.stdout == b"streamed bytes" * 50
    # Legacy suites need the policy that allows them, on both sides.
    p = run_coffer("encrypt", "--raw-aes-key", spec, "--suite", "0x0178", "-", "-o", "-", input=b"x", check=False)
    assert p.returncode != 0 and b"does not commit" in p.stderr
    p = run_coffer("encrypt", "--raw-aes-key", spec, "--suite", "0x0178", "--commitment-policy", "forbid-encrypt-allow-decrypt", "-", "-o", "-", input=b"x")
    legacy = p.stdout
    p = run_coffer("decrypt", "--raw-aes-key", spec, "-", "-o", "-", input=legacy, check=False)
    assert p.returncode != 0 and b"REQUIRE_ENCRYPT_ALLOW_DECRYPT" in p.stderr
    p = run_coffer("decrypt", "--raw-aes-key", spec, "--commitment-policy", "require-encrypt-allow-decrypt", "-", "-o", "-", input=legacy)
    assert p.stdout == b"x"


def test_cli_raw_rsa_keys_in_every_pem_form(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forms = {
        "pkcs1.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()),
        "pkcs8.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()),
        "public.pem": key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for name, pem in forms.items():
        (tmp_path / name).write_bytes(pem)
    for padding in ("pkcs1", "oaep-sha1", "oaep-sha512"):
        p = run_coffer("encrypt", "--raw-rsa-key", f"ns/rsa={tmp_path / 'public.pem'},padding={padding}", "-", "-o", "-",
                       input=b"wrapped by the public key")
        for private in ("pkcs1.pem", "pkcs8.pem"):
            back = run_coffer("decrypt", "--raw-rsa-key", f"ns/rsa={tmp_path / private},padding={padding}", "-", "-o", "-",
                              input=p.stdout)
            assert back.stdout == b"wrapped by the public key"
    p = run_coffer("decrypt", "--raw-rsa-key", f"ns/rsa={tmp_path / 'public.pem'}", "-", "-o", "-", input=b"x", check=False)
    assert p.returncode != 0 and b"public key, which cannot decrypt" in p.stderr
    p = run_coffer("encrypt", "--raw-rsa-key", f"ns/rsa={tmp_path / 'public.pem'},padding=oaep-md5", "-", "-o", "-",
                   input=b"x", check=False)
    assert p.returncode != 0 and b"unknown padding 'oaep-md5'" in p.stderr


def test_cli_shows_progress_on_large_inputs(tmp_path):
    key = raw_key(tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))
    p = run_coffer("encrypt", "--raw-aes-key", f"ns/app={key}", "--progress", big, "-o", tmp_path / "big.enc")
    err = p.stderr.decode()
    assert "encrypting" in err and "100%" in err and "MB/s" in err, err
    p = run_coffer("decrypt", "--raw-aes-key", f"ns/app={key}", tmp_path / "big.enc", "-o", tmp_path / "big.out")
    assert "decrypting" not in p.stderr.decode()  # not a terminal, no --progress: quiet
    assert (tmp_path / "big.out").read_bytes() == big.read_bytes()


def test_cli_releases_nothing_that_did_not_verify(tmp_path):
    key = raw_key(tmp_path)
    other = raw_key(tmp_path, name="other.key")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(50_000))
    msg = tmp_path / "plain.bin.encrypted"
    run_coffer("encrypt", "--raw-aes-key", f"ns/app={key}", "--raw-aes-key", f"ns/backup={other}", plain, "-o", msg, "-c", "purpose=test")
    message = msg.read_bytes()
    out = tmp_path / "out.bin"

    def refused(data, *extra, reason):
        bad = tmp_path / "bad.msg"
        bad.write_bytes(data)
        p = run_coffer("decrypt", "--raw-aes-key", f"ns/app={key}", bad, "-o", out, *extra, check=False)
        assert p.returncode != 0, reason
        assert not out.exists(), f"{reason}: output written"
        assert not list(tmp_path.glob(".coffer-*")), f"{reason}: temporary file left"
        return p.stderr.decode()

    # The signature covers the last frame: flip a byte there, the file never appears.
    flipped = bytearray(message)
    flipped[-120] ^= 0x40
    assert "authenticate" in refused(bytes(flipped), reason="bit flip")
    sig = bytearray(message)
    sig[-3] ^= 1
    assert "signature" in refused(bytes(sig), reason="signature")
    assert "truncated" in refused(message[:-200], reason="truncated final frame")
    assert "after the end" in refused(message + b"\0", reason="trailing bytes")
    assert "tenant" in refused(message, "-c", "tenant", reason="required context key")
    assert "purpose" in refused(message, "-c", "purpose=prod", reason="required context value")
    assert "more than the limit of 1" in refused(message, "--max-encrypted-data-keys", "1", reason="too many EDKs")
    why = refused(message.replace(b"purpose", b"purposf", 1), reason="context changed")
    assert "header" in why or "unwrap" in why
    p = run_coffer("decrypt", "--raw-aes-key", f"ns/app={other}", msg, "-o", out, check=False)
    assert p.returncode != 0 and not out.exists()
    assert "ns app, ns backup" in p.stderr.decode(), p.stderr.decode()
    # Either key alone decrypts (the multi-keyring wrapped the data key twice).
    run_coffer("decrypt", "--raw-aes-key", f"ns/backup={other}", msg, "-o", out, "-c", "purpose=test")
    assert out.read_bytes() == plain.read_bytes()


@pytest.fixture(scope="module")
def kms_key(coffer):
    kms = coffer.client()
    key = kms.create_key(Description="esdk interop")["KeyMetadata"]
    kms.create_alias(AliasName="alias/esdk", TargetKeyId=key["KeyId"])
    return key


def sdk_env(coffer):
    env = coffer.cli_env()
    env["AWS_ENDPOINT_URL_KMS"] = coffer.endpoint
    env.pop("AWS_ENDPOINT_URL", None)
    return env


PY_SDK = """
import sys, aws_encryption_sdk
from aws_encryption_sdk.identifiers import CommitmentPolicy
client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[sys.argv[2]])
data = sys.stdin.buffer.read()
if sys.argv[1] == "encrypt":
    out, header = client.encrypt(source=data, key_provider=provider, encryption_context={"app": "interop"})
else:
    out, header = client.decrypt(source=data, key_provider=provider)
    assert header.encryption_context["app"] == "interop"
sys.stdout.buffer.write(out)
"""


PY_KEYRING = """
import sys, boto3, aws_encryption_sdk
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsKeyringInput
mpl = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
# boto3 takes the endpoint from AWS_ENDPOINT_URL_KMS.
keyring = mpl.create_aws_kms_keyring(CreateAwsKmsKeyringInput(kms_key_id=sys.argv[2], kms_client=boto3.client("kms")))
client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
data = sys.stdin.buffer.read()
if sys.argv[1] == "encrypt":
    out, _ = client.encrypt(source=data, keyring=keyring, encryption_context={"app": "keyring"})
else:
    out, header = client.decrypt(source=data, keyring=keyring, encryption_context={"app": "keyring"})
sys.stdout.buffer.write(out)
"""


def python_sdk(script, mode, arn, env, data):
    """Runs one of the Python AWS Encryption SDK scripts above on `data`."""
    return run([sys.executable, "-c", script, mode, arn], env=env, input=data).stdout


def test_kms_keyring_interop_with_the_sdk_keyring_api(coffer, kms_key):
    """The AWS Encryption SDK 4.x keyring API (aws-cryptographic-material-providers), both ways."""
    env = sdk_env(coffer)
    arn = kms_key["Arn"]
    plain = os.urandom(70_000)
    message = python_sdk(PY_KEYRING, "encrypt", arn, env, plain)
    p = run_coffer("decrypt", "--kms-key", arn, "-c", "app=keyring", "-", "-o", "-", env=env, input=message)
    assert p.stdout == plain
    p = run_coffer("encrypt", "--kms-key", arn, "-c", "app=keyring", "-", "-o", "-", env=env, input=plain)
    assert python_sdk(PY_KEYRING, "decrypt", arn, env, p.stdout) == plain


def test_kms_keyring_interop_with_python_sdk_and_cli(coffer, kms_key, tmp_path):
    env = sdk_env(coffer)
    arn = kms_key["Arn"]
    plain = os.urandom(300_000)
    # Python SDK (KMS keyring, AWS_ENDPOINT_URL_KMS -> Coffer) encrypts, coffer decrypts.
    message = python_sdk(PY_SDK, "encrypt", arn, env, plain)
    p = run_coffer("decrypt", "--kms-key", arn, "-", "-o", "-", "-c", "app=interop", env=env, input=message)
    assert p.stdout == plain
    # An alias is resolved to its key's ARN for decryption; discovery needs no key at all.
    p = run_coffer("decrypt", "--kms-key", "alias/esdk", "-", "-o", "-", env=env, input=message)
    assert p.stdout == plain
    account = arn.split(":")[4]
    p = run_coffer("decrypt", "--discovery", "--discovery-account", account, "-", "-o", "-", env=env, input=message)
    assert p.stdout == plain
    p = run_coffer("decrypt", "--discovery", "--discovery-account", "999999999999", "-", "-o", "-", env=env, input=message, check=False)
    assert p.returncode != 0 and b"discovery filter excludes" in p.stderr
    # coffer encrypts with the alias, the Python SDK decrypts.
    p = run_coffer("encrypt", "--kms-key", "alias/esdk", "-c", "app=interop", "-", "-o", "-", env=env, input=plain)
    back = python_sdk(PY_SDK, "decrypt", arn, env, p.stdout)
    assert back == plain
    # aws-encryption-cli encrypts a file, coffer decrypts it; and the reverse.
    src = tmp_path / "doc.bin"
    src.write_bytes(plain)
    cli_out = tmp_path / "doc.cli.encrypted"
    run(["aws-encryption-cli", "--encrypt", "-i", src, "-o", cli_out, "-w", f"key={arn}", "-c", "app=interop", "-S",
         "--commitment-policy", "require-encrypt-require-decrypt"], env=env)
    dec = tmp_path / "doc.coffer.decrypted"
    run_coffer("decrypt", "--kms-key", arn, cli_out, "-o", dec, "-c", "app=interop", env=env)
    assert dec.read_bytes() == plain
    coffer_out = tmp_path / "doc.coffer.encrypted"
    run_coffer("encrypt", "--kms-key", arn, "--frame-length", "65536", src, "-o", coffer_out, "-c", "app=interop", env=env)
    cli_dec = tmp_path / "doc.cli.decrypted"
    run(["aws-encryption-cli", "--decrypt", "-i", coffer_out, "-o", cli_dec, "-w", f"key={arn}", "-S",
         "--commitment-policy", "require-encrypt-require-decrypt"], env=env)
    assert cli_dec.read_bytes() == plain


def test_kms_keyring_refusals_are_clear(coffer, kms_key, tmp_path):
    env = sdk_env(coffer)
    kms = coffer.client()
    other = kms.create_key(Description="other")["KeyMetadata"]
    p = run_coffer("encrypt", "--kms-key", kms_key["Arn"], "-c", "app=x", "-", "-o", "-", env=env, input=b"secret")
    message = p.stdout
    # A different key is no way in, and the error names the key the message needs.
    p = run_coffer("decrypt", "--kms-key", other["Arn"], "-", "-o", "-", env=env, input=message, check=False)
    assert p.returncode != 0 and kms_key["Arn"].encode() in p.stderr
    # A disabled key: KMS refuses, and the message says so.
    kms.disable_key(KeyId=kms_key["KeyId"])
    try:
        p = run_coffer("decrypt", "--kms-key", kms_key["Arn"], "-", "-o", "-", env=env, input=message, check=False)
        assert p.returncode != 0 and b"DisabledException" in p.stderr, p.stderr
    finally:
        kms.enable_key(KeyId=kms_key["KeyId"])
    p = run_coffer("encrypt", "--kms-key", "alias/does-not-exist", "-", "-o", "-", env=env, input=b"x", check=False)
    assert p.returncode != 0 and b"NotFoundException" in p.stderr


def fields_config(tmp_path, **extra):
    cfg = {
        "table": "customers",
        "actions": {
            "ssn": "deterministic", "email": "deterministic", "card": "randomized",
            "address.zip": "randomized", "status": "sign-only", "notes": "nothing",
        },
        "context_fields": ["id"],
        **extra,
    }
    path = tmp_path / "customers.json"
    path.write_text(json.dumps(cfg))
    return path


def customer(i):
    return {
        "id": i, "ssn": f"078-05-{1000 + i % 7:04d}", "email": f"user{i % 5}@example.com",
        "card": {"pan": "4111111111111111", "exp": "12/27"}, "address": {"zip": 10000 + i, "city": "Springfield"},
        "status": "active", "notes": f"note {i}",
    }


def decrypt_calls(coffer):
    from conftest import audit_events
    return sum(
        1 for e in audit_events(coffer.data_dir)
        if e.get("eventName") == "Decrypt" and e.get("requestParameters", {}).get("encryptionContext", {}).get("coffer:table") == "customers"
    )


def test_field_level_encryption_of_records(coffer, kms_key, tmp_path):
    env = sdk_env(coffer)
    cfg = fields_config(tmp_path, cache={"max_age_seconds": 300, "max_uses": 100})
    p = run_coffer("encrypt-fields", "--config", cfg, "-", env=env, input=b'{"id": 1}\n', check=False)
    assert p.returncode != 0 and b"--create-key" in p.stderr
    run_coffer("encrypt-fields", "--config", cfg, "--create-key", "alias/esdk", env=env)
    saved = json.loads(cfg.read_text())
    assert saved["data_key"]["kms_key_id"] == kms_key["Arn"]
    p = run_coffer("encrypt-fields", "--config", cfg, "--create-key", "alias/esdk", env=env, check=False)
    assert p.returncode != 0 and b"already has a data_key" in p.stderr

    records = [customer(i) for i in range(250)]
    src = tmp_path / "customers.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    enc = tmp_path / "customers.enc.jsonl"
    before = decrypt_calls(coffer)
    p = run_coffer("encrypt-fields", "--config", cfg, src, "-o", enc, "--json", env=env)
    summary = json.loads(p.stderr.decode().strip().splitlines()[-1])
    assert summary["records"] == 250 and summary["kms_decrypt_calls"] == 3  # 100 records per unwrap
    coffer.stop(); coffer.start()  # flush the audit log's group commit
    env = sdk_env(coffer)
    assert decrypt_calls(coffer) - before == 3
    out = [json.loads(l) for l in enc.read_text().splitlines()]
    text = enc.read_text()
    assert "078-05-" not in text and "4111111111111111" not in text and "@example.com" not in text
    # Deterministic: equal plaintexts, equal ciphertexts (equality search works); randomized: never.
    assert out[0]["ssn"] == out[7]["ssn"] and out[0]["ssn"] != out[1]["ssn"]
    assert out[0]["email"] == out[5]["email"]
    assert len({r["card"] for r in out}) == 250
    assert out[3]["status"] == "active" and out[3]["notes"] == "note 3" and out[3]["address"]["city"] == "Springfield"
    assert all(isinstance(r["coffer_signature"], str) for r in out)
    # An encrypted value of a search term matches the stored one.
    probe = run_coffer("encrypt-fields", "--config", cfg, "-", env=env,
                       input=json.dumps({"id": 999, "email": "user2@example.com"}).encode()).stdout
    assert json.loads(probe)["email"] == out[2]["email"]

    dec = tmp_path / "customers.dec.jsonl"
    run_coffer("decrypt-fields", "--config", cfg, enc, "-o", dec, env=env)
    assert [json.loads(l) for l in dec.read_text().splitlines()] == records

    def refused(mutate, reason):
        bad = [dict(r) for r in out]
        mutate(bad)
        path = tmp_path / "bad.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in bad))
        target = tmp_path / "bad.out.jsonl"
        p = run_coffer("decrypt-fields", "--config", cfg, path, "-o", target, env=env, check=False)
        assert p.returncode != 0, reason
        assert not target.exists(), f"{reason}: output written"
        return p.stderr.decode()

    def swap(field):
        def f(rs):
            rs[10][field] = rs[11][field]
        return f

    assert "record 11" in refused(swap("card"), "randomized value moved to another record")
    assert "record 11" in refused(swap("email"), "deterministic value moved to another record")
    refused(lambda rs: rs[0].__setitem__("ssn", rs[0]["email"]), "value moved to another field")
    refused(lambda rs: rs[4].__setitem__("status", "closed"), "sign-only value changed")
    refused(lambda rs: rs[4].__setitem__("id", 5), "context field changed")
    refused(lambda rs: rs[4].pop("card"), "encrypted field removed")
    # An unprotected field may change.
    edited = [dict(r) for r in out]
    edited[0]["notes"] = "edited"
    path = tmp_path / "edited.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in edited))
    p = run_coffer("decrypt-fields", "--config", cfg, path, env=env)
    assert json.loads(p.stdout.decode().splitlines()[0])["notes"] == "edited"
    # A JSON array works the same, and a disabled KMS key stops decryption.
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(records[:3]))
    p = run_coffer("encrypt-fields", "--config", cfg, arr, env=env)
    assert len(json.loads(p.stdout)) == 3
    coffer.client().disable_key(KeyId=kms_key["KeyId"])
    try:
        p = run_coffer("decrypt-fields", "--config", cfg, enc, env=env, check=False)
        assert p.returncode != 0 and b"DisabledException" in p.stderr
    finally:
        coffer.client().enable_key(KeyId=kms_key["KeyId"])

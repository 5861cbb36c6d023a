"""The aws CLI against Coffer: the README walkthrough and the banner's own commands."""

import base64
import json
import subprocess

import pytest


def aws(coffer, *args, check=True, stdin=None):
    p = subprocess.run(["aws", *args], env=coffer.cli_env(), capture_output=True, text=True, input=stdin, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def test_banner_commands_work_as_printed(coffer, tmp_path):
    exports = [l.strip() for l in coffer.banner if l.strip().startswith("export ")]
    command = [l.strip() for l in coffer.banner if l.strip().startswith("aws kms")]
    assert any("AWS_ENDPOINT_URL=" + coffer.endpoint in e for e in exports)
    assert any("AWS_CA_BUNDLE=" in e for e in exports) and len(command) == 1
    script = "\n".join(["set -e", "unset $(env | grep -o '^AWS_[A-Z_]*')", *exports, command[0]])
    env = {k: v for k, v in coffer.cli_env().items() if not k.startswith("AWS_")}
    p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["KeyMetadata"]["KeyState"] == "Enabled"


def test_readme_walkthrough(coffer, tmp_path):
    key = json.loads(aws(coffer, "kms", "create-key", "--description", "walkthrough").stdout)["KeyMetadata"]
    aws(coffer, "kms", "create-alias", "--alias-name", "alias/walkthrough", "--target-key-id", key["KeyId"])
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"the launch codes\n")
    enc = json.loads(
        aws(coffer, "kms", "encrypt", "--key-id", "alias/walkthrough", "--plaintext", f"fileb://{secret}",
            "--encryption-context", "app=demo").stdout
    )
    assert enc["KeyId"] == key["Arn"]
    blob = tmp_path / "secret.enc"
    blob.write_bytes(base64.b64decode(enc["CiphertextBlob"]))
    dec = json.loads(
        aws(coffer, "kms", "decrypt", "--ciphertext-blob", f"fileb://{blob}", "--encryption-context", "app=demo").stdout
    )
    assert base64.b64decode(dec["Plaintext"]) == b"the launch codes\n"
    bad = aws(coffer, "kms", "decrypt", "--ciphertext-blob", f"fileb://{blob}", check=False)
    assert bad.returncode != 0 and "InvalidCiphertextException" in bad.stderr
    listed = json.loads(aws(coffer, "kms", "list-aliases", "--key-id", key["KeyId"]).stdout)["Aliases"]
    assert [a["AliasName"] for a in listed] == ["alias/walkthrough"]
    text = aws(coffer, "kms", "generate-data-key", "--key-id", "alias/walkthrough", "--key-spec", "AES_256",
               "--query", "KeyId", "--output", "text").stdout.strip()
    assert text == key["Arn"]
    sched = json.loads(aws(coffer, "kms", "schedule-key-deletion", "--key-id", key["KeyId"], "--pending-window-in-days", "7").stdout)
    assert sched["KeyState"] == "PendingDeletion"


def test_cli_errors_are_aws_errors(coffer):
    p = aws(coffer, "kms", "describe-key", "--key-id", "alias/nope", check=False)
    assert p.returncode != 0 and "NotFoundException" in p.stderr
    p = aws(coffer, "kms", "generate-random", "--number-of-bytes", "2000", check=False)
    assert p.returncode != 0 and "ValidationException" in p.stderr

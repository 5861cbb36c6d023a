"""The aws CLI's S3 commands against Coffer: `aws s3` (mb, cp, sync, ls, mv, rm, rb, presign) and
`aws s3api`, exactly as users type them with only the endpoint changed."""

import hashlib
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request


def aws(coffer, *args, check=True, env=None):
    p = subprocess.run(["aws", *args], env=env or coffer.cli_env(), capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_s3_commands(coffer, tmp_path):
    aws(coffer, "s3", "mb", "s3://cli-bucket")
    assert "cli-bucket" in aws(coffer, "s3", "ls").stdout
    small = tmp_path / "small.txt"
    small.write_text("hello from the aws cli\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024 + 3))  # above the CLI's 8 MiB multipart threshold
    aws(coffer, "s3", "cp", str(small), "s3://cli-bucket/docs/small.txt")
    aws(coffer, "s3", "cp", str(big), "s3://cli-bucket/data/big.bin")
    listing = aws(coffer, "s3", "ls", "s3://cli-bucket/", "--recursive").stdout
    assert "docs/small.txt" in listing and "data/big.bin" in listing
    head = json.loads(aws(coffer, "s3api", "head-object", "--bucket", "cli-bucket", "--key", "data/big.bin").stdout)
    assert head["ETag"].endswith('-3"') and head["ServerSideEncryption"] == "AES256"
    out = tmp_path / "out"
    aws(coffer, "s3", "cp", "s3://cli-bucket/data/big.bin", str(out / "big.bin"))
    assert digest(out / "big.bin") == digest(big)

    # sync up, change a file, sync again, sync down.
    tree = tmp_path / "tree"
    for i in range(12):
        (tree / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{i % 3}" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    aws(coffer, "s3", "sync", str(tree), "s3://cli-bucket/tree")
    (tree / "d0" / "f0.txt").write_text("changed\n")
    second = aws(coffer, "s3", "sync", str(tree), "s3://cli-bucket/tree").stdout
    assert "f0.txt" in second and "f3.txt" not in second
    down = tmp_path / "down"
    aws(coffer, "s3", "sync", "s3://cli-bucket/tree", str(down))
    for f in tree.rglob("*.txt"):
        assert (down / f.relative_to(tree)).read_text() == f.read_text()

    # mv, presign, rm, rb.
    aws(coffer, "s3", "mv", "s3://cli-bucket/docs/small.txt", "s3://cli-bucket/docs/moved.txt")
    # The CLI v1 presigns with the retired SigV2 unless told otherwise; Coffer says how.
    url = aws(coffer, "s3", "presign", "s3://cli-bucket/docs/moved.txt").stdout.strip()
    ctx = ssl.create_default_context(cafile=coffer.ca)
    try:
        urllib.request.urlopen(url, context=ctx)
        raise AssertionError("a SigV2 presigned URL was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and b"signature_version s3v4" in e.read()
    config = tmp_path / "aws-config"
    env = {**coffer.cli_env(), "AWS_CONFIG_FILE": str(config)}
    aws(coffer, "configure", "set", "default.s3.signature_version", "s3v4", env=env)
    url = aws(coffer, "s3", "presign", "s3://cli-bucket/docs/moved.txt", "--expires-in", "120", env=env).stdout.strip()
    with urllib.request.urlopen(url, context=ctx) as r:
        assert r.read() == small.read_bytes()
    failed = aws(coffer, "s3", "rb", "s3://cli-bucket", check=False)
    assert failed.returncode != 0 and "BucketNotEmpty" in failed.stderr
    aws(coffer, "s3", "rm", "s3://cli-bucket", "--recursive")
    aws(coffer, "s3", "rb", "s3://cli-bucket")
    assert "cli-bucket" not in aws(coffer, "s3", "ls").stdout


def test_s3api_commands(coffer, tmp_path):
    aws(coffer, "s3api", "create-bucket", "--bucket", "cli-api")
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(200_000))
    put = json.loads(aws(coffer, "s3api", "put-object", "--bucket", "cli-api", "--key", "k", "--body", str(body),
                         "--server-side-encryption", "AES256", "--metadata", "team=blue").stdout)
    assert put["ServerSideEncryption"] == "AES256"
    out = tmp_path / "out.bin"
    got = json.loads(aws(coffer, "s3api", "get-object", "--bucket", "cli-api", "--key", "k", "--range",
                         "bytes=65000-70000", str(out)).stdout)
    assert got["ContentRange"] == "bytes 65000-70000/200000" and got["Metadata"] == {"team": "blue"}
    assert out.read_bytes() == body.read_bytes()[65000:70001]
    aws(coffer, "s3api", "put-bucket-versioning", "--bucket", "cli-api", "--versioning-configuration", "Status=Enabled")
    aws(coffer, "s3api", "put-object", "--bucket", "cli-api", "--key", "k", "--body", str(body))
    versions = json.loads(aws(coffer, "s3api", "list-object-versions", "--bucket", "cli-api").stdout)["Versions"]
    assert len(versions) == 2
    missing = aws(coffer, "s3api", "get-object", "--bucket", "cli-api", "--key", "nope", str(out), check=False)
    assert missing.returncode != 0 and "NoSuchKey" in missing.stderr

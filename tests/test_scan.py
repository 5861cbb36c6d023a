"""`coffer scan` over a tree of local files: what it finds, where, that it never prints a value,
what it skips, and its exit status for CI use."""

import json
import subprocess

from conftest import coffer_bin

SECRETS = {
    "CREDIT_CARD_NUMBER": "4111 1111 1111 1111",
    "USA_SOCIAL_SECURITY_NUMBER": "123-45-6789",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": "DE89370400440532013000",
    "PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----",
}


def scan(*args):
    return subprocess.run([coffer_bin(), "scan", *args], capture_output=True, text=True, timeout=120)


def test_scan_a_tree(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "people.csv").write_text(
        "name,ssn,card\nJane,123-45-6789,4111 1111 1111 1111\nJoe,666-12-3456,4111 1111 1111 1112\n")
    (tmp_path / "deploy.env").write_text(
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    (tmp_path / "notes.md").write_text("pay to DE89370400440532013000 by friday\n\n"
                                       "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n")
    (tmp_path / "clean.txt").write_text("nothing to see: order 12345, build 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12\n")
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01" + b"4111 1111 1111 1111")
    r = scan(str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    found = {(f["path"].rsplit("/", 1)[1], f["identifier"]) for f in report["findings"]}
    assert found == {
        ("people.csv", "USA_SOCIAL_SECURITY_NUMBER"),
        ("people.csv", "CREDIT_CARD_NUMBER"),
        ("deploy.env", "AWS_ACCESS_KEY_ID"),
        ("deploy.env", "AWS_SECRET_ACCESS_KEY"),
        ("notes.md", "INTERNATIONAL_BANK_ACCOUNT_NUMBER"),
        ("notes.md", "PRIVATE_KEY"),
    }
    card = next(f for f in report["findings"] if f["identifier"] == "CREDIT_CARD_NUMBER")
    assert card["count"] == 1 and card["locations"][0]["line"] == 2 and card["severity"] == "HIGH"
    assert [s["path"].rsplit("/", 1)[1] for s in report["skipped"]] == ["image.bin"]
    assert report["files_scanned"] == 4
    # No value appears in any output, JSON or human.
    human = scan(str(tmp_path))
    for out in (r.stdout, human.stdout, human.stderr):
        for value in SECRETS.values():
            if value.startswith("-----"):
                continue
            assert value not in out and value.replace(" ", "") not in out


def test_fail_on_severity(tmp_path):
    f = tmp_path / "contacts.txt"
    f.write_text("mail jane.doe@example.com\n")
    assert scan(str(f), "--fail-on", "medium").returncode == 0  # an email address is LOW
    assert scan(str(f), "--fail-on", "low").returncode == 1
    bad = scan(str(f), "--fail-on", "severe")
    assert bad.returncode == 2 and "low, medium or high" in bad.stderr
    missing = scan(str(tmp_path / "nope"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr

"""`coffer scan` over local trees and a Coffer server's buckets: what it finds and where, in every
format it reads (text, CSV, JSON, JSON Lines, gzip, nested zip, DOCX/XLSX/PPTX written by their
real Python libraries), what it skips and why (binary, PDF, decompression bombs, deep nesting),
custom identifiers and allow lists, SARIF, progress, and that no output ever carries a value."""

import gzip
import io
import json
import subprocess
import tarfile
import zipfile

import pytest

from conftest import coffer_bin

# Realistic values (not the examples printed in AWS's documentation, which are not findings).
AWS_KEY_ID = "AKIAZ3MHQ2J7VX4L6RTE"
AWS_SECRET = "9drTJvcXLB89EXhRXqhlc4oZxXFsF2yTzDOhGWWF"
CARD = "4111 1111 1111 1111"
SSN = "123-45-6789"
IBAN = "DE89370400440532013000"
VALUES = [AWS_KEY_ID, AWS_SECRET, CARD, CARD.replace(" ", ""), SSN, "123456789", IBAN, "jane.doe@example.com"]


def pdf_document(lines):
    """A minimal PDF (one page, Helvetica, one text line per entry), as PDF writers lay it out:
    objects, a cross-reference table with byte offsets, a trailer."""
    content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def pdf_reader_bomb():
    """A PDF whose cross-reference stream claims 2 GB-wide fields: lopdf 0.44 allocates that much
    and aborts (J-F-Liu/lopdf#532) — the abort a reader in the scanning process could not survive."""
    data = b"\x00" * 64
    obj = (b"1 0 obj\n<< /Type /XRef /W [1 2000000000 1] /Size 5 /Index [0 5] /Root 1 0 R /Length "
           + str(len(data)).encode() + b" >>\nstream\n" + data + b"\nendstream\nendobj\n")
    head = b"%PDF-1.7\n"
    return head + obj + b"startxref\n" + str(len(head)).encode() + b"\n%%EOF\n"


def scan(*args, env=None):
    return subprocess.run([coffer_bin(), "scan", *args], capture_output=True, text=True, timeout=300, env=env)


def scan_json(*args):
    r = scan(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def found(report):
    return {(f["path"].rsplit("/", 1)[-1], f["identifier"]) for f in report["findings"]}


def assert_no_values(*outputs):
    for out in outputs:
        for value in VALUES:
            assert value not in out, value


def test_scan_a_tree(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "people.csv").write_text(
        f"name,ssn,card\nJane,{SSN},{CARD}\nJoe,666-12-3456,4111 1111 1111 1112\n")
    (tmp_path / "deploy.env").write_text(
        f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n")
    (tmp_path / "notes.md").write_text(f"pay to {IBAN} by friday\n\n"
                                       "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n")
    (tmp_path / "clean.txt").write_text(
        "nothing to see: order 12345, build 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12,\n"
        "id 550e8400-e29b-41d4-a716-446655440000, docs key AKIAIOSFODNN7EXAMPLE, v1.2.3.4\n")
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01" + CARD.encode())
    report = scan_json(str(tmp_path))
    assert found(report) == {
        ("people.csv", "USA_SOCIAL_SECURITY_NUMBER"),
        ("people.csv", "CREDIT_CARD_NUMBER"),
        ("deploy.env", "AWS_ACCESS_KEY_ID"),
        ("deploy.env", "AWS_SECRET_ACCESS_KEY"),
        ("notes.md", "INTERNATIONAL_BANK_ACCOUNT_NUMBER"),
        ("notes.md", "PEM_PRIVATE_KEY"),
    }
    card = next(f for f in report["findings"] if f["identifier"] == "CREDIT_CARD_NUMBER")
    assert card["count"] == 1 and card["severity"] == "HIGH" and card["category"] == "FINANCIAL_INFORMATION"
    assert card["locations"] == [{"type": "cell", "row": 2, "column": 3, "columnName": "card"}]
    key = next(f for f in report["findings"] if f["identifier"] == "AWS_SECRET_ACCESS_KEY")
    assert key["locations"][0] == {"type": "text", "line": 2, "column": 25, "start": 63, "end": 103}
    assert [(s["path"].rsplit("/", 1)[1], s["reason"]) for s in report["skipped"]] == [("image.bin", "binary data")]
    assert report["files_scanned"] == 4
    human = scan(str(tmp_path))
    sarif = scan(str(tmp_path), "--sarif")
    assert_no_values(json.dumps(report), human.stdout, human.stderr, sarif.stdout)
    assert "HIGH" in human.stdout and "row 2 column 'card'" in human.stdout


def test_fail_on_severity(tmp_path):
    f = tmp_path / "contacts.txt"
    f.write_text("mail jane.doe@example.com\n")
    assert scan(str(f), "--fail-on", "medium").returncode == 0  # an email address is LOW
    assert scan(str(f), "--fail-on", "low").returncode == 1
    bad = scan(str(f), "--fail-on", "severe")
    assert bad.returncode == 2 and "low, medium or high" in bad.stderr
    missing = scan(str(tmp_path / "nope"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr


def test_structured_formats_give_their_own_places(tmp_path):
    # A CSV column header is a keyword: nine bare digits are an SSN under "ssn", not under "order".
    (tmp_path / "a.csv").write_text("order,customer_ssn\n123456789,123456789\n")
    (tmp_path / "b.tsv").write_text("who\tphone\nJane\t(415) 555-0132\n")
    (tmp_path / "c.json").write_text(json.dumps(
        {"people": [{"name": "x"}, {"identity": {"ssn": 123456789}, "mail": "jane.doe@example.com"}]}))
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"ok": True}) + "\n" + json.dumps({"card": CARD}) + "\nnot json " + SSN + "\n")
    report = scan_json(str(tmp_path))
    by = {(f["path"].rsplit("/", 1)[1], f["identifier"]): f for f in report["findings"]}
    assert set(by) == {
        ("a.csv", "USA_SOCIAL_SECURITY_NUMBER"),
        ("b.tsv", "PHONE_NUMBER"),
        ("c.json", "USA_SOCIAL_SECURITY_NUMBER"),
        ("c.json", "EMAIL_ADDRESS"),
        ("d.jsonl", "CREDIT_CARD_NUMBER"),
        ("d.jsonl", "USA_SOCIAL_SECURITY_NUMBER"),
    }
    assert by[("a.csv", "USA_SOCIAL_SECURITY_NUMBER")]["locations"] == [
        {"type": "cell", "row": 2, "column": 2, "columnName": "customer_ssn"}]
    assert by[("c.json", "USA_SOCIAL_SECURITY_NUMBER")]["locations"] == [
        {"type": "record", "record": 0, "jsonPath": "$.people[1].identity.ssn"}]
    assert by[("d.jsonl", "CREDIT_CARD_NUMBER")]["locations"] == [
        {"type": "record", "record": 1, "jsonPath": "$.card"}]
    assert by[("d.jsonl", "USA_SOCIAL_SECURITY_NUMBER")]["locations"][0]["line"] == 3


def test_archives_and_documents(tmp_path):
    docx = pytest.importorskip("docx")
    openpyxl = pytest.importorskip("openpyxl")
    pptx = pytest.importorskip("pptx")

    d = docx.Document()
    d.add_paragraph("Quarterly notes")
    d.add_paragraph(f"Employee SSN: {SSN}")
    d.save(tmp_path / "memo.docx")
    wb = openpyxl.Workbook()
    wb.active.append(["name", "iban"])
    wb.active.append(["Jane", IBAN])
    wb.save(tmp_path / "pay.xlsx")
    p = pptx.Presentation()
    slide = p.slides.add_slide(p.slide_layouts[5])
    slide.shapes.title.text = f"card on file {CARD}"
    p.save(tmp_path / "deck.pptx")

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("keys/deploy.env", f"aws_secret_access_key = {AWS_SECRET}\n")
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("nested/inner.zip", inner.getvalue())
        z.writestr("logs/app.log.gz", gzip.compress(f"user ssn {SSN}\n".encode()))
        z.write(tmp_path / "memo.docx", "docs/memo.docx")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    (tmp_path / "report.pdf").write_bytes(pdf_document(["Employee record", f"SSN: {SSN}", f"card {CARD}"]))
    (tmp_path / "crash.pdf").write_bytes(pdf_reader_bomb())
    with tarfile.open(tmp_path / "backup.tar.gz", "w:gz") as t:
        for name, text in (("etc/app.env", f"aws_secret_access_key = {AWS_SECRET}\n"), ("notes.txt", "nothing\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            t.addfile(info, io.BytesIO(text.encode()))

    report = scan_json(str(tmp_path))
    by = {(f["path"].rsplit("/", 1)[1], f["identifier"]): f for f in report["findings"]}
    assert ("memo.docx", "USA_SOCIAL_SECURITY_NUMBER") in by
    assert by[("memo.docx", "USA_SOCIAL_SECURITY_NUMBER")]["locations"][0]["member"] == "word/document.xml"
    assert ("pay.xlsx", "INTERNATIONAL_BANK_ACCOUNT_NUMBER") in by
    assert ("deck.pptx", "CREDIT_CARD_NUMBER") in by
    members = {loc["member"] for f in report["findings"] if f["path"].endswith("bundle.zip") for loc in f["locations"]}
    assert members == {"nested/inner.zip/keys/deploy.env", "logs/app.log.gz", "docs/memo.docx/word/document.xml"}
    backup = by[("backup.tar.gz", "AWS_SECRET_ACCESS_KEY")]
    assert backup["locations"][0]["member"] == "etc/app.env" and backup["locations"][0]["line"] == 1
    # PDF text comes from a resource-limited child process; lines are the PDF's text lines.
    assert by[("report.pdf", "USA_SOCIAL_SECURITY_NUMBER")]["locations"][0]["line"] == 2
    assert by[("report.pdf", "CREDIT_CARD_NUMBER")]["locations"][0]["line"] == 3
    broken = [s for s in report["skipped"] if s["path"].endswith("broken.pdf")]
    assert len(broken) == 1 and broken[0]["reason"].startswith("PDF: not a readable PDF"), broken
    # A file that kills its reader (here: an allocation past the reader's memory limit, an abort)
    # is skipped with the reason; the scan goes on.
    crash = [s for s in report["skipped"] if s["path"].endswith("crash.pdf")]
    assert len(crash) == 1 and "the PDF reader was stopped by signal" in crash[0]["reason"], crash


def test_bombs_are_reported_not_followed(tmp_path):
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.txt", b"\0" * (48 << 20))
        z.writestr("ok.txt", f"ssn {SSN}\n")
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"a" * (32 << 20)))
    data = f"ssn {SSN}\n".encode()
    for i in range(7):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(f"level{i}.zip" if i else "deep.txt", data)
        data = buf.getvalue()
    (tmp_path / "deep.zip").write_bytes(data)
    report = scan_json(str(tmp_path))
    skipped = {(s["path"].rsplit("/", 1)[1], s.get("member")): s["reason"] for s in report["skipped"]}
    assert "decompression bomb" in skipped[("bomb.zip", "zeros.txt")]
    assert "decompression bomb" in skipped[("bomb.gz", None)]
    deep = [r for (p, _), r in skipped.items() if p == "deep.zip"]
    assert deep and "nested more than 5 deep" in deep[0]
    # The harmless member beside the bomb is still scanned.
    assert ("bomb.zip", "USA_SOCIAL_SECURITY_NUMBER") in found(report)


def test_custom_identifiers_allow_lists_and_selection(tmp_path):
    (tmp_path / "data.txt").write_text(
        "employee EMP-204518 and EMP-000000; mail jane.doe@example.com and ops@corp.example\n"
        f"ssn {SSN}\n")
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps([{"name": "EMPLOYEE_ID", "regex": "EMP-[0-9]{6}", "keywords": ["employee"],
                                   "ignoreWords": ["EMP-000000"], "maximumMatchDistance": 30,
                                   "severity": "HIGH"}]))
    allow = tmp_path / "allow.txt"
    allow.write_text("jane.doe@example.com\n")
    report = scan_json(str(tmp_path), "--custom", str(custom), "--allow-list", str(allow),
                       "--allow-regex", r".*@corp\.example")
    emp = next(f for f in report["findings"] if f["identifier"] == "EMPLOYEE_ID")
    assert emp["count"] == 1 and emp["category"] == "CUSTOM_IDENTIFIER" and emp["severity"] == "HIGH"
    assert {f["identifier"] for f in report["findings"]} == {"EMPLOYEE_ID", "USA_SOCIAL_SECURITY_NUMBER"}
    only = scan_json(str(tmp_path), "--only", "EMAIL_ADDRESS")
    assert {f["identifier"] for f in only["findings"]} == {"EMAIL_ADDRESS"}
    excluded = scan_json(str(tmp_path), "--exclude", "EMAIL_ADDRESS,USA_SOCIAL_SECURITY_NUMBER")
    assert excluded["findings"] == []
    unknown = scan(str(tmp_path), "--only", "NOPE")
    assert unknown.returncode != 0 and "--list-identifiers" in unknown.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "X", "regex": "a*"}))
    r = scan(str(tmp_path), "--custom", str(bad))
    assert r.returncode != 0 and "empty string" in r.stderr
    listed = json.loads(scan("--list-identifiers", "--json").stdout)
    assert len(listed) >= 45 and {"id", "category", "severity", "keywordRequired", "validated"} <= set(listed[0])


def test_sarif_and_progress(tmp_path):
    (tmp_path / "a.txt").write_text(f"line one\nssn {SSN}\n")
    (tmp_path / "b.csv").write_text(f"x,card\n1,{CARD}\n")
    r = scan(str(tmp_path), "--sarif", "--progress")
    assert r.returncode == 0, r.stderr
    log = json.loads(r.stdout)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert "USA_SOCIAL_SECURITY_NUMBER" in rule_ids and len(rule_ids) >= 45
    results = {res["ruleId"]: res for res in run["results"]}
    ssn = results["USA_SOCIAL_SECURITY_NUMBER"]
    assert ssn["level"] == "error" and rule_ids[ssn["ruleIndex"]] == "USA_SOCIAL_SECURITY_NUMBER"
    again = json.loads(scan(str(tmp_path), "--sarif").stdout)["runs"][0]["results"]
    assert {r["partialFingerprints"]["cofferFinding/v1"] for r in again} == {
        r["partialFingerprints"]["cofferFinding/v1"] for r in run["results"]}
    region = ssn["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 2, "startColumn": 5}
    card = results["CREDIT_CARD_NUMBER"]
    assert card["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "row 2 column 'card'"
    assert "scanned 2/2 files" in r.stderr
    assert_no_values(r.stdout, r.stderr)


def test_scan_buckets(coffer, tmp_path):
    s3 = coffer.client("s3")
    s3.create_bucket(Bucket="scan-me")
    s3.put_object(Bucket="scan-me", Key="hr/people.csv", Body=f"name,ssn\nJane,{SSN}\n".encode())
    s3.put_object(Bucket="scan-me", Key="hr/notes with space.txt", Body=f"card {CARD}\n".encode())
    s3.put_object(Bucket="scan-me", Key="public/readme.txt", Body=b"nothing here\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("env", f"aws_secret_access_key = {AWS_SECRET}\n")
    s3.put_object(Bucket="scan-me", Key="hr/backup.zip", Body=buf.getvalue())
    connect = ["--endpoint", coffer.endpoint, "--data-dir", str(coffer.data_dir)]
    report = scan_json("s3://scan-me/hr/", *connect)
    assert report["files_scanned"] == 3
    assert {(f["path"], f["identifier"]) for f in report["findings"]} == {
        ("s3://scan-me/hr/people.csv", "USA_SOCIAL_SECURITY_NUMBER"),
        ("s3://scan-me/hr/notes with space.txt", "CREDIT_CARD_NUMBER"),
        ("s3://scan-me/hr/backup.zip", "AWS_SECRET_ACCESS_KEY"),
    }
    whole = scan_json("s3://scan-me", *connect)
    assert whole["files_scanned"] == 4
    missing = scan("s3://no-such-bucket", *connect)
    assert missing.returncode != 0 and "NoSuchBucket" in missing.stderr


def test_accuracy_on_the_evaluation_corpus(tmp_path):
    """The evaluation corpus (planted, labelled values and hard negatives in text, logs, CSV, JSON
    and JSON Lines) through the real readers: every identifier with a checksum or a fixed
    structure keeps precision and recall of at least 0.95; the corpus and labels can be written
    out and scanned again with `coffer scan` to the same findings."""
    r = subprocess.run([coffer_bin(), "bench", "scan-accuracy", "--docs", "300", "--seed", "11", "--json",
                        "--write-corpus", str(tmp_path / "corpus")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    rows = {row["identifier"]: row for row in result["identifiers"]}
    assert len(rows) >= 45
    weak = {i: (row["precision"], row["recall"]) for i, row in rows.items()
            if row["structured"] and (row["precision"] < 0.95 or row["recall"] < 0.95)}
    assert not weak, weak
    assert all(row["tp"] > 0 for row in rows.values()), "every identifier is planted"
    labels = json.loads((tmp_path / "corpus" / "labels.json").read_text())
    assert len(labels) == result["labels"] and any(not l["positive"] for l in labels)
    rescanned = scan_json(str(tmp_path / "corpus"))
    assert sum(f["count"] for f in rescanned["findings"]) == result["micro"]["tp"] + result["micro"]["fp"]


def test_large_files_are_streamed_with_the_same_findings(tmp_path):
    """Text, CSV and JSON Lines above --max-file-mib are read as a stream in overlapping chunks:
    the findings (counts and places) are those of reading the file whole, values straddling the
    8 MiB chunk boundaries included."""
    big = tmp_path / "big.log"
    filler = "2026-11-23T07:30:22.123Z INFO request served in 12 ms for order 12345\n"
    with big.open("w") as f:
        written = 0
        for i in range(300_000):
            line = filler if i % 997 else f"user ssn {SSN} card {CARD} mail jane.doe@example.com\n"
            # Put a value across each 8 MiB boundary.
            for boundary in (8 << 20, 16 << 20):
                if written < boundary - 10 <= written + len(line):
                    line = "x" * (boundary - 10 - written) + f" ssn {SSN} tail\n"
            f.write(line)
            written += len(line)
    assert big.stat().st_size > 17 << 20
    rows = tmp_path / "rows.csv"
    rows.write_text("id,customer_ssn,note\n" + "".join(
        f"{i},{'123456789' if i % 50 == 0 else '000'},row {i}\n" for i in range(80_000)))
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps({"i": i, "ssn": SSN if i % 40 == 0 else "n/a"}) + "\n" for i in range(60_000)))
    assert rows.stat().st_size > 1 << 20 and lines.stat().st_size > 1 << 20

    whole = scan_json(str(tmp_path), "--max-file-mib", "256")
    streamed = scan_json(str(tmp_path), "--max-file-mib", "1", "--progress")
    assert streamed["findings"] == whole["findings"]
    assert streamed["bytes_scanned"] >= big.stat().st_size
    counts = {(f["path"].rsplit("/", 1)[1], f["identifier"]): f["count"] for f in whole["findings"]}
    assert counts[("big.log", "USA_SOCIAL_SECURITY_NUMBER")] == 300_000 // 997 + 1 + 2
    assert counts[("rows.csv", "USA_SOCIAL_SECURITY_NUMBER")] == 80_000 // 50
    assert counts[("events.jsonl", "USA_SOCIAL_SECURITY_NUMBER")] == 60_000 // 40
    with (tmp_path / "big.bin").open("wb") as f:
        f.write(b"\0" * (2 << 20))
    skipped = scan_json(str(tmp_path / "big.bin"), "--max-file-mib", "1")["skipped"]
    assert skipped[0]["reason"] == "larger than 1 MiB and binary data"

"""Sensitive-data discovery in the server, through the Amazon Macie API (boto3's `macie2` client and
the aws CLI pointed at /_coffer/macie2): classification jobs over buckets (scoping, sampling,
schedules, pause/resume/cancel), findings listed, fetched and counted as Macie shapes them,
delivered to a webhook, automated discovery of new objects with per-bucket exclusions, jobs that
read only what their creator may read, and every object read in the audit log."""

import http.server
import json
import pathlib
import subprocess
import tempfile
import threading
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import Coffer, audit_events, coffer_bin
from test_scan import pdf_document, pdf_reader_bomb

SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
AWS_SECRET = "9drTJvcXLB89EXhRXqhlc4oZxXFsF2yTzDOhGWWF"
VALUES = [SSN, CARD, CARD.replace(" ", ""), AWS_SECRET]


class Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Hook.received.append((self.path, self.headers.get("user-agent"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hook():
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def server(hook):
    with tempfile.TemporaryDirectory(prefix="coffer-test-") as d:
        c = Coffer(pathlib.Path(d) / "data",
                   extra_args=["--findings-webhook", f"http://127.0.0.1:{hook.server_port}/findings"]).start()
        try:
            yield c
        finally:
            c.stop()


def macie(c, access_key=None, secret_key=None):
    ident, secret = (access_key, secret_key) if access_key else c.credentials()
    return boto3.client(
        "macie2", endpoint_url=c.endpoint + "/_coffer/macie2", verify=c.ca, region_name="us-east-1",
        aws_access_key_id=ident, aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False))


def account(c):
    return c.client("sts").get_caller_identity()["Account"]


def wait_for(job_id, m, statuses=("COMPLETE",), timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = m.describe_classification_job(jobId=job_id)
        if d["jobStatus"] in statuses:
            return d
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is still {d['jobStatus']}")


def error_code(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"], \
        e.value.response["Error"]["Message"]


def job_definition(acct, *buckets, scoping=None):
    d = {"bucketDefinitions": [{"accountId": acct, "buckets": list(buckets)}]}
    if scoping:
        d["scoping"] = scoping
    return d


def test_a_one_time_job_finds_what_each_object_holds(server, hook):
    s3, m, acct = server.client("s3"), macie(server), account(server)
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket="hr-data")
    s3.put_object(Bucket="hr-data", Key="people.csv", Body=f"name,ssn\nJane,{SSN}\nJohn,none\n".encode())
    s3.put_object(Bucket="hr-data", Key="notes.txt", Body=f"paid with {CARD} today\nand again\n".encode())
    s3.put_object(Bucket="hr-data", Key="kms/deploy.env", Body=f"aws_secret_access_key = {AWS_SECRET}\n".encode(),
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    s3.put_object(Bucket="hr-data", Key="clean.txt", Body=b"nothing to see\n")
    s3.put_object(Bucket="hr-data", Key="scans/letter.pdf", Body=pdf_document(["Dear Jane,", f"your SSN {SSN}"]))
    s3.put_object(Bucket="hr-data", Key="scans/broken.pdf", Body=b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n")
    s3.put_object(Bucket="hr-data", Key="scans/crash.pdf", Body=pdf_reader_bomb())
    s3.put_object(Bucket="hr-data", Key="logs/app.log", Body=f"ssn {SSN}\n".encode())

    job = m.create_classification_job(
        jobType="ONE_TIME", name="hr sweep", clientToken="hr-sweep-1", description="first look",
        s3JobDefinition=job_definition(acct, "hr-data", scoping={"excludes": {"and": [
            {"simpleScopeTerm": {"key": "OBJECT_KEY", "comparator": "STARTS_WITH", "values": ["logs/"]}}]}}))
    assert job["jobArn"] == f"arn:aws:macie2:us-east-1:{acct}:classification-job/{job['jobId']}"
    # The same client token is the same job.
    again = m.create_classification_job(jobType="ONE_TIME", name="hr sweep", clientToken="hr-sweep-1",
                                        s3JobDefinition=job_definition(acct, "hr-data"))
    assert again["jobId"] == job["jobId"]
    done = wait_for(job["jobId"], m)
    assert done["statistics"] == {"approximateNumberOfObjectsToProcess": 7.0, "numberOfRuns": 1.0}
    # Coffer's additions (botocore keeps only Macie's members): what the run skipped, and why.
    shown = json.loads(discovery(server, "job", "show", job["jobId"], "--json").stdout)
    assert shown["cofferLastRun"]["skipped"] == {"UNSUPPORTED_FILE_TYPE": 2}, shown["cofferLastRun"]
    # The broken PDF and the one that kills its reader; the server goes on either way.
    assert shown["cofferLastRun"]["skippedExample"]["UNSUPPORTED_FILE_TYPE"].startswith("PDF: ")
    assert shown["cofferRunAs"] == f"arn:aws:iam::{acct}:root"
    assert done["description"] == "first look" and done["lastRunErrorStatus"] == {"code": "NONE"}

    ids = m.list_findings(findingCriteria={"criterion": {
        "classificationDetails.jobId": {"eq": [job["jobId"]]}}})["findingIds"]
    findings = {f["resourcesAffected"]["s3Object"]["key"]: f for f in m.get_findings(findingIds=ids)["findings"]}
    assert set(findings) == {"people.csv", "notes.txt", "kms/deploy.env", "scans/letter.pdf"}
    letter = findings["scans/letter.pdf"]["classificationDetails"]["result"]
    assert letter["mimeType"] == "application/pdf"
    assert letter["sensitiveData"][0]["detections"][0]["occurrences"]["lineRanges"][0]["start"] == 2
    people = findings["people.csv"]
    assert people["type"] == "SensitiveData:S3Object/Personal"
    assert people["severity"] == {"description": "High", "score": 3}
    detection = people["classificationDetails"]["result"]["sensitiveData"][0]["detections"][0]
    assert detection["type"] == "USA_SOCIAL_SECURITY_NUMBER" and detection["count"] == 1
    assert detection["occurrences"]["cells"] == [{"row": 2, "column": 2, "columnName": "ssn", "cellReference": "B2"}]
    notes = findings["notes.txt"]
    assert notes["type"] == "SensitiveData:S3Object/Financial"
    line = notes["classificationDetails"]["result"]["sensitiveData"][0]["detections"][0]["occurrences"]["lineRanges"]
    assert line == [{"start": 1, "end": 1, "startColumn": 11}]
    secret = findings["kms/deploy.env"]
    assert secret["type"] == "SensitiveData:S3Object/Credentials"
    assert secret["resourcesAffected"]["s3Object"]["serverSideEncryption"] == {
        "encryptionType": "aws:kms", "kmsMasterKeyId": key}
    assert secret["classificationDetails"]["originType"] == "SENSITIVE_DATA_DISCOVERY_JOB"
    assert secret["classificationDetails"]["jobArn"] == job["jobArn"]

    # Criteria, sorting and statistics.
    financial = m.list_findings(findingCriteria={"criterion": {
        "classificationDetails.result.sensitiveData.detections.type": {"eq": ["CREDIT_CARD_NUMBER"]}}})
    assert financial["findingIds"] == [notes["id"]]
    not_high = m.list_findings(findingCriteria={"criterion": {"severity.description": {"neq": ["High"]}}})
    assert not_high["findingIds"] == []
    by_key = m.list_findings(sortCriteria={"attributeName": "resourcesAffected.s3Object.key", "orderBy": "ASC"},
                             findingCriteria={"criterion": {"resourcesAffected.s3Bucket.name": {"eq": ["hr-data"]}}})
    assert by_key["findingIds"] == [secret["id"], notes["id"], people["id"],
                                    findings["scans/letter.pdf"]["id"]]
    paged = m.list_findings(maxResults=3)
    assert len(paged["findingIds"]) == 3 and paged["nextToken"]
    assert len(m.list_findings(maxResults=3, nextToken=paged["nextToken"])["findingIds"]) == 1
    stats = m.get_finding_statistics(groupBy="type", sortCriteria={"attributeName": "groupKey", "orderBy": "ASC"})
    assert stats["countsByGroup"] == [
        {"groupKey": "SensitiveData:S3Object/Credentials", "count": 1},
        {"groupKey": "SensitiveData:S3Object/Financial", "count": 1},
        {"groupKey": "SensitiveData:S3Object/Personal", "count": 2}]

    # The jobs list, filtered.
    items = m.list_classification_jobs(filterCriteria={"includes": [
        {"key": "jobStatus", "comparator": "EQ", "values": ["COMPLETE"]}]})["items"]
    assert [i["jobId"] for i in items] == [job["jobId"]]

    # Every finding reached the webhook as a Macie Finding event; no value is anywhere.
    deadline = time.time() + 10
    while len([r for r in Hook.received if r[2]["detail"]["id"] in ids]) < 4 and time.time() < deadline:
        time.sleep(0.1)
    events = [r for r in Hook.received if r[2]["detail"]["id"] in ids]
    assert sorted(e[2]["detail"]["id"] for e in events) == sorted(ids)
    assert all(p == "/findings" and ua == "coffer-findings-webhook" and e["detail-type"] == "Macie Finding"
               and e["source"] == "aws.macie" for p, ua, e in events)
    everything = json.dumps(findings, default=str) + json.dumps([e[2] for e in events])
    assert not any(v in everything for v in VALUES)

    # Each object read is an audit event of the job's principal; KMS Decrypt for the SSE-KMS one.
    trail = audit_events(server.data_dir)
    reads = [e for e in trail if e["eventName"] == "GetObject" and "coffer-discovery" in e.get("userAgent", "")]
    assert sorted(e["requestParameters"]["key"] for e in reads) == [
        "clean.txt", "kms/deploy.env", "notes.txt", "people.csv", "scans/broken.pdf", "scans/crash.pdf",
        "scans/letter.pdf"]
    assert any(e["eventName"] == "Decrypt" and "coffer-discovery" in e.get("userAgent", "") for e in trail)
    assert any(e["eventName"] == "CreateClassificationJob" and e["eventSource"] == "macie2.amazonaws.com"
               for e in trail)


def test_requests_are_checked_as_macie_checks_them(server):
    m, acct = macie(server), account(server)
    server.client("s3").create_bucket(Bucket="checks")
    bad = [
        dict(jobType="SCHEDULED", name="x", s3JobDefinition=job_definition(acct, "checks")),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "checks"),
             scheduleFrequency={"dailySchedule": {}}),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "no-such-bucket")),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition("999999999999", "checks")),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "checks"), samplingPercentage=0),
        dict(jobType="ONE_TIME", name="", s3JobDefinition=job_definition(acct, "checks")),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "checks"),
             managedDataIdentifierSelector="INCLUDE"),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "checks"),
             managedDataIdentifierSelector="INCLUDE", managedDataIdentifierIds=["NOT_AN_IDENTIFIER"]),
        dict(jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "checks", scoping={
            "includes": {"and": [{"simpleScopeTerm": {"key": "OBJECT_SIZE", "comparator": "GT", "values": ["big"]}}]}})),
        dict(jobType="WEEKLY", name="x", s3JobDefinition=job_definition(acct, "checks")),
    ]
    for req in bad:
        code, status, message = error_code(lambda: m.create_classification_job(**req))
        assert (code, status) == ("ValidationException", 400), (req, code, message)
        assert message.endswith("."), message
    assert error_code(lambda: m.describe_classification_job(jobId="0" * 32))[:2] == ("ResourceNotFoundException", 404)
    assert error_code(lambda: m.create_classification_job(
        jobType="ONE_TIME", name="x", s3JobDefinition=job_definition(acct, "checks"),
        customDataIdentifierIds=["nope"]))[:2] == ("ResourceNotFoundException", 404)
    assert error_code(lambda: m.get_findings(findingIds=[]))[0] == "ValidationException"
    assert error_code(lambda: m.get_finding_statistics(groupBy="colour"))[0] == "ValidationException"
    managed = m.list_managed_data_identifiers()["items"]
    assert len(managed) >= 45 and {"id": "USA_SOCIAL_SECURITY_NUMBER", "category": "PERSONAL_INFORMATION"} in managed
    # Unsigned and wrongly signed requests are refused before anything happens.
    wrong = macie(server, "AKIAIOSFODNN7EXAMPLE", "x" * 40)
    assert error_code(lambda: wrong.list_findings())[1] == 403


def test_sampling_selectors_and_the_job_lifecycle(server):
    s3, m, acct = server.client("s3"), macie(server), account(server)
    s3.create_bucket(Bucket="many")
    for i in range(120):
        s3.put_object(Bucket="many", Key=f"rows/{i:03}.txt", Body=f"customer {i} card {CARD}\nssn {SSN}\n".encode())
    sampled = m.create_classification_job(jobType="ONE_TIME", name="sample", samplingPercentage=25,
                                          managedDataIdentifierSelector="INCLUDE",
                                          managedDataIdentifierIds=["USA_SOCIAL_SECURITY_NUMBER"],
                                          s3JobDefinition=job_definition(acct, "many"))
    done = wait_for(sampled["jobId"], m, timeout=120)
    n = done["statistics"]["approximateNumberOfObjectsToProcess"]
    assert 15 <= n <= 45, n
    got = m.get_finding_statistics(groupBy="classificationDetails.jobId", findingCriteria={"criterion": {
        "classificationDetails.jobId": {"eq": [sampled["jobId"]]}}})["countsByGroup"]
    assert got == [{"groupKey": sampled["jobId"], "count": int(n)}]
    ids = m.list_findings(findingCriteria={"criterion": {"classificationDetails.jobId": {"eq": [sampled["jobId"]]}}},
                          maxResults=50)["findingIds"]
    types = {d["type"] for f in m.get_findings(findingIds=ids)["findings"]
             for c in f["classificationDetails"]["result"]["sensitiveData"] for d in c["detections"]}
    assert types == {"USA_SOCIAL_SECURITY_NUMBER"}, "INCLUDE keeps to the named identifiers"

    # A scheduled job without an initial run waits for its schedule; it can be paused, resumed
    # and cancelled, and a finished job can't be changed.
    weekly = m.create_classification_job(jobType="SCHEDULED", name="weekly", initialRun=False,
                                         scheduleFrequency={"weeklySchedule": {"dayOfWeek": "MONDAY"}},
                                         s3JobDefinition=job_definition(acct, "many"))
    assert m.describe_classification_job(jobId=weekly["jobId"])["jobStatus"] == "IDLE"
    m.update_classification_job(jobId=weekly["jobId"], jobStatus="USER_PAUSED")
    paused = m.describe_classification_job(jobId=weekly["jobId"])
    assert paused["jobStatus"] == "USER_PAUSED" and paused["userPausedDetails"]["jobExpiresAt"]
    m.update_classification_job(jobId=weekly["jobId"], jobStatus="RUNNING")
    assert m.describe_classification_job(jobId=weekly["jobId"])["jobStatus"] == "IDLE"
    m.update_classification_job(jobId=weekly["jobId"], jobStatus="CANCELLED")
    assert m.describe_classification_job(jobId=weekly["jobId"])["jobStatus"] == "CANCELLED"
    assert error_code(lambda: m.update_classification_job(jobId=weekly["jobId"], jobStatus="RUNNING"))[0] == \
        "ValidationException"
    assert error_code(lambda: m.update_classification_job(jobId=sampled["jobId"], jobStatus="CANCELLED"))[0] == \
        "ValidationException"

    # A scheduled job with an initial run looks at everything now, then idles until its schedule.
    daily = m.create_classification_job(jobType="SCHEDULED", name="daily", initialRun=True,
                                        scheduleFrequency={"dailySchedule": {}},
                                        s3JobDefinition=job_definition(acct, "many", scoping={"includes": {"and": [
                                            {"simpleScopeTerm": {"key": "OBJECT_KEY", "comparator": "STARTS_WITH",
                                                                 "values": ["rows/00"]}}]}}))
    idle = wait_for(daily["jobId"], m, statuses=("IDLE",))
    assert idle["statistics"] == {"approximateNumberOfObjectsToProcess": 10.0, "numberOfRuns": 1.0}


def test_a_job_reads_only_what_its_creator_may(server):
    s3, m, acct = server.client("s3"), macie(server), account(server)
    iam, kms = server.client("iam"), server.client("kms")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    for b in ("analyst-ok", "analyst-closed"):
        s3.create_bucket(Bucket=b)
        s3.put_object(Bucket=b, Key="plain.txt", Body=f"ssn {SSN}\n".encode())
    s3.put_object(Bucket="analyst-ok", Key="sealed.txt", Body=f"ssn {SSN}\n".encode(),
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    iam.create_user(UserName="analyst")
    iam.put_user_policy(UserName="analyst", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "macie2:*", "Resource": "*"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"],
             "Resource": ["arn:aws:s3:::analyst-ok", "arn:aws:s3:::analyst-ok/*"]}]}))
    creds = iam.create_access_key(UserName="analyst")["AccessKey"]
    analyst = macie(server, creds["AccessKeyId"], creds["SecretAccessKey"])
    job = analyst.create_classification_job(jobType="ONE_TIME", name="analyst",
                                            s3JobDefinition=job_definition(acct, "analyst-ok", "analyst-closed"))
    wait_for(job["jobId"], analyst)
    shown = json.loads(discovery(server, "job", "show", job["jobId"], "--json").stdout)
    assert shown["cofferRunAs"] == f"arn:aws:iam::{acct}:user/analyst"
    assert shown["cofferLastRun"]["skipped"] == {"ACCESS_DENIED": 1, "UNABLE_TO_DECRYPT": 1}
    raw = json.loads(subprocess.run(
        ["aws", "macie2", "describe-classification-job", "--job-id", job["jobId"],
         "--endpoint-url", server.endpoint + "/_coffer/macie2", "--output", "json"],
        env={**server.cli_env(), "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
             "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"]},
        capture_output=True, text=True, check=True).stdout)
    assert raw["jobStatus"] == "COMPLETE"
    ids = m.list_findings(findingCriteria={"criterion": {"classificationDetails.jobId": {"eq": [job["jobId"]]}}})
    keys = {(f["resourcesAffected"]["s3Bucket"]["name"], f["resourcesAffected"]["s3Object"]["key"])
            for f in m.get_findings(findingIds=ids["findingIds"])["findings"]}
    assert keys == {("analyst-ok", "plain.txt")}
    denied = [e for e in audit_events(server.data_dir)
              if e["eventName"] == "GetObject" and e.get("errorCode")
              and e["userIdentity"]["arn"].endswith(":user/analyst")]
    assert sorted((e["requestParameters"]["bucketName"], e["requestParameters"]["key"], e["errorCode"])
                  for e in denied) == [("analyst-closed", "plain.txt", "ACCESS_DENIED"),
                                       ("analyst-ok", "sealed.txt", "UNABLE_TO_DECRYPT")]
    # Without macie2 permissions, nothing.
    iam.delete_user_policy(UserName="analyst", PolicyName="p")
    code, status, _ = error_code(lambda: analyst.list_findings())
    assert (code, status) == ("AccessDeniedException", 403)


def test_automated_discovery_classifies_new_objects(server):
    s3, m = server.client("s3"), macie(server)
    for b in ("auto-loud", "auto-quiet"):
        s3.create_bucket(Bucket=b)
    s3.put_object(Bucket="auto-loud", Key="before.txt", Body=f"ssn {SSN}\n".encode())
    assert m.get_automated_discovery_configuration()["status"] == "DISABLED"
    scope = m.list_classification_scopes()["classificationScopes"][0]["id"]
    m.update_classification_scope(id=scope, s3={"excludes": {"bucketNames": ["auto-quiet"], "operation": "ADD"}})
    assert m.get_classification_scope(id=scope)["s3"]["excludes"]["bucketNames"] == ["auto-quiet"]
    m.update_automated_discovery_configuration(status="ENABLED")
    config = m.get_automated_discovery_configuration()
    assert config["status"] == "ENABLED" and config["classificationScopeId"] == scope
    s3.put_object(Bucket="auto-loud", Key="after.txt", Body=f"card {CARD}\n".encode())
    s3.put_object(Bucket="auto-quiet", Key="after.txt", Body=f"card {CARD}\n".encode())
    mp = s3.create_multipart_upload(Bucket="auto-loud", Key="big.txt")
    part = s3.upload_part(Bucket="auto-loud", Key="big.txt", UploadId=mp["UploadId"], PartNumber=1,
                          Body=f"aws_secret_access_key={AWS_SECRET}\n".encode())
    s3.complete_multipart_upload(Bucket="auto-loud", Key="big.txt", UploadId=mp["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    automated = {"criterion": {"classificationDetails.originType": {"eq": ["AUTOMATED_SENSITIVE_DATA_DISCOVERY"]}}}
    deadline = time.time() + 30
    while time.time() < deadline and len(m.list_findings(findingCriteria=automated)["findingIds"]) < 2:
        time.sleep(0.2)
    time.sleep(1)
    ids = m.list_findings(findingCriteria=automated)["findingIds"]
    found = {(f["resourcesAffected"]["s3Bucket"]["name"], f["resourcesAffected"]["s3Object"]["key"], f["type"])
             for f in m.get_findings(findingIds=ids)["findings"]}
    # Objects from before it was enabled and excluded buckets are left alone.
    assert found == {("auto-loud", "after.txt", "SensitiveData:S3Object/Financial"),
                     ("auto-loud", "big.txt", "SensitiveData:S3Object/Credentials")}
    m.update_automated_discovery_configuration(status="DISABLED")
    s3.put_object(Bucket="auto-loud", Key="later.txt", Body=f"card {CARD}\n".encode())
    time.sleep(1.5)
    assert len(m.list_findings(findingCriteria=automated)["findingIds"]) == 2
    assert error_code(lambda: m.get_classification_scope(id="0" * 32))[:2] == ("ResourceNotFoundException", 404)


def test_findings_survive_a_restart(server):
    m = macie(server)
    before = m.list_findings(maxResults=50)["findingIds"]
    assert before
    server.stop()
    server.start()
    m = macie(server)
    assert m.list_findings(maxResults=50)["findingIds"] == before


def discovery(server, *args):
    from conftest import coffer_bin
    return subprocess.run([coffer_bin(), "discovery", *args, "--endpoint", server.endpoint,
                           "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=120)


def test_the_cli(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="cli-bucket")
    s3.put_object(Bucket="cli-bucket", Key="hr/people.csv", Body=f"name,ssn\nJane,{SSN}\n".encode())
    s3.put_object(Bucket="cli-bucket", Key="hr/debug.log", Body=f"ssn {SSN}\n".encode())
    s3.put_object(Bucket="cli-bucket", Key="ops/notes.txt", Body=f"card {CARD}\n".encode())
    r = discovery(server, "job", "create", "--name", "cli", "--bucket", "cli-bucket/hr/", "--skip-extension", "log",
                  "--wait", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["jobStatus"] == "COMPLETE" and job["cofferLastRun"]["objectsClassified"] == 1
    human = discovery(server, "job", "show", job["jobId"])
    assert "COMPLETE" in human.stdout and "1 classified" in human.stdout, human.stdout
    assert job["jobId"] in discovery(server, "job", "list").stdout

    r = discovery(server, "findings", "--bucket", "cli-bucket", "--severity", "high",
                  "--identifier", "USA_SOCIAL_SECURITY_NUMBER", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [f["resourcesAffected"]["s3Object"]["key"] for f in got] == ["hr/people.csv"]
    assert json.loads(discovery(server, "findings", "--bucket", "cli-bucket", "--identifier",
                                "CREDIT_CARD_NUMBER", "--json").stdout) == []
    table = discovery(server, "findings", "--bucket", "cli-bucket")
    assert "s3://cli-bucket/hr/people.csv" in table.stdout and "USA_SOCIAL_SECURITY_NUMBER×1" in table.stdout
    assert not any(v in table.stdout for v in VALUES)
    stats = json.loads(discovery(server, "stats", "--by", "bucket", "--json").stdout)
    assert {"groupKey": "cli-bucket", "count": 1} in stats

    status = json.loads(discovery(server, "automated", "exclude", "cli-bucket", "--json").stdout)
    assert "cli-bucket" in status["excludedBuckets"]
    status = json.loads(discovery(server, "automated", "include", "cli-bucket", "--json").stdout)
    assert "cli-bucket" not in status["excludedBuckets"]

    missing = discovery(server, "job", "show", "f" * 32)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr
    bad = discovery(server, "job", "create", "--name", "x", "--bucket", "cli-bucket", "--schedule", "hourly")
    assert bad.returncode != 0 and "daily, weekly:<day> or monthly:<1-31>" in bad.stderr


def test_custom_identifiers_and_allow_lists_in_jobs(server):
    s3, m, acct = server.client("s3"), macie(server), account(server)
    s3.create_bucket(Bucket="custom-data")
    s3.put_object(Bucket="custom-data", Key="staff.txt", Body=(
        "employee EMP-482913 joined\nemployee EMP-100200 left\nemployee EMP-555555 (test account)\n"
        f"ssn {SSN}\nssn 219-09-9999\n").encode())
    s3.put_object(Bucket="custom-data", Key="one.txt", Body=b"employee EMP-777111\n")
    s3.put_object(Bucket="custom-data", Key="allowed/words.txt", Body=b"219-09-9999\n")

    assert m.test_custom_data_identifier(regex=r"EMP-[0-9]{6}", keywords=["employee"], ignoreWords=["654321"],
                                         sampleText="employee EMP-123456, EMP-654321 test")["matchCount"] == 1
    cdi = m.create_custom_data_identifier(
        name="employee-id", regex=r"EMP-[0-9]{6}", keywords=["employee"], ignoreWords=["555555"],
        maximumMatchDistance=20, clientToken="cdi-1",
        severityLevels=[{"occurrencesThreshold": 1, "severity": "LOW"},
                        {"occurrencesThreshold": 2, "severity": "HIGH"}])["customDataIdentifierId"]
    assert m.create_custom_data_identifier(name="employee-id", regex="x+", clientToken="cdi-1")[
        "customDataIdentifierId"] == cdi
    assert error_code(lambda: m.create_custom_data_identifier(name="employee-id", regex="x+"))[0] == \
        "ConflictException"
    assert error_code(lambda: m.create_custom_data_identifier(name="bad", regex="("))[0] == "ValidationException"
    got = m.get_custom_data_identifier(id=cdi)
    assert got["arn"].endswith(f":custom-data-identifier/{cdi}") and got["maximumMatchDistance"] == 20
    assert [i["id"] for i in m.list_custom_data_identifiers()["items"]] == [cdi]

    words = m.create_allow_list(name="test ssns", clientToken="al-1", criteria={
        "s3WordsList": {"bucketName": "custom-data", "objectKey": "allowed/words.txt"}})["id"]
    assert m.get_allow_list(id=words)["status"] == {"code": "OK"}
    missing = m.create_allow_list(name="missing", clientToken="al-2", criteria={
        "s3WordsList": {"bucketName": "custom-data", "objectKey": "nope.txt"}})["id"]
    assert m.get_allow_list(id=missing)["status"]["code"] == "S3_OBJECT_NOT_FOUND"
    regex = m.create_allow_list(name="regex", clientToken="al-3", criteria={"regex": "123-45-[0-9]{4}"})["id"]
    assert {a["id"] for a in m.list_allow_lists()["allowLists"]} == {words, missing, regex}

    job = m.create_classification_job(
        jobType="ONE_TIME", name="custom", customDataIdentifierIds=[cdi], allowListIds=[words],
        managedDataIdentifierSelector="INCLUDE", managedDataIdentifierIds=["USA_SOCIAL_SECURITY_NUMBER"],
        s3JobDefinition=job_definition(acct, "custom-data", scoping={"excludes": {"and": [
            {"simpleScopeTerm": {"key": "OBJECT_KEY", "comparator": "STARTS_WITH", "values": ["allowed/"]}}]}}))
    wait_for(job["jobId"], m)
    ids = m.list_findings(findingCriteria={"criterion": {"classificationDetails.jobId": {"eq": [job["jobId"]]}}})
    found = {f["resourcesAffected"]["s3Object"]["key"]: f for f in m.get_findings(findingIds=ids["findingIds"])["findings"]}
    staff = found["staff.txt"]["classificationDetails"]["result"]
    assert found["staff.txt"]["type"] == "SensitiveData:S3Object/Multiple"
    custom = staff["customDataIdentifiers"]
    # Two employee ids (the ignore word drops the third): HIGH by the severity levels.
    assert custom["totalCount"] == 2 and custom["detections"][0]["arn"] == got["arn"]
    assert custom["detections"][0]["name"] == "employee-id"
    assert [r["start"] for r in custom["detections"][0]["occurrences"]["lineRanges"]] == [1, 2]
    # The allow list's word is not a finding; the other SSN is.
    ssn = staff["sensitiveData"][0]["detections"][0]
    assert (ssn["type"], ssn["count"]) == ("USA_SOCIAL_SECURITY_NUMBER", 1)
    assert found["one.txt"]["type"] == "SensitiveData:S3Object/CustomIdentifier"
    assert found["one.txt"]["severity"]["description"] == "Low"
    assert found["staff.txt"]["severity"]["description"] == "High"

    # An identifier only custom ones: NONE needs at least one.
    assert error_code(lambda: m.create_classification_job(
        jobType="ONE_TIME", name="none", managedDataIdentifierSelector="NONE",
        s3JobDefinition=job_definition(acct, "custom-data")))[0] == "ValidationException"
    weekly = m.create_classification_job(jobType="SCHEDULED", name="uses list", allowListIds=[regex],
                                         scheduleFrequency={"dailySchedule": {}},
                                         s3JobDefinition=job_definition(acct, "custom-data"))
    assert error_code(lambda: m.delete_allow_list(id=regex))[0] == "ValidationException"
    m.delete_allow_list(id=regex, ignoreJobChecks="true")
    m.update_classification_job(jobId=weekly["jobId"], jobStatus="CANCELLED")
    m.delete_custom_data_identifier(id=cdi)
    assert m.get_custom_data_identifier(id=cdi)["deleted"] is True
    assert m.list_custom_data_identifiers()["items"] == []
    assert error_code(lambda: m.create_classification_job(
        jobType="ONE_TIME", name="gone", customDataIdentifierIds=[cdi],
        s3JobDefinition=job_definition(acct, "custom-data")))[0] == "ResourceNotFoundException"
    batch = m.batch_get_custom_data_identifiers(ids=[cdi, "0" * 32])
    assert batch["customDataIdentifiers"][0]["deleted"] is True and batch["notFoundIdentifierIds"] == ["0" * 32]


def test_a_job_over_many_pages_stores_every_page_and_counts_each_object_once():
    """A job reads, scans and stores a page of objects at a time, saving its progress after each;
    with pages of two objects, a bucket of nine takes five pages, and every finding and counter
    is there at the end."""
    with tempfile.TemporaryDirectory(prefix="coffer-test-") as d:
        c = Coffer(pathlib.Path(d) / "data")
        c.extra_args = ["--discovery-job-page", "2"]
        c.start()
        try:
            s3, m, acct = c.client("s3"), macie(c), account(c)
            s3.create_bucket(Bucket="paged")
            sensitive = [f"doc-{i}.txt" for i in range(7)]
            for i, key in enumerate(sensitive):
                value = f"ssn {SSN}" if i % 2 else f"card {CARD}"
                s3.put_object(Bucket="paged", Key=key, Body=f"line {i}: {value}\n".encode())
            for key in ("clean-1.txt", "clean-2.txt"):  # listed first: the last page has a finding
                s3.put_object(Bucket="paged", Key=key, Body=b"nothing to see\n")
            job = m.create_classification_job(jobType="ONE_TIME", name="paged",
                                              s3JobDefinition=job_definition(acct, "paged"))
            wait_for(job["jobId"], m)
            run = json.loads(discovery(c, "job", "show", job["jobId"], "--json").stdout)["cofferLastRun"]
            assert run["objectsClassified"] == 9 and run["objectsWithFindings"] == 7, run
            ids = m.list_findings(findingCriteria={"criterion": {
                "classificationDetails.jobId": {"eq": [job["jobId"]]}}})["findingIds"]
            keys = sorted(f["resourcesAffected"]["s3Object"]["key"] for f in m.get_findings(findingIds=ids)["findings"])
            assert keys == sensitive
        finally:
            c.stop()


def test_a_scheduled_job_runs_again_on_its_schedule_and_findings_expire(tmp_path):
    """A daily job with an initial run classifies what is there, idles until its next date, and
    then — the schedule clock run a day ahead, after a restart — classifies only what was written
    since its last run."""
    with tempfile.TemporaryDirectory(prefix="coffer-test-") as d:
        c = Coffer(pathlib.Path(d) / "data").start()
        try:
            s3, m, acct = c.client("s3"), macie(c), account(c)
            s3.create_bucket(Bucket="daily")
            s3.put_object(Bucket="daily", Key="old.txt", Body=f"ssn {SSN}\n".encode())
            job = m.create_classification_job(jobType="SCHEDULED", name="daily", initialRun=True,
                                              scheduleFrequency={"dailySchedule": {}},
                                              s3JobDefinition=job_definition(acct, "daily"))
            first = wait_for(job["jobId"], m, statuses=("IDLE",))
            assert first["statistics"] == {"approximateNumberOfObjectsToProcess": 1.0, "numberOfRuns": 1.0}
            s3.put_object(Bucket="daily", Key="new.txt", Body=f"card {CARD}\n".encode())
            time.sleep(3)
            # Nothing runs before its date.
            assert m.describe_classification_job(jobId=job["jobId"])["statistics"]["numberOfRuns"] == 1.0
            old_finding = m.get_findings(findingIds=m.list_findings()["findingIds"])["findings"][0]
            c.stop()
            c.extra_args = ["--discovery-clock-offset", "25h"]
            c.start()
            m = macie(c)
            deadline = time.time() + 30
            while time.time() < deadline:
                d2 = m.describe_classification_job(jobId=job["jobId"])
                if d2["statistics"]["numberOfRuns"] == 2.0 and d2["jobStatus"] == "IDLE":
                    break
                time.sleep(0.2)
            assert d2["statistics"] == {"approximateNumberOfObjectsToProcess": 1.0, "numberOfRuns": 2.0}
            found = {f["resourcesAffected"]["s3Object"]["key"]: f
                     for f in m.get_findings(findingIds=m.list_findings()["findingIds"])["findings"]}
            assert set(found) == {"old.txt", "new.txt"}
            assert found["new.txt"]["type"] == "SensitiveData:S3Object/Financial"
            assert found["old.txt"]["updatedAt"] == old_finding["updatedAt"], "the old object was not read again"

            # Findings are kept 90 days after their last update (or --findings-retention), on the
            # same clock: 91 days on, a 100-day retention keeps them and the default deletes them.
            def findings_after_restart(*args):
                c.stop()
                c.extra_args = ["--discovery-clock-offset", "91d", *args]
                c.start()
                time.sleep(2)
                return macie(c).list_findings()["findingIds"]

            assert len(findings_after_restart("--findings-retention", "100d")) == 2
            deadline = time.time() + 20
            left = findings_after_restart()
            while left and time.time() < deadline:
                time.sleep(0.3)
                left = macie(c).list_findings()["findingIds"]
            assert left == [], "findings past 90 days are deleted"
        finally:
            c.stop()
        r = subprocess.run([coffer_bin(), "server", "--data-dir", str(pathlib.Path(d) / "other"),
                            "--findings-retention", "12h"], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "at least 1d" in r.stderr, r.stderr


def test_bucket_criteria_choose_the_buckets_when_the_job_runs(server):
    s3, m, acct = server.client("s3"), macie(server), account(server)

    def buckets_of(job_id):
        groups = m.get_finding_statistics(groupBy="resourcesAffected.s3Bucket.name", findingCriteria={
            "criterion": {"classificationDetails.jobId": {"eq": [job_id]}}})["countsByGroup"]
        return {g["groupKey"] for g in groups}

    for b, tags in [("crit-a", {"team": "pay"}), ("crit-b", {"team": "pay", "env": "test"}), ("crit-c", {})]:
        s3.create_bucket(Bucket=b)
        if tags:
            s3.put_bucket_tagging(Bucket=b, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
        s3.put_object(Bucket=b, Key="rows.txt", Body=f"ssn {SSN}\n".encode())
    by_tags = {
        "includes": {"and": [{"tagCriterion": {"comparator": "EQ", "tagValues": [{"key": "team", "value": "pay"}]}}]},
        "excludes": {"and": [{"tagCriterion": {"comparator": "EQ", "tagValues": [{"key": "env", "value": "test"}]}}]},
    }
    job = m.create_classification_job(jobType="ONE_TIME", name="by-tags", s3JobDefinition={"bucketCriteria": by_tags})
    wait_for(job["jobId"], m)
    assert buckets_of(job["jobId"]) == {"crit-a"}, "included by tag, and the excluded tag wins"
    listed = [j for j in m.list_classification_jobs()["items"] if j["jobId"] == job["jobId"]]
    assert listed[0]["bucketCriteria"] == by_tags and "bucketDefinitions" not in listed[0]
    assert m.describe_classification_job(jobId=job["jobId"])["s3JobDefinition"]["bucketCriteria"] == by_tags

    # A bucket whose policy lets anyone read is PUBLIC. (Policies naming other accounts are refused
    # here, as principals must exist, so every bucket is NOT_SHARED.)
    s3.delete_public_access_block(Bucket="crit-c")
    s3.put_bucket_policy(Bucket="crit-c", Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::crit-c/*"}]}))
    for key, value, want in [("S3_BUCKET_EFFECTIVE_PERMISSION", "PUBLIC", {"crit-c"}),
                             ("S3_BUCKET_SHARED_ACCESS", "EXTERNAL", set())]:
        crit = {"includes": {"and": [{"simpleCriterion": {"comparator": "EQ", "key": key, "values": [value]}}]}}
        j = m.create_classification_job(jobType="ONE_TIME", name=key, s3JobDefinition={"bucketCriteria": crit})
        wait_for(j["jobId"], m)
        assert buckets_of(j["jobId"]) == want, key
    # By name, with NE: everything but the two named.
    names = {"includes": {"and": [
        {"simpleCriterion": {"comparator": "NE", "key": "S3_BUCKET_NAME", "values": ["crit-a", "crit-b"]}},
        {"simpleCriterion": {"comparator": "EQ", "key": "ACCOUNT_ID", "values": [acct]}}]}}
    j = m.create_classification_job(jobType="ONE_TIME", name="names", s3JobDefinition={"bucketCriteria": names})
    wait_for(j["jobId"], m, timeout=120)
    got = buckets_of(j["jobId"])
    assert "crit-c" in got and not {"crit-a", "crit-b"} & got

    bad = [
        ({"bucketCriteria": by_tags, **job_definition(acct, "crit-a")}, "not both"),
        ({"bucketCriteria": {"includes": {"and": [{"simpleCriterion": {"comparator": "EQ", "key": "OBJECT_KEY",
                                                                        "values": ["x"]}}]}}}, "simpleCriterion.key"),
        ({"bucketCriteria": {"includes": {"and": [{"simpleCriterion": {
            "comparator": "STARTS_WITH", "key": "S3_BUCKET_NAME", "values": ["crit"]}}]}}}, "EQ or NE"),
        ({"bucketCriteria": {"includes": {"and": [{"simpleCriterion": {
            "comparator": "EQ", "key": "S3_BUCKET_EFFECTIVE_PERMISSION", "values": ["OPEN"]}}]}}}, "PUBLIC"),
        ({"bucketCriteria": {}}, "at least one condition"),
    ]
    for definition, words in bad:
        code, status, message = error_code(lambda: m.create_classification_job(
            jobType="ONE_TIME", name="bad", s3JobDefinition=definition))
        assert (code, status) == ("ValidationException", 400) and words in message, (definition, message)


def test_findings_filters_suppress_findings_and_pages_walk_them_all(server, hook):
    s3, m, acct = server.client("s3"), macie(server), account(server)
    bucket = "suppress-data"
    s3.create_bucket(Bucket=bucket)
    for i in range(6):
        s3.put_object(Bucket=bucket, Key=f"ssn-{i}.txt", Body=f"ssn {SSN}\n".encode())
    for i in range(4):
        s3.put_object(Bucket=bucket, Key=f"card-{i}.txt", Body=f"card {CARD}\n".encode())
    first = m.create_classification_job(jobType="ONE_TIME", name="before the rule",
                                        s3JobDefinition=job_definition(acct, bucket))
    wait_for(first["jobId"], m)
    in_bucket = {"resourcesAffected.s3Bucket.name": {"eq": [bucket]}}
    cards = {**in_bucket, "classificationDetails.result.sensitiveData.detections.type": {
        "eq": ["CREDIT_CARD_NUMBER"]}}

    def ids(**criterion):
        out, token = [], None
        while True:
            page = m.list_findings(findingCriteria={"criterion": {**in_bucket, **criterion}}, maxResults=4,
                                   **({"nextToken": token} if token else {}))
            out += page["findingIds"]
            token = page.get("nextToken")
            if not token:
                return out

    assert len(ids()) == 10
    # A suppression rule archives the findings that already meet it.
    rule = m.create_findings_filter(name="cards are expected here", action="ARCHIVE",
                                    findingCriteria={"criterion": cards}, description="test cards",
                                    tags={"team": "payments"}, clientToken="rule-1")
    assert rule["arn"] == f"arn:aws:macie2:us-east-1:{acct}:findings-filter/{rule['id']}"
    assert m.create_findings_filter(name="cards are expected here", action="ARCHIVE", clientToken="rule-1",
                                    findingCriteria={"criterion": cards})["id"] == rule["id"]
    assert len(ids(archived={"eq": ["true"]})) == 4
    assert len(ids(archived={"eq": ["false"]})) == 6
    archived = m.get_findings(findingIds=ids(archived={"eq": ["true"]}))["findings"]
    assert all(f["archived"] and f["resourcesAffected"]["s3Object"]["key"].startswith("card-") for f in archived)
    got = m.get_findings_filter(id=rule["id"])
    assert (got["name"], got["action"], got["position"], got["tags"]) == (
        "cards are expected here", "ARCHIVE", 1, {"team": "payments"})
    assert got["findingCriteria"]["criterion"]["classificationDetails.result.sensitiveData.detections.type"] == {
        "eq": ["CREDIT_CARD_NUMBER"]}
    saved = m.create_findings_filter(name="just a view", action="NOOP",
                                     findingCriteria={"criterion": {"severity.description": {"eq": ["High"]}}})
    listed = m.list_findings_filters()["findingsFilterListItems"]
    assert [(f["id"], f["action"]) for f in listed if f["id"] in (rule["id"], saved["id"])] == [
        (rule["id"], "ARCHIVE"), (saved["id"], "NOOP")]
    m.update_findings_filter(id=saved["id"], name="high only", position=7)
    assert m.get_findings_filter(id=saved["id"])["name"] == "high only"
    assert len(ids(archived={"eq": ["true"]})) == 4, "a NOOP filter archives nothing"

    # Later findings that meet the rule are archived as they are stored, and not published.
    for i in range(4, 6):
        s3.put_object(Bucket=bucket, Key=f"card-{i}.txt", Body=f"card {CARD}\n".encode())
    s3.put_object(Bucket=bucket, Key="ssn-6.txt", Body=f"ssn {SSN}\n".encode())
    second = m.create_classification_job(jobType="ONE_TIME", name="after the rule",
                                         s3JobDefinition=job_definition(acct, bucket))
    wait_for(second["jobId"], m)
    job2 = {"classificationDetails.jobId": {"eq": [second["jobId"]]}}
    assert len(ids(**job2)) == 13
    suppressed = ids(**job2, archived={"eq": ["true"]})
    assert len(suppressed) == 6
    open_ids = ids(**job2, archived={"eq": ["false"]})
    deadline = time.time() + 10
    while len({r[2]["detail"]["id"] for r in Hook.received} & set(open_ids)) < 7 and time.time() < deadline:
        time.sleep(0.1)
    published = {r[2]["detail"]["id"] for r in Hook.received}
    assert set(open_ids) <= published and not set(suppressed) & published

    # Deleting the rule leaves what it archived archived.
    m.delete_findings_filter(id=rule["id"])
    assert error_code(lambda: m.get_findings_filter(id=rule["id"]))[:2] == ("ResourceNotFoundException", 404)
    assert len(ids(archived={"eq": ["true"]})) == 10
    stats = m.get_finding_statistics(groupBy="classificationDetails.jobId", findingCriteria={"criterion": {
        **in_bucket, "archived": {"eq": ["false"]}}})["countsByGroup"]
    assert sorted((g["groupKey"], g["count"]) for g in stats) == sorted(
        [(first["jobId"], 6), (second["jobId"], 7)])

    # Pages in a stored order and in one kept in memory walk every finding once, in order.
    every = m.list_findings(findingCriteria={"criterion": in_bucket}, maxResults=50,
                            sortCriteria={"attributeName": "resourcesAffected.s3Object.key", "orderBy": "DESC"})
    assert len(every["findingIds"]) == 23 and "nextToken" not in every
    for sort in [{"attributeName": "resourcesAffected.s3Object.key", "orderBy": "DESC"},
                 {"attributeName": "classificationDetails.result.sizeClassified", "orderBy": "ASC"}]:
        walked = [i for page in m.get_paginator("list_findings").paginate(
            findingCriteria={"criterion": in_bucket}, sortCriteria=sort, PaginationConfig={"PageSize": 5})
            for i in page["findingIds"]]
        assert sorted(walked) == sorted(every["findingIds"]) and len(set(walked)) == 23, sort
    by_id = {f["id"]: f["resourcesAffected"]["s3Object"]["key"] for f in m.get_findings(
        findingIds=every["findingIds"][:20])["findings"]}
    keys = [by_id[i] for i in every["findingIds"][:20]]
    assert keys == sorted(keys, reverse=True)
    page = m.list_findings(findingCriteria={"criterion": in_bucket}, maxResults=5)
    other_order = {"attributeName": "type", "orderBy": "ASC"}
    code, status, message = error_code(lambda: m.list_findings(
        findingCriteria={"criterion": in_bucket}, sortCriteria=other_order, nextToken=page["nextToken"]))
    assert (code, status) == ("ValidationException", 400) and "nextToken" in message

    # Bad filters are refused with Macie's errors.
    for kwargs, words in [
        ({"name": "ab", "action": "ARCHIVE"}, "3 to 64"),
        ({"name": "fine name", "action": "DELETE"}, "ARCHIVE or NOOP"),
        ({"name": "fine name", "action": "NOOP", "findingCriteria": {"criterion": {"type": {"eq": [5]}}}},
         "type.eq must be a list of strings"),
    ]:
        kwargs.setdefault("findingCriteria", {"criterion": in_bucket})
        code, status, message = error_code(lambda: m.create_findings_filter(**kwargs))
        assert (code, status) == ("ValidationException", 400) and words in message, message
    code, status, _ = error_code(lambda: m.create_findings_filter(
        name="high only", action="NOOP", findingCriteria={"criterion": in_bucket}))
    assert (code, status) == ("ConflictException", 409)

"""`coffer audit anomalies`: weeks of simulated ordinary traffic for many principals, then one
exfiltration — exactly the guilty principal is flagged and ordinary variation raises nothing; alerts
reach a webhook; --remediate deactivates the guilty IAM user's access key on a real server; and the
server's own audit log (with S3 byte counts) is read as the baseline."""

import datetime
import http.server
import json
import random
import subprocess
import threading

import pathlib
import tempfile
import time

import boto3
import botocore.config

from conftest import Coffer, audit_events, coffer_bin

ACCOUNT = "111122223333"
START = datetime.datetime(2026, 10, 21, tzinfo=datetime.timezone.utc)  # a Wednesday


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def event(t, arn, key, ip, name="GetObject", obj=None, kms_key=None, nbytes=0, error=None):
    resources = []
    if obj:
        resources.append({"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::data/{obj}", "accountId": ACCOUNT})
    if kms_key:
        resources.append({"type": "AWS::KMS::Key", "ARN": kms_key, "accountId": ACCOUNT})
    e = {
        "eventVersion": "1.11", "eventTime": ts(t), "eventName": name,
        "eventSource": "kms.amazonaws.com" if kms_key else "s3.amazonaws.com",
        "userIdentity": {"type": "IAMUser", "arn": arn, "accessKeyId": key, "accountId": ACCOUNT},
        "sourceIPAddress": ip, "resources": resources,
        "additionalEventData": {"bytesTransferredOut": nbytes},
    }
    if error:
        e["errorCode"] = error
    return e


def simulate(rng, users, weeks, end_hours_after=0, start=START):
    """Ordinary traffic: office hours on weekdays, a service account around the clock, busier
    mornings and random busy days, Poisson-like counts."""
    events = []
    hours = weeks * 7 * 24 + end_hours_after
    for h in range(hours):
        t0 = start + datetime.timedelta(hours=h)
        weekend = t0.weekday() >= 5
        for u in users:
            if (weekend and not u["service"]) or not (u["from"] <= t0.hour <= u["to"]):
                continue
            mean = u["rate"] * (1.8 if t0.hour == u["from"] + 1 else 1.0) * (1.5 if rng.random() < 0.1 else 1.0)
            n = max(0, int(rng.gauss(mean, mean ** 0.5)))
            for _ in range(n):
                t = t0 + datetime.timedelta(seconds=rng.randrange(3600))
                if u["keys"] and rng.random() < 0.25:
                    events.append(event(t, u["arn"], u["key"], u["ip"], "Decrypt", kms_key=rng.choice(u["keys"])))
                else:
                    events.append(event(t, u["arn"], u["key"], u["ip"], obj=f"{u['name']}/o{rng.randrange(u['objects'])}",
                                        nbytes=u["size"], error="NoSuchKey" if rng.random() < 0.005 else None))
    return events


def make_users(rng, n, thief=None):
    users = []
    for i in range(n):
        name = thief["name"] if (thief and i == 0) else f"user{i:03d}"
        start = 6 + rng.randrange(4)
        users.append({
            "name": name, "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
            "key": thief["key"] if (thief and i == 0) else f"AKIASIMULATED{i:07d}",
            "ip": f"10.0.{i}.{10 + rng.randrange(200)}", "service": i % 5 == 4,
            "from": 0 if i % 5 == 4 else start, "to": 23 if i % 5 == 4 else start + 8,
            "rate": 8.0 if i == 0 else rng.choice([2.0, 5.0, 10.0, 20.0, 40.0]),
            "objects": 30 + rng.randrange(200), "size": 4096 + rng.randrange(60000),
            "keys": [f"arn:aws:kms:us-east-1:{ACCOUNT}:key/sim-{i}-{k}" for k in range(1 + rng.randrange(2))],
        })
    users[0]["from"], users[0]["to"], users[0]["service"] = 8, 17, False
    return users


def exfiltration(user, at, n=10_000):
    return [event(at + datetime.timedelta(seconds=i % 3600), user["arn"], user["key"], user["ip"],
                  obj=f"everything/o{i}", nbytes=250_000) for i in range(n)]


def anomalies(*args, **kw):
    return subprocess.run([coffer_bin(), "audit", "anomalies", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def write_trail(path, events):
    path.write_text(json.dumps({"Records": events}))
    return str(path)


def test_exactly_the_guilty_principal_is_flagged(tmp_path):
    rng = random.Random(5)
    users = make_users(rng, 30)
    # Four weeks, then Monday up to 11:00.
    ordinary = simulate(rng, users, 4, end_hours_after=5 * 24 + 11)
    now = START + datetime.timedelta(weeks=4, days=5, hours=11)
    assert now.weekday() == 0
    guilty = users[0]
    theft = exfiltration(guilty, now - datetime.timedelta(hours=1))
    common = ["--now", ts(now), "--json", "--data-dir", str(tmp_path)]

    clean = anomalies("--events", write_trail(tmp_path / "clean.json", ordinary), *common)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["alerts"] == []

    # Ordinary variation over many other windows raises nothing either.
    for hours_back in (3, 7, 26, 50, 75, 100, 123):
        t = now - datetime.timedelta(hours=hours_back)
        r = anomalies("--events", str(tmp_path / "clean.json"), "--now", ts(t), "--json", "--data-dir", str(tmp_path))
        assert json.loads(r.stdout)["alerts"] == [], (t, r.stdout)

    r = anomalies("--events", write_trail(tmp_path / "theft.json", ordinary + theft), *common, "--fail-on-alert")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["principals"] == 30
    assert [a["principal"] for a in report["alerts"]] == [guilty["arn"]]
    alert = report["alerts"][0]
    assert alert["severity"] == "HIGH" and alert["accessKeys"] == [guilty["key"]]
    signals = {s["signal"]: s for s in alert["signals"]}
    assert {"requests", "distinct_objects", "bytes_read"} <= set(signals)
    assert signals["requests"]["observed"] >= 10_000 > signals["requests"]["threshold"]
    human = anomalies("--events", str(tmp_path / "theft.json"), "--now", ts(now), "--data-dir", str(tmp_path))
    assert guilty["arn"] in human.stdout and "1 alert(s)" in human.stdout


class Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_and_remediation_against_a_real_server(coffer, tmp_path):
    iam = coffer.client("iam")
    iam.create_user(UserName="thief")
    key = iam.create_access_key(UserName="thief")["AccessKey"]["AccessKeyId"]
    rng = random.Random(9)
    users = make_users(rng, 12, thief={"name": "thief", "key": key})
    ordinary = simulate(rng, users, 3, end_hours_after=5 * 24 + 10)
    now = START + datetime.timedelta(weeks=3, days=5, hours=10)
    trail = write_trail(tmp_path / "trail.json", ordinary + exfiltration(users[0], now - datetime.timedelta(hours=1)))

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = anomalies("--events", trail, "--now", ts(now), "--json", "--remediate",
                      "--webhook", f"http://127.0.0.1:{server.server_port}/coffer-alerts",
                      "--endpoint", coffer.endpoint, "--data-dir", str(coffer.data_dir))
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    alert = json.loads(r.stdout)["alerts"][0]
    assert alert["principal"].endswith(":user/thief")
    assert alert["remediation"][0]["result"] == f"deactivated access key {key} of thief"
    assert [k["Status"] for k in iam.list_access_keys(UserName="thief")["AccessKeyMetadata"]] == ["Inactive"]
    # The deactivation is in the server's own audit log.
    assert any(e["eventName"] == "UpdateAccessKey" and key in json.dumps(e["requestParameters"])
               for e in audit_events(coffer.data_dir))
    assert [(p, b["principal"], b["remediation"][0]["action"]) for p, b in Hook.received] == [
        ("/coffer-alerts", alert["principal"], "UpdateAccessKey")]
    bad = anomalies("--events", trail, "--now", ts(now), "--webhook", "ftp://x", "--data-dir", str(tmp_path))
    assert "http:// or https://" in bad.stderr


def test_the_servers_own_log_is_the_baseline(coffer):
    s3 = coffer.client("s3")
    s3.create_bucket(Bucket="anomaly-log")
    s3.put_object(Bucket="anomaly-log", Key="a.txt", Body=b"x" * 5000)
    for _ in range(3):
        s3.get_object(Bucket="anomaly-log", Key="a.txt")["Body"].read()
    gets = [e for e in audit_events(coffer.data_dir)
            if e["eventName"] == "GetObject" and e["requestParameters"].get("bucketName") == "anomaly-log"]
    assert [e["additionalEventData"]["bytesTransferredOut"] for e in gets] == [5000] * 3
    put = next(e for e in audit_events(coffer.data_dir) if e["eventName"] == "PutObject"
               and e["requestParameters"].get("bucketName") == "anomaly-log")
    assert put["additionalEventData"]["bytesTransferredIn"] == 5000
    r = anomalies("--data-dir", str(coffer.data_dir), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    # Minutes of history are no baseline: nobody is judged yet, so nothing is flagged.
    assert report["eventsRead"] >= 5 and report["alerts"] == []


def test_the_server_detects_and_remediates_an_exfiltration(tmp_path):
    """The server's own detection: three weeks of ordinary history (as CloudTrail, seeding the
    baselines) end now; then a real IAM user reads hundreds of objects through S3. Exactly that user
    is flagged: a POLICY finding listed through the Macie API, a webhook call, and its access key
    deactivated, which the audit log records. Coffer's own discovery reads flag nobody."""
    Hook.received.clear()
    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"Records": []}))
    with tempfile.TemporaryDirectory(prefix="coffer-test-") as d:
        c = Coffer(pathlib.Path(d) / "data", extra_args=[
            "--anomaly-interval", "1", "--anomaly-remediate", "on", "--anomaly-history", str(history),
            "--findings-webhook", f"http://127.0.0.1:{hook.server_port}/alerts"]).start()
        try:
            iam, s3 = c.client("iam"), c.client("s3")
            iam.create_user(UserName="thief")
            iam.put_user_policy(UserName="thief", PolicyName="read", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "macie2:*"], "Resource": "*"}]}))
            creds = iam.create_access_key(UserName="thief")["AccessKey"]
            rng = random.Random(21)
            users = make_users(rng, 12, thief={"name": "thief", "key": creds["AccessKeyId"]})
            # Office hours around the clock, so that the thief is judged whatever the hour now.
            users[0]["from"], users[0]["to"], users[0]["service"] = 0, 23, True
            now = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
            start = now - datetime.timedelta(weeks=3)
            ordinary = simulate(rng, users, 3, start=start)
            history.write_text(json.dumps({"Records": ordinary}))
            # A discovery job reading everything flags nobody: its reads are the service's.
            s3.create_bucket(Bucket="vault")
            for i in range(40):
                s3.put_object(Bucket="vault", Key=f"o{i}", Body=b"x" * 2000)
            findings_api = boto3.client(
                "macie2", endpoint_url=c.endpoint + "/_coffer/macie2", verify=c.ca, region_name="us-east-1",
                aws_access_key_id=c.credentials()[0], aws_secret_access_key=c.credentials()[1],
                config=botocore.config.Config(retries={"max_attempts": 1}))
            as_thief = boto3.client(
                "macie2", endpoint_url=c.endpoint + "/_coffer/macie2", verify=c.ca, region_name="us-east-1",
                aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                config=botocore.config.Config(retries={"max_attempts": 1}))
            for n in range(8):
                job = as_thief.create_classification_job(
                    jobType="ONE_TIME", name=f"sweep {n}",
                    s3JobDefinition={"bucketDefinitions": [{"accountId": ACCOUNT, "buckets": ["vault"]}]})
                while as_thief.describe_classification_job(jobId=job["jobId"])["jobStatus"] != "COMPLETE":
                    time.sleep(0.1)
            reads = [e for e in audit_events(c.data_dir) if e["eventName"] == "GetObject"
                     and e["userIdentity"].get("arn", "").endswith(":user/thief")]
            assert len(reads) == 320 and all(e["userAgent"].startswith("coffer-discovery/") for e in reads)
            time.sleep(2.5)
            policy = {"criterion": {"category": {"eq": ["POLICY"]}}}
            assert findings_api.list_findings(findingCriteria=policy)["findingIds"] == []

            thief = c.client("s3", access_key=creds["AccessKeyId"], secret_key=creds["SecretAccessKey"])
            for i in range(400):
                thief.get_object(Bucket="vault", Key=f"o{i % 40}")["Body"].read()
            deadline = time.time() + 30
            ids = []
            while time.time() < deadline and not ids:
                ids = findings_api.list_findings(findingCriteria=policy)["findingIds"]
                time.sleep(0.3)
            assert len(ids) == 1, "exactly one principal is flagged"
            f = findings_api.get_findings(findingIds=ids)["findings"][0]
            assert f["type"] == "Policy:IAMUser/AnomalousBehavior" and f["severity"]["description"] == "High"
            actor = f["policyDetails"]["actor"]["userIdentity"]
            assert actor["type"] == "IAMUser" and actor["iamUser"]["userName"] == "thief"
            raw = json.loads(subprocess.run(
                [coffer_bin(), "discovery", "findings", "--json", "--endpoint", c.endpoint,
                 "--data-dir", str(c.data_dir)], capture_output=True, text=True, check=True).stdout)
            alert = next(x for x in raw if x["id"] == ids[0])
            assert alert["cofferRemediation"] == [{"action": "UpdateAccessKey", "accessKeyId": creds["AccessKeyId"],
                                                   "result": f"deactivated access key {creds['AccessKeyId']}"}]
            assert {s["signal"] for s in alert["cofferAlert"]["signals"]} >= {"requests"}
            assert [k["Status"] for k in iam.list_access_keys(UserName="thief")["AccessKeyMetadata"]] == ["Inactive"]
            try:
                thief.get_object(Bucket="vault", Key="o1")
                raise AssertionError("the deactivated key still works")
            except thief.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "InvalidAccessKeyId"
            assert any(e["eventName"] == "UpdateAccessKey" and e["eventSource"] == "coffer.operator"
                       and e["requestParameters"]["accessKeyId"] == creds["AccessKeyId"]
                       for e in audit_events(c.data_dir))
            deadline = time.time() + 10
            while time.time() < deadline and not any(p == "/alerts" for p, _ in Hook.received):
                time.sleep(0.1)
            sent = [b for p, b in Hook.received if p == "/alerts"]
            assert len(sent) == 1 and sent[0]["detail"]["id"] == ids[0]
            # Later runs update the same finding rather than adding more.
            time.sleep(2.5)
            assert findings_api.list_findings(findingCriteria=policy)["findingIds"] == ids
        finally:
            c.stop()
            hook.shutdown()

"""Test harness: start the real `coffer` binary on port 0 over TLS and hand out real AWS clients."""

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import threading

import boto3
import botocore.config
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def coffer_bin() -> str:
    explicit = os.environ.get("COFFER_BIN")
    if explicit:
        return explicit
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "coffer"
        if p.exists():
            return str(p)
    raise RuntimeError("no coffer binary: run `cargo build` or set COFFER_BIN")


def read_credentials(path: pathlib.Path):
    ident = secret = None
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            if k == "aws_access_key_id":
                ident = v
            elif k == "aws_secret_access_key":
                secret = v
    return ident, secret


class Coffer:
    """One `coffer server` process on a data dir of its own."""

    def __init__(self, data_dir: pathlib.Path, extra_args=(), extra_env=None):
        self.data_dir = pathlib.Path(data_dir)
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.proc = None
        self.endpoint = None
        self.banner = []
        self.stderr_path = self.data_dir.parent / (self.data_dir.name + ".stderr.log")
        self.sealed = False

    def start(self, timeout=30):
        self.endpoint = None
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("COFFER_") and k != "COFFER_BIN":
                del env[k]
        env.update(self.extra_env)
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [coffer_bin(), "server", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0", *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
        )
        ready = threading.Event()
        banner = []

        def pump():
            for line in self.proc.stdout:
                banner.append(line.rstrip("\n"))
                if " is ready at " in line:
                    self.endpoint = line.split(" is ready at ")[1].split()[0]
                    self.sealed = False
                if " is sealed at " in line:
                    self.endpoint = line.split(" is sealed at ")[1].split()[0]
                    self.sealed = True
                if line.strip().startswith(("aws kms", "coffer operator unseal")):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.endpoint is None:
            self.kill()
            raise RuntimeError("coffer did not become ready:\n" + self.stderr_path.read_text())
        self.banner = banner
        return self

    @property
    def ca(self) -> str:
        return str(self.data_dir / "tls" / "ca.pem")

    def credentials(self):
        if "COFFER_ADMIN_ACCESS_KEY_ID" in self.extra_env:
            return self.extra_env["COFFER_ADMIN_ACCESS_KEY_ID"], self.extra_env["COFFER_ADMIN_SECRET_ACCESS_KEY"]
        return read_credentials(self.data_dir / "credentials")

    def client(self, service="kms", access_key=None, secret_key=None, region="us-east-1", retries=0):
        ident, secret = (access_key, secret_key) if access_key and secret_key else self.credentials()
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            verify=self.ca,
            aws_access_key_id=access_key or ident,
            aws_secret_access_key=secret_key or secret,
            region_name=region,
            # Client-side validation off: the server's own checks are what is under test.
            config=botocore.config.Config(
                retries={"max_attempts": retries + 1, "mode": "standard"}, parameter_validation=False
            ),
        )

    def cli_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        ident, secret = self.credentials()
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_CA_BUNDLE=self.ca,
            AWS_ACCESS_KEY_ID=ident,
            AWS_SECRET_ACCESS_KEY=secret,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_REGION="us-east-1",
            AWS_MAX_ATTEMPTS="1",
        )
        return env

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def operator(self, *args, input=None, check=True):
        """Runs `coffer operator <args>` against this server."""
        cmd = [coffer_bin(), "operator", *args]
        if args and args[0] != "init":
            cmd += ["--endpoint", self.endpoint, "--data-dir", str(self.data_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COFFER_"))}
        env.update(self.extra_env)
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"coffer operator {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def softhsm_token(tmp_path: pathlib.Path, label: str, pin: str) -> dict:
    """A SoftHSM2 token directory of its own with one initialised token; returns the environment
    (SOFTHSM2_CONF) that points the module at it."""
    if not os.path.exists(SOFTHSM_MODULE):
        pytest.fail("SoftHSM2 is not installed; scripts/test.sh installs it (apt-get install softhsm2)")
    tokens = tmp_path / "tokens"
    tokens.mkdir(exist_ok=True)
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "so-pin-" + pin],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
    return env


def audit_events(data_dir: pathlib.Path):
    """Every event in the audit segments of a data dir, as the server wrote them so far (a line
    still being written is skipped)."""
    out = []
    for seg in sorted((pathlib.Path(data_dir) / "audit").glob("segment-*.log")):
        for line in seg.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "event" in record:
                out.append(record["event"])
    return out


@pytest.fixture()
def data_dir():
    with tempfile.TemporaryDirectory(prefix="coffer-test-") as d:
        yield pathlib.Path(d) / "data"


@pytest.fixture(scope="module")
def coffer():
    with tempfile.TemporaryDirectory(prefix="coffer-test-") as d:
        c = Coffer(pathlib.Path(d) / "data").start()
        try:
            yield c
        finally:
            c.stop()


@pytest.fixture(scope="module")
def kms(coffer):
    return coffer.client()

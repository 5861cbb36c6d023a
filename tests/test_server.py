"""Server settings that change what the operator sees: JSON logs and operator-provided certificates."""

import datetime
import ipaddress
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import Coffer


def test_json_logs_are_json_and_hold_no_secrets(data_dir):
    c = Coffer(data_dir, extra_args=["--log-format", "json", "--log", "debug"]).start()
    try:
        kms = c.client()
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"JSON-LOG-PLAINTEXT-MARKER")
        ident, secret = c.credentials()
    finally:
        c.stop()
    records = []
    for line in c.stderr_path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, "some log lines were written"
    assert any(r.get("operation") == "Encrypt" for r in records), "requests are logged at debug"
    assert all("level" in r and "timestamp" in r for r in records)
    text = c.stderr_path.read_text()
    assert "JSON-LOG-PLAINTEXT-MARKER" not in text and secret not in text


def test_operator_provided_certificate(data_dir, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator cert")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "op.pem", tmp_path / "op.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    c = Coffer(data_dir, extra_args=["--tls-cert", str(cert_path), "--tls-key", str(key_path)]).start()
    try:
        assert not (data_dir / "tls" / "ca.pem").exists(), "no CA is generated when the operator brings one"
        assert not any("AWS_CA_BUNDLE" in l for l in c.banner)
        import boto3

        ident, secret = c.credentials()
        kms = boto3.client("kms", endpoint_url=c.endpoint, verify=str(cert_path), region_name="us-east-1",
                           aws_access_key_id=ident, aws_secret_access_key=secret)
        assert kms.generate_random(NumberOfBytes=16)["Plaintext"]
    finally:
        c.stop()

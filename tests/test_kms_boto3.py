"""The KMS API through boto3, against the real coffer binary over TLS."""

import base64
import datetime
import json
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
import urllib3
from botocore.exceptions import ClientError

ACCOUNT = "111122223333"
REGION = "us-east-1"


def error_code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def error_message(exc_info):
    return exc_info.value.response["Error"]["Message"]


def new_key(kms, **kw):
    return kms.create_key(**kw)["KeyMetadata"]


# ---- keys -------------------------------------------------------------------------------------


def test_create_and_describe_key(kms):
    md = new_key(kms, Description="orders", Tags=[{"TagKey": "team", "TagValue": "payments"}])
    assert md["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{md['KeyId']}"
    assert md["AWSAccountId"] == ACCOUNT
    assert md["KeyState"] == "Enabled" and md["Enabled"] is True
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT" and md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert md["Origin"] == "AWS_KMS" and md["KeyManager"] == "CUSTOMER"
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert isinstance(md["CreationDate"], datetime.datetime)
    for key_id in (md["KeyId"], md["Arn"]):
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "orders"
    assert kms.list_resource_tags(KeyId=md["KeyId"])["Tags"] == [{"TagKey": "team", "TagValue": "payments"}]


def test_create_key_refusals(kms):
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="SM2", KeyUsage="SIGN_VERIFY")
    assert error_code(e) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(KeyUsage="SIGN_VERIFY")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Description="x" * 8193)
    assert error_code(e) == "ValidationException"
    assert "Member must have length less than or equal to 8192" in error_message(e)
    with pytest.raises(ClientError) as e:
        kms.create_key(Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])
    assert error_code(e) == "TagException"


def test_unknown_keys(kms):
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=missing)
    assert error_code(e) == "NotFoundException"
    assert f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{missing}" in error_message(e)
    for bad in ("not-a-key", "alias/does-not-exist", f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{missing}"):
        with pytest.raises(ClientError) as e:
            kms.describe_key(KeyId=bad)
        assert error_code(e) == "NotFoundException", bad


def test_list_keys_paginates(kms):
    made = {new_key(kms)["KeyId"] for _ in range(5)}
    seen, marker, pages = [], None, 0
    while True:
        kw = {"Limit": 2}
        if marker:
            kw["Marker"] = marker
        page = kms.list_keys(**kw)
        pages += 1
        assert len(page["Keys"]) <= 2
        for k in page["Keys"]:
            assert k["KeyArn"].endswith(k["KeyId"])
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert made <= set(seen)
    assert len(seen) == len(set(seen)), "no key listed twice"
    assert pages >= 3
    paginated = [k["KeyId"] for p in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3}) for k in p["Keys"]]
    assert paginated == seen
    with pytest.raises(ClientError) as e:
        kms.list_keys(Limit=0)
    assert error_code(e) == "ValidationException"


# ---- encrypt / decrypt ------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip(kms):
    md = new_key(kms)
    ctx = {"order": "42", "tenant": "acme"}
    out = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"card 4111", EncryptionContext=ctx)
    assert out["KeyId"] == md["Arn"] and out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = out["CiphertextBlob"]
    assert b"card 4111" not in blob
    back = kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(list(ctx.items()))))
    assert back["Plaintext"] == b"card 4111" and back["KeyId"] == md["Arn"]
    # The same plaintext never gives the same blob.
    assert kms.encrypt(KeyId=md["KeyId"], Plaintext=b"card 4111", EncryptionContext=ctx)["CiphertextBlob"] != blob
    # Maximum size.
    big = bytes(range(256)) * 16
    assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=md["KeyId"], Plaintext=big)["CiphertextBlob"])["Plaintext"] == big


def test_encryption_context_must_match(kms):
    md = new_key(kms)
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x", EncryptionContext={"a": "b"})["CiphertextBlob"]
    for wrong in ({}, {"a": "c"}, {"a": "b", "extra": "1"}, {"A": "b"}):
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=wrong)
        assert error_code(e) == "InvalidCiphertextException", wrong
    # Boundaries between keys and values are part of what is authenticated.
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x", EncryptionContext={"a": "bc"})["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"ab": "c"})
    assert error_code(e) == "InvalidCiphertextException"


def test_tampered_ciphertexts_are_refused(kms):
    md = new_key(kms)
    blob = bytearray(kms.encrypt(KeyId=md["KeyId"], Plaintext=b"secret")["CiphertextBlob"])
    for i in range(len(blob)):
        t = bytearray(blob)
        t[i] ^= 0x01
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=bytes(t))
        assert error_code(e) == "InvalidCiphertextException", f"byte {i}"
    for cut in (1, 20, len(blob) - 1):
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=bytes(blob[:cut]))
        assert error_code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=bytes(blob) + b"\x00")
    assert error_code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=b"\x00" * 7000)
    assert error_code(e) == "ValidationException"


def test_decrypt_with_key_id(kms):
    a, b = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/decrypt-a", TargetKeyId=a["KeyId"])
    blob = kms.encrypt(KeyId=a["KeyId"], Plaintext=b"p")["CiphertextBlob"]
    for ok in (a["KeyId"], a["Arn"], "alias/decrypt-a", f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/decrypt-a"):
        assert kms.decrypt(CiphertextBlob=blob, KeyId=ok)["Plaintext"] == b"p"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, KeyId=b["KeyId"])
    assert error_code(e) == "IncorrectKeyException"


def test_plaintext_limits(kms):
    md = new_key(kms)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x" * 4097)
    assert error_code(e) == "ValidationException"
    assert error_message(e) == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096"
    )


def test_re_encrypt(kms):
    a, b = new_key(kms), new_key(kms)
    blob = kms.encrypt(KeyId=a["KeyId"], Plaintext=b"move me", EncryptionContext={"k": "1"})["CiphertextBlob"]
    out = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"k": "1"},
        DestinationKeyId=b["KeyId"],
        DestinationEncryptionContext={"k": "2"},
    )
    assert out["SourceKeyId"] == a["Arn"] and out["KeyId"] == b["Arn"]
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"k": "2"})["Plaintext"] == b"move me"
    with pytest.raises(ClientError) as e:
        kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"k": "wrong"}, DestinationKeyId=b["KeyId"])
    assert error_code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"k": "1"}, SourceKeyId=b["KeyId"], DestinationKeyId=b["KeyId"])
    assert error_code(e) == "IncorrectKeyException"


def test_generate_data_key(kms):
    md = new_key(kms)
    for kw, n in (({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 1024}, 1024), ({"NumberOfBytes": 1}, 1)):
        out = kms.generate_data_key(KeyId=md["KeyId"], EncryptionContext={"obj": "1"}, **kw)
        assert len(out["Plaintext"]) == n and out["KeyId"] == md["Arn"]
        assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"obj": "1"})["Plaintext"] == out["Plaintext"]
    out = kms.generate_data_key_without_plaintext(KeyId=md["KeyId"], KeySpec="AES_256")
    assert "Plaintext" not in out
    assert len(kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"]) == 32
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=md["KeyId"])
    assert error_code(e) == "ValidationException"
    assert "either number of bytes or key spec" in error_message(e)
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=md["KeyId"], KeySpec="AES_256", NumberOfBytes=32)
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=md["KeyId"], NumberOfBytes=1025)
    assert error_message(e) == (
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value less than or equal to 1024"
    )


def test_generate_random(kms):
    a = kms.generate_random(NumberOfBytes=1024)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=1024)["Plaintext"]
    assert len(a) == 1024 and a != b
    assert len(set(a)) > 200, "random bytes cover the byte range"
    for n in (0, 1025):
        with pytest.raises(ClientError) as e:
            kms.generate_random(NumberOfBytes=n)
        assert error_code(e) == "ValidationException"


def test_dry_run(kms):
    md = new_key(kms)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x", DryRun=True)
    assert error_code(e) == "DryRunOperationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


# ---- aliases ----------------------------------------------------------------------------------


def test_aliases(kms):
    a, b = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/app", TargetKeyId=a["Arn"])
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == a["KeyId"]
    blob = kms.encrypt(KeyId="alias/app", Plaintext=b"v")["CiphertextBlob"]
    listed = kms.list_aliases(KeyId=a["KeyId"])["Aliases"]
    assert [x["AliasName"] for x in listed] == ["alias/app"]
    assert listed[0]["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/app"
    assert listed[0]["TargetKeyId"] == a["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/app", TargetKeyId=b["KeyId"])
    assert error_code(e) == "AlreadyExistsException"
    kms.update_alias(AliasName="alias/app", TargetKeyId=b["KeyId"])
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == b["KeyId"]
    # Ciphertexts belong to keys, not aliases.
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == a["Arn"]
    kms.delete_alias(AliasName="alias/app")
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/app")
    assert error_code(e) == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.delete_alias(AliasName="alias/app")
    assert error_code(e) == "NotFoundException"


def test_alias_refusals(kms):
    a = new_key(kms)
    kms.create_alias(AliasName="alias/base", TargetKeyId=a["KeyId"])
    cases = {
        "alias/aws/mine": "NotAuthorizedException",
        "no-prefix": "ValidationException",
        "alias/bad name!": "ValidationException",
    }
    for name, code in cases.items():
        with pytest.raises(ClientError) as e:
            kms.create_alias(AliasName=name, TargetKeyId=a["KeyId"])
        assert error_code(e) == code, name
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/chain", TargetKeyId="alias/base")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/ghost", TargetKeyId="00000000-0000-4000-8000-000000000000")
    assert error_code(e) == "NotFoundException"


def test_list_aliases_paginates(kms):
    a = new_key(kms)
    names = [f"alias/page-{i:02d}" for i in range(5)]
    for n in names:
        kms.create_alias(AliasName=n, TargetKeyId=a["KeyId"])
    got = [x["AliasName"] for p in kms.get_paginator("list_aliases").paginate(KeyId=a["KeyId"], PaginationConfig={"PageSize": 2}) for x in p["Aliases"]]
    assert got == names


# ---- lifecycle --------------------------------------------------------------------------------


def test_disable_enable(kms):
    md = new_key(kms)
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=md["KeyId"])
    assert kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    for call in (
        lambda: kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.generate_data_key(KeyId=md["KeyId"], KeySpec="AES_256"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "DisabledException"
        assert md["Arn"] in error_message(e)
    kms.enable_key(KeyId=md["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_scheduled_deletion(kms):
    md = new_key(kms)
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    for days in (6, 31):
        with pytest.raises(ClientError) as e:
            kms.schedule_key_deletion(KeyId=md["KeyId"], PendingWindowInDays=days)
        assert error_code(e) == "ValidationException"
    out = kms.schedule_key_deletion(KeyId=md["KeyId"], PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["KeyId"] == md["Arn"] and out["PendingWindowInDays"] == 7
    now = datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=6, hours=23) < out["DeletionDate"] - now < datetime.timedelta(days=7, minutes=1)
    d = kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]
    assert d["KeyState"] == "PendingDeletion" and d["PendingDeletionWindowInDays"] == 7 and "DeletionDate" in d
    for call in (
        lambda: kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.enable_key(KeyId=md["KeyId"]),
        lambda: kms.schedule_key_deletion(KeyId=md["KeyId"]),
        lambda: kms.create_alias(AliasName="alias/doomed", TargetKeyId=md["KeyId"]),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "KMSInvalidStateException"
    assert kms.cancel_key_deletion(KeyId=md["KeyId"])["KeyId"] == md["Arn"]
    d = kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]
    assert d["KeyState"] == "Disabled" and "DeletionDate" not in d
    with pytest.raises(ClientError) as e:
        kms.cancel_key_deletion(KeyId=md["KeyId"])
    assert error_code(e) == "KMSInvalidStateException"


def test_update_description_and_tags(kms):
    md = new_key(kms, Description="before")
    kms.update_key_description(KeyId=md["KeyId"], Description="after")
    assert kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]["Description"] == "after"
    kms.tag_resource(KeyId=md["KeyId"], Tags=[{"TagKey": "b", "TagValue": "2"}, {"TagKey": "a", "TagValue": "1"}])
    kms.tag_resource(KeyId=md["KeyId"], Tags=[{"TagKey": "a", "TagValue": "one"}])
    assert kms.list_resource_tags(KeyId=md["KeyId"])["Tags"] == [
        {"TagKey": "a", "TagValue": "one"},
        {"TagKey": "b", "TagValue": "2"},
    ]
    page = kms.list_resource_tags(KeyId=md["KeyId"], Limit=1)
    assert page["Truncated"] and len(page["Tags"]) == 1
    rest = kms.list_resource_tags(KeyId=md["KeyId"], Limit=1, Marker=page["NextMarker"])
    assert rest["Tags"] == [{"TagKey": "b", "TagValue": "2"}] and not rest["Truncated"]
    kms.untag_resource(KeyId=md["KeyId"], TagKeys=["a"])
    assert kms.list_resource_tags(KeyId=md["KeyId"])["Tags"] == [{"TagKey": "b", "TagValue": "2"}]
    with pytest.raises(ClientError) as e:
        kms.tag_resource(KeyId=md["KeyId"], Tags=[{"TagKey": f"k{i}", "TagValue": ""} for i in range(50)])
    assert error_code(e) == "LimitExceededException"


def test_rotation(kms):
    md = new_key(kms)
    key = md["KeyId"]
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    with pytest.raises(ClientError) as e:
        kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=89)
    assert error_code(e) == "ValidationException"
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 90 and status["KeyId"] == md["Arn"]
    assert "NextRotationDate" in status

    before = kms.encrypt(KeyId=key, Plaintext=b"old")
    assert kms.rotate_key_on_demand(KeyId=key)["KeyId"] == key
    after = kms.encrypt(KeyId=key, Plaintext=b"new")
    old_mat = kms.decrypt(CiphertextBlob=before["CiphertextBlob"])
    new_mat = kms.decrypt(CiphertextBlob=after["CiphertextBlob"])
    assert old_mat["Plaintext"] == b"old" and new_mat["Plaintext"] == b"new"
    assert old_mat["KeyMaterialId"] != new_mat["KeyMaterialId"]
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["CurrentKeyMaterialId"] == new_mat["KeyMaterialId"]

    kms.rotate_key_on_demand(KeyId=key)
    rotations = kms.list_key_rotations(KeyId=key)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "ON_DEMAND"]
    assert [r["KeyMaterialState"] for r in rotations] == ["NON_CURRENT", "CURRENT"]
    everything = kms.list_key_rotations(KeyId=key, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert len(everything) == 3 and "RotationType" not in everything[0]
    page = kms.list_key_rotations(KeyId=key, Limit=1)
    assert page["Truncated"] and len(page["Rotations"]) == 1
    assert len(kms.list_key_rotations(KeyId=key, Marker=page["NextMarker"])["Rotations"]) == 1
    # Every old version still decrypts.
    assert kms.decrypt(CiphertextBlob=before["CiphertextBlob"])["Plaintext"] == b"old"

    kms.disable_key_rotation(KeyId=key)
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    assert error_code(e) == "DisabledException"


def test_on_demand_rotation_limit(kms):
    key = new_key(kms)["KeyId"]
    for _ in range(10):
        kms.rotate_key_on_demand(KeyId=key)
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    assert error_code(e) == "LimitExceededException"


# ---- authentication and protocol --------------------------------------------------------------


def test_wrong_secret(coffer):
    bad = coffer.client(secret_key="x" * 40)
    with pytest.raises(ClientError) as e:
        bad.list_keys()
    assert error_code(e) == "InvalidSignatureException"
    assert "does not match the signature you provided" in error_message(e)


def test_unknown_access_key(coffer):
    with pytest.raises(ClientError) as e:
        coffer.client(access_key="AKIAUNKNOWN000000000").list_keys()
    assert error_code(e) == "UnrecognizedClientException"


def test_session_token_is_refused(coffer):
    ident, secret = coffer.credentials()
    import boto3

    c = boto3.client("kms", endpoint_url=coffer.endpoint, verify=coffer.ca, region_name=REGION,
                     aws_access_key_id=ident, aws_secret_access_key=secret, aws_session_token="token")
    with pytest.raises(ClientError) as e:
        c.list_keys()
    assert error_code(e) == "UnrecognizedClientException"


def test_wrong_region(coffer):
    with pytest.raises(ClientError) as e:
        coffer.client(region="eu-west-1").list_keys()
    assert error_code(e) == "InvalidSignatureException"
    assert "eu-west-1" in error_message(e)


@pytest.mark.parametrize("skew", [datetime.timedelta(minutes=-6), datetime.timedelta(minutes=6)])
def test_stale_and_future_timestamps(coffer, skew):
    c = coffer.client()
    fake = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + skew
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fake):
        with pytest.raises(ClientError) as e:
            c.list_keys()
    assert error_code(e) == "InvalidSignatureException"
    assert "Signature expired" in error_message(e) or "not yet current" in error_message(e)
    within = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=4)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=within):
        c.list_keys()


def raw(coffer, body: bytes, target="TrentService.ListKeys", sign=True, content_type="application/x-amz-json-1.1"):
    """Sends a hand-built request, SigV4-signed by botocore's signer, and returns (status, json)."""
    ident, secret = coffer.credentials()
    req = botocore.awsrequest.AWSRequest(
        method="POST",
        url=coffer.endpoint + "/",
        data=body,
        headers={"Content-Type": content_type, "X-Amz-Target": target},
    )
    if sign:
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(ident, secret), "kms", REGION).add_auth(req)
    http = urllib3.PoolManager(ca_certs=coffer.ca)
    resp = http.request("POST", req.url, body=body, headers=dict(req.headers.items()))
    return resp.status, json.loads(resp.data or b"{}"), resp.headers


def test_missing_authentication(coffer):
    status, body, _ = raw(coffer, b"{}", sign=False)
    assert status == 400 and body["__type"] == "MissingAuthenticationTokenException"


def test_malformed_json_and_wrong_types(coffer):
    status, body, headers = raw(coffer, b"{not json", target="TrentService.Encrypt")
    assert status == 400 and body["__type"] == "SerializationException"
    assert headers["x-amzn-RequestId"]
    status, body, _ = raw(coffer, json.dumps({"NumberOfBytes": "many"}).encode(), target="TrentService.GenerateRandom")
    assert status == 400 and body["__type"] == "SerializationException"
    status, body, _ = raw(coffer, json.dumps({"KeyId": 5, "Plaintext": "eA=="}).encode(), target="TrentService.Encrypt")
    assert status == 400 and body["__type"] == "SerializationException"
    status, body, _ = raw(coffer, json.dumps({"CiphertextBlob": "***"}).encode(), target="TrentService.Decrypt")
    assert status == 400 and body["__type"] == "SerializationException"
    status, body, _ = raw(coffer, json.dumps({"KeyId": "alias/x"}).encode(), target="TrentService.Encrypt")
    assert status == 400 and body["__type"] == "ValidationException"
    assert "Value null at 'plaintext' failed to satisfy constraint: Member must not be null" in body["message"]


def test_unknown_and_unsupported_operations(coffer):
    status, body, _ = raw(coffer, b"{}", target="TrentService.Frobnicate")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    status, body, _ = raw(coffer, b"{}", target="TrentService.ReplicateKey")
    assert status == 400 and body["__type"] == "UnsupportedOperationException"


def test_oversized_body(coffer):
    status, body, _ = raw(coffer, b" " * (1024 * 1024 + 1), target="TrentService.ListKeys", sign=False)
    assert status == 413 and body["__type"] == "RequestEntityTooLargeException"


def test_tampered_body_breaks_the_signature(coffer):
    ident, secret = coffer.credentials()
    body = json.dumps({"NumberOfBytes": 8}).encode()
    req = botocore.awsrequest.AWSRequest(method="POST", url=coffer.endpoint + "/", data=body,
                                         headers={"Content-Type": "application/x-amz-json-1.1",
                                                  "X-Amz-Target": "TrentService.GenerateRandom"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ident, secret), "kms", REGION).add_auth(req)
    http = urllib3.PoolManager(ca_certs=coffer.ca)
    resp = http.request("POST", req.url, body=json.dumps({"NumberOfBytes": 9}).encode(), headers=dict(req.headers.items()))
    assert resp.status == 400 and json.loads(resp.data)["__type"] == "InvalidSignatureException"


def test_health_and_metrics(coffer, kms):
    http = urllib3.PoolManager(ca_certs=coffer.ca)
    health = json.loads(http.request("GET", coffer.endpoint + "/_coffer/health").data)
    assert health["status"] == "ok" and health["root_of_trust"] == "dev-file"
    assert health["region"] == REGION and health["account_id"] == ACCOUNT
    kms.generate_random(NumberOfBytes=4)
    text = http.request("GET", coffer.endpoint + "/_coffer/metrics").data.decode()
    assert 'coffer_requests_total{operation="GenerateRandom",outcome="ok"}' in text
    assert 'coffer_request_duration_seconds_bucket{le="+Inf",operation="GenerateRandom"}' in text or \
           'coffer_request_duration_seconds_bucket{operation="GenerateRandom",le="+Inf"}' in text
    resp = http.request("GET", coffer.endpoint + "/_coffer/nothing")
    assert resp.status == 404


def test_no_plain_http(coffer):
    http = urllib3.PoolManager(retries=False)
    plain = coffer.endpoint.replace("https://", "http://")
    with pytest.raises(Exception):
        http.request("GET", plain + "/_coffer/health", timeout=5)


def test_tls_versions(coffer):
    import socket
    import ssl

    host, port = coffer.endpoint.removeprefix("https://").rsplit(":", 1)
    for version, ok in ((ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(coffer.ca)
        try:
            ctx.minimum_version = ctx.maximum_version = version
        except ValueError:
            continue
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=host) as t:
                    assert ok, f"{version} accepted"
                    assert t.version() in ("TLSv1.2", "TLSv1.3")
        except ssl.SSLError:
            assert not ok, f"{version} refused"

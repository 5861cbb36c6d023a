"""Identities and who may do what, through the real binary with boto3 and the aws CLI: IAM users,
access keys, groups and inline policies over the IAM query API; STS GetCallerIdentity; key
policies (default policy, PutKeyPolicy, lockout check, limits, malformed documents); separation of
duties between a key administrator and a key user; conditions on the encryption context and the
source address."""

import json
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import coffer_bin

ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"


def code(e):
    return e.value.response["Error"]["Code"]


def message(e):
    return e.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def iam(coffer):
    return coffer.client("iam")


def new_user(coffer, iam, name, policy=None, group=None):
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    if group is not None:
        iam.add_user_to_group(GroupName=group, UserName=name)
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k, coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])



def test_sts_and_iam_users_groups_keys(coffer, iam):
    sts = coffer.client("sts")
    me = sts.get_caller_identity()
    assert me["Arn"] == ROOT and me["Account"] == ACCOUNT

    u = iam.create_user(UserName="carol", Path="/ops/")["User"]
    assert u["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/ops/carol" and u["UserId"].startswith("AIDA")
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="CAROL")
    assert code(e) == "EntityAlreadyExists"
    assert iam.get_user(UserName="carol")["User"]["UserName"] == "carol"
    assert "carol" in [x["UserName"] for x in iam.list_users()["Users"]]
    with pytest.raises(ClientError) as e:
        iam.get_user(UserName="nobody")
    assert code(e) == "NoSuchEntity" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    k1 = iam.create_access_key(UserName="carol")["AccessKey"]
    k2 = iam.create_access_key(UserName="carol")["AccessKey"]
    assert len(k1["SecretAccessKey"]) == 40 and k1["Status"] == "Active"
    with pytest.raises(ClientError) as e:
        iam.create_access_key(UserName="carol")
    assert code(e) == "LimitExceeded"
    listed = iam.list_access_keys(UserName="carol")["AccessKeyMetadata"]
    assert {k["AccessKeyId"] for k in listed} == {k1["AccessKeyId"], k2["AccessKeyId"]}
    assert all("SecretAccessKey" not in k for k in listed)

    carol = coffer.client("sts", access_key=k1["AccessKeyId"], secret_key=k1["SecretAccessKey"])
    who = carol.get_caller_identity()
    assert who["Arn"] == u["Arn"] and who["UserId"] == u["UserId"]

    # Deactivated: refused on the next request; reactivated: accepted again; deleted: refused.
    iam.update_access_key(UserName="carol", AccessKeyId=k1["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError) as e:
        carol.get_caller_identity()
    assert code(e) == "InvalidClientTokenId"
    carol_kms = coffer.client(access_key=k1["AccessKeyId"], secret_key=k1["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        carol_kms.list_keys()
    assert code(e) == "UnrecognizedClientException"
    iam.update_access_key(UserName="carol", AccessKeyId=k1["AccessKeyId"], Status="Active")
    assert carol.get_caller_identity()["Arn"] == u["Arn"]
    iam.delete_access_key(UserName="carol", AccessKeyId=k1["AccessKeyId"])
    with pytest.raises(ClientError) as e:
        carol.get_caller_identity()
    assert code(e) == "InvalidClientTokenId"

    # Groups and inline policies; deletion refused while anything is attached.
    iam.create_group(GroupName="auditors")
    iam.add_user_to_group(GroupName="auditors", UserName="carol")
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName="carol")["Groups"]] == ["auditors"]
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:List*", "Resource": "*"}]}
    iam.put_group_policy(GroupName="auditors", PolicyName="list", PolicyDocument=json.dumps(doc))
    assert iam.get_group_policy(GroupName="auditors", PolicyName="list")["PolicyDocument"] == doc
    assert iam.list_group_policies(GroupName="auditors")["PolicyNames"] == ["list"]
    iam.put_user_policy(UserName="carol", PolicyName="own", PolicyDocument=json.dumps(doc))
    assert iam.get_user_policy(UserName="carol", PolicyName="own")["PolicyDocument"] == doc
    with pytest.raises(ClientError) as e:
        iam.delete_user(UserName="carol")
    assert code(e) == "DeleteConflict" and "access keys" in message(e)
    iam.delete_access_key(UserName="carol", AccessKeyId=k2["AccessKeyId"])
    with pytest.raises(ClientError) as e:
        iam.delete_user(UserName="carol")
    assert code(e) == "DeleteConflict" and "policies" in message(e)
    iam.delete_user_policy(UserName="carol", PolicyName="own")
    with pytest.raises(ClientError) as e:
        iam.delete_user(UserName="carol")
    assert code(e) == "DeleteConflict" and "group" in message(e)
    iam.remove_user_from_group(GroupName="auditors", UserName="carol")
    iam.delete_user(UserName="carol")
    iam.delete_group_policy(GroupName="auditors", PolicyName="list")
    iam.delete_group(GroupName="auditors")

    # Malformed identity policies and the size quota.
    iam.create_user(UserName="dave")
    for bad, want in [
        ("{", "not valid JSON"),
        (json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}), "Principal"),
        (json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                                    "Condition": {"StringEqualsSometimes": {"a:b": "c"}}}]}), "StringEqualsSometimes"),
    ]:
        with pytest.raises(ClientError) as e:
            iam.put_user_policy(UserName="dave", PolicyName="bad", PolicyDocument=bad)
        assert code(e) == "MalformedPolicyDocument" and want in message(e), message(e)
    big = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                                                  "Condition": {"StringEquals": {"aws:username": "x" * 2100}}}]}
    with pytest.raises(ClientError) as e:
        iam.put_user_policy(UserName="dave", PolicyName="big", PolicyDocument=json.dumps(big))
    assert code(e) == "LimitExceeded"
    assert iam.list_user_policies(UserName="dave")["PolicyNames"] == []


def test_iam_through_the_aws_cli(coffer):
    env = coffer.cli_env()

    def aws(*args):
        r = subprocess.run(["aws", *args, "--output", "json"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if r.stdout.strip() else None

    assert aws("sts", "get-caller-identity")["Account"] == ACCOUNT
    assert aws("iam", "create-user", "--user-name", "erin")["User"]["UserName"] == "erin"
    key = aws("iam", "create-access-key", "--user-name", "erin")["AccessKey"]
    assert aws("iam", "list-access-keys", "--user-name", "erin")["AccessKeyMetadata"][0]["AccessKeyId"] == key["AccessKeyId"]
    env2 = dict(env, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    r = subprocess.run(["aws", "sts", "get-caller-identity", "--output", "json"], capture_output=True, text=True,
                       env=env2, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["Arn"].endswith(":user/erin"), r.stderr
    # A user without any policy may not create keys; the refusal says who, what and why.
    r = subprocess.run(["aws", "kms", "create-key"], capture_output=True, text=True, env=env2, timeout=60)
    assert r.returncode != 0 and "AccessDeniedException" in r.stderr
    assert "user/erin is not authorized to perform: kms:CreateKey" in r.stderr


def test_default_key_policy_and_policy_operations(coffer, kms, iam):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    doc = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert doc["Statement"][0]["Principal"] == {"AWS": ROOT} and doc["Statement"][0]["Action"] == "kms:*"
    assert kms.list_key_policies(KeyId=key)["PolicyNames"] == ["default"]
    with pytest.raises(ClientError) as e:
        kms.get_key_policy(KeyId=key, PolicyName="other")
    assert code(e) == "NotFoundException"

    def put(policy, **kw):
        return kms.put_key_policy(KeyId=key, PolicyName="default",
                                  Policy=policy if isinstance(policy, str) else json.dumps(policy), **kw)

    # Malformed documents name the problem and change nothing.
    for bad, want in [
        ("not json", "not valid JSON"),
        ({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}, "no Principal"),
        ({"Statement": [{"Effect": "Alow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}]}, "Effect"),
        ({"Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*",
                         "Condition": {"StringLikeish": {"kms:EncryptionContext:a": "b"}}}]}, "StringLikeish"),
        ({"Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/ghost"},
                         "Action": "kms:*", "Resource": "*"}]}, "invalid principals"),
    ]:
        with pytest.raises(ClientError) as e:
            put(bad)
        assert code(e) == "MalformedPolicyDocumentException" and want in message(e), message(e)
    big = dict(doc, Id="x" * 33000)
    with pytest.raises(ClientError) as e:
        put(big)
    assert code(e) == "LimitExceededException"
    assert json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]) == doc

    # The lockout safety check, and bypassing it.
    only_alice = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": ["kms:Describe*", "kms:Get*"], "Resource": "*"}]}
    with pytest.raises(ClientError) as e:
        put(only_alice)
    assert code(e) == "MalformedPolicyDocumentException" and "will not allow you to update the key policy" in message(e)
    put(only_alice, BypassPolicyLockoutSafetyCheck=True)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "AccessDeniedException"
    assert message(e) == (f"User: {ROOT} is not authorized to perform: kms:Encrypt on resource: "
                          f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key} because no resource-based policy allows "
                          f"the kms:Encrypt action")
    with pytest.raises(ClientError) as e:
        put(doc)
    assert code(e) == "AccessDeniedException"

    # CreateKey with a policy that would lock the caller out is refused the same way.
    with pytest.raises(ClientError) as e:
        kms.create_key(Policy=json.dumps(only_alice))
    assert code(e) == "MalformedPolicyDocumentException"
    k2 = kms.create_key(Policy=json.dumps(doc), Description="with policy")["KeyMetadata"]["KeyId"]
    assert json.loads(kms.get_key_policy(KeyId=k2)["Policy"]) == doc


def test_separation_of_duties(coffer, kms, iam):
    iam.create_user(UserName="keyadmin")
    iam.create_user(UserName="keyuser")
    admin_arn = f"arn:aws:iam::{ACCOUNT}:user/keyadmin"
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/keyuser"
    policy = {"Version": "2012-10-17", "Id": "key-consolepolicy-3", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": ROOT},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow access for Key Administrators", "Effect": "Allow", "Principal": {"AWS": admin_arn},
         "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
                    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"],
         "Resource": "*"},
        {"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": user_arn},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
         "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}},
    ]}
    key = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    k = iam.create_access_key(UserName="keyadmin")["AccessKey"]
    admin = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])
    k = iam.create_access_key(UserName="keyuser")["AccessKey"]
    user = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])

    # The administrator manages but cannot use.
    admin.update_key_description(KeyId=key, Description="managed by keyadmin")
    admin.tag_resource(KeyId=key, Tags=[{"TagKey": "team", "TagValue": "billing"}])
    admin.disable_key(KeyId=key)
    admin.enable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        admin.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext={"app": "billing"})
    assert code(e) == "AccessDeniedException" and "user/keyadmin" in message(e) and "kms:Encrypt" in message(e)
    # As in AWS, a malformed request is reported as such before access is decided.
    with pytest.raises(ClientError) as e:
        admin.encrypt(KeyId=key)
    assert code(e) == "ValidationException"

    # The user uses but cannot manage, and only with the encryption context the policy names.
    blob = user.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext={"app": "billing"})["CiphertextBlob"]
    assert user.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "billing"})["Plaintext"] == b"secret"
    with pytest.raises(ClientError) as e:
        user.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext={"app": "payroll"})
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        user.encrypt(KeyId=key, Plaintext=b"secret")
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        user.disable_key(KeyId=key)
    assert code(e) == "AccessDeniedException" and "kms:DisableKey" in message(e)
    with pytest.raises(ClientError) as e:
        user.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        user.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(policy))
    assert code(e) == "AccessDeniedException"

    # Delegation to IAM: the root statement lets an identity policy grant more; an explicit deny
    # in an identity policy wins over the key policy's allow.
    iam.put_user_policy(UserName="keyuser", PolicyName="sign-off", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:ListResourceTags", "Resource": f"arn:aws:kms:*:{ACCOUNT}:key/*"},
            {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]}))
    assert user.list_resource_tags(KeyId=key)["Tags"][0]["TagKey"] == "team"
    with pytest.raises(ClientError) as e:
        user.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "billing"})
    assert code(e) == "AccessDeniedException" and "explicit deny in an identity-based policy" in message(e)


def test_conditions_on_source_ip_and_key_properties(coffer, kms, iam):
    iam.create_user(UserName="net")
    arn = f"arn:aws:iam::{ACCOUNT}:user/net"
    k = iam.create_access_key(UserName="net")["AccessKey"]
    net = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])

    def key_with(condition):
        return kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": arn}, "Action": "kms:GenerateDataKey", "Resource": "*",
             "Condition": condition}]}))["KeyMetadata"]["KeyId"]

    local = key_with({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}, "Bool": {"aws:SecureTransport": "true"}})
    assert len(net.generate_data_key(KeyId=local, NumberOfBytes=32)["Plaintext"]) == 32
    remote = key_with({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}})
    with pytest.raises(ClientError) as e:
        net.generate_data_key(KeyId=remote, NumberOfBytes=32)
    assert code(e) == "AccessDeniedException"
    small = key_with({"NumericLessThanEquals": {"kms:NumberOfBytes": 16}, "StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}})
    assert len(net.generate_data_key(KeyId=small, NumberOfBytes=16)["Plaintext"]) == 16
    with pytest.raises(ClientError) as e:
        net.generate_data_key(KeyId=small, NumberOfBytes=32)
    assert code(e) == "AccessDeniedException"
    # kms:RequestAlias: allowed only when the request names the key by this alias.
    aliased = key_with({"StringEquals": {"kms:RequestAlias": "alias/net-data"}})
    kms.create_alias(AliasName="alias/net-data", TargetKeyId=aliased)
    assert net.generate_data_key(KeyId="alias/net-data", NumberOfBytes=32)["KeyId"].endswith(aliased)
    with pytest.raises(ClientError) as e:
        net.generate_data_key(KeyId=aliased, NumberOfBytes=32)
    assert code(e) == "AccessDeniedException"


def test_iam_import_access_key_and_audit(coffer, iam):
    iam.create_user(UserName="migrated")
    ident, secret = "AKIAMIGRATEDFROMAWS1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    r = subprocess.run([coffer_bin(), "iam", "import-access-key", "--data-dir", str(coffer.data_dir),
                        "--user-name", "migrated", "--access-key-id", ident, "--secret-access-key-stdin"],
                       input=secret + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    sts = coffer.client("sts", access_key=ident, secret_key=secret)
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/migrated"
    # IAM and STS requests are audited, and the secret of CreateAccessKey is not in the log.
    k = iam.create_access_key(UserName="migrated")["AccessKey"]
    data = b"".join(p.read_bytes() for p in (coffer.data_dir / "audit").glob("segment-*.log"))
    assert b'"eventSource":"iam.amazonaws.com"' in data and b'"eventName":"CreateAccessKey"' in data
    assert b'"eventSource":"sts.amazonaws.com"' in data
    assert k["SecretAccessKey"].encode() not in data and secret.encode() not in data


def test_grants(coffer, kms, iam):
    iam.create_user(UserName="grantee")
    iam.create_user(UserName="retirer")
    grantee_arn = f"arn:aws:iam::{ACCOUNT}:user/grantee"
    retirer_arn = f"arn:aws:iam::{ACCOUNT}:user/retirer"
    k = iam.create_access_key(UserName="grantee")["AccessKey"]
    grantee = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])
    k = iam.create_access_key(UserName="retirer")["AccessKey"]
    retirer = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])
    key = kms.create_key()["KeyMetadata"]["KeyId"]

    # No permission before the grant.
    with pytest.raises(ClientError) as e:
        grantee.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"Dept": "10"})
    assert code(e) == "AccessDeniedException"

    g = kms.create_grant(KeyId=key, GranteePrincipal=grantee_arn, RetiringPrincipal=retirer_arn,
                         Operations=["Encrypt", "Decrypt", "CreateGrant"], Name="app-grant",
                         Constraints={"EncryptionContextSubset": {"Dept": "10"}})
    assert len(g["GrantId"]) == 64 and g["GrantToken"]
    # The token is usable at once; the constraint is enforced (keys without regard to case).
    blob = grantee.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"dept": "10", "more": "1"},
                           GrantTokens=[g["GrantToken"]])["CiphertextBlob"]
    assert grantee.decrypt(CiphertextBlob=blob, EncryptionContext={"dept": "10", "more": "1"})["Plaintext"] == b"x"
    with pytest.raises(ClientError) as e:
        grantee.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"Dept": "11"})
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        grantee.generate_data_key(KeyId=key, NumberOfBytes=32, EncryptionContext={"Dept": "10"})
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        grantee.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"Dept": "10"}, GrantTokens=["not-a-token"])
    assert code(e) == "InvalidGrantTokenException"

    # Same name and parameters: the same grant (a new token); otherwise a new grant.
    again = kms.create_grant(KeyId=key, GranteePrincipal=grantee_arn, RetiringPrincipal=retirer_arn,
                             Operations=["Encrypt", "Decrypt", "CreateGrant"], Name="app-grant",
                             Constraints={"EncryptionContextSubset": {"Dept": "10"}})
    assert again["GrantId"] == g["GrantId"] and again["GrantToken"] != g["GrantToken"]

    # A grantee with CreateGrant may pass on no more than it has.
    with pytest.raises(ClientError) as e:
        grantee.create_grant(KeyId=key, GranteePrincipal=retirer_arn, Operations=["GenerateDataKey"],
                             Constraints={"EncryptionContextSubset": {"Dept": "10"}})
    assert code(e) == "AccessDeniedException"
    sub = grantee.create_grant(KeyId=key, GranteePrincipal=retirer_arn, Operations=["Encrypt"],
                               Constraints={"EncryptionContextSubset": {"Dept": "10"}})

    listed = kms.list_grants(KeyId=key)["Grants"]
    assert {x["GrantId"] for x in listed} == {g["GrantId"], sub["GrantId"]}
    mine = [x for x in listed if x["GrantId"] == g["GrantId"]][0]
    assert mine["GranteePrincipal"] == grantee_arn and mine["RetiringPrincipal"] == retirer_arn
    assert mine["Constraints"] == {"EncryptionContextSubset": {"Dept": "10"}}
    assert mine["KeyId"].endswith(key) and mine["IssuingAccount"] == ROOT
    assert [x["GrantId"] for x in kms.list_retirable_grants(RetiringPrincipal=retirer_arn)["Grants"]] == [g["GrantId"]]

    # Bad grants.
    for kw, want in [
        (dict(Operations=["Sign"]), "ValidationException"),
        (dict(Operations=["Fly"]), "ValidationException"),
        (dict(Operations=["Encrypt"], GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/nobody"), "ValidationException"),
    ]:
        args = dict(KeyId=key, GranteePrincipal=grantee_arn)
        args.update(kw)
        with pytest.raises(ClientError) as e:
            kms.create_grant(**args)
        assert code(e) == want, (kw, message(e))

    # Retiring: the grantee without RetireGrant may not; the retiring principal may.
    with pytest.raises(ClientError) as e:
        grantee.retire_grant(GrantToken=g["GrantToken"])
    assert code(e) == "AccessDeniedException"
    retirer.retire_grant(GrantToken=g["GrantToken"])
    with pytest.raises(ClientError) as e:
        grantee.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"Dept": "10"})
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        retirer.retire_grant(GrantToken=g["GrantToken"])
    assert code(e) == "NotFoundException"
    # Revoking needs kms:RevokeGrant on the key: the account root has it, the grantee does not.
    with pytest.raises(ClientError) as e:
        grantee.revoke_grant(KeyId=key, GrantId=sub["GrantId"])
    assert code(e) == "AccessDeniedException"
    kms.revoke_grant(KeyId=key, GrantId=sub["GrantId"])
    assert kms.list_grants(KeyId=key)["Grants"] == []
    with pytest.raises(ClientError) as e:
        kms.revoke_grant(KeyId=key, GrantId=sub["GrantId"])
    assert code(e) == "NotFoundException"


def test_iam_actions_need_identity_permissions(coffer, iam):
    iam.create_user(UserName="helpdesk")
    iam.put_user_policy(UserName="helpdesk", PolicyName="manage-interns", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iam:CreateUser", "iam:GetUser", "iam:CreateAccessKey"],
             "Resource": f"arn:aws:iam::{ACCOUNT}:user/intern-*"},
            {"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="helpdesk")["AccessKey"]
    helpdesk = coffer.client("iam", access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])
    helpdesk.create_user(UserName="intern-1")
    assert helpdesk.get_user(UserName="intern-1")["User"]["UserName"] == "intern-1"
    assert "intern-1" in [u["UserName"] for u in helpdesk.list_users()["Users"]]
    with pytest.raises(ClientError) as e:
        helpdesk.create_user(UserName="admin-2")
    assert code(e) == "AccessDenied" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "user/helpdesk is not authorized to perform: iam:CreateUser" in message(e)
    with pytest.raises(ClientError) as e:
        helpdesk.put_user_policy(UserName="intern-1", PolicyName="x", PolicyDocument="{}")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        helpdesk.delete_user(UserName="intern-1")
    assert code(e) == "AccessDenied"


def test_group_changes_take_effect_on_the_next_request(coffer, kms, iam):
    iam.create_user(UserName="member")
    iam.create_group(GroupName="encryptors")
    iam.put_group_policy(GroupName="encryptors", PolicyName="enc", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="member")["AccessKey"]
    member = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        member.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "AccessDeniedException" and "no identity-based policy allows" in message(e)
    iam.add_user_to_group(GroupName="encryptors", UserName="member")
    member.encrypt(KeyId=key, Plaintext=b"x")
    iam.remove_user_from_group(GroupName="encryptors", UserName="member")
    with pytest.raises(ClientError) as e:
        member.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "AccessDeniedException"
    iam.add_user_to_group(GroupName="encryptors", UserName="member")
    member.encrypt(KeyId=key, Plaintext=b"x")
    iam.delete_group_policy(GroupName="encryptors", PolicyName="enc")
    with pytest.raises(ClientError) as e:
        member.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "AccessDeniedException"


def test_no_way_around_the_decision(coffer, kms, iam):
    """Requests shaped to slip past authorization are still decided: an empty body (which KMS
    reads as `{}`), and UpdateAlias onto a key one may use, away from a key one may not."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import urllib3

    iam.create_user(UserName="sneaky")
    k = iam.create_access_key(UserName="sneaky")["AccessKey"]

    def raw(target, body):
        req = botocore.awsrequest.AWSRequest(method="POST", url=coffer.endpoint + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(k["AccessKeyId"], k["SecretAccessKey"]),
                                "kms", "us-east-1").add_auth(req)
        r = urllib3.PoolManager(ca_certs=coffer.ca).request("POST", req.url, body=body, headers=dict(req.headers.items()))
        return r.status, json.loads(r.data or b"{}")

    before = len(kms.list_keys(Limit=1000)["Keys"])
    for target in ["TrentService.CreateKey", "TrentService.ListKeys", "TrentService.ListAliases"]:
        status, body = raw(target, b"")
        assert status == 400 and body["__type"] == "AccessDeniedException", (target, body)
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before

    theirs = kms.create_key()["KeyMetadata"]["KeyId"]
    sneaky_arn = f"arn:aws:iam::{ACCOUNT}:user/sneaky"
    mine = kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": sneaky_arn}, "Action": "kms:UpdateAlias", "Resource": "*"}]}))
    kms.create_alias(AliasName="alias/payroll", TargetKeyId=theirs)
    sneaky = coffer.client(access_key=k["AccessKeyId"], secret_key=k["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        sneaky.update_alias(AliasName="alias/payroll", TargetKeyId=mine["KeyMetadata"]["KeyId"])
    assert code(e) == "AccessDeniedException"
    assert kms.describe_key(KeyId="alias/payroll")["KeyMetadata"]["KeyId"] == theirs

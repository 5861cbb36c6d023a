"""The key lifecycle clock through the real binary: scheduled deletion, automatic rotation and the
expiry of imported material happen when their time comes, survive restarts, and never run twice.

The server's `--lifecycle-clock-offset` moves only the lifecycle clock forward, so the test restarts
Coffer "days later" instead of waiting; the clock runs once at start and then every
`--lifecycle-interval` seconds.
"""

import datetime
import os
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Coffer
from test_kms_import import import_material


def later(data_dir, offset):
    return Coffer(data_dir, extra_args=["--lifecycle-clock-offset", offset, "--lifecycle-interval", "1"]).start()


def wait_for(predicate, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def automatic_rotations(kms, key_id):
    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    return [r for r in rotations if r["RotationType"] == "AUTOMATIC"]


def gone(kms, key_id):
    try:
        kms.describe_key(KeyId=key_id)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NotFoundException"
        return True
    return False


def test_deletion_rotation_and_expiry_happen_on_time_across_restarts(data_dir):
    c = Coffer(data_dir).start()
    kms = c.client()
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=doomed, Plaintext=b"soon unreadable")["CiphertextBlob"]
    kms.create_alias(AliasName="alias/doomed", TargetKeyId=doomed)
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    rotating = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=rotating, RotationPeriodInDays=90)
    kept = kms.encrypt(KeyId=rotating, Plaintext=b"still readable")["CiphertextBlob"]
    imported = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    import_material(kms, imported, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    assert kms.describe_key(KeyId=imported)["KeyMetadata"]["KeyState"] == "Enabled"
    c.stop()

    # Three days later: the imported material has expired; nothing else is due.
    c = later(data_dir, "3d")
    kms = c.client()
    wait_for(lambda: kms.describe_key(KeyId=imported)["KeyMetadata"]["KeyState"] == "PendingImport",
             "imported material to expire")
    assert kms.describe_key(KeyId=doomed)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert automatic_rotations(kms, rotating) == []
    c.stop()

    # Eight days later: the key scheduled for deletion is gone, with its alias and its ciphertexts.
    c = later(data_dir, "8d")
    kms = c.client()
    wait_for(lambda: gone(kms, doomed), "the scheduled deletion")
    assert "alias/doomed" not in [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert doomed not in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    with pytest.raises(ClientError) as e:  # the blob names a key that no longer exists
        kms.decrypt(CiphertextBlob=blob)
    assert e.value.response["Error"]["Code"] == "InvalidCiphertextException"
    assert automatic_rotations(kms, rotating) == []
    c.stop()

    # Ninety-one days later: one automatic rotation; a restart at the same time does not repeat it.
    for _ in range(2):
        c = later(data_dir, "91d")
        kms = c.client()
        wait_for(lambda: len(automatic_rotations(kms, rotating)) >= 1, "the automatic rotation")
        time.sleep(1.5)  # at least one more run of the clock
        assert len(automatic_rotations(kms, rotating)) == 1
        c.stop()

    # Another period later: the second rotation; old ciphertexts still decrypt.
    c = later(data_dir, "182d")
    kms = c.client()
    wait_for(lambda: len(automatic_rotations(kms, rotating)) == 2, "the second automatic rotation")
    assert kms.decrypt(CiphertextBlob=kept)["Plaintext"] == b"still readable"
    c.stop()
    log = c.stderr_path.read_text()
    assert "lifecycle clock runs ahead of the wall clock" in log


def test_clock_settings_are_checked(data_dir):
    with pytest.raises(RuntimeError) as e:
        Coffer(data_dir, extra_args=["--lifecycle-clock-offset", "a week"]).start(timeout=10)
    assert "like 8d" in str(e.value)

"""The bucket policy of docs/s3-bucket-policy.md, enforced by a real S3 server: Ceph radosgw.

Server: Ceph's radosgw 16.2 (Debian 12 package ``radosgw``) over a one-monitor, one-OSD
memstore cluster, started by the ``ceph_rgw`` fixture (tests/fixtures/s3.py). Its users
``owner`` (makes the bucket, its Object Lock settings and its policy: the account's
break-glass role), ``writer`` (a backup host) and ``admin`` (the admin/drill host) are separate
principals, so what the writer and the admin may do comes from the bucket policy alone.

The policy is read from the JSON blocks of docs/s3-bucket-policy.md, with the bucket name and
the two principals substituted; nothing is restated here, so the page is what is tested.

What radosgw 16 enforces, and these tests rely on: principals; ``Allow`` and explicit
``Deny``; ``Resource`` and ``NotResource`` with wildcards; the ``s3:prefix`` condition of
ListBucket; the actions s3:DeleteObject, s3:DeleteObjectVersion, s3:PutObjectRetention,
s3:GetBucketObjectLockConfiguration, s3:PutBucketPolicy; COMPLIANCE retention (no delete of a
retained version, no shortening, by anyone); a bucket's default retention on single and
multipart uploads.

What it does not, and so what is left out or asserted differently:

- ``WriterOnlyCreatesNewKeys`` (``s3:if-none-match``) and ``WriterNeverCopies`` (a ``Null``
  condition): radosgw 16 does not evaluate them as AWS does and they would deny every upload;
  they are left out here (the page says so). ``TLSOnly`` is left out because the fixture
  serves plain HTTP.
- ``If-None-Match: *`` in a versioned bucket (every Object Lock bucket): radosgw accepts it and
  stores a new version. So "PutObject over an existing key" is asserted as *kept*: the
  original version survives, retained, and the admin can put it back; on AWS the
  ``WriterOnlyCreatesNewKeys`` statement denies the upload instead.
- Retention cannot be fast-forwarded on a real server. "The admin can prune once retention
  allows" is shown with objects written before the bucket got its default retention (none to
  wait for), next to retained ones that prune reports and keeps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.backup_env import PROJECT, BackupEnv
from tests.fixtures.s3 import CephRGW

pytestmark = pytest.mark.integration

DOC = PROJECT / "docs" / "s3-bucket-policy.md"
DOC_BUCKET = "portal-backups-vinhphuc"
DOC_WRITER = "arn:aws:iam::111122223333:role/portal-backup-web-01"
DOC_ADMIN = "arn:aws:iam::111122223333:role/portal-backup-admin"
PREFIX = "web-01"  # the page's example prefix, kept
#: statements radosgw 16 cannot evaluate as AWS does (see the module docstring and the page)
AWS_ONLY = {"WriterOnlyCreatesNewKeys", "WriterNeverCopies", "TLSOnly"}
RETENTION_DAYS = 1
KEEP_LAST_ONLY = {"last": 1, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}


def documented_policy(bucket: str, rgw: CephRGW) -> dict[str, Any]:
    """Both statement lists of the page as one bucket policy (each Sid once), for ``bucket``."""
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    statements: dict[str, dict[str, Any]] = {}
    for block in blocks:
        for statement in json.loads(block).get("Statement", []):
            statements.setdefault(statement["Sid"], statement)
    assert statements.keys() >= AWS_ONLY, "the page no longer has the statements named here"
    for sid in AWS_ONLY:
        assert f"`{sid}`" in DOC.read_text(encoding="utf-8"), f"the page must explain {sid}"
    kept = [s for sid, s in statements.items() if sid not in AWS_ONLY]
    text = (
        json.dumps({"Version": "2012-10-17", "Statement": kept})
        .replace(DOC_BUCKET, bucket)
        .replace(DOC_WRITER, rgw.users["writer"].arn)
        .replace(DOC_ADMIN, rgw.users["admin"].arn)
    )
    assert "111122223333" not in text
    policy: dict[str, Any] = json.loads(text)
    return policy


def denied(call: Any, **kwargs: Any) -> str:
    """Make the call; it must fail with AccessDenied. Returns S3's message (may be empty)."""
    with pytest.raises(ClientError) as excinfo:
        call(**kwargs)
    error = excinfo.value.response["Error"]
    assert error.get("Code") == "AccessDenied", excinfo.value.response
    return str(error.get("Message") or "")


def set_default_retention(owner: Any, bucket: str, days: int) -> None:
    owner.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
        },
    )


@dataclass
class Deployment:
    """A repository as the page sets it up, after two nightly runs of the writer."""

    rgw: CephRGW
    bucket: str
    env: BackupEnv
    src: Path
    first_run: set[str]  # keys written before the bucket had its default retention
    second_run: set[str]  # keys written under the default retention
    refused: Any  # the writer's run refused while the bucket lacked the retention

    def as_user(self, user: str) -> None:
        self.env.env = self.rgw.env(user)

    def stored(self) -> set[str]:
        owner = self.rgw.client("owner")
        pages = owner.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{PREFIX}/"
        )
        return {o["Key"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture(scope="module")
def deployment(ceph_rgw: CephRGW, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    root = tmp_path_factory.mktemp("policy")
    owner = ceph_rgw.client("owner")
    bucket = ceph_rgw.new_bucket_name()
    owner.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(documented_policy(bucket, ceph_rgw)))

    env = BackupEnv(root, f"s3://{bucket}/{PREFIX}", ceph_rgw.endpoint_url, ceph_rgw.env("admin"))
    env.repo_options = {"region": ceph_rgw.region, "object_lock_days": RETENTION_DAYS}
    src = root / "src"
    src.mkdir()
    (src / "index.html").write_text("<h1>Cổng thông tin điện tử tỉnh</h1>", encoding="utf-8")
    (src / "huong-dan.txt").write_text("phiên bản 1\n" * 2000, encoding="utf-8")
    env.sources = [{"name": "portal", "kind": "files", "category": "code", "paths": [str(src)]}]
    env.write_config()
    # the page: "Create the repository (ops backup init) from the admin host"; with
    # object_lock_days set and no default retention yet, even that is refused first
    env.ops("backup", "keygen", "--identity", str(env.identity),
            "--writer-key", str(env.writer_key), check=True)  # fmt: skip
    refused_init = env.ops("backup", "init")
    assert refused_init.returncode == 3, refused_init.stdout + refused_init.stderr
    assert "has Object Lock but no default retention" in refused_init.stderr
    env.repo_options["object_lock_days"] = 0
    env.write_config()
    env.ops("backup", "init", check=True)

    deployment = Deployment(ceph_rgw, bucket, env, src, set(), set(), None)
    deployment.as_user("writer")
    env.repo_options["object_lock_days"] = RETENTION_DAYS
    env.write_config()
    deployment.refused = env.ops("backup", "run")
    env.repo_options["object_lock_days"] = 0
    env.write_config()
    env.ops("backup", "run", check=True)
    deployment.first_run = deployment.stored()

    set_default_retention(owner, bucket, RETENTION_DAYS)
    env.repo_options["object_lock_days"] = RETENTION_DAYS
    env.write_config()
    deployment.as_user("admin")
    [init] = env.ops_json("backup", "init")  # says what protects the repository
    assert init["protection"] == (
        "bucket default retention COMPLIANCE 1 day; create-only writes (If-None-Match)"
    )
    deployment.as_user("writer")
    (src / "huong-dan.txt").write_text("phiên bản 2\n" * 3000, encoding="utf-8")
    env.ops("backup", "run", check=True)
    deployment.second_run = deployment.stored() - deployment.first_run
    return deployment


def new_key(deployment: Deployment, prefix: str) -> str:
    [key] = sorted(k for k in deployment.second_run if k.startswith(f"{PREFIX}/{prefix}"))[:1]
    return key


def test_the_writer_backs_up_with_the_documented_policy(deployment: Deployment) -> None:
    """`ops backup run` as the writer: retention checked first, objects retained by default."""
    refused = deployment.refused
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert (
        f"object_lock_days is {RETENTION_DAYS}, but bucket {deployment.bucket} has Object Lock "
        "but no default retention"
    ) in refused.stdout + refused.stderr

    written = {k.split("/")[1] for k in deployment.second_run}
    assert {"packs", "index", "snapshots"} <= written
    locks = [k for k in deployment.stored() if k.startswith(f"{PREFIX}/locks/")]
    assert locks == []  # released
    admin = deployment.rgw.client("admin")
    for key in deployment.second_run:
        head = admin.head_object(Bucket=deployment.bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(hours=23)
    for key in deployment.first_run:
        assert "ObjectLockMode" not in admin.head_object(Bucket=deployment.bucket, Key=key)


def test_a_writer_turned_attacker_cannot_delete_or_weaken(deployment: Deployment) -> None:
    """boto3 with the writer's keys, against objects the backups wrote."""
    writer = deployment.rgw.client("writer")
    admin = deployment.rgw.client("admin")
    bucket = deployment.bucket
    pack = new_key(deployment, "packs/")
    snapshot = new_key(deployment, "snapshots/")
    version = admin.head_object(Bucket=bucket, Key=pack)["VersionId"]
    until = admin.head_object(Bucket=bucket, Key=pack)["ObjectLockRetainUntilDate"]

    for key in (pack, snapshot, new_key(deployment, "index/"), f"{PREFIX}/config"):
        denied(writer.delete_object, Bucket=bucket, Key=key)
    denied(writer.delete_object, Bucket=bucket, Key=pack, VersionId=version)
    # a batch delete: refused whole (radosgw), or per key (AWS); either way nothing goes
    objects = [{"Key": pack}, {"Key": pack, "VersionId": version}]
    try:
        batch = writer.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied"
    else:
        assert batch.get("Deleted", []) == []
        assert {e["Code"] for e in batch["Errors"]} == {"AccessDenied"}
    for retain_until in (datetime.now(UTC) + timedelta(minutes=5), until + timedelta(days=30)):
        # shorter, which COMPLIANCE refuses anyway, and longer, which only the policy refuses
        denied(
            writer.put_object_retention,
            Bucket=bucket,
            Key=pack,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until},
        )
    denied(writer.get_object, Bucket=bucket, Key=pack)
    denied(writer.get_object, Bucket=bucket, Key=snapshot)
    denied(writer.put_object, Bucket=bucket, Key="web-02/packs/ab/x", Body=b"x", IfNoneMatch="*")
    denied(writer.list_objects_v2, Bucket=bucket, Prefix="web-02/")
    denied(writer.put_bucket_policy, Bucket=bucket, Policy=json.dumps({"Statement": []}))
    denied(writer.delete_bucket_policy, Bucket=bucket)
    denied(
        writer.put_object_lock_configuration,
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    # nothing changed
    versions = admin.list_object_versions(Bucket=bucket, Prefix=pack)
    assert [v["VersionId"] for v in versions.get("Versions", [])] == [version]
    assert versions.get("DeleteMarkers", []) == []
    assert admin.head_object(Bucket=bucket, Key=pack)["ObjectLockRetainUntilDate"] == until
    # ... and even the admin cannot remove a retained version early
    message = denied(admin.delete_object, Bucket=bucket, Key=pack, VersionId=version)
    assert "lock" in message.lower()


def test_an_overwritten_object_is_kept_and_the_admin_puts_it_back(
    deployment: Deployment, tmp_path: Path
) -> None:
    """radosgw stores the writer's upload over an existing pack as a new version (it ignores
    If-None-Match in versioned buckets); the retained original survives, `check --read-data`
    names the damage, and the admin's copy of the original version repairs it."""
    writer = deployment.rgw.client("writer")
    admin = deployment.rgw.client("admin")
    bucket = deployment.bucket
    pack = new_key(deployment, "packs/")
    original = admin.get_object(Bucket=bucket, Key=pack)
    original_bytes, original_version = original["Body"].read(), original["VersionId"]

    writer.put_object(Bucket=bucket, Key=pack, Body=b"garbage from a broken-in host")

    versions = admin.list_object_versions(Bucket=bucket, Prefix=pack)["Versions"]
    assert original_version in {v["VersionId"] for v in versions}
    kept = admin.get_object(Bucket=bucket, Key=pack, VersionId=original_version)
    assert kept["Body"].read() == original_bytes
    assert kept["ObjectLockMode"] == "COMPLIANCE"

    deployment.as_user("admin")
    try:
        found = deployment.env.ops("--json", "backup", "check", "--read-data")
        assert found.returncode == 1, found.stdout + found.stderr
        assert pack.removeprefix(f"{PREFIX}/") in found.stdout
        assert "Traceback" not in found.stderr

        # the page's repair: the retained original becomes the current version again
        admin.copy_object(
            Bucket=bucket,
            Key=pack,
            CopySource={"Bucket": bucket, "Key": pack, "VersionId": original_version},
        )
        assert deployment.env.ops_json("backup", "check", "--read-data")["ok"] is True
        target = tmp_path / "restored"
        deployment.env.ops("backup", "restore", "latest", "--source", "portal",
                           "--target", str(target), check=True)  # fmt: skip
        restored = target / str(deployment.src).lstrip("/")
        for name in ("index.html", "huong-dan.txt"):
            assert (restored / name).read_bytes() == (deployment.src / name).read_bytes()
    finally:
        deployment.as_user("writer")


def test_the_admin_prunes_what_retention_allows(deployment: Deployment) -> None:
    """`ops backup forget --prune` with the admin's keys: the first run's objects (never
    retained) go for good, every version; the retained ones stay and are reported."""
    env = deployment.env
    deployment.as_user("admin")
    try:
        env.retention = KEEP_LAST_ONLY
        env.write_config()
        result = env.ops("--json", "backup", "forget", "--prune")
        assert result.returncode == 0, result.stdout + result.stderr
        [doc] = json.loads(result.stdout)
        assert len(doc["remove"]) == 1
        assert doc["prune"]["packs_deleted"] >= 1

        admin = deployment.rgw.client("admin")
        remaining = deployment.stored()
        gone = deployment.first_run - remaining
        assert any(k.startswith(f"{PREFIX}/snapshots/") for k in gone)
        assert any(k.startswith(f"{PREFIX}/packs/") for k in gone)
        for key in gone:  # deleted for real: no version and no delete marker left behind
            versions = admin.list_object_versions(Bucket=deployment.bucket, Prefix=key)
            assert versions.get("Versions", []) == []
            assert versions.get("DeleteMarkers", []) == []
        assert deployment.second_run <= remaining
        assert len(env.ops_json("backup", "list")) == 1
        assert env.ops_json("backup", "check", "--read-data")["ok"] is True
    finally:
        env.retention = None
        env.write_config()
        deployment.as_user("writer")

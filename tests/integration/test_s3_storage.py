"""S3Storage against moto's S3 server over HTTP, directly and through a fault-injecting proxy.

Where moto differs from real S3, the test says so in its docstring and what it checks instead:

- moto ignores a bucket's default retention for multipart objects; real S3 (and Ceph's radosgw,
  tests/integration/test_s3_policy.py) apply it. Retention is asserted on single-PUT objects.
- moto does not verify Content-MD5, so "the server rejects bytes damaged in flight" is S3's
  promise, not something these tests can show; they check the header is sent.
- moto answers AccessDenied for deleting a locked version, as S3 does.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portalops.backup.repo.backends import open_storage
from portalops.backup.repo.s3 import ConditionalWritesUnsupported, RetentionTooShort, S3Storage
from portalops.backup.repo.storage import LocalStorage, ObjectLocked, ObjectMissing, StorageError
from portalops.core.errors import ExitCode
from tests.fixtures.faulty_proxy import FAULTS, FaultyProxy
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def make_bucket(s3_server: S3Server, *, lock: bool = False, default_days: int = 0) -> str:
    s3 = s3_server.client()
    bucket = s3_server.new_bucket_name()
    s3.create_bucket(
        Bucket=bucket,
        ObjectLockEnabledForBucket=lock,
        CreateBucketConfiguration={"LocationConstraint": s3_server.region},
    )
    if default_days:
        s3.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": default_days}},
            },
        )
    return bucket


def storage(
    s3_server: S3Server, url: str, *, endpoint: str | None = None, **options: Any
) -> S3Storage:
    return S3Storage(
        "offsite",
        url,
        endpoint=endpoint or s3_server.endpoint_url,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        **options,
    )


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return make_bucket(s3_server)


@pytest.fixture
def repo(s3_server: S3Server, bucket: str) -> S3Storage:
    return storage(s3_server, f"s3://{bucket}/portal")


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- round trips


def test_small_objects_round_trip(repo: S3Storage, s3_server: S3Server, bucket: str) -> None:
    data = "Sở Thông tin và Truyền thông — cấu hình nginx".encode()
    repo.put("config", data)
    repo.put("keys/empty", b"")

    assert repo.get("config") == data
    assert repo.get("keys/empty") == b""
    assert repo.size("config") == len(data)
    head = s3_server.client().head_object(Bucket=bucket, Key="portal/config")
    assert head["Metadata"]["md5"] == hashlib.md5(data).hexdigest()  # noqa: S324
    assert repo.describe() == f"s3://{bucket}/portal ({s3_server.endpoint_url})"


def test_large_object_goes_multipart(repo: S3Storage, s3_server: S3Server, bucket: str) -> None:
    data = payload(1, 40 * MiB + 123)
    repo.put("packs/ab/large", data)

    assert repo.get("packs/ab/large") == data
    head = s3_server.client().head_object(Bucket=bucket, Key="portal/packs/ab/large")
    assert head["ETag"].strip('"').endswith("-6")  # five 8 MiB parts and the rest
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


def test_existing_object_is_kept_not_replaced(repo: S3Storage) -> None:
    """Uploads carry If-None-Match: *; an object that is already there counts as written."""
    repo.put("index/abc", b"first")
    repo.put("index/abc", b"second")  # content-named keys never really differ
    assert repo.get("index/abc") == b"first"


def test_failed_multipart_upload_is_aborted(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy
) -> None:
    """No half-object becomes visible and no parts are left behind when a part cannot go up."""
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url, max_attempts=2)
    repo.multipart_threshold = repo.part_size = 5 * MiB
    # create the upload and the first part, then fail the second part twice
    faulty_proxy.script(None, None, "slowdown", "slowdown")

    with pytest.raises(StorageError, match="SlowDown"):
        repo.put("packs/cd/half", payload(2, 12 * MiB))

    assert repo.size("packs/cd/half") is None
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_missing_objects(repo: S3Storage) -> None:
    assert repo.size("snapshots/web/none") is None
    with pytest.raises(ObjectMissing) as excinfo:
        repo.get("snapshots/web/none")
    assert str(excinfo.value) == "repository offsite: object snapshots/web/none does not exist"
    assert excinfo.value.exit_code == ExitCode.OPERATIONAL


def test_bad_keys_are_refused(repo: S3Storage) -> None:
    for key in ("/etc/passwd", "packs/../config", "packs//x"):
        with pytest.raises(StorageError, match="refusing object key"):
            repo.put(key, b"x")


# -- listing


def test_list_is_relative_and_isolated_per_repository(s3_server: S3Server, bucket: str) -> None:
    """Two repositories in one bucket, one prefix a string prefix of the other."""
    portal = storage(s3_server, f"s3://{bucket}/portal")
    portal2 = storage(s3_server, f"s3://{bucket}/portal2/")
    portal.put("packs/ab/1", b"one")
    portal.put("snapshots/web/2026-11-28T00:00:00Z-aa", b"snap")
    portal2.put("packs/ab/2", b"two!")

    assert sorted((i.key, i.size) for i in portal.list("")) == [
        ("packs/ab/1", 3),
        ("snapshots/web/2026-11-28T00:00:00Z-aa", 4),
    ]
    assert [i.key for i in portal.list("packs/")] == ["packs/ab/1"]
    assert [i.key for i in portal2.list("")] == ["packs/ab/2"]
    assert list(portal.list("index/")) == []


def test_list_follows_continuation_tokens(repo: S3Storage) -> None:
    repo.list_page_size = 3
    keys = {f"index/{n:02d}" for n in range(10)}
    for key in keys:
        repo.put(key, key.encode())
    assert {i.key for i in repo.list("index/")} == keys


# -- delete


def test_delete_is_idempotent(repo: S3Storage) -> None:
    repo.put("locks/0a", b"lock")
    repo.delete("locks/0a")
    repo.delete("locks/0a")
    repo.delete("locks/never-there")
    assert repo.size("locks/0a") is None


def test_delete_in_versioned_bucket_frees_the_versions(s3_server: S3Server) -> None:
    """A plain DeleteObject would leave a delete marker and every byte; ours leaves nothing."""
    bucket = make_bucket(s3_server, lock=True)
    repo = storage(s3_server, f"s3://{bucket}/portal")
    repo.put("packs/ab/x", b"old")
    s3_server.client().put_object(Bucket=bucket, Key="portal/packs/ab/x", Body=b"older twin")
    repo.delete("packs/ab/x")

    versions = s3_server.client().list_object_versions(Bucket=bucket, Prefix="portal/")
    assert versions.get("Versions", []) == []
    assert versions.get("DeleteMarkers", []) == []


# -- Object Lock: the bucket's default retention, never headers


def test_default_retention_protects_objects_the_writer_sent_plainly(
    s3_server: S3Server, faulty_proxy: FaultyProxy
) -> None:
    """Uploads carry no Object Lock headers (they need s3:PutObjectRetention, which writers are
    denied); the bucket's default retention, checked before the first write, holds them."""
    bucket = make_bucket(s3_server, lock=True, default_days=2)
    repo = storage(
        s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url, object_lock_days=2
    )
    s3 = s3_server.client()
    before = datetime.now(UTC)
    repo.put("snapshots/web/2026-11-28T00:00:00Z-ab", b"snapshot")
    repo.put("locks/1f", b"lock")

    assert all(not k.startswith("x-amz-object-lock") for r in faulty_proxy.seen for k in r.headers)
    checks = [r for r in faulty_proxy.seen if r.path.endswith("?object-lock")]
    assert len(checks) == 1  # once per process, before the first write
    assert faulty_proxy.seen[0].path.endswith("?object-lock")
    assert repo.protection() == (
        "bucket default retention COMPLIANCE 2 days; create-only writes (If-None-Match)"
    )

    head = s3.head_object(Bucket=bucket, Key="portal/snapshots/web/2026-11-28T00:00:00Z-ab")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=2) - timedelta(seconds=2) <= until
    assert until <= datetime.now(UTC) + timedelta(days=2, seconds=2)

    with pytest.raises(ObjectLocked) as excinfo:
        repo.delete("snapshots/web/2026-11-28T00:00:00Z-ab")
    assert excinfo.value.exit_code == ExitCode.OPERATIONAL
    assert until.strftime("%Y-%m-%dT%H:%M:%SZ") in str(excinfo.value)
    assert "snapshots/web/2026-11-28T00:00:00Z-ab" in str(excinfo.value)
    assert repo.get("snapshots/web/2026-11-28T00:00:00Z-ab") == b"snapshot"


def test_locks_under_a_default_retention_still_disappear(s3_server: S3Server) -> None:
    """A bucket default retention locks lock objects too; delete hides them with a marker."""
    bucket = make_bucket(s3_server, lock=True, default_days=1)
    repo = storage(s3_server, f"s3://{bucket}/portal", object_lock_days=1)
    repo.put("locks/2e", b"lock")
    assert "ObjectLockMode" in s3_server.client().head_object(Bucket=bucket, Key="portal/locks/2e")
    repo.delete("locks/2e")
    assert repo.size("locks/2e") is None
    assert list(repo.list("locks/")) == []


@pytest.mark.parametrize(
    ("lock", "mode", "days", "why"),
    [
        (False, None, 0, "has no Object Lock configuration"),
        (True, None, 0, "has Object Lock but no default retention"),
        (True, "GOVERNANCE", 30, "has a GOVERNANCE default retention"),
        (True, "COMPLIANCE", 1, "retains new objects for only 1 day;"),
    ],
)
def test_a_bucket_retaining_less_than_object_lock_days_is_refused(
    s3_server: S3Server, lock: bool, mode: str | None, days: int, why: str
) -> None:
    bucket = make_bucket(s3_server, lock=lock)
    if mode is not None:
        s3_server.client().put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
            },
        )
    repo = storage(s3_server, f"s3://{bucket}/portal", object_lock_days=7)

    with pytest.raises(RetentionTooShort) as excinfo:
        repo.put("config", b"x")

    message = str(excinfo.value)
    assert message.startswith(f"repository offsite: object_lock_days is 7, but bucket {bucket} ")
    assert why in message
    assert "COMPLIANCE for at least 7 days" in message
    assert "docs/s3-bucket-policy.md" in message
    assert excinfo.value.exit_code == ExitCode.OPERATIONAL
    assert list(repo.list("")) == []  # refused before anything was written


def test_without_object_lock_days_the_bucket_is_not_asked(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy
) -> None:
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    repo.put("config", b"x")
    assert [r.method for r in faulty_proxy.seen] == ["PUT"]
    assert repo.protection().startswith("no retention required (object_lock_days: 0)")


# -- stores that cannot refuse to overwrite


def test_a_store_without_conditional_writes_is_refused(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy
) -> None:
    """NotImplemented for If-None-Match ends the write, naming the store and what is lost."""
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    repo.multipart_threshold = repo.part_size = 5 * MiB
    faulty_proxy.refuse_conditional_writes = True

    for key, data in (("index/ab", b"small"), ("packs/ab/big", payload(8, 6 * MiB))):
        with pytest.raises(ConditionalWritesUnsupported) as excinfo:
            repo.put(key, data)
        message = str(excinfo.value)
        assert message.startswith(f"repository offsite: {repo.describe()} answered NotImplemented")
        assert "cannot do create-only writes" in message
        assert "allow_overwriting_writes: true" in message
        assert excinfo.value.exit_code == ExitCode.OPERATIONAL

    assert list(repo.list("")) == []
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_allow_overwriting_writes_accepts_such_a_store(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy
) -> None:
    repo = storage(
        s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url, allow_overwriting_writes=True
    )
    faulty_proxy.refuse_conditional_writes = True
    repo.put("index/ab", b"first")
    repo.put("index/cd", b"second")

    assert repo.get("index/ab") == b"first"
    puts = [r for r in faulty_proxy.seen if r.method == "PUT"]
    # one refused conditional PUT, then plain ones only
    assert ["if-none-match" in r.headers for r in puts] == [True, False, False]
    assert "plain writes" in repo.protection()


def test_backup_run_refuses_a_store_without_conditional_writes(
    s3_server: S3Server, faulty_proxy: FaultyProxy, tmp_path: Path
) -> None:
    """Through the CLI: exit 3 naming the store and the loss; the opt-in makes it run."""
    from tests.fixtures.backup_env import s3_backup_env

    env = s3_backup_env(s3_server, tmp_path, endpoint=faulty_proxy.url)
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_text("<h1>Sở Tư pháp</h1>")
    env.add_source("portal", src)
    faulty_proxy.refuse_conditional_writes = True

    refused = env.ops("backup", "run")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    output = refused.stdout + refused.stderr
    assert "Traceback" not in output
    assert f"{env.repo_url} ({faulty_proxy.url}) answered NotImplemented" in output
    assert "cannot do create-only writes" in output
    assert env.object_keys("snapshots/") == []

    env.repo_options = {"allow_overwriting_writes": True}
    env.write_config()
    env.ops("backup", "run", check=True)
    assert len(env.object_keys("snapshots/")) == 1


# -- faults


@dataclass
class Seen:
    counts: dict[str, int]


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Iterator[Seen]:
    """Attaches the proxy's fault counts to the test report (``-rA`` or junit XML shows them)."""
    seen = Seen({})
    yield seen
    request.node.user_properties.append(("proxy_counts", seen.counts))
    print(f"\nproxy counts for {request.node.name}: {seen.counts}")


def test_puts_and_gets_survive_a_fifth_of_requests_failing(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy, fault_report: Seen
) -> None:
    """~20% of requests answered 500/503, reset or cut short: every object still round-trips."""
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    faulty_proxy.configure(error_500=0.05, slowdown=0.05, reset=0.05, truncate=0.05, seed=11)
    rng = random.Random(5)
    objects = {
        f"packs/{n:02x}/{n}": rng.randbytes(rng.choice((0, 1, 100, 4096, 300_000)))
        for n in range(50)
    }
    for key, data in objects.items():
        repo.put(key, data)
    for key, data in objects.items():
        assert repo.get(key) == data
    assert {i.key: i.size for i in repo.list("packs/")} == {k: len(v) for k, v in objects.items()}

    fault_report.counts = counts = faulty_proxy.counts
    assert all(counts[fault] > 0 for fault in FAULTS), counts
    assert 0.1 < faulty_proxy.faults_injected / counts["requests"] < 0.35, counts
    # and what the server holds is what was sent, checked without the proxy
    direct = storage(s3_server, f"s3://{bucket}/portal")
    assert all(direct.get(key) == data for key, data in objects.items())


def test_uploads_cut_off_mid_body_are_sent_again(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy, fault_report: Seen
) -> None:
    """Connection resets while a part is still being sent, and after the server acted on it."""
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    repo.multipart_threshold = repo.part_size = 5 * MiB
    big, small = payload(6, 11 * MiB), payload(7, 1 * MiB)
    # create | part 1 cut off, again | part 2 done but unanswered, again | part 3 | complete
    # cut off, again | then the single PUT: cut off, done but unanswered (412 on the retry)
    faulty_proxy.script(
        None,
        "reset_mid_body",
        None,
        "reset_after_forward",
        None,
        None,
        "reset_mid_body",
        None,
        "reset_mid_body",
        "reset_after_forward",
    )
    repo.put("packs/ab/big", big)
    repo.put("packs/ab/small", small)

    assert repo.get("packs/ab/big") == big
    assert repo.get("packs/ab/small") == small
    fault_report.counts = counts = faulty_proxy.counts
    assert counts["reset"] == 5
    assert counts["reset_after_forward"] == 2
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_put_gives_up_quickly_when_every_request_fails(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy, fault_report: Seen
) -> None:
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url, max_attempts=3)
    faulty_proxy.configure(slowdown=1.0)
    started = time.monotonic()

    with pytest.raises(StorageError) as excinfo:
        repo.put("packs/ab/doomed", b"data")

    assert time.monotonic() - started < 15
    assert excinfo.value.exit_code == ExitCode.OPERATIONAL
    message = str(excinfo.value)
    assert message.startswith(
        f"repository offsite: cannot write packs/ab/doomed at s3://{bucket}/portal "
        f"({faulty_proxy.url}): SlowDown (HTTP 503)"
    )
    assert message.endswith("gave up after 3 attempts")
    assert s3_server.secret_key not in message
    fault_report.counts = faulty_proxy.counts
    assert faulty_proxy.counts["slowdown"] == 3


def test_connection_resets_every_time_end_in_a_clear_error(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy, fault_report: Seen
) -> None:
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url, max_attempts=2)
    faulty_proxy.configure(reset=1.0)
    started = time.monotonic()

    with pytest.raises(StorageError) as excinfo:
        repo.put("index/ab", b"data")

    assert time.monotonic() - started < 15
    message = str(excinfo.value)
    assert message.startswith(f"repository offsite: cannot write index/ab at s3://{bucket}/portal")
    assert "gave up after at most 2 attempts" in message
    fault_report.counts = faulty_proxy.counts
    assert faulty_proxy.counts["reset"] == 2


def test_truncated_body_is_retried_never_returned_short(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy, fault_report: Seen
) -> None:
    data = payload(4, 200_000)
    storage(s3_server, f"s3://{bucket}/portal").put("packs/ab/cut", data)
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url, max_attempts=3)

    faulty_proxy.script("truncate", "truncate")
    assert repo.get("packs/ab/cut") == data
    assert faulty_proxy.counts["truncate"] == 2

    faulty_proxy.configure(truncate=1.0)
    with pytest.raises(StorageError) as excinfo:
        repo.get("packs/ab/cut")
    assert "gave up after 3 attempts" in str(excinfo.value)
    assert "packs/ab/cut" in str(excinfo.value)
    fault_report.counts = faulty_proxy.counts
    assert faulty_proxy.counts["truncate"] == 5


def test_truncated_listing_is_retried(
    s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy
) -> None:
    """A listing's XML cut short is retried, not parsed as a shorter listing."""
    direct = storage(s3_server, f"s3://{bucket}/portal")
    for n in range(5):
        direct.put(f"index/{n}", b"x")
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    faulty_proxy.script("truncate")
    assert len(list(repo.list("index/"))) == 5
    assert faulty_proxy.counts["truncate"] == 1


def test_content_md5_is_sent(s3_server: S3Server, bucket: str, faulty_proxy: FaultyProxy) -> None:
    """moto does not check Content-MD5 (S3 does, rejecting bytes damaged in flight)."""
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    repo.put("keys/k", b"recipient")
    (put,) = [r for r in faulty_proxy.seen if r.method == "PUT"]
    expected = base64.b64encode(hashlib.md5(b"recipient").digest()).decode()  # noqa: S324
    assert put.headers["content-md5"] == expected
    assert put.headers["if-none-match"] == "*"


# -- URLs


@dataclass
class RepoConfig:
    name: str
    url: str
    endpoint: str | None = None
    region: str | None = None
    object_lock_days: int = 0
    allow_overwriting_writes: bool = False


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    local = open_storage(RepoConfig("local", str(tmp_path)))
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path
    via_file = open_storage(RepoConfig("local", f"file://{tmp_path}"))
    assert isinstance(via_file, LocalStorage)
    assert via_file.root == tmp_path

    s3 = open_storage(
        RepoConfig("offsite", "s3://portal-backups/vinhphuc/", "http://127.0.0.1:9", "x-1", 30)
    )
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.object_lock_days) == ("portal-backups", "vinhphuc/", 30)
    assert s3.describe() == "s3://portal-backups/vinhphuc (http://127.0.0.1:9)"
    bare = open_storage(RepoConfig("offsite", "s3://portal-backups", region="ap-southeast-1"))
    assert isinstance(bare, S3Storage)
    assert bare.prefix == ""
    assert bare.describe() == "s3://portal-backups (AWS ap-southeast-1)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("backups/repo", "unsupported repository URL 'backups/repo'; use an absolute path"),
        ("file://relative", "unsupported repository URL 'file://relative'"),
        ("sftp://host/srv", "unsupported repository URL 'sftp://host/srv'"),
        ("s3://", "is not a valid bucket name"),
        ("s3://Portal_Backups/x", "Portal_Backups is not a valid bucket name"),
        ("s3://portal-backups//x", "empty, '.' or '..' path segment"),
        ("s3://portal-backups/a/../b", "empty, '.' or '..' path segment"),
        ("s3://portal-backups/x?versionId=1", "no query or fragment"),
        ("s3://AKIAEXAMPLE:s3cr3t@portal-backups/x", "credentials do not belong in the URL"),
    ],
)
def test_open_storage_refuses_bad_urls(url: str, expected: str) -> None:
    with pytest.raises(StorageError) as excinfo:
        open_storage(RepoConfig("offsite", url))
    message = str(excinfo.value)
    assert message.startswith("repository offsite: ")
    assert expected in message
    assert "s3cr3t" not in message
    assert excinfo.value.exit_code == ExitCode.OPERATIONAL


def test_object_lock_needs_s3(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="Object Lock needs an s3:// repository"):
        open_storage(RepoConfig("local", str(tmp_path), object_lock_days=3))

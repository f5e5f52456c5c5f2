"""A repository in an S3 bucket (AWS or an S3-compatible store), behind the Storage interface.

Retries come in two layers. botocore's own ``standard`` retry mode re-sends a request, with
exponential backoff and jitter, on 5xx answers, throttling (503 SlowDown and friends) and
connection errors, resets and timeouts. What it cannot see is handled here: a response body cut
short or corrupted after the headers arrived (an object body, or the XML of a listing), which
botocore hands over as a stream or fails to parse. Every such error is retried here with the
same backoff, at most ``max_attempts`` times, and never multiplied with botocore's attempts.

Integrity: every upload carries ``Content-MD5`` (per part for multipart uploads), so the server
rejects bytes damaged in flight; every object records its MD5 in ``x-amz-meta-md5``, and ``get``
checks length and MD5 before returning anything. Uploads are conditional (``If-None-Match: *``):
an existing object is never replaced, only kept, which is the right answer for content-named
objects and the one a bucket policy can enforce (docs/s3-bucket-policy.md). A store that answers
``NotImplemented`` to the condition is refused unless the repository's config accepts plain,
overwriting writes (``allow_overwriting_writes``): silently falling back would drop the
create-only protection the writer policy relies on.

Retention: uploads carry no Object Lock headers. Sending them needs ``s3:PutObjectRetention``,
the permission that can also shorten a GOVERNANCE retention or set a short COMPLIANCE one on a
new version, so the writer policy denies it; the bucket's default retention applies to every new
object version instead, whatever a client sends or omits. ``object_lock_days`` states the least
retention the repository needs: before its first write, each process checks the bucket's default
retention (GetObjectLockConfiguration) and refuses to write into a bucket that falls short.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    ResponseStreamingError,
)
from botocore.parsers import ResponseParserError

from portalops.backup.repo.storage import (
    ObjectInfo,
    ObjectLocked,
    ObjectMissing,
    ObjectTooLarge,
    StorageError,
)
from portalops.core.timefmt import iso_z

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, HeadObjectOutputTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
LOCKS = "locks/"  # lock objects must stay deletable, even when a default retention holds them
DAYS_PER_YEAR = 365  # how S3 counts a default retention given in Years
MAX_BACKOFF = 20.0  # seconds, as botocore's standard mode
MAX_VERSIONS = 100  # versions of one key a delete will remove before giving up

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_MISSING = {"NoSuchKey", "NotFound", "404"}


_Parts = list["CompletedPartTypeDef"]


class RetentionTooShort(StorageError):
    """repository {}: object_lock_days is {}, but bucket {} {}; writers send no retention of
    their own, so new objects would be less protected than configured. Set the bucket's default
    retention to COMPLIANCE for at least {} days (docs/s3-bucket-policy.md, "Create the bucket"),
    or lower object_lock_days"""


class ConditionalWritesUnsupported(StorageError):
    """repository {}: {} answered NotImplemented to an upload with If-None-Match: * ({}), so it
    cannot do create-only writes: a writer could replace objects that already exist, and a bucket
    policy cannot stop it. Refusing to write plainly; set allow_overwriting_writes: true on this
    repository to accept that loss (docs/s3-bucket-policy.md, "S3-compatible stores")"""


class _Damaged(Exception):
    """A response that arrived damaged: body short, or bytes not what was stored."""


class _GaveUp(Exception):
    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(last, attempts)
        self.last = last
        self.attempts = attempts


# Errors botocore does not retry itself, because they surface after it hands the response over.
_RETRY_HERE = (
    _Damaged,
    IncompleteReadError,
    ResponseStreamingError,
    ResponseParserError,
    ChecksumError,
    FlexibleChecksumError,
    urllib3.exceptions.HTTPError,
    HTTPException,
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at either end; may be empty)."""

    def bad(why: str, shown: str = url) -> StorageError:
        return StorageError("?", f"invalid S3 URL {shown!r}: {why}; expected s3://bucket/prefix")

    if not url.startswith("s3://"):
        raise bad("it must start with s3://")
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:
        # never echo it: it probably holds a secret key
        raise bad(
            "credentials do not belong in the URL; use the environment, ~/.aws or an "
            "instance profile",
            shown="s3://…@…",
        )
    if "?" in rest or "#" in rest:
        raise bad("no query or fragment allowed")
    if not _BUCKET.match(bucket) or ".." in bucket or _IP.match(bucket):
        raise bad(f"{bucket or '(empty)'} is not a valid bucket name (3-63 of a-z 0-9 . -)")
    segments = prefix.removesuffix("/").split("/") if prefix.removesuffix("/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise bad("the prefix has an empty, '.' or '..' path segment")
    return bucket, "/".join(segments)


class S3Storage:
    """A repository under ``s3://bucket/prefix``, keys stored as ``prefix/<key>``.

    A backup stores ``concurrent_writes`` packs at once: an upload waits for the server's
    answer, and two in flight keep the link busy (moto on loopback: 173 MiB/s with one PUT
    at a time, 416 with two; a remote endpoint gains more).

    With ``object_lock_days > 0`` the bucket's default retention must be COMPLIANCE for at least
    that many days; the first write of this object checks it (``protection``) and refuses
    otherwise. Objects are written without retention headers: the default covers them.

    Object Lock buckets are versioned, and there a plain DeleteObject only adds a delete marker:
    the object vanishes from listings while its bytes stay stored (and billed). So ``delete``
    asks HEAD for the current version and deletes that version, repeating while older versions
    of the key show through; a version under retention raises ObjectLocked with its date.
    """

    multipart_threshold = 32 * MiB  # packs (~16 MiB) go in one PUT: one request to retry
    part_size = 8 * MiB
    concurrent_writes = 2  # packs a backup stores at once (BlobWriter's seal threads)
    list_page_size = 1000

    def __init__(
        self,
        name: str,
        url: str,
        *,
        endpoint: str | None,
        region: str | None,
        object_lock_days: int = 0,
        allow_overwriting_writes: bool = False,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_attempts: int = 8,
        timeout: float = 60,
    ) -> None:
        self.name = name
        try:
            self.bucket, prefix = parse_s3_url(url)
        except StorageError as exc:
            raise StorageError(name, exc.args[1]) from None
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint = endpoint
        self.region = region
        self.object_lock_days = object_lock_days
        self.allow_overwriting_writes = allow_overwriting_writes
        self.max_attempts = max(1, max_attempts)
        self._conditional = True  # If-None-Match: *, until a store says it cannot (if allowed)
        self._retention: str | None = None  # the bucket's default retention, once checked
        self._rng = random.Random()  # noqa: S311 (backoff jitter, not security)
        config = Config(
            # total_max_attempts counts the first request; botocore's "max_attempts" does not
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=timeout,
            read_timeout=timeout,
            # bucket-in-hostname addressing fails on IP endpoints and many S3-compatibles
            s3={"addressing_style": "path" if endpoint else "auto"},
            # Content-MD5 instead of the newer CRC headers and aws-chunked bodies, which
            # several S3-compatible stores reject; the server still verifies every byte
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="portal-ops",
        )
        # explicit keys if given, else boto3's chain: environment, ~/.aws, instance profile
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        self._client: S3Client = session.client("s3", endpoint_url=endpoint, config=config)

    def describe(self) -> str:
        where = self.endpoint or (f"AWS {self.region}" if self.region else "AWS")
        return f"s3://{self.bucket}/{self.prefix}".removesuffix("/") + f" ({where})"

    def protection(self) -> str:
        """What keeps written objects from being changed, checked against ``object_lock_days``.

        Reads the bucket's Object Lock configuration once per instance (the writer policy grants
        ``s3:GetBucketObjectLockConfiguration``); RetentionTooShort if the default retention is
        missing, not COMPLIANCE, or shorter than ``object_lock_days``.
        """
        if self._retention is None:
            with self._failures("read the Object Lock configuration of", f"bucket {self.bucket}"):
                self._retention = self._check_retention()
        writes = "create-only writes (If-None-Match)"
        if not self._conditional:
            writes = "plain writes (the store ignores If-None-Match; allow_overwriting_writes)"
        return f"{self._retention}; {writes}"

    # -- the Storage interface

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        if self._retention is None:
            self.protection()  # before the first write: never write into a bucket that falls short
        with self._failures("write", key):
            if len(data) > self.multipart_threshold:
                self._put_multipart(key, full, data)
            else:
                self._put_single(key, full, data)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        full = self._full(key)
        with self._failures("read", key):
            try:
                return self._retrying("read", key, lambda: self._fetch(key, full, max_size))
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    raise ObjectMissing(self.name, key) from None
                raise

    def size(self, key: str) -> int | None:
        full = self._full(key)
        with self._failures("stat", key):
            head = self._head(key, full)
            return None if head is None else head["ContentLength"]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._full(prefix) if prefix else self.prefix
        with self._failures("list", prefix or "(all)"):
            token: str | None = None
            while True:
                page = self._retrying("list", prefix, partial(self._list_page, full, token))
                for obj in page.get("Contents", []):
                    if obj["Key"].startswith(self.prefix):
                        yield ObjectInfo(
                            obj["Key"][len(self.prefix) :], obj["Size"], obj.get("LastModified")
                        )
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._failures("delete", key):
            for _ in range(MAX_VERSIONS):
                try:
                    head = self._head(key, full)
                except ClientError as exc:
                    if not (key.startswith(LOCKS) and _code(exc) == "403"):
                        raise
                    # A writer may read locks/ but list the bucket only under its prefix, and
                    # S3 then answers HEAD of a key that is gone (released just now, or by an
                    # unlock) with 403, not 404: delete without a version, a marker at worst.
                    self._retrying("delete", key, partial(self._delete, full, None))
                    return
                if head is None:
                    return  # absent, or hidden behind a delete marker already
                version = head.get("VersionId")
                try:
                    if version is None:  # an unversioned bucket: the object is gone for good
                        self._retrying("delete", key, partial(self._delete, full, None))
                        return
                    self._retrying("delete", key, partial(self._delete, full, version))
                except ClientError as exc:
                    if _code(exc) not in ("AccessDenied", "InvalidRequest"):
                        raise
                    if key.startswith(LOCKS):
                        # a bucket default retention locks lock objects too: a delete marker
                        # hides the lock, and its version expires with the retention
                        self._retrying("delete", key, partial(self._delete, full, None))
                        return
                    # S3 says AccessDenied both for a version under retention and for missing
                    # permissions; HEAD tells them apart (given s3:GetObjectRetention)
                    until = _retained_until(head)
                    if until is not None:
                        raise ObjectLocked(self.name, key, until) from None
                    raise
            raise StorageError(
                self.name, f"cannot delete {key}: more than {MAX_VERSIONS} versions of it"
            )

    # -- writing

    def _put_single(self, key: str, full: str, data: bytes) -> None:
        digest = hashlib.md5(data).digest()  # noqa: S324 (integrity: S3's Content-MD5)
        extra = self._object_args(key, digest)

        def send() -> None:
            conditional: dict[str, Any] = {"IfNoneMatch": "*"} if self._conditional else {}
            self._client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentMD5=_b64(digest),
                **extra,
                **conditional,
            )

        self._conditionally(key, send)

    def _put_multipart(self, key: str, full: str, data: bytes) -> None:
        digest = hashlib.md5(data).digest()  # noqa: S324 (integrity, not security)
        extra = self._object_args(key, digest)
        upload = self._retrying(
            "write",
            key,
            lambda: self._client.create_multipart_upload(Bucket=self.bucket, Key=full, **extra),
        )
        upload_id = upload["UploadId"]
        try:
            parts: _Parts = []
            for number, offset in enumerate(range(0, len(data), self.part_size), start=1):
                chunk = data[offset : offset + self.part_size]

                def send(number: int = number, chunk: bytes = chunk) -> str:
                    answer = self._client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=_b64(hashlib.md5(chunk).digest()),  # noqa: S324
                    )
                    return answer["ETag"]

                parts.append({"ETag": self._retrying("write", key, send), "PartNumber": number})

            def complete() -> None:
                conditional: dict[str, Any] = {"IfNoneMatch": "*"} if self._conditional else {}
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **conditional,
                )

            try:
                created = self._conditionally(key, complete)
            except ClientError as exc:
                # an earlier attempt completed the upload but its answer was lost
                if _code(exc) == "NoSuchUpload" and self._holds(key, full, len(data), digest):
                    return
                raise
        except BaseException:
            # no half-object ever becomes visible; the parts are freed (best effort: a
            # lifecycle rule AbortIncompleteMultipartUpload sweeps what this cannot)
            self._abort(full, upload_id)
            raise
        if not created:
            self._abort(full, upload_id)  # the object existed: the upload is still open

    def _abort(self, full: str, upload_id: str) -> None:
        with suppress(Exception):
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    def _conditionally(self, key: str, send: Callable[[], None]) -> bool:
        """Send a write with If-None-Match; False if the object was there (same content)."""
        try:
            self._retrying("write", key, send)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412 or _code(exc) == "PreconditionFailed":
                return False
            if _code(exc) == "NotImplemented" and self._conditional:
                if not self.allow_overwriting_writes:
                    raise ConditionalWritesUnsupported(
                        self.name, self.describe(), self._client_reason(exc)
                    ) from None
                log.warning(
                    "%s: %s does not do conditional writes; writing plainly, as "
                    "allow_overwriting_writes permits: existing objects can be replaced",
                    self.name,
                    self.describe(),
                )
                self._conditional = False
                self._retrying("write", key, send)
                return True
            raise
        return True

    def _object_args(self, key: str, digest: bytes) -> dict[str, Any]:
        # No ObjectLockMode/RetainUntilDate: they need s3:PutObjectRetention, which writers are
        # denied; the bucket's default retention (checked by ``protection``) applies instead.
        return {"Metadata": {"md5": digest.hex()}}

    def _check_retention(self) -> str:
        """The bucket's default retention as text; RetentionTooShort if it is not enough."""
        if self.object_lock_days == 0:
            return "no retention required (object_lock_days: 0)"
        try:
            answer = self._retrying(
                "read",
                "Object Lock configuration",
                lambda: self._client.get_object_lock_configuration(Bucket=self.bucket),
            )
        except ClientError as exc:
            if _code(exc) != "ObjectLockConfigurationNotFoundError":
                raise
            raise RetentionTooShort(
                self.name,
                self.object_lock_days,
                self.bucket,
                "has no Object Lock configuration (Object Lock can only be turned on when a "
                "bucket is created)",
                self.object_lock_days,
            ) from None
        config = answer.get("ObjectLockConfiguration", {})
        default = config.get("Rule", {}).get("DefaultRetention", {})
        mode = default.get("Mode")
        days = default.get("Days") or DAYS_PER_YEAR * default.get("Years", 0)
        if config.get("ObjectLockEnabled") != "Enabled":
            why = "does not have Object Lock enabled"
        elif not mode:
            why = "has Object Lock but no default retention"
        elif mode != "COMPLIANCE":
            why = (
                f"has a {mode} default retention, which anyone allowed "
                "s3:BypassGovernanceRetention can lift (COMPLIANCE cannot be lifted)"
            )
        elif days < self.object_lock_days:
            why = f"retains new objects for only {days} day{'' if days == 1 else 's'}"
        else:
            return f"bucket default retention {mode} {days} day{'' if days == 1 else 's'}"
        raise RetentionTooShort(
            self.name, self.object_lock_days, self.bucket, why, self.object_lock_days
        )

    def _holds(self, key: str, full: str, size: int, digest: bytes) -> bool:
        try:
            head = self._head(key, full)
        except (ClientError, BotoCoreError, _GaveUp):
            return False  # a writer may not read back what it wrote (bucket policy)
        return (
            head is not None
            and head["ContentLength"] == size
            and head.get("Metadata", {}).get("md5") == digest.hex()
        )

    # -- reading

    def _fetch(self, key: str, full: str, max_size: int | None) -> bytes:
        answer = self._client.get_object(Bucket=self.bucket, Key=full)
        body = answer["Body"]
        if max_size is not None and answer["ContentLength"] > max_size:
            body.close()  # before reading any of it
            raise ObjectTooLarge(self.name, key, answer["ContentLength"], max_size)
        try:
            data = body.read()
        except (BotoCoreError, urllib3.exceptions.HTTPError, HTTPException, OSError) as exc:
            # botocore retried the request, but not the body that followed its headers
            raise _Damaged(f"response body broken off: {exc}") from exc
        finally:
            body.close()
        expected = answer["ContentLength"]
        if len(data) != expected:
            raise _Damaged(f"response body has {len(data)} of {expected} bytes")
        md5 = answer.get("Metadata", {}).get("md5")
        if md5 is not None and hashlib.md5(data).hexdigest() != md5:  # noqa: S324
            raise _Damaged("response body does not match the MD5 recorded at upload")
        return data

    def _head(self, key: str, full: str) -> HeadObjectOutputTypeDef | None:
        try:
            return self._retrying(
                "stat", key, lambda: self._client.head_object(Bucket=self.bucket, Key=full)
            )
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise

    def _list_page(self, full_prefix: str, token: str | None) -> Any:
        if token is None:
            return self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=full_prefix, MaxKeys=self.list_page_size
            )
        return self._client.list_objects_v2(
            Bucket=self.bucket,
            Prefix=full_prefix,
            MaxKeys=self.list_page_size,
            ContinuationToken=token,
        )

    def _delete(self, full: str, version: str | None) -> None:
        if version is None:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        else:
            self._client.delete_object(Bucket=self.bucket, Key=full, VersionId=version)

    # -- retries and errors

    def _full(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/") or "//" in key:
            raise StorageError(self.name, f"refusing object key {key!r}")
        return self.prefix + key

    def _retrying(self, op: str, key: str, call: Callable[[], T]) -> T:
        """``call()``, again after backoff when it fails in a way botocore did not retry."""
        attempt = 1
        while True:
            try:
                return call()
            except _RETRY_HERE as exc:
                if attempt >= self.max_attempts:
                    raise _GaveUp(exc, attempt) from exc
                delay = self._rng.uniform(0, min(MAX_BACKOFF, 2.0 ** (attempt - 1)))
                log.info(
                    "%s: %s %s: %s; retrying in %.1f s (attempt %d of %d)",
                    self.name,
                    op,
                    key,
                    _reason(exc),
                    delay,
                    attempt + 1,
                    self.max_attempts,
                )
                time.sleep(delay)
                attempt += 1

    @contextmanager
    def _failures(self, op: str, key: str) -> Iterator[None]:
        """Turn what boto3 raises into a StorageError naming repository, operation and key."""
        try:
            yield
        except StorageError:
            raise
        except _GaveUp as exc:
            reason = f"{_reason(exc.last)}; gave up after {exc.attempts} attempts"
            raise self._error(op, key, reason) from exc
        except ClientError as exc:
            raise self._error(op, key, self._client_reason(exc)) from exc
        except NoCredentialsError as exc:
            reason = "no S3 credentials found (environment, ~/.aws/credentials or instance profile)"
            raise self._error(op, key, reason) from exc
        except (BotoCoreError, urllib3.exceptions.HTTPError, HTTPException, OSError) as exc:
            # connection errors reach us only after botocore's own retries ran out
            reason = f"{_reason(exc)}; gave up after at most {self.max_attempts} attempts"
            raise self._error(op, key, reason) from exc

    def _error(self, op: str, key: str, reason: str) -> StorageError:
        return StorageError(self.name, f"cannot {op} {key} at {self.describe()}: {reason}")

    def _client_reason(self, exc: ClientError) -> str:
        code = _code(exc)
        meta = exc.response.get("ResponseMetadata", {})
        message = exc.response.get("Error", {}).get("Message", "")
        status = meta.get("HTTPStatusCode", "?")
        # HEAD answers have no body, so their "code" is the bare status
        reason = f"HTTP {status}" if code == str(status) else f"{code} (HTTP {status})"
        if message and message != code:
            reason += f": {message}"
        if code == "NoSuchBucket":
            reason = f"bucket {self.bucket} does not exist"
        elif code == "AccessDenied":
            reason += "; the credentials' policy does not allow this (docs/s3-bucket-policy.md)"
        attempts = int(meta.get("RetryAttempts", 0)) + 1
        if attempts > 1:
            reason += f"; gave up after {attempts} attempts"
        return reason


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "?"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"{_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _Damaged) else f"{type(exc).__name__}: {text}"


def _retained_until(head: HeadObjectOutputTypeDef) -> str | None:
    """When the object's retention or legal hold ends, if HEAD says it has one."""
    until = head.get("ObjectLockRetainUntilDate")
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return "its legal hold is removed"
    if until is not None:
        return iso_z(until, "seconds")
    if head.get("ObjectLockMode"):
        return "an unknown date"
    return None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")

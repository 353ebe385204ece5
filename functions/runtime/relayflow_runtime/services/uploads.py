"""Runs started by S3 uploads.

An object created under ``inputs/`` in the project's bucket starts one single-input run of a
workflow, with the object as the run's file input. Where the object lies says which run:

    inputs/[tenants/<tenant>/]<workflow_id>/[versions/<version_id>/]<name...>

* ``inputs/<workflow_id>/report.pdf``: the active version of the workflow, tenant ``default``;
* ``inputs/<workflow_id>/versions/<version_id>/report.pdf``: that version;
* ``inputs/tenants/<tenant>/<workflow_id>/...``: a workflow of another tenant.

Folders between the workflow id and the file name are allowed (``inputs/<wf>/2025/06/a.txt``).

S3 delivers notifications at least once, and clients retry uploads, so an object is identified by
bucket, key and ETag (its content): within DEDUP_WINDOW_SECONDS the same bytes at the same key
start one run, however often the notification arrives. A marker item in the table records each
upload (conditional put: exactly one delivery wins) with the execution id it starts, so a delivery
that takes over an abandoned attempt starts the same execution, which can exist only once.

An upload that cannot start a run (a malformed key, an unknown workflow or version, an empty, too
large or unreadable file) is moved aside: the object goes to ``rejected/<its key>`` and
``rejected/<its key>.reason.json`` says why; the uploader finds the same reason beside the key it
uploaded (``<its key>.reason.json``, which the trigger ignores), and an ``Upload Rejected`` event
on the relayflow bus announces it (services/notify.py). The uploaded object of an accepted run stays where it
is; the run works on its own copy (an S3-side copy into the execution's prefix, whose key keeps at
most the last 200 bytes of the file name). A key longer than ``MAX_INPUT_KEY_BYTES`` (1,003 bytes:
its moved-aside copies would not fit in S3's 1,024) is refused as ``key_too_long`` and moved aside
under ``rejected/long-keys/<sha-256 of its key>``.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.blobs import BlobStore
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain.clock import new_id, now_iso
from relayflow_runtime.domain.records import UploadMarker, UploadState
from relayflow_runtime.errors import NotFound, RelayflowError
from relayflow_runtime.schemas.entities import ExecutionTrigger
from relayflow_runtime.services import authoring, deps, executions, notify
from relayflow_runtime.services.apikeys import DEFAULT_TENANT, TENANT_PATTERN
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

INPUT_PREFIX = "inputs/"
REJECTED_PREFIX = "rejected/"
REASON_SUFFIX = ".reason.json"
#: S3's longest key, in UTF-8 bytes.
MAX_S3_KEY_BYTES = 1024
#: Longest upload key that can run: its moved-aside copy and reason (``rejected/<key>.reason.json``)
#: must fit in an S3 key too. A longer key is refused at once (``key_too_long``), and moved aside
#: under ``rejected/long-keys/<sha-256 of its key>`` (its reason names the whole key).
MAX_INPUT_KEY_BYTES = MAX_S3_KEY_BYTES - len(REJECTED_PREFIX) - len(REASON_SUFFIX)
LONG_KEYS_PREFIX = REJECTED_PREFIX + "long-keys/"
DEDUP_WINDOW_SECONDS = 24 * 3600
# Longer than the trigger function's timeout (60 s): a claim older than this was abandoned.
CLAIM_LEASE_SECONDS = 90
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
SNIFF_BYTES = 4096

Outcome = Literal["started", "duplicate", "rejected", "ignored"]


class Rejection(Exception):
    """This upload cannot start a run: ``code`` and a sentence for the person who uploaded it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UploadInProgress(Exception):
    """Another delivery of this upload is starting its run right now: retry this one later."""


@dataclass(frozen=True)
class UploadTarget:
    tenant: str
    workflow_id: str
    version_id: str | None
    filename: str


@dataclass(frozen=True)
class UploadResult:
    key: str
    outcome: Outcome
    execution_id: str | None = None
    workflow_id: str | None = None
    reason: str | None = None


# ---- pure parts ------------------------------------------------------------------------------------
def parse_key(key: str) -> UploadTarget:
    """Where an upload's key says to run it (module docstring); Rejection when it says nothing."""
    if not key.startswith(INPUT_PREFIX):
        raise Rejection("bad_key", f"'{key}' is not under {INPUT_PREFIX}")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_INPUT_KEY_BYTES:
        raise Rejection(
            "key_too_long",
            f"the key is {size} bytes; upload keys are at most {MAX_INPUT_KEY_BYTES} bytes (S3 keys are "
            f"at most {MAX_S3_KEY_BYTES}, and the upload's copies add a prefix): use a shorter file name",
        )
    parts = key[len(INPUT_PREFIX) :].split("/")
    tenant = DEFAULT_TENANT
    if parts[0] == "tenants":
        if len(parts) < 4:
            raise Rejection(
                "bad_key", "expected inputs/tenants/<tenant>/<workflow_id>/<file name>; got " + repr(key)
            )
        tenant, parts = parts[1], parts[2:]
        if not TENANT_PATTERN.match(tenant):
            raise Rejection("bad_key", f"'{tenant}' is not a tenant name")
    if len(parts) < 2 or not parts[0]:
        raise Rejection("bad_key", f"expected inputs/<workflow_id>/<file name>; got {key!r}")
    workflow_id, parts = parts[0], parts[1:]
    version_id = None
    if len(parts) >= 3 and parts[0] == "versions":
        if not parts[1]:
            raise Rejection("bad_key", f"no version id after versions/ in {key!r}")
        version_id, parts = parts[1], parts[2:]
    if not parts[-1]:
        raise Rejection("bad_key", f"no file name in {key!r}")
    return UploadTarget(tenant=tenant, workflow_id=workflow_id, version_id=version_id, filename=parts[-1])


def check_content(head: bytes, size: int) -> None:
    """An input file must be UTF-8 text or a PDF (what the nodes can read), not empty, not huge."""
    if size == 0:
        raise Rejection("empty_file", "the file is empty")
    if size > MAX_UPLOAD_BYTES:
        raise Rejection(
            "file_too_large",
            f"the file has {size} bytes; input files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB",
        )
    if head[:1024].lstrip().startswith(b"%PDF-"):
        return
    # The sample may end inside a multi-byte character: final=False keeps an incomplete tail aside.
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        text = decoder.decode(head, final=len(head) >= size)
    except UnicodeDecodeError:
        raise Rejection("unsupported_file", "the file is neither UTF-8 text nor a PDF") from None
    if "\x00" in text:
        raise Rejection("unsupported_file", "the file is neither UTF-8 text nor a PDF")


def upload_digest(bucket: str, key: str, etag: str) -> str:
    return hashlib.sha256(f"{bucket}\n{key}\n{etag}".encode()).hexdigest()


def rejected_key(key: str) -> str:
    """Where a rejected upload goes: ``rejected/<its key>``, or for a key too long for that (its
    reason's key must fit too), ``rejected/long-keys/<sha-256 of the key>``."""
    destination = REJECTED_PREFIX + key
    if len((destination + REASON_SUFFIX).encode("utf-8", "surrogatepass")) <= MAX_S3_KEY_BYTES:
        return destination
    return LONG_KEYS_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# ---- the trigger -----------------------------------------------------------------------------------
def handle_upload(bucket: str, key: str, etag: str, version_id: str | None = None) -> UploadResult:
    """Start the run of one uploaded object, once. Raises UploadInProgress (retry later) when another
    delivery of the same upload holds the claim; any other exception leaves the upload claimable."""
    if bucket != get_settings().bucket_name:
        logger.error("upload in a bucket that is not the project's", extra={"bucket": bucket, "key": key})
        return UploadResult(key, "ignored", reason="not the project's bucket")
    if not key.startswith(INPUT_PREFIX) or key.endswith("/"):
        logger.info("not an input file (outside inputs/ or a folder placeholder)", extra={"key": key})
        return UploadResult(key, "ignored", reason="not an input file")
    if key.endswith(REASON_SUFFIX):
        return UploadResult(key, "ignored", reason="the reason of a rejected upload")
    files = BlobStore(bucket)
    etag = etag.strip('"')
    if not etag:  # every ObjectCreated notification has one; a hand-made event may not
        head = files.head(key)
        etag = head.get("ETag", "").strip('"') if head else ""
    try:
        target = parse_key(key)
    except Rejection as rejection:
        # Nothing can ever start from this key: no marker needed, moving aside is idempotent.
        if files.head(key) is None:
            return UploadResult(key, "ignored", reason="the object no longer exists")
        _move_aside(files, key, etag, version_id, rejection, None)
        return UploadResult(key, "rejected", reason=rejection.code)

    claim = _claim(target.tenant, bucket, key, etag, version_id, files)
    if isinstance(claim, UploadResult):
        return claim
    digest, token, execution_id = claim
    store = deps.stores().uploads
    try:
        result = _start(files, target, bucket, key, etag, version_id, execution_id)
    except BaseException:
        # Let the next delivery (Lambda's retry) take over at once instead of after the lease.
        with contextlib.suppress(Exception):
            store.update_upload(target.tenant, digest, {"lease_until": 0}, expect={"claim_token": token})
        raise
    state = _MARKER_STATES.get(result.outcome, "skipped")
    store.update_upload(
        target.tenant,
        digest,
        {"state": state, "reason": result.reason, "finished_at": now_iso()},
        expect={"claim_token": token},
    )
    return result


#: The state a marker keeps of a finished delivery, by its outcome (any other: ``skipped``).
_MARKER_STATES: dict[str, UploadState] = {"started": "started", "rejected": "rejected"}


def _claim(
    tenant: str, bucket: str, key: str, etag: str, version_id: str | None, files: BlobStore
) -> tuple[str, str, str] | UploadResult:
    """Claim the upload: (marker digest, claim token, execution id) or the result of a duplicate."""
    store = deps.stores().uploads
    digest = upload_digest(bucket, key, etag)
    token, execution_id = new_id(), new_id()
    now = int(time.time())
    fresh = UploadMarker(
        bucket=bucket,
        key=key,
        etag=etag,
        version_id=version_id,
        state="starting",
        execution_id=execution_id,
        claim_token=token,
        claimed_at=now_iso(),
        lease_until=now + CLAIM_LEASE_SECONDS,
    )
    if store.claim_upload(tenant, digest, fresh, now_epoch=now, expires_epoch=now + DEDUP_WINDOW_SECONDS):
        return digest, token, execution_id
    marker = store.get_upload(tenant, digest)
    if marker is None:  # expired and removed in between: a later delivery claims it afresh
        raise UploadInProgress(f"the marker of {key} changed meanwhile")
    state = marker.state
    if state == "started":
        logger.info(
            "duplicate notification: this upload already started its run",
            extra={"key": key, "execution_id": marker.execution_id},
        )
        return UploadResult(key, "duplicate", execution_id=marker.execution_id)
    if state == "starting" and marker.lease_until > now:
        raise UploadInProgress(f"another delivery of {key} is starting its run")
    if state in ("rejected", "skipped"):
        # The object was moved aside (or never there): if it is back, it was uploaded again.
        head = files.head(key)
        if head is None or head.get("ETag", "").strip('"') != etag:
            return UploadResult(key, "duplicate", reason=f"this upload was already {state}")
    # Take the claim over, keeping the execution id of the attempt before.
    try:
        store.update_upload(
            tenant,
            digest,
            {"state": "starting", "claim_token": token, "lease_until": now + CLAIM_LEASE_SECONDS},
            expect={"claim_token": marker.claim_token, "state": state},
        )
    except ConditionFailed:
        raise UploadInProgress(f"another delivery of {key} took it over") from None
    return digest, token, marker.execution_id


def _start(
    files: BlobStore,
    target: UploadTarget,
    bucket: str,
    key: str,
    etag: str,
    version_id: str | None,
    execution_id: str,
) -> UploadResult:
    head = files.head(key)
    if head is None:
        logger.warning("the uploaded object was deleted before its run started", extra={"key": key})
        return UploadResult(key, "ignored", reason="the object no longer exists")
    if head.get("ETag", "").strip('"') != etag:
        # Overwritten since: the newer object has a notification of its own.
        logger.info("the uploaded object was replaced before its run started", extra={"key": key})
        return UploadResult(key, "ignored", reason="the object was replaced by a newer upload")
    size = int(head.get("ContentLength", 0))
    try:
        _check_target(target)
        check_content(_first_bytes(files, key, size), size)
        execution = executions.start_from_object(
            target.tenant,
            target.workflow_id,
            target.version_id,
            execution_id=execution_id,
            source_key=key,
            filename=target.filename,
            content_type=head.get("ContentType") or "application/octet-stream",
            size=size,
            trigger=ExecutionTrigger(bucket=bucket, key=key, etag=etag, version_id=version_id),
        )
    except Rejection as rejection:
        _move_aside(files, key, etag, version_id, rejection, target)
        return UploadResult(key, "rejected", workflow_id=target.workflow_id, reason=rejection.code)
    except RelayflowError as exc:
        if exc.status >= 500:
            raise
        # The version cannot run (no nodes, an invalid graph, ...): the upload is refused.
        _move_aside(files, key, etag, version_id, Rejection(exc.code, exc.message), target)
        return UploadResult(key, "rejected", workflow_id=target.workflow_id, reason=exc.code)
    logger.info(
        "upload started a run",
        extra={"key": key, "execution_id": execution.id, "workflow_id": target.workflow_id},
    )
    return UploadResult(key, "started", execution_id=execution.id, workflow_id=target.workflow_id)


def _check_target(target: UploadTarget) -> None:
    try:
        authoring.get_workflow(target.tenant, target.workflow_id)
    except NotFound:
        raise Rejection(
            "unknown_workflow",
            f"workflow '{target.workflow_id}' does not exist"
            + (f" for tenant '{target.tenant}'" if target.tenant != DEFAULT_TENANT else ""),
        ) from None
    if target.version_id:
        try:
            authoring.get_version(target.tenant, target.version_id, workflow_id=target.workflow_id)
        except NotFound:
            raise Rejection(
                "unknown_version",
                f"version '{target.version_id}' is not a version of workflow '{target.workflow_id}'",
            ) from None


def _first_bytes(files: BlobStore, key: str, size: int) -> bytes:
    if size == 0:
        return b""
    stream = files.open_stream(key)
    try:
        return stream.read(SNIFF_BYTES)
    finally:
        stream.close()


def _move_aside(
    files: BlobStore,
    key: str,
    etag: str,
    version_id: str | None,
    rejection: Rejection,
    target: UploadTarget | None,
) -> None:
    """rejected/<key> gets the object, rejected/<key>.reason.json and <key>.reason.json (beside the
    upload, where its uploader looks; when that key fits in S3) say why; then the original goes,
    and the rejection is announced. Safe to repeat (a repeated delivery writes the same objects;
    the event may be announced twice, as any EventBridge event may arrive twice)."""
    destination = rejected_key(key)
    reason: dict[str, Any] = {
        "code": rejection.code,
        "message": rejection.message,
        "bucket": files.bucket,
        "key": key,
        "etag": etag,
        "version_id": version_id,
        "rejected_key": destination,
        "tenant": target.tenant if target else None,
        "workflow_id": target.workflow_id if target else None,
        "rejected_at": now_iso(),
    }
    beside = key + REASON_SUFFIX
    if len(beside.encode("utf-8", "surrogatepass")) <= MAX_S3_KEY_BYTES:
        reason["reason_key"] = beside
    logger.warning("upload rejected", extra={"rejection": reason})
    files.copy(key, destination)
    text = json.dumps(reason, indent=2).encode()
    files.put_bytes(destination + REASON_SUFFIX, text, "application/json")
    if "reason_key" in reason:
        files.put_bytes(beside, text, "application/json")
    # Announced before the upload is deleted: a retry after a kill between the two finds the object
    # gone and would announce nothing (a repeat is one delivery: its id is the key's and ETag's).
    notify.upload_rejected(reason)
    current = files.head(key)
    if current is not None and current.get("ETag", "").strip('"') == etag:
        files.delete(key)

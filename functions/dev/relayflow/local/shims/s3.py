"""S3: notification events with the fields and key encoding AWS sends; Lambda notifications handed
to the local stack's asynchronous invocation; multipart uploads completed without holding the
object in memory.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_plus

from relayflow.local.shims.base import _optional_target, patch_optional


def _make_s3_event(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_s3_event(event_name: Any, bucket: Any, key: Any, notification_id: str) -> Any:
        body = original(event_name, bucket, key, notification_id)
        for record in body.get("Records", []):
            record.setdefault("userIdentity", {"principalId": "AWS:AIDARELAYFLOWLOCAL"})
            record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
            record.setdefault(
                "responseElements",
                {
                    "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                    "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes * 2).decode(),
                },
            )
            s3 = record.get("s3", {})
            s3.get("bucket", {}).setdefault("ownerIdentity", {"principalId": "ARELAYFLOWLOCAL"})
            obj = s3.get("object", {})
            obj["key"] = quote_plus(str(key.name), safe="/")
            version_id = getattr(key, "version_id", None)
            if version_id and version_id != "null":
                obj.setdefault("versionId", version_id)
            obj.setdefault("sequencer", f"{time.time_ns():018X}")
        return body

    return get_s3_event


_S3_NOTIFICATIONS = "moto.s3.notifications"

# S3 invokes Lambda asynchronously: Lambda retries a failed invocation and then hands the event to
# the function's on-failure destination. moto invokes once and drops the error. While a handler is
# registered here, S3's Lambda notifications go to it instead (the local stack's asynchronous
# invocation: LocalStack.invoke_async).
_s3_lambda_handlers: list[Callable[[str, Any], None]] = []


@contextlib.contextmanager
def on_s3_lambda_notification(handler: Callable[[str, Any], None]) -> Iterator[None]:
    """Hand every S3 Lambda notification to ``handler(function_arn, event)`` while the block runs."""
    _s3_lambda_handlers.append(handler)
    try:
        yield
    finally:
        _s3_lambda_handlers.remove(handler)


def _make_s3_lambda_invoke(original: Callable[..., Any]) -> Callable[..., Any]:
    def _invoke_awslambda(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        if _s3_lambda_handlers:
            _s3_lambda_handlers[-1](fn_arn, event_body)
            return
        original(account_id, event_body, fn_arn, region_name)

    return _invoke_awslambda


_S3_MODELS = "moto.s3.models"


def _make_upload_part(original: Callable[..., Any], no_such_upload: Any) -> Callable[..., Any]:
    # moto looks the upload up with [] and fails with a KeyError (a 500); AWS answers NoSuchUpload
    # for a part of an upload that was completed or aborted (an export's repeated round meets it).
    def upload_part(self: Any, bucket_name: str, multipart_id: str, part_id: int, value: bytes) -> Any:
        if multipart_id not in self.get_bucket(bucket_name).multiparts:
            raise no_such_upload(upload_id=multipart_id)
        return original(self, bucket_name, multipart_id, part_id, value)

    return upload_part


# moto completes a multipart upload by concatenating its parts in memory, about four times over
# (the parts, its checksum's copy of them, and a bytes copy of each): an export of a million
# LLM-sized results (5.9 GiB, bench/export.py) would need ~24 GiB. Here the parts are copied, a few
# MiB at a time, into the file the new object keeps its value in (moto keeps values past 5 MiB on
# disk), and the object's default checksum (CRC64NVME, or CRC32 without awscrt, of the whole
# object) is computed as they pass: the memory of one chunk. An upload that asked for a checksum
# algorithm or type is completed by moto as it is.
_COPY_BYTES = 4 * 1024 * 1024


class _Written:
    """A completed upload's value, already in the file the new object keeps (see
    _make_value_setter). moto keeps the parts' files beside it (a GET by PartNumber reads them):
    disk holds the object twice, as with moto's own completion."""

    def __init__(self, spool: Any, size: int) -> None:
        self.spool, self.size = spool, size

    def __len__(self) -> int:
        return self.size


def _crc_step() -> tuple[Callable[[bytes, int], int], int]:
    """moto's default checksum (s3/utils.py compute_checksum, CRC64NVME) as a running update, and
    its width in bytes."""
    from moto.s3 import utils

    if utils.HAS_CRT:
        from awscrt import checksums

        return checksums.crc64nvme, 8
    return binascii.crc32, 4


def _make_complete(original: Callable[..., Any]) -> Callable[..., Any]:
    from moto import settings
    from moto.s3 import exceptions, models

    def complete(self: Any, body: Iterator[tuple[int, str]]) -> Any:
        if self.metadata.get("x-amz-checksum-algorithm") or self.metadata.get("x-amz-checksum-type"):
            return original(self, body)
        md5s = bytearray()
        chosen: list[Any] = []
        for number, etag in body:  # moto's checks, in its order
            part = self.parts.get(number)
            if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
                raise exceptions.InvalidPart()
            if chosen and chosen[-1].contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
                raise exceptions.EntityTooSmall()
            md5s.extend(codecs.decode(part.etag.replace('"', ""), "hex"))
            chosen.append(part)
        if not chosen:
            raise exceptions.MalformedXML()
        step, width = _crc_step()
        crc, size = 0, 0
        # the new object keeps this file (moto closes it when the object goes): no context manager
        spool = tempfile.SpooledTemporaryFile(settings.get_s3_default_key_buffer_size())  # noqa: SIM115
        for part in chosen:
            with part.lock:
                part._value_buffer.seek(0)
                while chunk := part._value_buffer.read(_COPY_BYTES):
                    spool.write(chunk)
                    crc, size = step(chunk, crc), size + len(chunk)
        self.completed_part_sizes = [part.size for part in chosen]
        checksum = base64.b64encode(crc.to_bytes(width, "big")).decode()
        etag = models.md5_hash(bytes(md5s)).hexdigest()
        return _Written(spool, size), f"{etag}-{len(chosen)}", ("FULL_OBJECT", checksum, 1)

    return complete


def _make_value_setter(original: property) -> property:
    def value(self: Any, new_value: Any) -> None:
        if not isinstance(new_value, _Written):
            original.fset(self, new_value)  # type: ignore[misc]
            return
        self._value_buffer.close()
        self._value_buffer = new_value.spool
        self.contentsize = new_value.size

    return property(original.fget, value)


def install() -> None:
    """S3 notification events shaped as AWS sends them, delivered through the local stack; a part
    of an upload that is gone answers NoSuchUpload; an upload completed part by part (above)."""
    no_such_upload = _optional_target("moto.s3.exceptions", "NoSuchUpload")
    patch_optional(
        _S3_MODELS,
        "S3Backend.upload_part",
        lambda upload_part: _make_upload_part(upload_part, no_such_upload),
        check=lambda _: no_such_upload is not None,
        lost="a part of an upload that is gone is not NoSuchUpload",
    )
    if patch_optional(
        _S3_MODELS,
        "FakeKey.value",
        _make_value_setter,
        check=lambda value: isinstance(value, property) and value.fset is not None,
        lost="multipart uploads are completed in memory (four times the object's size)",
    ):
        patch_optional(
            _S3_MODELS,
            "FakeMultipart.complete",
            _make_complete,
            check=lambda _: all(
                _optional_target(where, name) is not None
                for where, name in (
                    (_S3_MODELS, "S3_UPLOAD_PART_MIN_SIZE"),
                    (_S3_MODELS, "md5_hash"),
                    ("moto.s3.exceptions", "InvalidPart"),
                    ("moto.s3.exceptions", "EntityTooSmall"),
                    ("moto.s3.exceptions", "MalformedXML"),
                    ("moto.s3.utils", "HAS_CRT"),
                    ("moto.settings", "get_s3_default_key_buffer_size"),
                )
            ),
            lost="multipart uploads are completed in memory (four times the object's size)",
        )
    patch_optional(
        _S3_NOTIFICATIONS, "_get_s3_event", _make_s3_event, lost="S3 notification events keep moto's shape"
    )
    patch_optional(
        _S3_NOTIFICATIONS,
        "_invoke_awslambda",
        _make_s3_lambda_invoke,
        lost="S3 notifications invoke Lambda once, without retries",
    )

"""S3: notification events with the fields and key encoding AWS sends; Lambda notifications handed
to the local stack's asynchronous invocation.
"""

from __future__ import annotations

import base64
import contextlib
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


def install() -> None:
    """S3 notification events shaped as AWS sends them, delivered through the local stack; a part
    of an upload that is gone answers NoSuchUpload."""
    no_such_upload = _optional_target("moto.s3.exceptions", "NoSuchUpload")
    patch_optional(
        _S3_MODELS,
        "S3Backend.upload_part",
        lambda upload_part: _make_upload_part(upload_part, no_such_upload),
        check=lambda _: no_such_upload is not None,
        lost="a part of an upload that is gone is not NoSuchUpload",
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

"""S3: input files, execution snapshots, large node outputs, batch item lists and results."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.domain.disposition import content_disposition
from relayflow_runtime.errors import NotFound


class BlobStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    @property
    def _s3(self) -> Any:
        return aws.client("s3")

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream", **meta: str
    ) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, Metadata=meta)

    def put_json(self, key: str, value: Any) -> None:
        body = json.dumps(value, separators=(",", ":")).encode()
        self.put_bytes(key, body, "application/json")

    def upload_stream(
        self, key: str, stream: IO[bytes], content_type: str = "application/octet-stream"
    ) -> None:
        self._s3.upload_fileobj(stream, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise NotFound(f"stored object '{key}' does not exist.", code="object_not_found") from exc
            raise

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive) of an object: one ranged GET."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "InvalidRange"):
                raise NotFound(f"stored object '{key}' does not exist.", code="object_not_found") from exc
            raise
        data: bytes = response["Body"].read()
        return data

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def open_stream(self, key: str) -> IO[bytes]:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise NotFound(f"stored object '{key}' does not exist.", code="object_not_found") from exc
            raise

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def copy(self, source_key: str, dest_key: str) -> None:
        self._s3.copy_object(
            Bucket=self.bucket, Key=dest_key, CopySource={"Bucket": self.bucket, "Key": source_key}
        )

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete_prefix(self, prefix: str, *, stop: Callable[[], bool] | None = None) -> bool:
        """Delete every object under ``prefix``, a page (1,000) at a time; with ``stop``, stop once
        it answers True after a page (at least one page is deleted). True when nothing is left:
        False too when S3 reported keys it could not delete (``Errors``: SlowDown, InternalError),
        so the caller comes back for them."""
        complete = True
        batch: list[dict[str, str]] = []

        def delete() -> None:
            nonlocal complete
            answer = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
            complete = complete and not answer.get("Errors")

        for key in self.keys(prefix):
            batch.append({"Key": key})
            if len(batch) == 1000:
                delete()
                batch = []
                if stop is not None and stop():
                    return False
        if batch:
            delete()
        return complete

    def presigned_put(self, key: str, content_type: str, expires: int = 3600) -> str:
        return self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires,
        )

    def presigned_get(self, key: str, expires: int = 3600, filename: str | None = None) -> str:
        """A URL that GETs the object without credentials for ``expires`` seconds."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        url: str = self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
        return url

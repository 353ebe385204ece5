"""S3 objects read and written as streams, in bounded memory, for dataset files and batch item lists.

A million-item list is hundreds of megabytes: it is never held whole. ``ObjectWriter`` sends it as
a multipart upload, one part of ``part_size`` bytes at a time (the only buffer); ``read_lines``
yields an object's lines from any byte offset with ranged GETs of ``chunk_size`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.errors import NotFound

#: S3's smallest part (every part of a multipart upload but the last must reach it).
MIN_PART_SIZE = 5 * 1024 * 1024


def _s3() -> Any:
    return aws.client("s3")


def _not_found(exc: ClientError, key: str) -> NotFound | None:
    if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound", "InvalidRange"):
        return NotFound(f"stored object '{key}' does not exist.", code="object_not_found")
    return None


class ObjectWriter:
    """Write one S3 object piece by piece: ``write(bytes)`` then ``close()`` (or use ``with``).

    Small objects end as one PutObject; larger ones as a multipart upload. Leaving the ``with``
    block on an exception aborts the upload: nothing partial is ever visible under ``key``.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        content_type: str = "application/json",
        part_size: int = MIN_PART_SIZE,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.size = int((resume or {}).get("size") or 0)
        self._buffer = bytearray()
        self._upload_id: str | None = (resume or {}).get("upload_id")
        #: Parts an earlier invocation sent (``resume``): listed from S3 when the upload completes.
        self._sent_before = int((resume or {}).get("parts") or 0)
        self._parts: list[dict[str, Any]] = []
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes written but not sent yet."""
        return len(self._buffer)

    def suspend(self) -> dict[str, Any]:
        """Send what is buffered as a part (it must be a full one: ``buffered`` at least
        MIN_PART_SIZE) and leave the upload open: what a later ``ObjectWriter(resume=...)`` in
        another invocation goes on from."""
        if len(self._buffer) < MIN_PART_SIZE:
            raise ValueError("an upload is suspended on a whole part only")
        self._flush_part()
        self._closed = True
        return {
            "upload_id": self._upload_id,
            "parts": self._sent_before + len(self._parts),
            "size": self.size,
        }

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self.part_size:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = _s3().create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )["UploadId"]
        number = self._sent_before + len(self._parts) + 1
        # The buffer itself is sent (botocore takes a bytearray), not a copy: one part in memory,
        # not two. It is replaced, never changed, once handed over.
        body, self._buffer = self._buffer, bytearray()
        response = _s3().upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._upload_id is None:
            body, self._buffer = self._buffer, bytearray()
            _s3().put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentType=self.content_type)
            return
        if self._buffer:
            self._flush_part()
        parts = self._parts
        if self._sent_before:
            parts = [
                {"PartNumber": part["PartNumber"], "ETag": part["ETag"]}
                for page in _s3()
                .get_paginator("list_parts")
                .paginate(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
                for part in page.get("Parts", [])
            ]
        _s3().complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
        )

    def abort(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            _s3().abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def object_size(bucket: str, key: str) -> int | None:
    try:
        return int(_s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if _not_found(exc, key):
            return None
        raise


def read_stream(bucket: str, key: str, offset: int = 0, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """The object's bytes from ``offset`` on, in chunks of at most ``chunk_size`` (one streaming GET,
    closed as soon as the caller stops iterating). Nothing at or past the end."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if offset:
        kwargs["Range"] = f"bytes={offset}-"
    try:
        body = _s3().get_object(**kwargs)["Body"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "InvalidRange":
            return
        raise _not_found(exc, key) or exc from exc
    try:
        while chunk := body.read(chunk_size):
            yield chunk
    finally:
        body.close()


def split_lines(chunks: Iterator[bytes], offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset of the line, the line with its newline) from a stream of chunks that starts at
    ``offset``: memory is one chunk plus the longest line."""
    buffer = bytearray()
    position = offset  # offset of buffer[0]
    for chunk in chunks:
        searched = len(buffer)
        buffer += chunk
        start = 0
        while (newline := buffer.find(b"\n", max(start, searched))) >= 0:
            yield position + start, bytes(buffer[start : newline + 1])
            start = newline + 1
        del buffer[:start]
        position += start
    if buffer:
        yield position, bytes(buffer)


def read_lines(bucket: str, key: str, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """The object's lines from byte ``offset`` on (see split_lines)."""
    return split_lines(read_stream(bucket, key, offset), offset)

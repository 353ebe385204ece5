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
    ) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._closed = False

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
        number = len(self._parts) + 1
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
        _s3().complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
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


class UploadGone(Exception):
    """The multipart upload is no longer open: completed (by another run of the same round) or
    aborted."""


def _upload_gone(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == "NoSuchUpload"


class PartUpload:
    """One multipart upload whose parts are sent by number, from any thread or invocation (an
    export's rounds, services/results_export.py). The caller sends the same bytes under the same
    number every time (part k is always bytes (k-1)·part to k·part of the file), so a part sent
    twice, by a repeated round or one killed half-way, changes nothing; ``complete`` takes parts 1
    to ``count`` as S3 lists them, whatever higher numbers an earlier run left."""

    def __init__(self, bucket: str, key: str, content_type: str, upload_id: str | None = None) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.upload_id = upload_id

    def open(self) -> str:
        if self.upload_id is None:
            self.upload_id = _s3().create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )["UploadId"]
        return self.upload_id

    def send(self, number: int, body: bytes) -> None:
        try:
            _s3().upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.open(), PartNumber=number, Body=body
            )
        except ClientError as exc:
            if _upload_gone(exc):
                raise UploadGone(self.key) from exc
            raise

    def complete(self, count: int, size: int) -> None:
        """Complete the object from parts 1..``count`` (``size`` bytes in all). When the upload is
        gone because another run completed it with the same ``size``, there is nothing to do."""
        try:
            listed = {
                int(part["PartNumber"]): part["ETag"]
                for page in _s3()
                .get_paginator("list_parts")
                .paginate(Bucket=self.bucket, Key=self.key, UploadId=self.open())
                for part in page.get("Parts", [])
            }
            missing = [n for n in range(1, count + 1) if n not in listed]
            if missing:
                raise RuntimeError(f"parts {missing[:5]} of {self.key} were never sent")
            parts = [{"PartNumber": n, "ETag": listed[n]} for n in range(1, count + 1)]
            _s3().complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )
        except ClientError as exc:
            if _upload_gone(exc) and object_size(self.bucket, self.key) == size:
                return
            if _upload_gone(exc):
                raise UploadGone(self.key) from exc
            raise


def object_size(bucket: str, key: str) -> int | None:
    try:
        return int(_s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if _not_found(exc, key):
            return None
        raise


def read_windows(bucket: str, key: str, offset: int, window: int) -> Iterator[bytes]:
    """The object's bytes from ``offset`` on, one ranged GET of ``window`` bytes at a time: for a
    reader that takes minutes over it (an export's round), where one open GET would sit idle."""
    while True:
        try:
            data = _s3().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + window - 1}")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "InvalidRange":
                return
            raise _not_found(exc, key) or exc from exc
        chunk: bytes = data["Body"].read()
        if chunk:
            yield chunk
        if len(chunk) < window:
            return
        offset += len(chunk)


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


def read_lines(
    bucket: str, key: str, offset: int = 0, window: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """The object's lines from byte ``offset`` on (see split_lines): one streaming GET, or ranged
    GETs of ``window`` bytes (read_windows)."""
    chunks = read_stream(bucket, key, offset) if window is None else read_windows(bucket, key, offset, window)
    return split_lines(chunks, offset)

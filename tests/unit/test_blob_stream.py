"""ObjectWriter and read_lines on (in-process) moto S3: parts of a multipart upload, a small object
in one PutObject, nothing left by an aborted write, and lines read back from an offset."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from relayflow_runtime.adapters import blob_stream

BUCKET = "blob-stream-test"


@pytest.fixture(autouse=True)
def s3(fake_aws_env: None) -> Iterator[object]:
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def lines(count: int) -> Iterator[bytes]:
    for n in range(count):
        yield b'{"id":"item-%07d","text":"%s"}\n' % (n, b"x" * 200)


def test_large_object_is_written_in_parts_and_read_back(s3: object) -> None:
    # Given 12 MiB written a line at a time (parts of 5 MiB, then the rest)
    written = list(lines(12 * 1024 * 1024 // 230))
    writer = blob_stream.ObjectWriter(BUCKET, "list.json")
    for line in written:
        writer.write(line)
    assert writer._upload_id is not None and len(writer._parts) == 2  # two parts sent so far
    writer.close()
    # Then the object is every byte written, in order
    assert writer.size == blob_stream.object_size(BUCKET, "list.json") == sum(map(len, written))
    body = b"".join(blob_stream.read_stream(BUCKET, "list.json"))
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(written)).digest()
    # And its lines come back one by one with their offsets, from any line on
    offsets = [sum(map(len, written[:n])) for n in (0, 1, len(written) - 2)]
    read = list(blob_stream.read_lines(BUCKET, "list.json"))
    assert [line for _, line in read] == written
    assert [read[0][0], read[1][0], read[-2][0]] == offsets
    assert list(blob_stream.read_lines(BUCKET, "list.json", offsets[-1])) == read[-2:]


def test_small_object_is_one_put(s3: object) -> None:
    with blob_stream.ObjectWriter(BUCKET, "small.json") as writer:
        writer.write(b"[\n")
        writer.write(b"]\n")
    assert writer._upload_id is None
    assert b"".join(blob_stream.read_stream(BUCKET, "small.json")) == b"[\n]\n"


def test_aborted_write_leaves_nothing(s3: object) -> None:
    # Given a write that has sent a part, then fails
    with pytest.raises(RuntimeError), blob_stream.ObjectWriter(BUCKET, "broken.json") as writer:
        for line in lines(6 * 1024 * 1024 // 230):
            writer.write(line)
        assert writer._upload_id is not None
        raise RuntimeError("the ingest failed")
    # Then neither the object nor an unfinished multipart upload is left
    assert blob_stream.object_size(BUCKET, "broken.json") is None
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # type: ignore[attr-defined]


LINE = len(next(lines(1)))


@pytest.mark.parametrize("window", [1000, LINE * 10])
def test_lines_read_in_ranged_windows_are_the_lines_of_one_stream(s3: object, window: int) -> None:
    # Given an object of 100 lines (a multiple of the second window: its last read starts past the
    # end), lines that straddle the first window's reads
    body = b"".join(lines(100))
    boto3.client("s3").put_object(Bucket=BUCKET, Key="w.json", Body=body)
    # When it is read from the third line on in windows, and as one stream
    windowed = list(blob_stream.read_lines(BUCKET, "w.json", 2 * LINE, window=window))
    streamed = list(blob_stream.read_lines(BUCKET, "w.json", 2 * LINE))
    # Then both are the same lines at the same offsets, to the end
    assert windowed == streamed and len(windowed) == 98

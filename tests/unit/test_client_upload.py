"""The client sends a dataset file to a presigned upload URL as it reads it, never whole."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

from relayflow.client import UPLOAD_READ_BYTES, Client

UPLOAD_URL = "https://bucket.s3.example/t/default/datasets/d1/uploads/u1/source?X-Amz-Signature=x"
VERSION = {
    "id": "v1",
    "dataset_id": "d1",
    "number": 1,
    "status": "ready",
    "item_count": 3,
    "created_at": "2026-01-01T00:00:00.000Z",
    "updated_at": "2026-01-01T00:00:00.000Z",
}


class PresignedApi(httpx.BaseTransport):
    """The dataset upload API offering an upload URL, and an S3 that reads the PUT body chunk by
    chunk as it arrives (keeping only its digest, its size and the largest chunk)."""

    def __init__(self) -> None:
        self.put_headers: httpx.Headers | None = None
        self.received = 0
        self.largest_chunk = 0
        self.digest = hashlib.sha256()
        self.committed: Any = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and str(request.url) == UPLOAD_URL:
            self.put_headers = request.headers
            for chunk in request.stream:  # type: ignore[union-attr]
                self.received += len(chunk)
                self.largest_chunk = max(self.largest_chunk, len(chunk))
                self.digest.update(chunk)
            return httpx.Response(200)
        path = request.url.path
        if request.method == "POST" and path == "/datasets/d1/versions/v1/uploads":
            return httpx.Response(
                200,
                json={
                    "id": "u1",
                    "dataset_id": "d1",
                    "version_id": "v1",
                    "filename": "items.jsonl",
                    "format": "jsonl",
                    "part_size": 4 * 1024 * 1024,
                    "max_parts": 128,
                    "upload_url": UPLOAD_URL,
                    "expires_at": "2026-01-02T00:00:00Z",
                },
            )
        if request.method == "POST" and path == "/datasets/d1/versions/v1/uploads/u1/commit":
            self.committed = json.loads(request.read())
            return httpx.Response(200, json=VERSION)
        return httpx.Response(404, json={"code": "not_found", "message": f"{request.method} {path}"})


def test_presigned_upload_streams_the_file(tmp_path: Path) -> None:
    # Given a 24 MiB dataset file and an API that offers a presigned upload URL
    path = tmp_path / "items.jsonl"
    line = json.dumps({"text": "x" * 1000}).encode() + b"\n"
    with path.open("wb") as out:
        for _ in range(24 * 1024 * 1024 // len(line)):
            out.write(line)
    size = path.stat().st_size
    api = PresignedApi()
    with Client("http://api.example", api_key="k", transport=api) as client:
        # When the client uploads it
        tracemalloc.start()
        try:
            version = client.upload_dataset_items("d1", "v1", path=path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # Then S3 received the whole file, with its length and not chunked (a presigned PUT needs both)
    assert api.received == size
    assert api.digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert api.put_headers is not None
    assert api.put_headers["content-length"] == str(size)
    assert "transfer-encoding" not in api.put_headers
    # And the upload was committed as a file sent to the URL (no parts)
    assert api.committed == {} and version.status == "ready"
    # And the file was never held whole: read and sent a chunk at a time
    assert api.largest_chunk <= UPLOAD_READ_BYTES
    assert peak < 4 * 1024 * 1024, peak

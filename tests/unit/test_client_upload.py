"""The client sends a dataset file to a presigned upload URL as it reads it, never whole."""

from __future__ import annotations

import hashlib
import json
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

    def __init__(self, upload_url: str = UPLOAD_URL) -> None:
        self.upload_url = upload_url
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
                    "upload_url": self.upload_url,
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


class FakeS3(BaseHTTPRequestHandler):
    """S3 on 127.0.0.1: takes a PUT, keeps the header lines it received and the body's size."""

    received: list[tuple[list[tuple[str, str]], int]] = []

    def do_PUT(self) -> None:
        size = int(self.headers["content-length"])
        body = self.rfile.read(size)
        self.received.append((list(self.headers.items()), len(body)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class ApiThenRealS3(httpx.BaseTransport):
    """The fake API in process; requests to 127.0.0.1 go over a real connection (to FakeS3)."""

    def __init__(self, api: PresignedApi) -> None:
        self.api = api
        self.network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1":
            return self.network.handle_request(request)
        return self.api.handle_request(request)

    def close(self) -> None:
        self.network.close()


def test_presigned_upload_sends_no_api_key_to_s3(tmp_path: Path) -> None:
    # Given a client with an API key, and an API whose upload URL is an S3 listening on 127.0.0.1
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}\n')
    FakeS3.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bucket/uploads/u1/source?X-Amz-Signature=x"
        api = PresignedApi(upload_url=url)
        with Client("http://api.example", api_key="secret-key", transport=ApiThenRealS3(api)) as client:
            # When the client uploads the file
            version = client.upload_dataset_items("d1", "v1", path=path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    # Then S3 received the file once, in a PUT that carries no API key
    assert version.status == "ready" and api.committed == {}
    ((headers, size),) = FakeS3.received
    assert size == path.stat().st_size
    names = {name.lower() for name, _ in headers}
    assert "x-api-key" not in names
    assert all("secret-key" not in value for _, value in headers)
    # And nothing else of the client's defaults: only what a presigned PUT needs
    assert names == {"host", "content-type", "content-length"}, headers

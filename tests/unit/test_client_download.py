"""The client follows a download too large for one answer: it waits out 202 (the file is being
prepared), then fetches the 303's presigned URL without its API key; on 413 it pages."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from relayflow.client import Client

URL = "https://bucket.s3.example/t/default/executions/x1/exports/results.jsonl?X-Amz-Signature=s"
RESULTS = "/workflows/w1/executions/x1/results"


def test_a_large_download_is_awaited_then_fetched_from_its_url_without_the_api_key(tmp_path: Path) -> None:
    # Given an API that prepares the file for two polls, then redirects to S3
    seen: list[httpx.Request] = []
    body = b'{"source_item_id":"a"}\n' * 1000

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "bucket.s3.example":
            return httpx.Response(200, content=body)
        if sum(r.url.path == RESULTS for r in seen) <= 2:
            return httpx.Response(202, json={"status": "preparing"}, headers={"Retry-After": "0"})
        return httpx.Response(303, json={"url": URL, "expires_in": 3600}, headers={"Location": URL})

    # When the results are downloaded
    with Client("http://api.test", api_key="secret", transport=httpx.MockTransport(answer)) as client:
        target = client.download_execution_results("w1", "x1", tmp_path / "r.jsonl")

    # Then the file is S3's, fetched once, and the API key never went to S3
    assert target.read_bytes() == body
    assert [r.url.host for r in seen] == ["api.test"] * 3 + ["bucket.s3.example"]
    assert all(r.headers.get("x-api-key") == "secret" for r in seen[:3])
    assert "x-api-key" not in seen[3].headers
    assert seen[0].url.params["format"] == "jsonl"


def test_where_no_url_is_offered_the_results_are_paged_into_the_file(tmp_path: Path) -> None:
    pages = {None: (["a", "b"], "t1"), "t1": (["c"], None)}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("format") == "jsonl":
            return httpx.Response(413, json={"code": "results_too_large", "message": "page"})
        items, token = pages[request.url.params.get("next_token")]
        rows = [{"source_item_id": i, "status": "completed", "output": i.upper()} for i in items]
        return httpx.Response(200, json={"items": rows, "next_token": token})

    with Client("http://api.test", transport=httpx.MockTransport(answer)) as client:
        target = client.download_execution_results("w1", "x1", tmp_path / "r.jsonl", page_size=2)

    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["source_item_id"], r["output"]) for r in rows] == [("a", "A"), ("b", "B"), ("c", "C")]


def test_a_results_page_says_why_it_stopped_short() -> None:
    # Given a results page that ran out of time, and one that did not
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("next_token") == "n1":
            return httpx.Response(200, json={"items": [], "next_token": None})
        item = {"source_item_id": "a", "status": "failed"}
        return httpx.Response(200, json={"items": [item], "next_token": "n1", "stopped_by": "seconds"})

    # When both are read through the client
    with Client("http://api.test", api_key="secret", transport=httpx.MockTransport(answer)) as client:
        short = client.get_execution_results("w1", "x1", status="failed")
        last = client.get_execution_results("w1", "x1", status="failed", next_token=short.next_token)

    # Then the short page says why, with its cursor; the last page says nothing
    assert [r.source_item_id for r in short] == ["a"]
    assert (short.next_token, short.stopped_by) == ("n1", "seconds")
    assert (list(last), last.next_token, last.stopped_by) == ([], None, None)

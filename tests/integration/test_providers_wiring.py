"""Model providers wired end to end on the local stack: an ``openai`` model pointing at a real
chat-completions server on 127.0.0.1, its key read from Secrets Manager (moto), its errors mapped
to the state machine's retry policy (429 retried by Step Functions, 400 not)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from relayflow.local.stack import LocalStack
from relayflow_runtime.providers import openai as openai_adapter

SECRET_KEY = "sk-test-not-a-real-key-4242"


@dataclass
class ChatServer:
    """Answers by path: /throttled/v1 answers 429 once then a completion, /strict/v1 always 400."""

    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    throttled_once: bool = False


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21},
    }


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    state = ChatServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with lock:
                state.requests.append(
                    {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                )
                first_throttled = self.path.startswith("/throttled/") and not state.throttled_once
                if first_throttled:
                    state.throttled_once = True
            if first_throttled:
                self.reply(429, {"error": {"message": "Rate limit reached for requests", "type": "requests"}})
            elif self.path.startswith("/strict/"):
                message = "This model's maximum context length is 8 tokens"
                self.reply(400, {"error": {"message": message, "type": "invalid_request_error"}})
            else:
                self.reply(200, completion(f"summary of: {body['messages'][-1]['content']}"))

        def reply(self, status: int, document: dict[str, Any]) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    openai_adapter.clear_key_cache()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        openai_adapter.clear_key_cache()


def ok(response: tuple[int, Any], status: int = 201) -> Any:
    assert response[0] == status, response
    return response[1]


def test_openai_model_over_http_with_a_secret_key_retries_429_and_not_400(
    api: Any, local_stack: LocalStack, chat_server: ChatServer
) -> None:
    # Given the API key in Secrets Manager (under the relayflow/ prefix the template's IAM allows)
    secret_arn = local_stack.client("secretsmanager").create_secret(
        Name="relayflow/openai-test", SecretString=json.dumps({"api_key": SECRET_KEY})
    )["ARN"]
    # And two openai models referencing it: one behind a server that throttles once, one behind a
    # server that refuses the request
    common = {"model": "local-llm", "api_key_secret_arn": secret_arn, "temperature": 0.2, "max_tokens": 64}
    summariser = ok(
        api(
            "POST",
            "/models",
            {
                "name": "summariser",
                "provider": "openai",
                "config": {
                    **common,
                    "base_url": f"{chat_server.base_url}/throttled/v1",
                    "system_prompt": "Be brief.",
                },
            },
        )
    )
    strict = ok(
        api(
            "POST",
            "/models",
            {
                "name": "strict",
                "provider": "openai",
                "config": {**common, "base_url": f"{chat_server.base_url}/strict/v1"},
            },
        )
    )
    # And the model records hold only the reference, never the key
    assert SECRET_KEY not in json.dumps(ok(api("GET", f"/models/{summariser['id']}"), 200))
    workflow = ok(api("POST", "/workflows", {"name": "over-http"}))
    version = ok(
        api(
            "POST",
            f"/workflows/{workflow['id']}/versions",
            {"config": {"max_retries": 3, "retry_delay_seconds": 1, "max_retry_delay_seconds": 1}},
        )
    )
    first = ok(
        api(
            "POST",
            f"/versions/{version['id']}/nodes",
            {
                "name": "summarise",
                "entity_id": summariser["id"],
                "config": {"input_template": "Sum up: {{input}}"},
            },
        )
    )["id"]
    second = ok(
        api("POST", f"/versions/{version['id']}/nodes", {"name": "check", "entity_id": strict["id"]})
    )["id"]

    # When a run goes through both
    execution = ok(api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": "a long report"}))
    path = f"/workflows/{workflow['id']}/executions/{execution['id']}"
    deadline = time.monotonic() + 30
    while execution["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        execution = ok(api("GET", path), 200)

    # Then the 429 was retried by the state machine and the second attempt succeeded
    nodes = execution["node_executions"]
    assert nodes[first]["status"] == "completed"
    assert nodes[first]["attempts"] == 2
    assert "HTTP 429: Rate limit reached for requests" in nodes[first]["attempt_errors"][0]
    assert nodes[first]["output"] == "summary of: Sum up: a long report"
    assert nodes[first]["usage"] == {"input_tokens": 17, "output_tokens": 4, "estimated_cost": None}
    # And the 400 was not retried: the run failed with the server's own message
    assert nodes[second]["status"] == "failed"
    assert nodes[second]["attempts"] == 1
    assert execution["status"] == "failed"
    assert "HTTP 400: This model's maximum context length is 8 tokens" in execution["error"]
    # And every request carried the key from Secrets Manager and the configured request shape
    assert [r["path"] for r in chat_server.requests] == [
        "/throttled/v1/chat/completions",
        "/throttled/v1/chat/completions",
        "/strict/v1/chat/completions",
    ]
    assert {r["authorization"] for r in chat_server.requests} == {f"Bearer {SECRET_KEY}"}
    assert chat_server.requests[0]["body"] == {
        "model": "local-llm",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Sum up: a long report"},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    }
    assert chat_server.requests[2]["body"]["messages"] == [
        {"role": "user", "content": "summary of: Sum up: a long report"}
    ]
    # And the key appears in no record the API returns
    assert SECRET_KEY not in json.dumps(execution)


def test_an_inline_api_key_is_refused(api: Any) -> None:
    # Given a model config that carries the key itself
    config = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": SECRET_KEY}
    # When the model is created
    status, body = api("POST", "/models", {"name": "leaky", "provider": "openai", "config": config})
    # Then it is refused and nothing is stored
    assert status == 400
    assert body["code"] == "invalid_model_config"
    assert "api_key_secret_arn" in body["message"]
    assert SECRET_KEY not in json.dumps(ok(api("GET", "/models"), 200))

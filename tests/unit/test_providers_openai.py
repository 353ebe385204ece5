"""The OpenAI-compatible adapter against a real chat-completions server on 127.0.0.1.

Keys come from Secrets Manager and SSM under moto.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers import InvocationContext, configured_model, validate_model_config
from relayflow_runtime.providers import openai as openai_adapter
from relayflow_runtime.providers.base import PermanentModelError, TransientModelError, Usage


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0


@dataclass
class FakeServer:
    base_url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def completion(text: str, prompt_tokens: int = 5, completion_tokens: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "local-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": json.loads(self.rfile.read(length) or b"null"),
                }
            )
            reply = state.replies.pop(0) if state.replies else Reply(body=completion("default"))
            if reply.delay:
                time.sleep(reply.delay)
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def aws_env(fake_aws_env: None) -> Iterator[None]:
    openai_adapter.clear_key_cache()
    with mock_aws():
        yield
    openai_adapter.clear_key_cache()


def test_chat_completion_success_with_usage(server: FakeServer):
    # Given a local server without a key and a model with a system prompt and settings
    server.replies.append(Reply(body=completion("Bonjour", prompt_tokens=14, completion_tokens=2)))
    config = {
        "base_url": server.base_url + "/",
        "model": "local-model",
        "system_prompt": "Translate to French.",
        "temperature": 0.1,
        "max_tokens": 20,
    }
    # When the prompt is invoked
    result = configured_model("openai", config).invoke("Hello", InvocationContext())
    # Then the chat-completions request is well formed and unauthenticated
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {
        "model": "local-model",
        "messages": [
            {"role": "system", "content": "Translate to French."},
            {"role": "user", "content": "Hello"},
        ],
        "temperature": 0.1,
        "max_tokens": 20,
    }
    assert "Authorization" not in request["headers"]
    # And the answer and the server's usage come back
    assert result.output == "Bonjour"
    assert result.usage == Usage(input_tokens=14, output_tokens=2)


@pytest.mark.parametrize("status", [429, 408, 409, 500, 503])
def test_retryable_statuses_are_transient(server: FakeServer, status: int):
    # Given a server answering a retryable status
    server.replies.append(Reply(status=status, body={"error": {"message": "slow down"}}))
    # When invoked
    # Then the error is transient and carries the server's message
    with pytest.raises(TransientModelError, match=f"HTTP {status}: slow down"):
        configured_model("openai", {"base_url": server.base_url, "model": "m"}).invoke(
            "x", InvocationContext()
        )


def test_bad_request_is_permanent_with_the_server_message(server: FakeServer):
    # Given a server rejecting the request
    server.replies.append(
        Reply(
            status=400, body={"error": {"message": "model 'nope' does not exist", "type": "invalid_request"}}
        )
    )
    # When invoked
    # Then the error is permanent and says what the server said
    with pytest.raises(PermanentModelError, match="model 'nope' does not exist"):
        configured_model("openai", {"base_url": server.base_url, "model": "nope"}).invoke(
            "x", InvocationContext()
        )


def test_read_timeout_and_refused_connection_are_transient(server: FakeServer):
    # Given a server slower than the configured timeout, and a port nobody listens on
    server.replies.append(Reply(body=completion("late"), delay=0.5))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    # When each is invoked
    # Then both failures are retried
    with pytest.raises(TransientModelError, match="timed out"):
        configured_model("openai", {"base_url": server.base_url, "model": "m", "timeout": 0.1}).invoke(
            "x", InvocationContext()
        )
    with pytest.raises(TransientModelError, match="unreachable"):
        configured_model("openai", {"base_url": f"http://127.0.0.1:{closed_port}/v1", "model": "m"}).invoke(
            "x", InvocationContext()
        )


def test_200_that_is_not_a_completion_is_permanent(server: FakeServer):
    # Given a server answering 200 with something else
    server.replies.append(Reply(body={"hello": "world"}))
    # When invoked
    # Then it is a permanent error
    with pytest.raises(PermanentModelError, match="not a chat completion"):
        configured_model("openai", {"base_url": server.base_url, "model": "m"}).invoke(
            "x", InvocationContext()
        )


def test_key_from_secrets_manager_json_is_sent_cached_and_never_echoed(server: FakeServer, aws_env: None):
    # Given the key stored in Secrets Manager as JSON
    secrets = aws.client("secretsmanager")
    arn = secrets.create_secret(Name="relayflow/openai", SecretString=json.dumps({"api_key": "sk-json-1"}))[
        "ARN"
    ]
    config = {"base_url": server.base_url, "model": "m", "api_key_secret_arn": arn}
    # When two prompts run, with the secret rotated in between
    configured_model("openai", config).invoke("one", InvocationContext())
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "sk-json-2"}))
    configured_model("openai", config).invoke("two", InvocationContext())
    # Then both carried the first key: the warm container caches it
    assert [r["headers"]["Authorization"] for r in server.requests] == ["Bearer sk-json-1"] * 2
    # And after the cache is cleared the new key is read
    openai_adapter.clear_key_cache()
    configured_model("openai", config).invoke("three", InvocationContext())
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-json-2"
    # And a server echoing the key in an error never gets it into the exception
    server.replies.append(Reply(status=401, body={"error": {"message": "Incorrect API key: sk-json-2"}}))
    with pytest.raises(PermanentModelError) as raised:
        configured_model("openai", config).invoke("four", InvocationContext())
    assert "sk-json-2" not in str(raised.value)
    assert "Incorrect API key: ***" in str(raised.value)


def test_raw_secret_string_is_the_key(server: FakeServer, aws_env: None):
    # Given a secret holding the raw key
    arn = aws.client("secretsmanager").create_secret(Name="raw", SecretString="sk-raw")["ARN"]
    # When invoked
    configured_model("openai", {"base_url": server.base_url, "model": "m", "api_key_secret_arn": arn}).invoke(
        "x", InvocationContext()
    )
    # Then the header carries it
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-raw"


def test_key_from_ssm_secure_string(server: FakeServer, aws_env: None):
    # Given the key stored as an SSM SecureString
    aws.client("ssm").put_parameter(Name="/relayflow/openai-key", Value="sk-ssm", Type="SecureString")
    config = {"base_url": server.base_url, "model": "m", "api_key_parameter": "/relayflow/openai-key"}
    # When invoked
    configured_model("openai", config).invoke("x", InvocationContext())
    # Then the decrypted value is the bearer token
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-ssm"


def test_missing_secret_is_permanent_and_no_request_is_sent(server: FakeServer, aws_env: None):
    # Given a config referencing a secret that does not exist
    config = {"base_url": server.base_url, "model": "m", "api_key_secret_arn": "relayflow/missing"}
    # When invoked
    # Then the call fails permanently before reaching the server
    with pytest.raises(PermanentModelError, match="ResourceNotFoundException"):
        configured_model("openai", config).invoke("x", InvocationContext())
    assert server.requests == []


def test_a_cached_key_expires_after_key_cache_seconds(
    server: FakeServer, aws_env: None, monkeypatch: pytest.MonkeyPatch
):
    # Given keys kept for one second, and a key read once
    monkeypatch.setattr(openai_adapter, "KEY_CACHE_SECONDS", 1)
    secrets = aws.client("secretsmanager")
    arn = secrets.create_secret(Name="relayflow/expiring", SecretString="sk-old")["ARN"]
    config = {"base_url": server.base_url, "model": "m", "api_key_secret_arn": arn}
    configured_model("openai", config).invoke("one", InvocationContext())
    # When the secret is rotated and the second passes
    secrets.put_secret_value(SecretId=arn, SecretString="sk-new")
    configured_model("openai", config).invoke("two", InvocationContext())
    time.sleep(1.1)
    configured_model("openai", config).invoke("three", InvocationContext())
    # Then the cached key served until it expired, and the new one after
    assert [r["headers"]["Authorization"] for r in server.requests] == [
        "Bearer sk-old",
        "Bearer sk-old",
        "Bearer sk-new",
    ]


def test_ssm_key_is_cached_too(server: FakeServer, aws_env: None):
    # Given a key in SSM read once
    ssm = aws.client("ssm")
    ssm.put_parameter(Name="/relayflow/cached", Value="sk-1", Type="SecureString")
    config = {"base_url": server.base_url, "model": "m", "api_key_parameter": "/relayflow/cached"}
    configured_model("openai", config).invoke("one", InvocationContext())
    # When the parameter changes
    ssm.put_parameter(Name="/relayflow/cached", Value="sk-2", Type="SecureString", Overwrite=True)
    configured_model("openai", config).invoke("two", InvocationContext())
    # Then the warm container kept the first, until its cache is cleared
    openai_adapter.clear_key_cache()
    configured_model("openai", config).invoke("three", InvocationContext())
    assert [r["headers"]["Authorization"] for r in server.requests] == [
        "Bearer sk-1",
        "Bearer sk-1",
        "Bearer sk-2",
    ]


def test_binary_secret_is_the_key(server: FakeServer, aws_env: None):
    arn = aws.client("secretsmanager").create_secret(Name="bin", SecretBinary=b"sk-bin\n")["ARN"]
    config = {"base_url": server.base_url, "model": "m", "api_key_secret_arn": arn}
    configured_model("openai", config).invoke("x", InvocationContext())
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-bin"


def test_a_secret_that_is_no_key_is_not_kept(server: FakeServer, aws_env: None):
    # Given a secret stored wrongly (JSON without api_key), then an empty SSM parameter
    secrets = aws.client("secretsmanager")
    arn = secrets.create_secret(Name="relayflow/wrong", SecretString=json.dumps({"key": "sk"}))["ARN"]
    config = {"base_url": server.base_url, "model": "m", "api_key_secret_arn": arn}
    # When it is used
    # Then the call fails permanently before reaching the server
    with pytest.raises(PermanentModelError, match="without a string 'api_key' field"):
        configured_model("openai", config).invoke("x", InvocationContext())
    with pytest.raises(PermanentModelError, match="neither a key nor valid JSON"):
        secrets.put_secret_value(SecretId=arn, SecretString="{oops")
        openai_adapter.clear_key_cache()
        configured_model("openai", config).invoke("x", InvocationContext())
    assert server.requests == []
    # And once the secret is fixed, the next call reads it (the wrong value was not cached)
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "sk-fixed"}))
    configured_model("openai", config).invoke("x", InvocationContext())
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-fixed"
    # And an empty SSM parameter (SSM refuses "", so a space) is refused the same way
    aws.client("ssm").put_parameter(Name="/relayflow/empty", Value=" ", Type="SecureString")
    with pytest.raises(PermanentModelError, match="the API key parameter is empty"):
        configured_model(
            "openai", {"base_url": server.base_url, "model": "m", "api_key_parameter": "/relayflow/empty"}
        ).invoke("x", InvocationContext())


def test_missing_ssm_parameter_is_permanent(server: FakeServer, aws_env: None):
    config = {"base_url": server.base_url, "model": "m", "api_key_parameter": "/relayflow/none"}
    with pytest.raises(PermanentModelError, match="ParameterNotFound"):
        configured_model("openai", config).invoke("x", InvocationContext())
    assert server.requests == []


def test_throttled_secret_read_is_transient(aws_env: None, monkeypatch: pytest.MonkeyPatch):
    # Given Secrets Manager throttling the read (a stubbed client in place of the container's)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("get_secret_value", "ThrottlingException", "Rate exceeded", 400)
    stubber.activate()
    with monkeypatch.context() as patch:
        patch.setattr(aws, "client", lambda service: client)
        # When the key is resolved
        # Then the error the providers wrap is mapped as every AWS error is: worth another attempt
        with pytest.raises(TransientModelError, match="ThrottlingException: Rate exceeded"):
            openai_adapter.resolve_api_key(
                openai_adapter.OpenAIModelConfig.model_validate(
                    {"base_url": "https://api.example", "model": "m", "api_key_secret_arn": "relayflow/x"}
                )
            )
    stubber.assert_no_pending_responses()


def test_inline_api_key_is_refused():
    # Given a model definition with the key inline
    config = {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "api_key": "sk-live"}
    # When it is validated, or invoked anyway
    problems = validate_model_config("openai", config)
    # Then it is refused with a pointer to the two supported stores
    assert len(problems) == 1
    assert "api_key_secret_arn" in problems[0]
    assert "api_key_parameter" in problems[0]
    assert "sk-live" not in problems[0]
    with pytest.raises(PermanentModelError, match="must not be given inline"):
        configured_model("openai", config).invoke("x", InvocationContext())

"""The Lambda-function model adapter against a botocore Stubber (moto cannot run Lambda code)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers import InvocationContext, configured_model
from relayflow_runtime.providers.base import PermanentModelError, TransientModelError, Usage

CTX = InvocationContext(execution_id="exec-1", node_id="node-a", attempt=2)


@pytest.fixture(scope="module")
def client() -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("lambda")


@pytest.fixture
def stubbed(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    monkeypatch.setattr(aws, "client", lambda service: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def answer(payload: object, function_error: str | None = None) -> dict[str, Any]:
    data = json.dumps(payload).encode()
    response: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(data), len(data))}
    if function_error:
        response["FunctionError"] = function_error
    return response


def expected_request(function: str = "my-model", **extra: Any) -> dict[str, Any]:
    payload = {"prompt": "classify this", "execution_id": "exec-1", "node_id": "node-a", "attempt": 2}
    return {
        "FunctionName": function,
        "InvocationType": "RequestResponse",
        "Payload": json.dumps(payload).encode(),
        **extra,
    }


def test_invoke_sends_prompt_and_context_and_reads_output_and_usage(stubbed: Stubber):
    # Given a function answering {"output", "usage"}
    stubbed.add_response(
        "invoke",
        answer({"output": "spam", "usage": {"input_tokens": 11, "output_tokens": 1}}),
        expected_params=expected_request(Qualifier="live"),
    )
    # When the prompt is invoked on the "live" alias
    result = configured_model("lambda", {"function_name": "my-model", "qualifier": "live"}).invoke(
        "classify this", CTX
    )
    # Then the payload carried prompt, execution, node and attempt, and the reported usage is kept
    assert result.output == "spam"
    assert result.usage == Usage(input_tokens=11, output_tokens=1)


def test_plain_string_answer_counts_words(stubbed: Stubber):
    # Given a function answering a plain string
    stubbed.add_response("invoke", answer("not spam at all"), expected_params=expected_request())
    # When invoked
    result = configured_model("lambda", {"function_name": "my-model"}).invoke("classify this", CTX)
    # Then the string is the output and usage is word counts
    assert result.output == "not spam at all"
    assert result.usage == Usage(input_tokens=2, output_tokens=4)


def test_unexpected_answer_shape_is_permanent(stubbed: Stubber):
    # Given a function answering an object without "output"
    stubbed.add_response("invoke", answer({"result": 42}), expected_params=expected_request())
    # When invoked
    # Then it is a permanent error explaining the expected shape
    with pytest.raises(PermanentModelError, match="expected a string"):
        configured_model("lambda", {"function_name": "my-model"}).invoke("classify this", CTX)


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("ValueError", PermanentModelError),
        ("PermanentModelError", PermanentModelError),
        ("TransientModelError", TransientModelError),
        ("UpstreamThrottled", TransientModelError),
        ("Sandbox.Timedout", TransientModelError),
        ("ReadTimeout", TransientModelError),
    ],
)
def test_function_error_maps_by_error_type(stubbed: Stubber, error_type: str, expected: type):
    # Given a function that raised
    stubbed.add_response(
        "invoke",
        answer({"errorMessage": "it broke", "errorType": error_type}, function_error="Unhandled"),
        expected_params=expected_request(),
    )
    # When invoked
    # Then the error is transient only when its type looks transient, and carries the message
    with pytest.raises(expected, match="it broke"):
        configured_model("lambda", {"function_name": "my-model"}).invoke("classify this", CTX)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("TooManyRequestsException", 429, TransientModelError),
        ("ServiceException", 500, TransientModelError),
        ("EC2ThrottledException", 502, TransientModelError),
        ("ResourceNotFoundException", 404, PermanentModelError),
        ("InvalidRequestContentException", 400, PermanentModelError),
    ],
)
def test_client_errors_map_to_retry_decision(stubbed: Stubber, code: str, status: int, expected: type):
    # Given the Lambda service answering with an error
    stubbed.add_client_error("invoke", service_error_code=code, service_message="x", http_status_code=status)
    # When invoked
    # Then the error is transient or permanent as documented
    with pytest.raises(expected, match=code):
        configured_model("lambda", {"function_name": "my-model"}).invoke("classify this", CTX)

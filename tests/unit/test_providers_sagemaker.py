"""The SageMaker endpoint adapter against a botocore Stubber: body, parsing, error mapping."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers import InvocationContext, configured_model
from relayflow_runtime.providers.base import PermanentModelError, TransientModelError, Usage
from relayflow_runtime.providers.sagemaker import parse_output


@pytest.fixture(scope="module")
def client() -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("sagemaker-runtime")


@pytest.fixture
def stubbed(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    monkeypatch.setattr(aws, "client", lambda service: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def body(data: bytes) -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"}


def test_default_body_is_inputs_and_parameters(stubbed: Stubber):
    # Given an endpoint with generation parameters
    config = {"endpoint_name": "llm-endpoint", "parameters": {"max_new_tokens": 64}}
    stubbed.add_response(
        "invoke_endpoint",
        body(b'[{"generated_text": "a short poem"}]'),
        expected_params={
            "EndpointName": "llm-endpoint",
            "ContentType": "application/json",
            "Body": json.dumps({"inputs": "write a poem", "parameters": {"max_new_tokens": 64}}).encode(),
        },
    )
    # When the prompt is invoked
    result = configured_model("sagemaker", config).invoke("write a poem", InvocationContext())
    # Then the TGI-style list answer is unwrapped and usage falls back to word counts
    assert result.output == "a short poem"
    assert result.usage == Usage(input_tokens=3, output_tokens=3)


def test_request_template_content_type_and_accept(stubbed: Stubber):
    # Given a string template for a container with its own body shape
    config = {
        "endpoint_name": "custom",
        "request_template": '{"text_inputs": "{{prompt}}", "top_k": 3}',
        "accept": "application/json",
    }
    stubbed.add_response(
        "invoke_endpoint",
        body(b'{"outputs": ["first"], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}'),
        expected_params={
            "EndpointName": "custom",
            "ContentType": "application/json",
            "Accept": "application/json",
            # The prompt is JSON-escaped into the template
            "Body": b'{"text_inputs": "say \\"hi\\"", "top_k": 3}',
        },
    )
    # When a prompt with quotes is invoked
    result = configured_model("sagemaker", config).invoke('say "hi"', InvocationContext())
    # Then the body is valid JSON, and the reported usage wins over word counts
    assert result.output == "first"
    assert result.usage == Usage(input_tokens=9, output_tokens=2)


def test_object_template_and_plain_text_content_type(stubbed: Stubber):
    # Given an object template and then a text/plain endpoint
    stubbed.add_response(
        "invoke_endpoint",
        body(b'{"generated_text": "ok"}'),
        expected_params={
            "EndpointName": "e1",
            "ContentType": "application/json",
            "Body": json.dumps({"prompt": "p", "opts": ["{{x}}"]}).encode(),
        },
    )
    stubbed.add_response(
        "invoke_endpoint",
        body(b"raw answer"),
        expected_params={"EndpointName": "e2", "ContentType": "text/plain", "Body": b"p"},
    )
    # When each is invoked
    first = configured_model(
        "sagemaker", {"endpoint_name": "e1", "request_template": {"prompt": "{{prompt}}", "opts": ["{{x}}"]}}
    ).invoke("p", InvocationContext())
    second = configured_model("sagemaker", {"endpoint_name": "e2", "content_type": "text/plain"}).invoke(
        "p", InvocationContext()
    )
    # Then the placeholder is filled, the plain prompt is sent as is, and raw text is the output
    assert first.output == "ok"
    assert second.output == "raw answer"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('[{"generated_text": "a"}]', "a"),
        ('{"generated_text": "b"}', "b"),
        ('{"outputs": "c"}', "c"),
        ('{"output": "d"}', "d"),
        ('"e"', "e"),
        ("not json", "not json"),
        ('{"other": 1}', '{"other": 1}'),
    ],
)
def test_parse_output_shapes(raw: str, expected: str):
    # Given a container answer in one of the common shapes
    # When it is parsed
    # Then the generated text comes out
    assert parse_output(raw)[0] == expected


@pytest.mark.parametrize(
    ("code", "status", "modeled", "expected"),
    [
        ("ThrottlingException", 400, None, TransientModelError),
        ("ServiceUnavailable", 503, None, TransientModelError),
        ("InternalFailure", 500, None, TransientModelError),
        ("ModelNotReadyException", 429, None, TransientModelError),
        ("ValidationError", 400, None, PermanentModelError),
        ("ModelError", 424, {"OriginalStatusCode": 400, "OriginalMessage": "bad input"}, PermanentModelError),
        (
            "ModelError",
            424,
            {"OriginalStatusCode": 503, "OriginalMessage": "overloaded"},
            TransientModelError,
        ),
    ],
)
def test_errors_map_to_retry_decision(
    stubbed: Stubber, code: str, status: int, modeled: dict[str, Any] | None, expected: type
):
    # Given the endpoint answering with an error
    stubbed.add_client_error(
        "invoke_endpoint",
        service_error_code=code,
        service_message="failed",
        http_status_code=status,
        modeled_fields=modeled,
    )
    # When the prompt is invoked
    # Then the error is transient or permanent as documented
    with pytest.raises(expected, match=code):
        configured_model("sagemaker", {"endpoint_name": "e"}).invoke("x", InvocationContext())


def test_model_error_carries_the_container_message(stubbed: Stubber):
    # Given a container rejecting the input with its own message
    stubbed.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message="Received client error (400)",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "input too long"},
    )
    # When invoked
    # Then the permanent error says what the container said
    with pytest.raises(PermanentModelError, match="input too long"):
        configured_model("sagemaker", {"endpoint_name": "e"}).invoke("x", InvocationContext())


def test_read_timeout_is_transient(monkeypatch: pytest.MonkeyPatch):
    # Given an endpoint that does not answer in time
    class Slow:
        def invoke_endpoint(self, **kwargs: object) -> dict:
            raise ReadTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com")

    monkeypatch.setattr(aws, "client", lambda service: Slow())
    # When invoked
    # Then the failure is retried
    with pytest.raises(TransientModelError):
        configured_model("sagemaker", {"endpoint_name": "e"}).invoke("x", InvocationContext())

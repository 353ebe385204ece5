"""The Bedrock Converse adapter against a botocore Stubber: request shape, output, error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers import InvocationContext, bedrock, configured_model
from relayflow_runtime.providers.base import PermanentModelError, TransientModelError, Usage

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def client() -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("bedrock-runtime")


@pytest.fixture
def stubbed(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    monkeypatch.setattr(aws, "client", lambda service: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def converse_response(*texts: str, input_tokens: int = 12, output_tokens: int = 7) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": t} for t in texts]}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": 120},
    }


def test_converse_request_shape_and_output(stubbed: Stubber):
    # Given a Bedrock model with a system prompt and inference settings
    config = {
        "model_id": MODEL_ID,
        "system_prompt": "Answer briefly.",
        "inference": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
    }
    stubbed.add_response(
        "converse",
        converse_response("Paris", " is the capital."),
        expected_params={
            "modelId": MODEL_ID,
            "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
            "system": [{"text": "Answer briefly."}],
            "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        },
    )
    # When the prompt is invoked
    result = configured_model("bedrock", config).invoke("Capital of France?", InvocationContext())
    # Then the text blocks are concatenated and the usage is Bedrock's own count
    assert result.output == "Paris is the capital."
    assert result.usage == Usage(input_tokens=12, output_tokens=7)


def test_minimal_config_sends_no_system_or_inference_config(stubbed: Stubber):
    # Given only a model id
    stubbed.add_response(
        "converse",
        converse_response("hi"),
        expected_params={"modelId": MODEL_ID, "messages": [{"role": "user", "content": [{"text": "hello"}]}]},
    )
    # When invoked
    # Then the request carries just modelId and messages (the Stubber checks exact params)
    assert (
        configured_model("bedrock", {"model_id": MODEL_ID}).invoke("hello", InvocationContext()).output
        == "hi"
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 429, TransientModelError),
        ("ServiceUnavailableException", 503, TransientModelError),
        ("InternalServerException", 500, TransientModelError),
        ("ModelTimeoutException", 408, TransientModelError),
        ("ModelNotReadyException", 429, TransientModelError),
        ("ValidationException", 400, PermanentModelError),
        ("AccessDeniedException", 403, PermanentModelError),
        ("ResourceNotFoundException", 404, PermanentModelError),
        ("ModelErrorException", 424, PermanentModelError),
    ],
)
def test_client_errors_map_to_retry_decision(stubbed: Stubber, code: str, status: int, expected: type):
    # Given Bedrock answering with an error code
    stubbed.add_client_error(
        "converse", service_error_code=code, service_message="nope", http_status_code=status
    )
    # When the prompt is invoked
    # Then the error is transient or permanent as documented, and names the code
    with pytest.raises(expected, match=code):
        configured_model("bedrock", {"model_id": MODEL_ID}).invoke("x", InvocationContext())


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
    ],
)
def test_connection_errors_are_transient(monkeypatch: pytest.MonkeyPatch, error: Exception):
    # Given a client whose call cannot reach Bedrock
    class Unreachable:
        def converse(self, **kwargs: object) -> dict:
            raise error

    monkeypatch.setattr(aws, "client", lambda service: Unreachable())
    # When the prompt is invoked
    # Then the failure is retried
    with pytest.raises(TransientModelError):
        configured_model("bedrock", {"model_id": MODEL_ID}).invoke("x", InvocationContext())


def test_missing_model_id_fails_permanently_without_calling_bedrock(stubbed: Stubber):
    # Given a config without model_id (and no stubbed response)
    # When invoked
    # Then it is a permanent configuration error
    with pytest.raises(PermanentModelError, match="model_id"):
        configured_model("bedrock", {}).invoke("x", InvocationContext())


def test_the_inference_settings_are_sent_under_the_names_converse_takes():
    # Given the config's inference settings and the typed request's inferenceConfig
    aliases = {field.alias or name for name, field in bedrock.BedrockInference.model_fields.items()}
    # Then every setting's alias (what build_request sends) is a key of the typed shape, and back
    assert aliases == set(bedrock.InferenceConfig.__optional_keys__)
    assert not bedrock.InferenceConfig.__required_keys__

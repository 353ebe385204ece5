"""Amazon Bedrock through the model-agnostic Converse API (``bedrock-runtime`` ``converse``).

Config: ``model_id`` (required; a model id, inference profile id or ARN), ``system_prompt``,
``inference`` (``maxTokens``, ``temperature``, ``topP``, ``stopSequences``: passed as
``inferenceConfig``).

Error mapping (botocore ``ClientError`` code → retry decision):

* transient: ``ThrottlingException``, ``ServiceUnavailableException``, ``InternalServerException``,
  ``ModelTimeoutException``, ``ModelNotReadyException``, ``ServiceQuotaExceededException`` (the
  API asks to resubmit later), connection errors and read timeouts (``EndpointConnectionError``,
  ``ReadTimeoutError``, ...), and any unlisted code answered with 429 or 5xx.
* permanent: ``ValidationException``, ``AccessDeniedException``, ``ResourceNotFoundException``,
  ``ModelErrorException`` (HTTP 424: the model failed on this input, which the same input repeats),
  ``UnrecognizedClientException``, and any unlisted 4xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers.base import (
    InvocationContext,
    ModelResult,
    PermanentModelError,
    Usage,
    map_aws_error,
)

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "ServiceQuotaExceededException",
    }
)
PERMANENT_CODES = frozenset(
    {
        "ValidationException",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "ModelErrorException",
        "UnrecognizedClientException",
    }
)

INFERENCE_KEYS = ("maxTokens", "temperature", "topP", "stopSequences")


#: What validate() accepts, as JSON Schema (the OpenAPI document's schema of a bedrock config).
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_id"],
    "properties": {
        "model_id": {
            "type": "string",
            "pattern": r"\S",
            "examples": ["anthropic.claude-3-haiku-20240307-v1:0"],
        },
        "system_prompt": {"type": "string"},
        "inference": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "maxTokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0},
                "topP": {"type": "number", "minimum": 0},
                "stopSequences": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}


def validate(config: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    model_id = config.get("model_id")
    if not isinstance(model_id, str) or not model_id.strip():
        problems.append("bedrock: 'model_id' is required (e.g. 'anthropic.claude-3-haiku-20240307-v1:0')")
    if "system_prompt" in config and not isinstance(config["system_prompt"], str):
        problems.append("bedrock: 'system_prompt' must be a string")
    inference = config.get("inference")
    if inference is None:
        return problems
    if not isinstance(inference, dict):
        return [*problems, "bedrock: 'inference' must be an object"]
    for key, value in inference.items():
        if key not in INFERENCE_KEYS:
            problems.append(
                f"bedrock: unknown inference setting {key!r}; expected {', '.join(INFERENCE_KEYS)}"
            )
        elif key == "maxTokens" and not (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            problems.append("bedrock: 'inference.maxTokens' must be a whole number > 0")
        elif key in ("temperature", "topP") and not (
            isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        ):
            problems.append(f"bedrock: 'inference.{key}' must be a number >= 0")
        elif key == "stopSequences" and not (
            isinstance(value, list) and all(isinstance(s, str) for s in value)
        ):
            problems.append("bedrock: 'inference.stopSequences' must be a list of strings")
    return problems


def build_request(config: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """The ``converse`` keyword arguments for one prompt."""
    request: dict[str, Any] = {
        "modelId": config["model_id"],
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
    }
    if config.get("system_prompt"):
        request["system"] = [{"text": config["system_prompt"]}]
    inference = config.get("inference") or {}
    inference_config = {key: inference[key] for key in INFERENCE_KEYS if key in inference}
    if inference_config:
        request["inferenceConfig"] = inference_config
    return request


def invoke(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> ModelResult:
    request = build_request(config, prompt)
    try:
        response = aws.client("bedrock-runtime").converse(**request)
    except (ClientError, BotoCoreError) as exc:
        raise map_aws_error(
            exc,
            f"bedrock converse ({config['model_id']})",
            transient_codes=TRANSIENT_CODES,
            permanent_codes=PERMANENT_CODES,
        ) from exc
    try:
        content = response["output"]["message"]["content"]
    except (KeyError, TypeError):
        raise PermanentModelError(
            f"bedrock converse ({config['model_id']}) returned no message "
            f"(stopReason {response.get('stopReason')!r})"
        ) from None
    output = "".join(block["text"] for block in content if isinstance(block, dict) and "text" in block)
    usage = response.get("usage") or {}
    return ModelResult(
        output=output,
        usage=Usage(
            input_tokens=int(usage.get("inputTokens", 0)),
            output_tokens=int(usage.get("outputTokens", 0)),
        ),
    )

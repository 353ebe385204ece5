"""A model that is the user's own Lambda function (``lambda`` ``invoke``, RequestResponse).

Config: ``function_name`` (required; name or ARN), optional ``qualifier`` (version or alias).
The function receives ``{"prompt", "execution_id", "node_id", "attempt"}`` and returns
``{"output": str, "usage": {"input_tokens", "output_tokens"}}`` or a plain string.

Error mapping:

* ``FunctionError`` in the response (the function raised): transient when its ``errorType``
  looks transient (contains "Throttl", "Timeout", "Timedout" or "Transient", any case — so a
  function raising ``TransientModelError`` is retried), else permanent.
* transient: ``TooManyRequestsException``, ``ServiceException``, ``EC2ThrottledException``,
  ``ResourceNotReadyException``, ``ResourceConflictException`` (function being updated),
  ``EC2UnexpectedException``, ``ENILimitReachedException``, ``SnapStartNotReadyException``,
  ``SnapStartTimeoutException``, connection errors, read timeouts, other 429/5xx.
* permanent: ``ResourceNotFoundException``, ``InvalidRequestContentException``,
  ``RequestTooLargeException``, ``InvalidParameterValueException``, ``AccessDeniedException``,
  ``UnsupportedMediaTypeException``, other 4xx, and a response that is neither a string nor an
  object with a string ``output``.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, NotRequired, TypedDict

from pydantic import MISSING, Field

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers.base import (
    Adapter,
    InvocationContext,
    ModelResult,
    PermanentModelError,
    Readable,
    TransientModelError,
    Usage,
    approximate_usage,
    mapped_aws_errors,
)
from relayflow_runtime.providers.config import ModelConfig, or_default

TRANSIENT_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ServiceException",
        "EC2ThrottledException",
        "ResourceNotReadyException",
        "ResourceConflictException",
        "EC2UnexpectedException",
        "ENILimitReachedException",
        "SnapStartNotReadyException",
        "SnapStartTimeoutException",
    }
)
PERMANENT_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "InvalidRequestContentException",
        "RequestTooLargeException",
        "InvalidParameterValueException",
        "AccessDeniedException",
        "UnsupportedMediaTypeException",
    }
)
TRANSIENT_ERROR_TYPE_MARKERS = ("throttl", "timeout", "timedout", "transient")


class LambdaModelConfig(ModelConfig):
    """The settings of a model that is your own Lambda function."""

    function_name: Annotated[str, Field(pattern=r"\S", description="A function name or ARN.")]
    qualifier: Annotated[str, Field(min_length=1, description="A version or alias name.")] | MISSING = MISSING


CONFIG = LambdaModelConfig


# --- The wire: what the function receives, and lambda ``invoke``'s request and answer -----------------


class ModelEvent(TypedDict):
    """The event the user's function receives."""

    prompt: str
    execution_id: str
    node_id: str
    attempt: int


class InvokeRequest(TypedDict):
    FunctionName: str
    InvocationType: Literal["RequestResponse"]
    Payload: bytes
    Qualifier: NotRequired[str]


class InvokeResponse(TypedDict, total=False):
    """What boto3's ``invoke`` answers (the client is untyped: its answer is read defensively)."""

    Payload: Readable | None
    FunctionError: str


def build_payload(prompt: str, ctx: InvocationContext) -> ModelEvent:
    return {
        "prompt": prompt,
        "execution_id": ctx.execution_id,
        "node_id": ctx.node_id,
        "attempt": ctx.attempt,
    }


def _function_error(function: str, kind: str, raw: str) -> Exception:
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if isinstance(document, dict):
        error_type = str(document.get("errorType") or kind)
        message = str(document.get("errorMessage") or "")
    else:
        error_type, message = kind, raw[:500]
    text = f"lambda {function} raised {error_type}: {message}"
    if any(marker in error_type.lower() for marker in TRANSIENT_ERROR_TYPE_MARKERS):
        return TransientModelError(text)
    return PermanentModelError(text)


def parse_result(function: str, raw: str, prompt: str) -> ModelResult:
    try:
        document: object = json.loads(raw)
    except ValueError:
        document = raw  # not JSON: take the text as it is
    if isinstance(document, str):
        return ModelResult(output=document, usage=approximate_usage(prompt, document))
    if isinstance(document, dict) and isinstance(document.get("output"), str):
        output = document["output"]
        reported = document.get("usage")
        if isinstance(reported, dict):
            usage = Usage(
                input_tokens=int(reported.get("input_tokens") or 0),
                output_tokens=int(reported.get("output_tokens") or 0),
            )
        else:
            usage = approximate_usage(prompt, output)
        return ModelResult(output=output, usage=usage)
    raise PermanentModelError(
        f'lambda {function} returned {raw[:200]!r}; expected a string or {{"output": str, "usage": {{...}}}}'
    )


def invoke(config: LambdaModelConfig, prompt: str, ctx: InvocationContext) -> ModelResult:
    function = config.function_name
    request: InvokeRequest = {
        "FunctionName": function,
        "InvocationType": "RequestResponse",
        "Payload": json.dumps(build_payload(prompt, ctx)).encode("utf-8"),
    }
    qualifier = or_default(config.qualifier, "")
    if qualifier:
        request["Qualifier"] = qualifier
    what = f"lambda invoke ({function})"
    with mapped_aws_errors(what, transient_codes=TRANSIENT_CODES, permanent_codes=PERMANENT_CODES):
        response: InvokeResponse = aws.client("lambda").invoke(**request)
        payload = response.get("Payload")
        body = payload.read() if payload is not None else b""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    if response.get("FunctionError"):
        raise _function_error(function, str(response["FunctionError"]), raw)
    return parse_result(function, raw, prompt)


PROVIDER = Adapter(LambdaModelConfig, invoke)

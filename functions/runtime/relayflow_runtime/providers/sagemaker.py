"""A SageMaker real-time endpoint (``sagemaker-runtime`` ``invoke_endpoint``).

Config: ``endpoint_name`` (required), ``content_type`` (default ``application/json``), optional
``accept``, ``target_variant``, ``parameters`` (default body ``{"inputs": prompt, "parameters": ...}``,
the Hugging Face / TGI shape), or ``request_template`` for other containers:

* an object (dict/list): sent as JSON with every string ``"{{prompt}}"`` inside it replaced by the
  prompt (so ``{"text_inputs": "{{prompt}}"}`` works);
* a string: ``{{prompt}}`` replaced by the prompt, JSON-escaped when the content type is JSON.

The answer is read as ``[{"generated_text": ...}]``, ``{"generated_text": ...}``,
``{"outputs": ...}``, ``{"output": ...}``, a JSON string, or else raw text. Endpoints report no
token counts, so usage is OpenAI-style ``usage`` when the container sends it, else word counts.

Error mapping: ``ThrottlingException``, ``ServiceUnavailable``, ``InternalFailure``,
``InternalDependencyException``, ``ModelNotReadyException``, connection errors, read timeouts and
a ``ModelError`` whose container answered 429 or 5xx → transient; ``ValidationError``,
``ModelError`` from a 4xx of the container, ``AccessDeniedException`` and other 4xx → permanent.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, NotRequired, TypedDict, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import MISSING, BeforeValidator, Field, GetJsonSchemaHandler, RootModel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers.base import (
    Adapter,
    InvocationContext,
    ModelError,
    ModelResult,
    PermanentModelError,
    Readable,
    TransientModelError,
    Usage,
    approximate_usage,
    map_aws_error,
)
from relayflow_runtime.providers.config import ModelConfig, or_default

DEFAULT_CONTENT_TYPE = "application/json"
PROMPT_PLACEHOLDER = "{{prompt}}"

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalDependencyException",
        "ModelNotReadyException",
    }
)
PERMANENT_CODES = frozenset({"ValidationError", "AccessDeniedException"})


def _holds_prompt(template: object) -> object:
    if not isinstance(template, str | dict | list):
        raise ValueError("must be a string or a JSON object")
    if PROMPT_PLACEHOLDER not in (template if isinstance(template, str) else json.dumps(template)):
        raise ValueError(f"must contain {PROMPT_PLACEHOLDER}")
    return template


class SagemakerPromptTemplate(RootModel[object]):
    """JSON holding {{prompt}}: a string containing it, or an array or object with such a value (or
    key) at any depth."""

    root: Annotated[object, BeforeValidator(_holds_prompt)]

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # What ``PROMPT_PLACEHOLDER in json.dumps(template)`` accepts, in JSON Schema: recursive.
        # The reference to this definition, as the generator names it (its ref_template): pydantic
        # refuses a $ref it did not make, and the handler's protocol does not expose the generator.
        generator = cast(Any, handler).generate_json_schema
        itself = generator.get_cache_defs_ref_schema(cast(Any, schema)["ref"])[1]
        holds_prompt = {"type": "string", "pattern": r"\{\{prompt\}\}"}
        return {
            **{key: value for key, value in handler(schema).items() if key != "type"},
            "anyOf": [
                holds_prompt,
                {"type": "array", "items": {}, "contains": itself},
                {"type": "object", "not": {"additionalProperties": {"not": itself}}},
                {"type": "object", "not": {"propertyNames": {"not": {"pattern": holds_prompt["pattern"]}}}},
            ],
        }


class SagemakerModelConfig(ModelConfig):
    """The settings of a SageMaker real-time endpoint."""

    endpoint_name: Annotated[str, Field(pattern=r"\S")]
    content_type: Annotated[str, Field(min_length=1)] | MISSING = MISSING
    accept: Annotated[str, Field(min_length=1)] | MISSING = MISSING
    target_variant: Annotated[str, Field(min_length=1)] | MISSING = MISSING
    parameters: dict[str, object] | MISSING = MISSING
    request_template: (
        Annotated[
            SagemakerPromptTemplate | None,
            Field(description=f"The request body, with {PROMPT_PLACEHOLDER} where the prompt goes."),
        ]
        | MISSING
    ) = MISSING


CONFIG = SagemakerModelConfig


# --- The wire: the default body, and ``invoke_endpoint``'s request and answer -------------------------


class DefaultBody(TypedDict):
    """The Hugging Face / TGI request, sent when the config has no ``request_template``."""

    inputs: str
    parameters: dict[str, object]  # the config's own ``parameters``: any JSON object, passed as it is


class InvokeEndpointRequest(TypedDict):
    EndpointName: str
    ContentType: str
    Body: bytes
    Accept: NotRequired[str]
    TargetVariant: NotRequired[str]


class InvokeEndpointResponse(TypedDict):
    """What boto3's ``invoke_endpoint`` answers, as far as it is read (the client is untyped)."""

    Body: Readable


def _is_json(content_type: str) -> bool:
    return "json" in content_type.lower()


def _fill(template: object, prompt: str) -> object:
    if isinstance(template, str):
        return template.replace(PROMPT_PLACEHOLDER, prompt)
    if isinstance(template, dict):
        return {key: _fill(value, prompt) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, prompt) for value in template]
    return template


def build_body(config: SagemakerModelConfig, prompt: str) -> bytes:
    content_type = or_default(config.content_type, DEFAULT_CONTENT_TYPE)
    template = or_default(config.request_template, None)
    if template is None:
        if not _is_json(content_type):
            return prompt.encode("utf-8")
        body: DefaultBody = {"inputs": prompt, "parameters": or_default(config.parameters, {})}
        return json.dumps(body).encode("utf-8")
    if isinstance(template.root, str):
        filler = json.dumps(prompt)[1:-1] if _is_json(content_type) else prompt
        return template.root.replace(PROMPT_PLACEHOLDER, filler).encode("utf-8")
    return json.dumps(_fill(template.root, prompt)).encode("utf-8")


def parse_output(raw: str) -> tuple[str, Usage | None]:
    """The generated text and, when the container reports it, the usage."""
    try:
        document = json.loads(raw)
    except ValueError:
        return raw, None
    usage = None
    if isinstance(document, dict) and isinstance(document.get("usage"), dict):
        reported = document["usage"]
        usage = Usage(
            input_tokens=int(reported.get("prompt_tokens") or reported.get("input_tokens") or 0),
            output_tokens=int(reported.get("completion_tokens") or reported.get("output_tokens") or 0),
        )
    if isinstance(document, list) and document:
        document = document[0]
    if isinstance(document, str):
        return document, usage
    if isinstance(document, dict):
        for key in ("generated_text", "outputs", "output"):
            if key in document:
                value = document[key]
                if isinstance(value, list) and value:
                    value = value[0]
                if isinstance(value, dict) and "generated_text" in value:
                    value = value["generated_text"]
                return (value if isinstance(value, str) else json.dumps(value)), usage
    return raw, usage


def _map_error(exc: ClientError | BotoCoreError, endpoint: str) -> ModelError:
    what = f"sagemaker invoke_endpoint ({endpoint})"
    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ModelError":
        original = exc.response.get("OriginalStatusCode") or exc.response.get("Error", {}).get(
            "OriginalStatusCode"
        )
        message = exc.response.get("OriginalMessage") or exc.response.get("Error", {}).get("Message", "")
        text = f"{what} failed: ModelError (container status {original}): {message}"
        try:
            status = int(original or 0)
        except (TypeError, ValueError):
            status = 0
        if status == 429 or status >= 500:
            return TransientModelError(text)
        return PermanentModelError(text)
    return map_aws_error(exc, what, transient_codes=TRANSIENT_CODES, permanent_codes=PERMANENT_CODES)


def invoke(config: SagemakerModelConfig, prompt: str, ctx: InvocationContext) -> ModelResult:
    endpoint = config.endpoint_name
    request: InvokeEndpointRequest = {
        "EndpointName": endpoint,
        "ContentType": or_default(config.content_type, DEFAULT_CONTENT_TYPE),
        "Body": build_body(config, prompt),
    }
    accept = or_default(config.accept, "")
    if accept:
        request["Accept"] = accept
    target_variant = or_default(config.target_variant, "")
    if target_variant:
        request["TargetVariant"] = target_variant
    try:
        response: InvokeEndpointResponse = aws.client("sagemaker-runtime").invoke_endpoint(**request)
        raw = response["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise _map_error(exc, endpoint) from exc
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    output, usage = parse_output(text)
    return ModelResult(output=output, usage=usage or approximate_usage(prompt, output))


PROVIDER = Adapter(SagemakerModelConfig, invoke)

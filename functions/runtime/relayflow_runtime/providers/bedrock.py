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

from typing import Annotated, Literal, NotRequired, TypedDict, cast

from pydantic import MISSING, BaseModel, ConfigDict, Field

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers.base import (
    Adapter,
    InvocationContext,
    ModelResult,
    PermanentModelError,
    Usage,
    mapped_aws_errors,
)
from relayflow_runtime.providers.config import ModelConfig, or_default

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


class BedrockInference(BaseModel):
    """Passed to Converse as ``inferenceConfig``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    max_tokens: Annotated[int, Field(gt=0)] | MISSING = Field(MISSING, alias="maxTokens")
    temperature: Annotated[float, Field(ge=0)] | MISSING = MISSING
    top_p: Annotated[float, Field(ge=0)] | MISSING = Field(MISSING, alias="topP")
    stop_sequences: list[str] | MISSING = Field(MISSING, alias="stopSequences")


class BedrockModelConfig(ModelConfig):
    """The settings of a Bedrock model, called through Converse."""

    model_id: Annotated[str, Field(pattern=r"\S", examples=["anthropic.claude-3-haiku-20240307-v1:0"])]
    system_prompt: str | MISSING = MISSING
    inference: BedrockInference | MISSING | None = MISSING

    @property
    def output_cap(self) -> int | None:
        inference = or_default(self.inference, None)
        cap = None if inference is None else or_default(inference.max_tokens, None)
        return cap if cap is not None else super().output_cap


CONFIG = BedrockModelConfig


# --- The wire: Converse's request and answer, as far as relayflow writes and reads them ---------------


class TextBlock(TypedDict):
    text: str


class Message(TypedDict):
    role: Literal["user"]
    content: list[TextBlock]


class InferenceConfig(TypedDict, total=False):
    maxTokens: int
    temperature: float
    topP: float
    stopSequences: list[str]


class ConverseRequest(TypedDict):
    modelId: str
    messages: list[Message]
    system: NotRequired[list[TextBlock]]
    inferenceConfig: NotRequired[InferenceConfig]


class ConverseOutput(TypedDict):
    message: Message


class TokenUsage(TypedDict, total=False):
    inputTokens: int
    outputTokens: int


class ConverseResponse(TypedDict, total=False):
    """What boto3's ``converse`` answers (the client is untyped: its answer is read defensively)."""

    output: ConverseOutput
    stopReason: str
    usage: TokenUsage


def build_request(config: BedrockModelConfig, prompt: str) -> ConverseRequest:
    """The ``converse`` keyword arguments for one prompt."""
    request: ConverseRequest = {
        "modelId": config.model_id,
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
    }
    system_prompt = or_default(config.system_prompt, "")
    if system_prompt:
        request["system"] = [{"text": system_prompt}]
    inference = or_default(config.inference, None)
    # The settings given, by their Converse names (a setting left out is not dumped): BedrockInference
    # validated them, and its aliases are InferenceConfig's keys.
    given = inference.model_dump(by_alias=True) if inference is not None else {}
    if given:
        request["inferenceConfig"] = cast(InferenceConfig, given)
    return request


def invoke(config: BedrockModelConfig, prompt: str, ctx: InvocationContext) -> ModelResult:
    request = build_request(config, prompt)
    what = f"bedrock converse ({config.model_id})"
    with mapped_aws_errors(what, transient_codes=TRANSIENT_CODES, permanent_codes=PERMANENT_CODES):
        response: ConverseResponse = aws.client("bedrock-runtime").converse(**request)
    try:
        content = response["output"]["message"]["content"]
    except (KeyError, TypeError):
        raise PermanentModelError(
            f"{what} returned no message (stopReason {response.get('stopReason')!r})"
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


PROVIDER = Adapter(BedrockModelConfig, invoke)

"""The contract every model provider adapter follows.

The node runner lets these exceptions escape the Lambda handler: their class name becomes the
Step Functions error name, so the generated Retry matches ``TransientModelError`` (and node
timeouts) and never retries ``PermanentModelError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from relayflow_runtime.providers.config import ModelConfig


class Readable(Protocol):
    """A streamed body in a boto3 answer (Lambda's ``Payload``, SageMaker's ``Body``)."""

    def read(self) -> bytes: ...


class ModelError(Exception):
    """A model call failed. ``transient`` says whether the retry policy applies."""

    transient = False


class TransientModelError(ModelError):
    """Throttling, timeouts, 5xx or connection errors: worth another attempt."""

    transient = True


class PermanentModelError(ModelError):
    """A 4xx, invalid model configuration, a bad template: another attempt would fail the same way."""


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ModelResult:
    output: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class InvocationContext:
    """What a model may know about the call besides its prompt."""

    execution_id: str = ""
    node_id: str = ""
    attempt: int = 1  # 1 for the first attempt of this node in this execution
    # Loads the execution's input file (bytes), when the execution was started with a file.
    read_input_file: Callable[[], bytes] | None = None
    input_filename: str | None = None
    # Seconds this attempt may still take (the node timeout), if known.
    time_budget: float | None = None


Config = TypeVar("Config", bound=ModelConfig)


class ConfiguredModel(Protocol):
    """A model ready to call: its config parsed into its provider's type, bound to that provider's
    call. What the node runner invokes (providers.configured_model), with no mapping in between."""

    @property
    def config(self) -> ModelConfig: ...

    def invoke(self, prompt: str, ctx: InvocationContext) -> ModelResult: ...


class ModelProvider(Protocol):
    """A model provider as the registry (providers/__init__.py) holds it: the type of its config,
    and how a stored config becomes a ``ConfiguredModel`` (parsed once, then called typed)."""

    @property
    def config_type(self) -> type[ModelConfig]: ...

    def configure(self, stored: Mapping[str, object]) -> ConfiguredModel: ...


@dataclass(frozen=True)
class Configured(Generic[Config]):
    """A provider's parsed config and its call, which mypy checks take the same config type."""

    config: Config
    call: Callable[[Config, str, InvocationContext], ModelResult]

    def invoke(self, prompt: str, ctx: InvocationContext) -> ModelResult:
        return self.call(self.config, prompt, ctx)


@dataclass(frozen=True)
class Adapter(Generic[Config]):
    """An adapter module's config type and ``invoke`` bound into a ``ModelProvider`` (mypy checks
    that the one takes the other: ``Adapter(BedrockModelConfig, invoke)``)."""

    config_type: type[Config]
    call: Callable[[Config, str, InvocationContext], ModelResult]

    def configure(self, stored: Mapping[str, object]) -> Configured[Config]:
        """``stored`` parsed into the config type (pydantic's ``ValidationError`` if it no longer
        validates), bound to the call."""
        return Configured(self.config_type.model_validate(stored), self.call)


# --- Helpers shared by the adapters ------------------------------------------------------------------

# Error codes that mean "try again later" on every AWS service the adapters call.
COMMON_TRANSIENT_AWS_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "InternalServiceError",
        "InternalServiceErrorException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def word_count(text: str) -> int:
    """The builtin stand-in for a token count: whitespace-separated words."""
    return len(text.split())


def approximate_usage(prompt: str, output: str) -> Usage:
    """For backends that report no token counts: whitespace word counts of prompt and output."""
    return Usage(input_tokens=word_count(prompt), output_tokens=word_count(output))


def map_aws_error(
    exc: Exception,
    what: str,
    *,
    transient_codes: frozenset[str] = frozenset(),
    permanent_codes: frozenset[str] = frozenset(),
) -> ModelError:
    """Turn a boto3/botocore exception into the retry decision the state machine needs.

    ``ClientError``: a code in ``transient_codes`` (or the common throttling/5xx codes) is transient,
    one in ``permanent_codes`` is permanent; any other code falls back to its HTTP status (429 and
    5xx transient, the rest permanent). Connection failures and read timeouts are transient; any
    other botocore error (missing credentials, parameter validation) is permanent.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "Unknown")
        message = str(error.get("Message", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{what} failed: {code}: {message}" if message else f"{what} failed: {code}"
        if code in permanent_codes:
            return PermanentModelError(text)
        if code in transient_codes or code in COMMON_TRANSIENT_AWS_CODES:
            return TransientModelError(text)
        if status == 429 or status >= 500:
            return TransientModelError(text)
        return PermanentModelError(text)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return TransientModelError(f"{what} failed: {exc}")
    return PermanentModelError(f"{what} failed: {exc}")


@contextmanager
def mapped_aws_errors(
    what: str,
    *,
    transient_codes: frozenset[str] = frozenset(),
    permanent_codes: frozenset[str] = frozenset(),
) -> Iterator[None]:
    """Around an AWS call of an adapter: a boto3/botocore error leaves as the ``ModelError``
    ``map_aws_error`` makes of it (caused by it)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise map_aws_error(
            exc, what, transient_codes=transient_codes, permanent_codes=permanent_codes
        ) from exc

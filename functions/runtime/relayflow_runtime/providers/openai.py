"""OpenAI-compatible chat completions over HTTP (OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, ...).

Config: ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``), ``model``, optional ``system_prompt``,
``temperature``, ``max_tokens``, ``timeout`` (seconds, default 60, capped by the node's time budget).
The API key is never stored in the model config: ``api_key_secret_arn`` names a Secrets Manager
secret (the raw key, or JSON ``{"api_key": ...}``), ``api_key_parameter`` an SSM SecureString
parameter; with neither, no Authorization header is sent (local servers). A fetched key is cached
per warm container for ``KEY_CACHE_SECONDS`` (Powertools' parameters providers, over the container's
own clients) and never logged.

Error mapping: HTTP 408, 409, 429 and 5xx, connect/read/write timeouts and connection errors →
``TransientModelError``; any other 4xx (and a 200 that is not a chat completion) →
``PermanentModelError`` carrying the server's error message. Secrets Manager / SSM errors follow
``map_aws_error`` (throttling and 5xx transient; a missing secret or parameter, or no access,
permanent).
"""

from __future__ import annotations

import json
import logging
import threading
from functools import lru_cache
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import httpx
from aws_lambda_powertools.utilities.parameters import GetParameterError, SecretsProvider, SSMProvider
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import MISSING, ConfigDict, Field, model_validator

from relayflow_runtime.adapters import aws
from relayflow_runtime.providers.base import (
    Adapter,
    InvocationContext,
    ModelResult,
    PermanentModelError,
    TransientModelError,
    Usage,
    map_aws_error,
)
from relayflow_runtime.providers.config import ModelConfig, or_default, refuse_inline_secrets

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
KEY_CACHE_SECONDS = 300
TRANSIENT_STATUSES = frozenset({408, 409, 429})
MAX_ERROR_CHARS = 500

# One provider (and its cache) per service, over the client of adapters.aws it was built with.
_key_providers: dict[str, SecretsProvider | SSMProvider] = {}
_key_lock = threading.Lock()


def _one_key_store(schema: dict[str, Any]) -> None:
    refuse_inline_secrets(schema)
    schema["allOf"] = [
        {
            "not": {
                "description": "either api_key_secret_arn or api_key_parameter, not both",
                "required": ["api_key_secret_arn", "api_key_parameter"],
                "properties": {
                    "api_key_secret_arn": {"type": "string", "minLength": 1},
                    "api_key_parameter": {"type": "string", "minLength": 1},
                },
            }
        }
    ]


class OpenAIModelConfig(ModelConfig):
    """The settings of an OpenAI-compatible model; the key by reference, never inline."""

    model_config = ConfigDict(json_schema_extra=_one_key_store)

    base_url: Annotated[str, Field(pattern=r"^https?://", examples=["https://api.openai.com/v1"])]
    model: Annotated[str, Field(pattern=r"\S", examples=["gpt-4o-mini"])]
    system_prompt: str | MISSING = MISSING
    temperature: Annotated[float, Field(ge=0)] | MISSING = MISSING
    max_tokens: Annotated[int, Field(gt=0)] | MISSING = MISSING
    timeout: (
        Annotated[float, Field(gt=0, description="Seconds; capped by the node's time budget.")] | MISSING
    ) = MISSING
    api_key_secret_arn: (
        Annotated[str, Field(min_length=1, description="A Secrets Manager secret ARN or name.")]
        | MISSING
        | None
    ) = MISSING
    api_key_parameter: (
        Annotated[str, Field(min_length=1, description="An SSM SecureString parameter name.")]
        | MISSING
        | None
    ) = MISSING

    @property
    def output_cap(self) -> int | None:
        return or_default(self.max_tokens, None)

    @model_validator(mode="after")
    def _one_key_store_at_most(self) -> OpenAIModelConfig:
        if isinstance(self.api_key_secret_arn, str) and isinstance(self.api_key_parameter, str):
            raise ValueError("give either 'api_key_secret_arn' or 'api_key_parameter', not both")
        return self


CONFIG = OpenAIModelConfig

# --- The API key ---------------------------------------------------------------------------------------


def clear_key_cache() -> None:
    """Forget fetched keys (tests; or after a key rotation in a long-lived process)."""
    with _key_lock:
        for provider in _key_providers.values():
            provider.clear_cache()


def _provider(service: str) -> SecretsProvider | SSMProvider:
    """The provider of ``service``: built again (with an empty cache) when the container's client
    changed, i.e. after ``settings.reset_caches`` (the local stack, tests)."""
    client = aws.client(service)
    with _key_lock:
        provider = _key_providers.get(service)
        if provider is None or provider.client is not client:
            kind = SecretsProvider if service == "secretsmanager" else SSMProvider
            provider = _key_providers[service] = kind(boto3_client=client)
        return provider


def _get(
    service: str, name: str, what: str, permanent_codes: frozenset[str] = frozenset(), **options: Any
) -> object:
    """The cached value, or a fresh one; AWS errors mapped as ``map_aws_error`` says."""
    try:
        return _provider(service).get(name, max_age=KEY_CACHE_SECONDS, **options)
    except GetParameterError as exc:
        # Powertools wraps the SDK's error (raised while handling it: the original is the context).
        cause = exc.__context__
        if isinstance(cause, ClientError | BotoCoreError):
            raise map_aws_error(cause, what, permanent_codes=permanent_codes) from cause
        raise PermanentModelError(f"{what} failed: {exc}") from exc


def _unusable(service: str, message: str) -> PermanentModelError:
    """A stored value that is no key is not kept: once fixed in its store, it is read again at once."""
    with _key_lock:
        if service in _key_providers:
            _key_providers[service].clear_cache()
    return PermanentModelError(message)


def _secret_key(secret_id: str) -> str:
    value = _get("secretsmanager", secret_id, "reading the API key from Secrets Manager")
    raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            document = json.loads(raw)
        except ValueError:
            raise _unusable("secretsmanager", "the API key secret is neither a key nor valid JSON") from None
        key = document.get("api_key") if isinstance(document, dict) else None
        if not isinstance(key, str) or not key:
            raise _unusable("secretsmanager", "the API key secret is JSON without a string 'api_key' field")
        return key
    if not raw:
        raise _unusable("secretsmanager", "the API key secret is empty")
    return raw


def _parameter_key(name: str) -> str:
    value = _get(
        "ssm",
        name,
        "reading the API key from SSM Parameter Store",
        permanent_codes=frozenset({"ParameterNotFound", "ParameterVersionNotFound", "InvalidKeyId"}),
        decrypt=True,
    )
    value = str(value).strip()
    if not value:
        raise _unusable("ssm", "the API key parameter is empty")
    return value


def resolve_api_key(config: OpenAIModelConfig) -> str | None:
    """The key the config references, from the warm container's cache or its store; None if none."""
    secret = or_default(config.api_key_secret_arn, None)
    if secret:
        return _secret_key(secret)
    parameter = or_default(config.api_key_parameter, None)
    if parameter:
        return _parameter_key(parameter)
    return None


# --- The call --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _http() -> httpx.Client:
    """One connection pool per warm container; timeouts are set per request."""
    return httpx.Client(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20))


class ChatMessage(TypedDict):
    role: Literal["system", "user"]
    content: str


class ChatRequest(TypedDict):
    """The chat-completions request body."""

    model: str
    messages: list[ChatMessage]
    temperature: NotRequired[float]
    max_tokens: NotRequired[int]


def build_body(config: OpenAIModelConfig, prompt: str) -> ChatRequest:
    messages: list[ChatMessage] = []
    system_prompt = or_default(config.system_prompt, "")
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt})
    body: ChatRequest = {"model": config.model, "messages": messages}
    # Only the settings the config gives (a setting left out is not sent).
    temperature = or_default(config.temperature, None)
    if temperature is not None:
        body["temperature"] = temperature
    max_tokens = or_default(config.max_tokens, None)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _timeout(config: OpenAIModelConfig, ctx: InvocationContext) -> httpx.Timeout:
    seconds = float(or_default(config.timeout, DEFAULT_TIMEOUT))
    if ctx.time_budget is not None:
        seconds = max(1.0, min(seconds, ctx.time_budget))
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def _error_message(response: httpx.Response) -> str:
    """The server's own words: ``{"error": {"message"}}``, ``{"error": "..."}``, ``{"message"}``,
    ``{"detail"}``, else the start of the body."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for candidate in (error, document.get("message"), document.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate
            if candidate:
                return json.dumps(candidate)[:MAX_ERROR_CHARS]
    return response.text[:MAX_ERROR_CHARS] or response.reason_phrase


def _message_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise PermanentModelError(f"openai: unexpected message content of type {type(content).__name__}")


def invoke(config: OpenAIModelConfig, prompt: str, ctx: InvocationContext) -> ModelResult:
    key = resolve_api_key(config)
    url = config.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        response = _http().post(
            url, json=build_body(config, prompt), headers=headers, timeout=_timeout(config, ctx)
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise PermanentModelError(f"openai: bad base_url {config.base_url!r}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise TransientModelError(f"openai: {url} timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransientModelError(f"openai: {url} unreachable ({type(exc).__name__}: {exc})") from exc

    status = response.status_code
    if not 200 <= status < 300:
        message = _redact(_error_message(response), key)
        text = f"openai: {url} answered HTTP {status}: {message}"
        logger.info("openai call failed", extra={"status": status, "url": url})
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientModelError(text)
        raise PermanentModelError(text)

    try:
        document = response.json()
        choice = document["choices"][0]
        output = _message_text(choice["message"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise PermanentModelError(
            f"openai: {url} answered 200 but not a chat completion: {_redact(response.text[:200], key)!r}"
        ) from None
    usage = document.get("usage") or {}
    return ModelResult(
        output=output,
        usage=Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        ),
    )


PROVIDER = Adapter(OpenAIModelConfig, invoke)

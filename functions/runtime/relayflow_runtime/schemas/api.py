"""Request bodies of the HTTP API. Unknown fields are refused, not ignored.

What the server checks is what the schema says: lengths, enums, patterns, nullability. A field of
an update (``PATCH``) may be omitted (it keeps its value) but not sent as ``null``, except where
``null`` means "remove" (``callback_url``); such fields are ``Omittable`` (no null in the schema).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from relayflow_runtime.schemas.entities import (
    MAX_NODE_TIMEOUT_SECONDS,
    MAX_WORKFLOW_TIMEOUT_SECONDS,
    TEMPLATE_SCHEMA,
    ApiKeyScope,
    BatchConfig,
    NodeConfig,
    RequestModel,
    VersionConfig,
)

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 4000
MAX_URL_LENGTH = 2000
#: A callback URL's rules beyond its length, which domain/urls.py checks (an open "format": JSON
#: Schema cannot say "a public address").
CALLBACK_URL_SCHEMA: dict[str, Any] = {"format": "callback-url"}
CALLBACK_URL_RULES = (
    " An http(s) URL without credentials whose host is a public address or a name (loopback, private,"
    " link-local and other reserved addresses are refused, also when a name resolves to one at send"
    " time); otherwise 400 invalid_callback_url."
)
#: The providers a model may name (providers.PROVIDERS; a test keeps the two equal).
Provider = Literal["builtin", "bedrock", "openai", "sagemaker", "lambda"]
#: A text input of a single run (services.executions checks it: code input_too_large).
MAX_SINGLE_INPUT_CHARS = 1_000_000
#: A file input sent through the API, decoded, and its base64 text (services.executions checks it).
MAX_INPUT_FILE_BYTES = 4 * 1024 * 1024
MAX_INPUT_FILE_BASE64 = -(-MAX_INPUT_FILE_BYTES // 3) * 4
#: A media type as a header carries it: printable ASCII, starting with a visible character.
MEDIA_TYPE_PATTERN = r"^[!-~][ -~]*$"
#: Standard base64 (padding included): what services.executions decodes.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def Omittable(json_schema_extra: dict[str, Any] | None = None, **constraints: Any) -> Any:
    """An update field that may be left out (it keeps its value) but is never null: the document
    shows its type without null and without a default; UpdateBody refuses an explicit null."""

    def schema_of(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        schema.update(json_schema_extra or {})

    return Field(None, json_schema_extra=schema_of, **constraints)


class Body(RequestModel):
    model_config = ConfigDict(extra="forbid")


class UpdateBody(Body):
    """An update: the fields sent change, the others keep their values; null only where allowed."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(
                k for k, v in data.items() if v is None and k in cls.model_fields and k not in cls.nullable
            )
            if nulls:
                raise ValueError(f"{', '.join(nulls)} must not be null (omit a field to keep its value)")
        return data


class CreateWorkflow(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Field("", max_length=MAX_DESCRIPTION_LENGTH)
    callback_url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="Where to POST this workflow's runs' terminal statuses." + CALLBACK_URL_RULES,
        json_schema_extra=CALLBACK_URL_SCHEMA,
    )


class UpdateWorkflow(UpdateBody):
    nullable = frozenset({"callback_url"})

    name: str = Omittable(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Omittable(max_length=MAX_DESCRIPTION_LENGTH)
    active_version_id: str = Omittable(
        min_length=1, description="The version runs use when they name none (a version of this workflow)."
    )
    callback_url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="null removes the workflow's callback URL." + CALLBACK_URL_RULES,
        json_schema_extra=CALLBACK_URL_SCHEMA,
    )


class CreateVersion(Body):
    name: str = Field("", max_length=MAX_NAME_LENGTH)
    config: VersionConfig | None = None
    copy_from_version_id: str | None = Field(
        None, min_length=1, description="Copy this version's nodes and edges (and config, unless given)."
    )


class VersionConfigPatch(UpdateBody):
    """The fields of a version's config to change (see VersionConfig)."""

    max_retries: int = Omittable(ge=0, le=10)
    retry_delay_seconds: int = Omittable(ge=1, le=3600)
    max_retry_delay_seconds: int = Omittable(ge=1, le=3600)
    node_timeout: int = Omittable(ge=1, le=MAX_NODE_TIMEOUT_SECONDS)


class UpdateVersion(UpdateBody):
    name: str = Omittable(max_length=MAX_NAME_LENGTH)
    config: VersionConfigPatch = Omittable()


class NodeConfigPatch(UpdateBody):
    """The fields of a node's config to change (see NodeConfig); ``timeout: null`` returns the node
    to the version's default timeout."""

    nullable = frozenset({"timeout"})

    input_template: str = Omittable(json_schema_extra=TEMPLATE_SCHEMA)
    timeout: int | None = Field(None, ge=1, le=MAX_NODE_TIMEOUT_SECONDS)
    on_failure: Literal["stop", "continue"] = Omittable()
    output_format: Literal["text", "json"] = Omittable()


class CreateNode(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    entity_type: Literal["model"] = "model"
    entity_id: str = Field(min_length=1, description="The id of the model this node calls.")
    config: NodeConfig = Field(default_factory=NodeConfig)


class UpdateNode(UpdateBody):
    name: str = Omittable(min_length=1, max_length=MAX_NAME_LENGTH)
    entity_id: str = Omittable(min_length=1)
    config: NodeConfigPatch = Omittable()


class CreateEdge(Body):
    begin_node_id: str = Field(min_length=1)
    end_node_id: str = Field(min_length=1)


class CreateModel(Body):
    """``config`` depends on ``provider`` (the document gives each provider's schema)."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    provider: Provider
    config: dict[str, Any] = Field(description="The provider's settings; every provider needs some.")


class FileInput(Body):
    filename: str = Field(min_length=1, max_length=500)
    content_type: str = Field(
        "application/octet-stream",
        max_length=255,
        pattern=MEDIA_TYPE_PATTERN,
        description="The file's media type, answered as Content-Type when it is downloaded: printable "
        "ASCII (no control characters: a header cannot carry them).",
    )
    content_base64: str = Field(
        description=f"The file, base64 (standard alphabet, padded): at most {MAX_INPUT_FILE_BYTES} bytes "
        "once decoded; larger files go to the bucket's inputs/ prefix.",
        json_schema_extra={
            "maxLength": MAX_INPUT_FILE_BASE64,
            "pattern": BASE64_PATTERN,
            "contentEncoding": "base64",
        },
    )


# The shapes of a run's request, by input_mode: batch needs batch_config, single exactly one of
# single_input or file (a field left out or null is not given). The server checks the same (code
# invalid_input_mode). if/then/else: code generators keep Execute one class.
_NOT_GIVEN: dict[str, Any] = {"type": "null"}
EXECUTE_SHAPES: dict[str, Any] = {
    "if": {"required": ["input_mode"], "properties": {"input_mode": {"const": "batch"}}},
    "then": {
        "required": ["batch_config"],
        "properties": {"batch_config": {"type": "object"}, "single_input": _NOT_GIVEN, "file": _NOT_GIVEN},
    },
    "else": {
        "properties": {"batch_config": _NOT_GIVEN},
        "oneOf": [
            {
                "required": ["single_input"],
                "properties": {"single_input": {"type": "string"}, "file": _NOT_GIVEN},
            },
            {"required": ["file"], "properties": {"file": {"type": "object"}, "single_input": _NOT_GIVEN}},
        ],
    },
}


class Execute(Body):
    """Single mode: exactly one of ``single_input`` (text) or ``file``; batch mode: ``batch_config``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=EXECUTE_SHAPES)

    input_mode: Literal["single", "batch"] = "single"
    single_input: str | None = Field(
        None, description="The text to process.", json_schema_extra={"maxLength": MAX_SINGLE_INPUT_CHARS}
    )
    file: FileInput | None = Field(None, description="A file to process (the client sends item=path).")
    version_id: str | None = Field(
        None, min_length=1, description="Run this version of the workflow instead of the active one."
    )
    timeout: int | None = Field(
        None, ge=1, le=MAX_WORKFLOW_TIMEOUT_SECONDS, description="Most seconds the whole run may take."
    )
    batch_config: BatchConfig | None = None
    callback_url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="Where to POST this run's terminal status." + CALLBACK_URL_RULES,
        json_schema_extra=CALLBACK_URL_SCHEMA,
    )


#: Items a batch's estimate renders its templates on, by default and at most.
DEFAULT_ESTIMATE_SAMPLE = 20
MAX_ESTIMATE_SAMPLE = 200


class EstimateBatch(Body):
    """What a batch start would send (``input_mode: "batch"``, ``batch_config``, ``version_id``,
    ``timeout``), and how many of its items to render (``sample_size``)."""

    input_mode: Literal["batch"] = "batch"
    version_id: str | None = Field(
        None, min_length=1, description="Estimate this version of the workflow instead of the active one."
    )
    timeout: int | None = Field(None, ge=1, le=MAX_WORKFLOW_TIMEOUT_SECONDS)
    batch_config: BatchConfig
    sample_size: int = Field(
        DEFAULT_ESTIMATE_SAMPLE,
        ge=1,
        le=MAX_ESTIMATE_SAMPLE,
        description="How many of the kept items (drawn evenly at random) the templates are rendered on.",
    )


class CreateApiKey(Body):
    name: str = Field("", max_length=MAX_NAME_LENGTH)
    # None: the scopes of the key making the request (a key never grants more than it holds).
    scopes: list[ApiKeyScope] | None = Field(None, min_length=1, max_length=3)
    expires_in_days: int | None = Field(None, ge=1, le=3650)

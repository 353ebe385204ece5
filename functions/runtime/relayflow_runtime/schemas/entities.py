"""Domain entities: what the API returns and what the stores persist (mapped explicitly there).

Every entity is also a response schema of the OpenAPI document. The API always sends every field
(null when there is no value), so in the document every field of a response is ``required``
(``json_schema_serialization_defaults_required``); request bodies keep their optional fields, and
a model used both ways (``VersionConfig``, ``NodeConfig``, ``BatchConfig``) gets two schemas,
``...-Input`` and ``...-Output``.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
NodeStatus = Literal["pending", "running", "completed", "failed", "timed_out", "cancelled", "skipped"]

DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY_SECONDS = 2
DEFAULT_NODE_TIMEOUT_SECONDS = 300
#: A node's timeout stays below the node-runner Lambda's own (900 s) with a margin: the runner's own
#: timer (and Step Functions' backstop, 2 s later) must fire, and record ``NodeTimeout``, before
#: Lambda kills the invocation (``Sandbox.Timedout``) with nothing recorded.
MAX_NODE_TIMEOUT_SECONDS = 840
MAX_WORKFLOW_TIMEOUT_SECONDS = 7 * 24 * 3600
#: Most items of a batch run at once (the distributed Map's MaxConcurrency).
MAX_BATCH_PARALLELISM = 100
#: Longest node input template, in characters (domain.templating checks it: template_too_long).
MAX_TEMPLATE_LENGTH = 20_000
#: What the document says of an input template: Mustache whose syntax domain.templating checks (an
#: open "format": JSON Schema cannot express balanced sections).
TEMPLATE_SCHEMA: dict[str, Any] = {
    "format": "mustache",
    "maxLength": MAX_TEMPLATE_LENGTH,
    "description": "The prompt, as a logic-less Mustache template: {{input}} (the parent's output or "
    "the run's input), {{nodes.NAME}} (an upstream node's output), {{item.FIELD}} (batch runs); "
    "sections {{#x}}...{{/x}} and {{^x}}...{{/x}}. Partials and delimiter changes are refused; "
    "a template that does not parse is 400 invalid_template.",
}


def _is_number(annotation: Any) -> bool:
    kinds = {annotation, *get_args(annotation)}
    return bool(kinds & {int, float}) and bool not in kinds


class RequestModel(BaseModel):
    """A request body (or a part of one): unknown fields refused, and a number is JSON's number
    (2.0 is the integer 2), never a boolean (which Python would take for 0 or 1)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if isinstance(data.get(name), bool) and _is_number(field.annotation):
                    raise ValueError(f"{name} must be a number, not true or false")
        return data


class Entity(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


def output_text(value: Any) -> str:
    """A node's output as the text the model produced: text as it is, a parsed JSON value as
    compact JSON (records written before outputs were kept as text held the parsed value)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def with_text_output(data: Any) -> Any:
    """``output`` always text, ``parsed_output`` the parsed value of a JSON node: accepts records
    that keep the text and the value apart and records that kept the parsed value in ``output``."""
    if not isinstance(data, dict):
        return data
    output = data.get("output")
    if isinstance(output, str):
        return data
    if output is None:
        return {**data, "output": ""} if "output" in data else data
    parsed = data.get("parsed_output")
    return {**data, "output": output_text(output), "parsed_output": output if parsed is None else parsed}


class VersionConfig(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, le=10)
    retry_delay_seconds: int = Field(DEFAULT_RETRY_DELAY_SECONDS, ge=1, le=3600)
    max_retry_delay_seconds: int = Field(60, ge=1, le=3600)
    node_timeout: int = Field(DEFAULT_NODE_TIMEOUT_SECONDS, ge=1, le=MAX_NODE_TIMEOUT_SECONDS)


class NodeConfig(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    input_template: str = Field("{{input}}", json_schema_extra=TEMPLATE_SCHEMA)
    timeout: int | None = Field(
        None, ge=1, le=MAX_NODE_TIMEOUT_SECONDS, description="Seconds; null: the version's node_timeout."
    )
    on_failure: Literal["stop", "continue"] = "stop"
    output_format: Literal["text", "json"] = "text"


class Workflow(Entity):
    id: str
    name: str
    description: str = ""
    active_version_id: str | None = None
    callback_url: str | None = None
    created_at: str
    updated_at: str


def timeouts_within_cap(config: Any, *fields: str) -> Any:
    """A stored config read back: a timeout saved before the cap was lowered to
    MAX_NODE_TIMEOUT_SECONDS (900 then) reads as the cap, so the version still shows and runs."""
    if not isinstance(config, dict):
        return config
    return {
        k: min(v, MAX_NODE_TIMEOUT_SECONDS) if k in fields and isinstance(v, int) else v
        for k, v in config.items()
    }


class WorkflowVersion(Entity):
    id: str
    workflow_id: str
    number: int
    name: str = ""
    config: VersionConfig = Field(default_factory=VersionConfig)
    created_at: str
    updated_at: str

    @field_validator("config", mode="before")
    @classmethod
    def _stored_node_timeout(cls, config: Any) -> Any:
        return timeouts_within_cap(config, "node_timeout")


class WorkflowNode(Entity):
    id: str
    workflow_id: str
    version_id: str
    name: str
    entity_type: Literal["model"] = "model"
    entity_id: str
    config: NodeConfig = Field(default_factory=NodeConfig)
    position: int
    created_at: str
    updated_at: str

    @field_validator("config", mode="before")
    @classmethod
    def _stored_timeout(cls, config: Any) -> Any:
        return timeouts_within_cap(config, "timeout")


class WorkflowEdge(Entity):
    id: str
    workflow_id: str
    version_id: str
    begin_node_id: str
    end_node_id: str
    created_at: str


class Model(Entity):
    id: str
    name: str
    provider: str
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: str


class InputFile(Entity):
    key: str
    filename: str
    content_type: str = "application/octet-stream"
    size: int = 0


class BatchConfig(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    dataset_id: str
    dataset_version_id: str
    input_field: str = "text"
    filter_query: str = ""
    parallelism: int = Field(5, ge=1, le=MAX_BATCH_PARALLELISM)
    # The run ends failed (not completed) when more than this share of its items failed.
    max_failed_percent: float | None = Field(None, ge=0, le=100)


class ExecutionProgress(Entity):
    total_nodes: int = 0
    current_node_idx: int = 0
    current_node_id: str | None = None
    #: Single runs: how far the run got — its nodes by how they ended (``failed_nodes`` counts
    #: ``timed_out`` ones too); the rest of ``total_nodes`` are pending or running. Null on runs
    #: recorded before these counts existed, when a page does not read their nodes.
    completed_nodes: int | None = None
    failed_nodes: int | None = None
    skipped_nodes: int | None = None
    cancelled_nodes: int | None = None
    total_items: int | None = None
    #: Batch runs: items that ended, ``completed_items + failed_items``.
    processed_items: int | None = None
    completed_items: int | None = None
    failed_items: int | None = None


class TokenUsage(Entity):
    """Tokens a model call reported (builtin models count words) and, when the model's config has a
    ``price``, the estimated cost in US dollars (a run's sum covers its priced calls; None if none
    was priced)."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated_cost: float | None = None


class AttemptTime(Entity):
    """When a failed attempt of a node started and failed (its error: ``attempt_errors``)."""

    attempt: int
    started_at: str | None = None
    failed_at: str | None = None


class NodeExecution(Entity):
    """One node of a run: what it was sent (``prompt``), what the model answered (``output``, the
    text; empty until the node completes), and for a node declared ``output_format: "json"`` the
    parsed value (``parsed_output``, null for text nodes)."""

    node_id: str
    name: str = ""
    status: NodeStatus = "pending"
    #: The text the model produced (empty until the node completes).
    output: str = ""
    #: For a node declared ``output_format: "json"``: its output, parsed.
    parsed_output: Any = None
    prompt: str | None = None
    duration_ms: int | None = None
    error: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = Field(default_factory=list)
    #: Single runs: each failed attempt's start and failure, in order (runs recorded before: none).
    attempt_times: list[AttemptTime] = Field(default_factory=list)
    started_at: str | None = None
    #: Single runs: when its latest attempt started.
    attempt_started_at: str | None = None
    completed_at: str | None = None
    usage: TokenUsage | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_output(cls, data: Any) -> Any:
        return with_text_output(data)


class ExecutionTrigger(Entity):
    """The S3 object whose upload started a run."""

    type: Literal["s3"] = "s3"
    bucket: str
    key: str
    etag: str
    version_id: str | None = None


BatchItemStatus = Literal["pending", "completed", "failed"]


class BatchItemResult(Entity):
    """One item of a batch run, as the results API returns it: ``output`` is the text its last node
    produced (empty until the item completes), ``parsed_output`` that node's parsed value when it
    is declared ``output_format: "json"``."""

    source_item_id: str
    status: BatchItemStatus = "pending"
    input: Any = None
    output: str = ""
    parsed_output: Any = None
    error: str | None = None
    failed_node_id: str | None = None
    duration_ms: int | None = None
    completed_at: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_output(cls, data: Any) -> Any:
        return with_text_output(data)


class ExecutionResults(Entity):
    """What a finished run produced. A single run: ``output``, the text of its last node that
    produced one, and ``parsed_output`` when that node is declared ``output_format: "json"``
    (``items`` is empty). A batch run: the first page of its item results (``items``, with
    ``next_token`` for the results API) and ``total_items``."""

    output: str | None = None
    parsed_output: Any = None
    items: list[BatchItemResult] = Field(default_factory=list)
    next_token: str | None = None
    total_items: int | None = None

    @classmethod
    def of_single_run(cls, final: Any, parsed: Any = None) -> ExecutionResults | None:
        """A single run's results from the stored final output (text, or a parsed JSON value)."""
        if final is None:
            return None
        if isinstance(final, str):
            return cls(output=final, parsed_output=parsed)
        return cls(output=output_text(final), parsed_output=final if parsed is None else parsed)


class Execution(Entity):
    """A run of a workflow version over one input (``single``) or a dataset (``batch``)."""

    id: str
    workflow_id: str
    version_id: str
    number: int = 0
    status: ExecutionStatus = Field(
        "pending",
        description="pending (queued) → running → completed | failed | cancelled; never backwards, "
        "never two terminal states.",
    )
    input_mode: Literal["single", "batch"] = "single"
    single_input: str | None = None
    input_file: InputFile | None = None
    batch_config: BatchConfig | None = None
    timeout: int | None = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    progress: ExecutionProgress = Field(default_factory=ExecutionProgress)
    results: ExecutionResults | None = Field(None, description="Set once the run has finished.")
    error: str | None = Field(None, description="Why the run failed.")
    node_executions: dict[str, NodeExecution] = Field(
        default_factory=dict, description="Single runs: each node's record, by node id."
    )
    rerun_of: str | None = None
    retry_of: str | None = None  # batch: the run whose failed items this run retries
    usage: TokenUsage | None = None
    callback_url: str | None = None  # this run's webhook URL (else the workflow's)
    trigger: ExecutionTrigger | None = None  # set when an S3 upload started the run
    completed_with_failures: bool = Field(
        False,
        description="A completed run that still had failures: a node with `on_failure: continue` "
        "that failed (single), or failed items (batch).",
    )
    # Why a pending run has not started yet (a batch waiting for the batch parallelism budget, a
    # single run waiting for admission: services/admission.py); only while it is pending.
    waiting_reason: str | None = None


# ---- datasets and batch results ---------------------------------------------------------------------
DatasetVersionStatus = Literal["empty", "processing", "ready", "failed"]


class Dataset(Entity):
    id: str
    name: str
    description: str = ""
    version_count: int = 0
    created_at: str
    updated_at: str


class DatasetVersion(Entity):
    """A version's items are written once (one upload, committed whole) and never change."""

    id: str
    dataset_id: str
    number: int
    name: str = ""
    status: DatasetVersionStatus = "empty"
    item_count: int = 0
    fields: list[str] = Field(default_factory=list)  # every field name some item has (first 500)
    format: str | None = None  # jsonl | csv | json | items
    source_filename: str | None = None
    size_bytes: int = 0
    error: str | None = None  # why the last upload was refused ("line N: reason")
    error_code: str | None = None  # malformed_file, duplicate_id, too_large, empty_file, ...
    error_line: int | None = None
    created_at: str
    updated_at: str


class DatasetItem(Entity):
    id: str
    data: dict[str, Any]


class DatasetUpload(Entity):
    """Where to send a dataset file: ``upload_url`` (a presigned S3 PUT, on AWS) or, always,
    base64 parts through the API (``PUT .../uploads/{id}/parts/{n}``), then ``commit``."""

    id: str
    dataset_id: str
    version_id: str
    filename: str
    format: str
    part_size: int
    max_parts: int
    upload_url: str | None = None
    expires_at: str


# ---- webhooks ------------------------------------------------------------------------------------------
class WebhookSecret(Entity):
    """The answer to creating or rotating a workflow's signing secret: the only time it is shown."""

    workflow_id: str
    secret: str
    created_at: str


class DeliveryAttempt(Entity):
    """One attempt to POST a terminal status to a callback URL."""

    delivery_id: str  # the same on every attempt of one delivery (header X-Relayflow-Delivery)
    execution_id: str
    workflow_id: str
    event_type: str  # execution.completed | execution.failed | execution.cancelled
    url: str
    attempt: int
    outcome: Literal["delivered", "failed"]
    final: bool  # no further attempt follows this one
    response_status: int | None = None
    error: str | None = None
    duration_ms: int = 0
    attempted_at: str
    next_attempt_at: str | None = None
    round: int = 0  # 0: the delivery the run's end started; n: the n-th re-send by request


class WebhookResend(Entity):
    """A finished execution's webhook queued again (POST .../deliveries): its attempts follow in the
    delivery history under this round."""

    delivery_id: str
    execution_id: str
    workflow_id: str
    event_type: str
    url: str
    round: int
    queued_at: str


# ---- API keys ----------------------------------------------------------------------------------------
ApiKeyScope = Literal["read", "write", "execute"]
API_KEY_SCOPES: tuple[str, ...] = ("read", "write", "execute")


class ApiKey(Entity):
    """An API key as listed: never its secret, never its hash."""

    id: str
    name: str = ""
    prefix: str  # "rf_<id>": how the key starts, to recognise it
    scopes: list[ApiKeyScope]
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    created_by: str | None = None  # id of the key that created it (None: bootstrap command)


class CreatedApiKey(ApiKey):
    """The answer to creating a key: the only time the whole key is shown."""

    key: str

"""Domain entities: what the API returns and what the stores persist (mapped explicitly there)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"pending", "running"})
NodeStatus = Literal["pending", "running", "completed", "failed", "timed_out", "cancelled", "skipped"]

DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY_SECONDS = 2
DEFAULT_NODE_TIMEOUT_SECONDS = 300
MAX_NODE_TIMEOUT_SECONDS = 900  # the node-runner Lambda's own timeout
MAX_WORKFLOW_TIMEOUT_SECONDS = 7 * 24 * 3600
#: Most items of a batch run at once (the distributed Map's MaxConcurrency).
MAX_BATCH_PARALLELISM = 100


class Entity(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VersionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, le=10)
    retry_delay_seconds: int = Field(DEFAULT_RETRY_DELAY_SECONDS, ge=1, le=3600)
    max_retry_delay_seconds: int = Field(60, ge=1, le=3600)
    node_timeout: int = Field(DEFAULT_NODE_TIMEOUT_SECONDS, ge=1, le=MAX_NODE_TIMEOUT_SECONDS)


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_template: str = "{{input}}"
    timeout: int | None = Field(None, ge=1, le=MAX_NODE_TIMEOUT_SECONDS)
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


class WorkflowVersion(Entity):
    id: str
    workflow_id: str
    number: int
    name: str = ""
    config: VersionConfig = Field(default_factory=VersionConfig)
    created_at: str
    updated_at: str


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


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    total_items: int | None = None
    processed_items: int | None = None
    failed_items: int | None = None


class TokenUsage(Entity):
    """Tokens a model call reported (builtin models count words) and, when the model's config has a
    ``price``, the estimated cost in US dollars (a run's sum covers its priced calls; None if none
    was priced)."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated_cost: float | None = None


class NodeExecution(Entity):
    node_id: str
    name: str = ""
    status: NodeStatus = "pending"
    #: The text the model produced.
    output: Any = None
    #: For a node declared ``output_format: "json"``: its output, parsed.
    parsed_output: Any = None
    prompt: str | None = None
    duration_ms: int | None = None
    error: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = Field(default_factory=list)
    started_at: str | None = None
    completed_at: str | None = None
    usage: TokenUsage | None = None


class ExecutionTrigger(Entity):
    """The S3 object whose upload started a run."""

    type: Literal["s3"] = "s3"
    bucket: str
    key: str
    etag: str
    version_id: str | None = None


class Execution(Entity):
    id: str
    workflow_id: str
    version_id: str
    number: int = 0
    status: ExecutionStatus = "pending"
    input_mode: Literal["single", "batch"] = "single"
    single_input: str | None = None
    input_file: InputFile | None = None
    batch_config: BatchConfig | None = None
    timeout: int | None = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    progress: ExecutionProgress = Field(default_factory=ExecutionProgress)
    results: Any = None
    error: str | None = None
    node_executions: dict[str, NodeExecution] = Field(default_factory=dict)
    rerun_of: str | None = None
    retry_of: str | None = None  # batch: the run whose failed items this run retries
    usage: TokenUsage | None = None
    callback_url: str | None = None  # this run's webhook URL (else the workflow's)
    trigger: ExecutionTrigger | None = None  # set when an S3 upload started the run
    # Why a pending run has not started yet (a batch waiting for the batch parallelism budget).
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


class BatchItemResult(Entity):
    """One item of a batch run, as the results API returns it."""

    source_item_id: str
    status: Literal["pending", "completed", "failed"] = "pending"
    input: Any = None
    output: Any = None
    error: str | None = None
    failed_node_id: str | None = None
    duration_ms: int | None = None
    completed_at: str | None = None


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

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
    parallelism: int = Field(5, ge=1, le=100)
    max_failed_percent: float | None = Field(None, ge=0, le=100)
    item_ids: list[str] | None = None  # internal: retry of failed items


class ExecutionProgress(Entity):
    total_nodes: int = 0
    current_node_idx: int = 0
    current_node_id: str | None = None
    total_items: int | None = None
    processed_items: int | None = None
    failed_items: int | None = None


class NodeExecution(Entity):
    node_id: str
    name: str = ""
    status: NodeStatus = "pending"
    output: Any = None
    prompt: str | None = None
    duration_ms: int | None = None
    error: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = Field(default_factory=list)
    started_at: str | None = None
    completed_at: str | None = None
    usage: dict[str, int] | None = None


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
    usage: dict[str, Any] | None = None

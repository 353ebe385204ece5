"""The details of the events relayflow puts on its EventBridge bus (schema version 1), as typed
shapes: docs/events-and-triggers.md documents them field by field; services/notify.py builds them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from relayflow_runtime.schemas.entities import ExecutionProgress

SCHEMA_VERSION = "1"


class StatusEvent(BaseModel):
    """An ``Execution Status Change`` detail. Also kept on its run (``unpublished_event``) while the
    bus refuses it, and published again from there by the sweeper: its ``time`` names it."""

    model_config = ConfigDict(extra="ignore")

    schema_version: str = SCHEMA_VERSION
    tenant: str
    execution_id: str
    workflow_id: str
    version_id: str
    number: int | None = None
    input_mode: str = "single"
    status: str
    progress: ExecutionProgress | None = None
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    time: str


class EventRun(TypedDict):
    """The run a node event is about (services/run_machine.py gives it)."""

    tenant: str
    workflow_id: str
    version_id: str | None
    execution_id: str
    mode: str


class EventNode(TypedDict):
    """The node a node event is about: its id, name and index in plan order."""

    id: str
    name: str
    idx: int


class NodeEvent(BaseModel):
    """A ``Node Execution Finished`` detail: a node of a single-input run completed, failed or timed
    out."""

    schema_version: str = SCHEMA_VERSION
    tenant: str
    execution_id: str
    workflow_id: str
    version_id: str | None = None
    node_id: str
    node_name: str
    node_idx: int
    status: str
    attempts: int | None = None
    duration_ms: int | float | None = None
    error: str | None = None
    time: str

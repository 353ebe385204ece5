"""Announce what happens to runs on the relayflow EventBridge bus (schema: docs/events-and-triggers.md).

Two detail types, both with ``schema_version`` "1":

* ``Execution Status Change``: every change of an execution's status, ``pending`` included;
* ``Node Execution Finished``: each node of a single-input run that completed, failed or timed out.

Webhooks are not sent from here: the webhook sender function subscribes to the terminal status
changes on the bus (see logic/webhooks.py), so a slow receiver can never hold up a run.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters import aws
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

EVENT_SOURCE = "relayflow"
SCHEMA_VERSION = "1"
STATUS_CHANGE = "Execution Status Change"
NODE_FINISHED = "Node Execution Finished"


def _progress(tenant: str, record: dict[str, Any]) -> Any:
    """Progress as GET execution shows it (current node, batch counters), results left out."""
    from relayflow_runtime.services import executions

    try:
        without_results = {k: v for k, v in record.items() if k != "results"}
        execution = executions.to_execution(tenant, without_results, with_nodes=False)
        return execution.progress.model_dump(mode="json")
    except Exception:  # an announcement must never fail the run it announces
        logger.exception("could not compute progress for an event")
        return record.get("progress")


def status_event(tenant: str, record: dict[str, Any]) -> dict[str, Any]:
    """The detail of an ``Execution Status Change`` event (schema version 1)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": tenant,
        "execution_id": record["id"],
        "workflow_id": record["workflow_id"],
        "version_id": record["version_id"],
        "number": record.get("number"),
        "input_mode": record.get("input_mode", "single"),
        "status": record["status"],
        "progress": _progress(tenant, record),
        "error": record.get("error"),
        "created_at": record.get("created_at"),
        "started_at": record.get("started_at"),
        "completed_at": record.get("completed_at"),
        "time": now_iso(),
    }


def node_event(
    ctx: dict[str, Any], node: dict[str, Any], record: dict[str, Any] | None, status: str, error: str | None
) -> dict[str, Any]:
    """The detail of a ``Node Execution Finished`` event (schema version 1)."""
    record = record or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": ctx["tenant"],
        "execution_id": ctx["execution_id"],
        "workflow_id": ctx["workflow_id"],
        "version_id": ctx.get("version_id"),
        "node_id": node["id"],
        "node_name": node["name"],
        "node_idx": node["idx"],
        "status": status,
        "attempts": record.get("attempts"),
        "duration_ms": record.get("duration_ms"),
        "error": error,
        "time": now_iso(),
    }


def publish(detail_type: str, detail: dict[str, Any]) -> None:
    """Put one event on the bus. Failures are logged, never raised."""
    bus = get_settings().event_bus_name
    if not bus:
        return
    try:
        response = aws.client("events").put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": bus,
                    "Resources": [],
                }
            ]
        )
    except Exception:  # an announcement must never fail the run it announces
        logger.exception("could not publish event", extra={"detail_type": detail_type})
        return
    if response.get("FailedEntryCount"):
        logger.error(
            "the event bus refused an event",
            extra={"detail_type": detail_type, "entries": response.get("Entries")},
        )


def status_changed(tenant: str, record: dict[str, Any]) -> None:
    publish(STATUS_CHANGE, status_event(tenant, record))


def node_finished(
    ctx: dict[str, Any], node: dict[str, Any], record: dict[str, Any] | None, status: str, error: str | None
) -> None:
    """A node of a single-input run reached completed / failed / timed_out. Batch runs announce
    only their status changes: one event per item per node would flood the bus."""
    if ctx.get("mode") == "batch":
        return
    publish(NODE_FINISHED, node_event(ctx, node, record, status, error))

"""Announce execution status changes (EventBridge; webhooks ride on the same call)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger

from relayflow import aws
from relayflow.logic.clock import now_iso
from relayflow.settings import get_settings

logger = Logger(child=True)

EVENT_SOURCE = "relayflow"
SCHEMA_VERSION = "1"


def status_event(tenant: str, record: dict[str, Any], detail_type: str = "Execution Status Change") -> dict:
    """The documented, versioned event shape (see README: Events)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": tenant,
        "execution_id": record["id"],
        "workflow_id": record["workflow_id"],
        "version_id": record["version_id"],
        "number": record.get("number"),
        "status": record["status"],
        "progress": record.get("progress"),
        "error": record.get("error"),
        "time": now_iso(),
    }


def publish(tenant: str, detail_type: str, detail: dict[str, Any]) -> None:
    bus = get_settings().event_bus_name
    if not bus:
        return
    try:
        aws.client("events").put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": bus,
                }
            ]
        )
    except Exception:  # an announcement must never fail the run it announces
        logger.exception("could not publish event", extra={"detail_type": detail_type})


def status_changed(tenant: str, record: dict[str, Any]) -> None:
    publish(tenant, "Execution Status Change", status_event(tenant, record))

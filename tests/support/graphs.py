"""Building graphs through the HTTP API (the ``api`` fixture), for the integration tests."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

TERMINAL = ("completed", "failed", "cancelled")


def ok(response: tuple[int, Any], status: int = 201) -> Any:
    assert response[0] == status, response
    return response[1]


def builtin_model(api: Any, model: str, **config: Any) -> str:
    body = {"name": f"{model}-model", "provider": "builtin", "config": {"model": model, **config}}
    return str(ok(api("POST", "/models", body))["id"])


def new_version(api: Any, **config: Any) -> tuple[str, str]:
    workflow = ok(api("POST", "/workflows", {"name": "graph"}))
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {"config": config}))
    return workflow["id"], version["id"]


def add_node(api: Any, version_id: str, name: str, model_id: str, template: str, **config: Any) -> str:
    body = {"name": name, "entity_id": model_id, "config": {"input_template": template, **config}}
    return str(ok(api("POST", f"/versions/{version_id}/nodes", body))["id"])


def connect(api: Any, version_id: str, *pairs: tuple[str, str]) -> None:
    for begin, end in pairs:
        ok(api("POST", f"/versions/{version_id}/edges", {"begin_node_id": begin, "end_node_id": end}))


def run(api: Any, workflow_id: str, text: str, timeout: float = 30.0) -> tuple[dict[str, Any], list[Any]]:
    """Start a run and poll it to its end; returns the final execution and every progress seen."""
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": text}))
    path = f"/workflows/{workflow_id}/executions/{execution['id']}"
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + timeout
    while True:
        execution = ok(api("GET", path), 200)
        seen.append((execution["progress"]["current_node_idx"], execution["progress"]["current_node_id"]))
        if execution["status"] in TERMINAL or time.monotonic() > deadline:
            return execution, seen
        time.sleep(0.03)


def interval(record: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["completed_at"])

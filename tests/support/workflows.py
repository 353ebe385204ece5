"""Building workflows of builtin models through the client, for the integration tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from relayflow import Client
from relayflow.client import Execution


@dataclass
class Built:
    workflow_id: str
    version_id: str
    node_ids: dict[str, str] = field(default_factory=dict)


def build(
    client: Client,
    nodes: list[tuple[str, dict[str, Any], dict[str, Any]]],
    *,
    version_config: dict[str, Any] | None = None,
    name: str = "test workflow",
) -> Built:
    """nodes: (node name, builtin model config, node config); a chain in the given order."""
    workflow = client.create_workflow(name=name)
    version = client.create_workflow_version(workflow_id=workflow.id, config=version_config)
    built = Built(workflow.id, version.id)
    for node_name, model_config, node_config in nodes:
        model = client.create_model(name=node_name, provider="builtin", config=model_config)
        created = client.create_workflow_node(
            version_id=version.id, name=node_name, entity_id=model.id, config=node_config
        )
        built.node_ids[node_name] = created.id
    return built


def wait(client: Client, built: Built, execution: Execution, timeout: float = 60) -> Execution:
    return client.wait_for_execution(built.workflow_id, execution.id, poll_interval=0.05, timeout=timeout)


def wait_for_node(
    client: Client, built: Built, execution_id: str, node: str, status: str, timeout: float = 20
) -> Execution:
    deadline = time.monotonic() + timeout
    while True:
        current = client.get_workflow_execution(built.workflow_id, execution_id)
        if current.node_executions[built.node_ids[node]]["status"] == status:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node} never reached {status}: {current.node_executions}")
        time.sleep(0.05)


def by_name(execution: Execution) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in execution.node_executions.values()}

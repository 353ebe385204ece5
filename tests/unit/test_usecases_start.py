"""Starting a run, given in-memory fakes (tests/support/fakes.py): what the start writes, announces
and asks of Step Functions, with no moto and no stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.fakes import Fakes, refuse_aws

from relayflow_runtime.errors import Conflict, NotFound
from relayflow_runtime.schemas import api
from relayflow_runtime.services import executions
from relayflow_runtime.services.run_records import plan_key
from relayflow_runtime.settings import get_settings

TENANT = "t-start"
RUN_MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:run"
STAMP = "2026-01-01T00:00:00.000Z"


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    refuse_aws(monkeypatch)
    monkeypatch.setenv("RUN_MACHINE_ARN", RUN_MACHINE)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def authored(fakes: Fakes, *, edges: bool = True, model: bool = True) -> str:
    """A workflow whose active version has nodes A -> B over one builtin model."""
    fakes.workflows.workflows[(TENANT, "wf")] = {
        "id": "wf",
        "name": "Docs",
        "active_version_id": "v1",
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    version = {"id": "v1", "workflow_id": "wf", "number": 1, "created_at": STAMP, "updated_at": STAMP}
    nodes: list[dict[str, Any]] = [
        {
            "id": node_id,
            "workflow_id": "wf",
            "version_id": "v1",
            "name": name,
            "entity_id": "m1",
            "config": {"input_template": "{{input}}", "timeout": 30},
            "position": position,
            "created_at": STAMP,
            "updated_at": STAMP,
        }
        for position, (node_id, name) in enumerate([("a", "A"), ("b", "B")])
    ]
    links = [
        {"id": "e1", "workflow_id": "wf", "version_id": "v1", "begin_node_id": "a", "end_node_id": "b"}
        | {"created_at": STAMP}
    ]
    fakes.workflows.graphs[(TENANT, "v1")] = (version, nodes, links if edges else [])
    if model:
        fakes.models.models[(TENANT, "m1")] = {
            "id": "m1",
            "name": "upper",
            "provider": "builtin",
            "config": '{"model": "uppercase"}',
            "created_at": STAMP,
        }
    return "wf"


def test_a_start_writes_the_run_its_plan_and_nodes_announces_it_and_starts_its_machine() -> None:
    # Given a workflow of two nodes
    fakes = Fakes()
    workflow_id = authored(fakes)
    # When a single run is started
    execution = executions.start_execution(
        TENANT, workflow_id, api.Execute(input_mode="single", single_input="hello"), env=fakes.deps
    )
    # Then the run is written pending, numbered, with its machine and the TTL of its children
    record = fakes.executions.item(TENANT, execution.id)
    assert execution.status == "pending" and execution.number == 1
    assert record["status"] == "pending" and record["single_input"] == "hello"
    assert record["state_machine_arn"] == RUN_MACHINE
    assert record["created_at"] == fakes.clock.now()
    assert isinstance(record["children_expire_at"], int)
    assert execution.progress.total_nodes == 2 and execution.progress.current_node_id == "a"
    # and its plan snapshot is in the bucket, its nodes pending in topological order
    plan = fakes.blobs.get_json(plan_key(TENANT, execution.id))
    assert [n["id"] for n in plan["nodes"]] == ["a", "b"] and plan["nodes"][1]["parents"] == ["a"]
    # no "levels"; the run's timeout under its name, and its former one for the previous runner
    assert set(plan) == {"workflow_id", "version_id", "mode", "run_timeout", "timeout", "config", "nodes"}
    assert "node_order" not in record  # written, never read: no longer written
    nodes = {n["node_id"]: n for n in fakes.executions.node_records(TENANT, execution.id)}
    assert {k: (v["status"], v["idx"]) for k, v in nodes.items()} == {
        "a": ("pending", 0),
        "b": ("pending", 1),
    }
    # and it was announced, then started on the run machine under its own id
    assert fakes.bus.statuses() == ["pending"]
    assert fakes.machines.started == [
        (
            RUN_MACHINE,
            execution.id,
            {"run": {"tenant": TENANT, "workflow_id": "wf", "execution_id": execution.id}},
        )
    ]
    assert record["sfn_execution_arn"] == f"{RUN_MACHINE}:{execution.id}"


def test_a_start_without_a_free_admission_slot_waits_in_the_given_queue() -> None:
    # Given a workflow, and this second's admission window full
    fakes = Fakes()
    workflow_id = authored(fakes)
    fakes.rate_windows.open = False
    # When a run is started
    execution = executions.start_execution(
        TENANT, workflow_id, api.Execute(input_mode="single", single_input="x"), env=fakes.deps
    )
    # Then it waits, says why, and its start is queued, not made
    assert execution.status == "pending" and "waiting for admission" in (execution.waiting_reason or "")
    assert fakes.machines.started == []
    assert fakes.admission_queue.sent == [
        {"tenant": TENANT, "workflow_id": "wf", "execution_id": execution.id}
    ]
    assert fakes.executions.item(TENANT, execution.id)["admission_queued_at"] == fakes.clock.now()


def test_a_long_single_input_is_kept_in_the_given_bucket() -> None:
    fakes = Fakes()
    workflow_id = authored(fakes)
    text = "x" * 10_000
    execution = executions.start_execution(
        TENANT, workflow_id, api.Execute(input_mode="single", single_input=text), env=fakes.deps
    )
    stored = fakes.executions.item(TENANT, execution.id)["single_input"]
    assert stored == {"$s3": f"executions/{TENANT}/{execution.id}/input.json"}
    assert fakes.blobs.get_json(stored["$s3"]) == text
    assert executions.cancel_execution(TENANT, "wf", execution.id, env=fakes.deps).single_input == text


def test_a_version_whose_model_is_gone_cannot_start_and_nothing_is_written() -> None:
    fakes = Fakes()
    workflow_id = authored(fakes, model=False)
    with pytest.raises(Conflict) as refused:
        executions.start_execution(
            TENANT, workflow_id, api.Execute(input_mode="single", single_input="x"), env=fakes.deps
        )
    assert refused.value.code == "invalid_workflow_version"
    assert fakes.executions.items == {} and fakes.machines.started == [] and fakes.bus.taken == []


def test_a_start_of_an_unknown_workflow_is_not_found() -> None:
    fakes = Fakes()
    with pytest.raises(NotFound):
        executions.start_execution(
            TENANT, "nope", api.Execute(input_mode="single", single_input="x"), env=fakes.deps
        )

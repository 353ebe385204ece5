"""Each timeout has one name from the plan to the machines (docs/engine.md, "Timeouts, by name");
what an earlier deploy stored or a running execution sends under a former name still reads."""

from __future__ import annotations

from relayflow_runtime.domain.batch import AwaitBudgetEvent, BatchStart, ItemsEvent
from relayflow_runtime.domain.engine import TIMEOUT_BACKSTOP_SECONDS, NodeTask, Plan, RunStart

RUN = {"tenant": "t", "workflow_id": "w", "execution_id": "e"}
BATCH = {
    "items_key": "k",
    "express": True,
    "items_per_child": 2,
    "children": 3,
    "child_timeout": 75,
    "total": 9,
}


def stored_plan(**names: object) -> dict[str, object]:
    node = {
        "id": "n",
        "name": "n",
        "idx": 0,
        "template": "{{input}}",
        "model": {"id": "m", "provider": "builtin"},
    }
    return {"workflow_id": "w", "version_id": "v", "mode": "single", "config": {}, "nodes": [node], **names}


def test_a_plan_stored_under_the_former_names_reads_as_node_timeout_and_run_timeout() -> None:
    # Given a plan snapshot written before the rename: the node's limit and the run's as "timeout"
    document = stored_plan(timeout=600)
    document["nodes"][0]["timeout"] = 30  # type: ignore[index]
    # When the runner reads it
    plan = Plan.model_validate(document)
    # Then each reads under its one name, and the node's task is backed up from it
    assert (plan.run_timeout, plan.nodes[0].node_timeout) == (600, 30)
    assert NodeTask.of(plan.nodes[0]).task_timeout == 30 + TIMEOUT_BACKSTOP_SECONDS


def test_a_plan_written_today_still_carries_the_former_names_for_the_previous_runner() -> None:
    document = stored_plan(run_timeout=600)
    document["nodes"][0]["node_timeout"] = 30  # type: ignore[index]
    written = Plan.model_validate(document).model_dump(mode="json")
    assert (written["run_timeout"], written["timeout"]) == (600, 600)
    assert (written["nodes"][0]["node_timeout"], written["nodes"][0]["timeout"]) == (30, 30)
    assert Plan.model_validate(written).model_dump(mode="json") == written


def test_the_machines_answers_carry_run_timeout_and_still_timeout_for_running_executions() -> None:
    start = RunStart.model_validate(
        {"run": RUN, "roots": [], "gated": [], "retry": {"max_retries": 0, "delays": []}, "run_timeout": 60}
    )
    assert start.model_dump()["run_timeout"] == start.model_dump()["timeout"] == 60
    batch = BatchStart.model_validate({"run": RUN, "batch": BATCH, "run_timeout": 60, "budget_wait": 60})
    assert batch.model_dump()["run_timeout"] == batch.model_dump()["timeout"] == 60


def test_what_a_previous_definition_sends_reads_under_the_new_names() -> None:
    # ReserveBudget and AwaitBudget of a batch started before the deploy send "timeout"
    assert (
        BatchStart.model_validate({"run": RUN, "batch": BATCH, "timeout": 60, "budget_wait": 60}).run_timeout
        == 60
    )
    waiting = AwaitBudgetEvent.model_validate({"run": RUN, "batch": BATCH, "timeout": 60, "token": "x"})
    assert waiting.run_timeout == 60
    # a child of such a batch sends its limit as "task_timeout", one of the batch before as well
    assert ItemsEvent.model_validate({"run": RUN, "task_timeout": 75}).child_timeout == 75
    assert ItemsEvent.model_validate({"run": RUN, "child_timeout": 75}).child_timeout == 75

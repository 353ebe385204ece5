"""Token usage and estimated cost, recorded per node and summed per execution, on the local stack."""

from __future__ import annotations

import time
from typing import Any


def ok(response: tuple[int, Any], status: int = 201) -> Any:
    assert response[0] == status, response
    return response[1]


def wait(api: Any, workflow_id: str, execution_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        execution = ok(api("GET", f"/workflows/{workflow_id}/executions/{execution_id}"), 200)
        if execution["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return execution
        time.sleep(0.03)


def create_model(api: Any, name: str, **config: Any) -> dict[str, Any]:
    return dict(ok(api("POST", "/models", {"name": name, "provider": "builtin", "config": config})))


def test_usage_and_cost_per_node_and_summed_exactly_per_execution(api: Any) -> None:
    # Given builtin models (their tokens are word counts): two priced so that each call over ten
    # words costs $0.1 and $0.2, and one without a price
    dime = create_model(api, "dime", model="echo", price={"input_per_1k": 5, "output_per_1k": 5})
    two_dimes = create_model(api, "two", model="echo", price={"input_per_1k": 10, "output_per_1k": 10})
    free = create_model(api, "free", model="word_count")
    workflow = ok(api("POST", "/workflows", {"name": "priced"}))
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {}))
    ids = [
        ok(api("POST", f"/versions/{version['id']}/nodes", {"name": name, "entity_id": model["id"]}))["id"]
        for name, model in (("first", dime), ("second", two_dimes), ("count", free))
    ]

    # When a ten-word input runs through the chain
    ten_words = "one two three four five six seven eight nine ten"
    execution = ok(api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": ten_words}))
    execution = wait(api, workflow["id"], execution["id"])

    # Then each node records its tokens and, when priced, its cost
    assert execution["status"] == "completed", execution["error"]
    usage = {node_id: execution["node_executions"][node_id]["usage"] for node_id in ids}
    assert usage[ids[0]] == {"input_tokens": 10, "output_tokens": 10, "estimated_cost": 0.1}
    assert usage[ids[1]] == {"input_tokens": 10, "output_tokens": 10, "estimated_cost": 0.2}
    assert usage[ids[2]] == {"input_tokens": 10, "output_tokens": 1, "estimated_cost": None}
    # And the execution sums them exactly (0.1 + 0.2 is 0.30000000000000004 in floats)
    assert execution["usage"] == {"input_tokens": 30, "output_tokens": 21, "estimated_cost": 0.3}


def test_a_run_of_unpriced_models_has_tokens_but_no_cost(api: Any) -> None:
    # Given a workflow of one model without a price
    model = create_model(api, "echo", model="echo")
    workflow = ok(api("POST", "/workflows", {"name": "unpriced"}))
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {}))
    ok(api("POST", f"/versions/{version['id']}/nodes", {"name": "n", "entity_id": model["id"]}))

    # When it runs
    execution = ok(api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": "a b c"}))
    execution = wait(api, workflow["id"], execution["id"])

    # Then tokens are counted and the cost is null (unknown), not 0
    assert execution["status"] == "completed", execution["error"]
    assert execution["usage"] == {"input_tokens": 3, "output_tokens": 3, "estimated_cost": None}


def test_an_invalid_price_is_refused_when_the_model_is_created(api: Any) -> None:
    # Given a negative rate and an unknown price key
    config = {"model": "echo", "price": {"input_per_1k": -1, "per_call": 2}}
    # When the model is created
    status, body = api("POST", "/models", {"name": "bad", "provider": "builtin", "config": config})
    # Then it is refused, naming both problems
    assert status == 400
    assert body["code"] == "invalid_model_config"
    assert "price.input_per_1k" in body["message"] and "per_call" in body["message"]


def test_an_ended_runs_usage_is_kept_on_it_and_listed_without_reading_its_nodes(
    api: Any, local_stack: Any, monkeypatch: Any
) -> None:
    from relayflow_runtime.adapters.table.executions import ExecutionStore

    # Given a run that completed and one that failed at its second node, each after a priced node
    dime = create_model(api, "dime", model="echo", price={"input_per_1k": 5, "output_per_1k": 5})
    failing = create_model(api, "fails", model="fail")
    ended = {}
    for outcome, second in (("completed", dime), ("failed", failing)):
        workflow = ok(api("POST", "/workflows", {"name": outcome}))
        version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {"config": {"max_retries": 0}}))
        for name, model in (("first", dime), ("second", second)):
            ok(api("POST", f"/versions/{version['id']}/nodes", {"name": name, "entity_id": model["id"]}))
        started = ok(api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": "a b c"}))
        ended[outcome] = (workflow["id"], wait(api, workflow["id"], started["id"]))
    # (a failed run's sum is kept just after its status moves: its end's follow-up, done once idle)
    assert local_stack.wait_idle(timeout=30)
    # When each is listed, counting the reads of node records
    reads: list[str] = []
    original = ExecutionStore.node_records

    def counted(self: Any, tenant: str, execution_id: str) -> Any:
        reads.append(execution_id)
        return original(self, tenant, execution_id)

    monkeypatch.setattr(ExecutionStore, "node_records", counted)
    for outcome, (workflow_id, execution) in ended.items():
        assert execution["status"] == outcome, execution
        [row] = ok(api("GET", f"/workflows/{workflow_id}/executions"), 200)["items"]
        # Then the row shows the usage the run's own page sums from its nodes
        assert row["usage"] == execution["usage"] and execution["usage"]["input_tokens"] > 0, outcome
    # And no listing read the runs' nodes: the sum was kept on each run when it ended
    assert reads == []

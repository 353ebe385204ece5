"""A batch child's ``run_items`` is given the time it really has: the Lambda invocation's, or the
child Task's own timeout when that is shorter (Step Functions times the Task out there and drops
its result, so the finished items must be recorded before it; issue 23 #5)."""

from __future__ import annotations

from typing import Any

import pytest

from relayflow_runtime.handlers import node_runner
from relayflow_runtime.services import batch_items

RUN = {"tenant": "t", "workflow_id": "wf", "execution_id": "x"}


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    calls: list[int | None] = []

    def run_items(run: Any, entries: Any, *, remaining_ms: int | None = None) -> dict[str, int]:
        calls.append(remaining_ms)
        return {"done": 0}

    monkeypatch.setattr(batch_items, "run_items", run_items)
    return calls


@pytest.mark.parametrize("name", ["child_timeout", "task_timeout"])  # task_timeout: the previous definition's
@pytest.mark.parametrize(
    ("child_timeout", "remaining_ms", "expected"),
    [
        (240, 900_000, 240_000),  # an Express child: its Task times out long before Lambda would
        (900, 500_000, 500_000),  # a Standard child started late in its invocation
        (None, 900_000, 900_000),  # an older definition that does not pass the Task's timeout
        (240, None, 240_000),  # no Lambda context (the local stack's direct calls)
    ],
)
def test_run_items_gets_the_shorter_of_the_child_timeout_and_the_invocations_time(
    seen: list[int | None], name: str, child_timeout: int | None, remaining_ms: int | None, expected: int
) -> None:
    event: dict[str, Any] = {"action": "run_items", "run": RUN, "items": []}
    if child_timeout is not None:
        event[name] = child_timeout
    node_runner.handle(event, remaining_ms=remaining_ms)
    assert seen == [expected]

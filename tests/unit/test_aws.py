"""Lent boto3 resources: never shared by two callers at once, built once and lent again."""

from __future__ import annotations

import threading

from relayflow_runtime.adapters import aws


class _Resource:
    def __init__(self, built: list[_Resource]) -> None:
        self.busy = False
        built.append(self)

    def put_item(self, gate: threading.Barrier | None = None) -> _Resource:
        assert not self.busy, "two callers at once on one resource"
        self.busy = True
        if gate is not None:
            gate.wait(timeout=5)
        self.busy = False
        return self


def test_callers_at_the_same_time_each_borrow_their_own_resource() -> None:
    built: list[_Resource] = []
    lent = aws.Lent(aws._Lender(lambda: _Resource(built)))
    gate = threading.Barrier(3)
    used: list[_Resource] = []
    threads = [threading.Thread(target=lambda: used.append(lent.put_item(gate))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(used) == 3
    assert len({id(r) for r in used}) == 3


def test_a_resource_is_built_once_and_lent_again_to_later_callers() -> None:
    built: list[_Resource] = []
    lent = aws.Lent(aws._Lender(lambda: _Resource(built)))
    first = lent.put_item()
    second = threading.Thread(target=lent.put_item)
    second.start()
    second.join(timeout=10)
    assert lent.put_item() is first
    assert len(built) == 1


def test_clear_resources_forgets_the_lent_tables() -> None:
    aws.clear_resources()
    before = aws._lender("dynamodb-table:t", lambda: object())
    assert aws._lender("dynamodb-table:t", lambda: object()) is before
    aws.clear_resources()
    assert aws._lender("dynamodb-table:t", lambda: object()) is not before

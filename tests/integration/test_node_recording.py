"""Recording a node on DynamoDB's weather (issue 23 #1, issue 24 #1), on the local stack: a
transaction DynamoDB cancels for a conflict is retried, a node record found already written still
releases the node's children, and text UTF-8 cannot encode never stops a run. Only the run's own
failed condition ends a node quietly.

The cancellations are injected by a seeded test double around the runtime's DynamoDB client
(tests/support/transactions.py): moto runs one call at a time and never cancels for a conflict.
"""

from __future__ import annotations

import base64
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.support import batches
from tests.support.graphs import TERMINAL, add_node, builtin_model, connect, new_version, ok
from tests.support.items import execution_item
from tests.support.transactions import Cancel, cancelling_transactions, refusing_updates, updates_node

from relayflow.local.stack import LocalStack

TENANT = "default"


def fan_out(api: Any) -> tuple[str, list[str]]:
    """root -> (left, middle, right) -> join, every node the builtin echo."""
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api)
    ids = [add_node(api, version_id, name, echo, "{{input}}") for name in ("root", "left", "middle", "right")]
    join = add_node(api, version_id, "join", echo, "{{input}}")
    root, *middle = ids
    connect(api, version_id, *[(root, n) for n in middle], *[(n, join) for n in middle])
    return workflow_id, [*ids, join]


def start(api: Any, workflow_id: str, text: str) -> str:
    return str(ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": text}))["id"])


def wait(api: Any, workflow_id: str, execution_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        execution = ok(api("GET", f"/workflows/{workflow_id}/executions/{execution_id}"), 200)
        if execution["status"] in TERMINAL or time.monotonic() > deadline:
            return dict(execution)
        time.sleep(0.05)


def test_a_node_found_already_recorded_still_releases_its_children(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a fan-out graph whose root's recording goes through but is answered "cancelled: the
    # node record's condition failed" (what a repeated task sees when the record is there)
    workflow_id, nodes = fan_out(api)
    root = nodes[0]
    once = iter([Cancel([None, "ConditionalCheckFailed"], apply=True)])

    def decide(items: list[dict[str, Any]]) -> Cancel | None:
        return next(once, None) if updates_node(items, root, "completed") else None

    with cancelling_transactions(monkeypatch, decide) as calls:
        # When it runs
        execution = wait(api, workflow_id, start(api, workflow_id, "one two"))

    # Then the root's children were released all the same, and the run completed
    assert len(calls.cancelled) == 1
    assert execution["status"] == "completed", execution
    assert {n: execution["node_executions"][n]["status"] for n in nodes} == dict.fromkeys(nodes, "completed")


def test_a_failure_found_already_recorded_still_lets_a_continue_node_release_its_children(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a failing node with on_failure "continue" before a second node, whose failure is
    # recorded but answered "the node record's condition failed" (a repeated NodeFailed task)
    workflow_id, version_id = new_version(api, max_retries=0)
    fail = builtin_model(api, "fail")
    failing = add_node(api, version_id, "failing", fail, "{{input}}", on_failure="continue")
    after = add_node(api, version_id, "after", builtin_model(api, "echo"), "after")
    connect(api, version_id, (failing, after))
    once = iter([Cancel([None, "ConditionalCheckFailed"], apply=True)])

    def decide(items: list[dict[str, Any]]) -> Cancel | None:
        return next(once, None) if updates_node(items, failing, "failed") else None

    with cancelling_transactions(monkeypatch, decide) as calls:
        # When it runs
        execution = wait(api, workflow_id, start(api, workflow_id, "x"))

    # Then the second node ran all the same and the run completed
    assert len(calls.cancelled) == 1
    assert execution["status"] == "completed", execution
    records = execution["node_executions"]
    assert (records[failing]["status"], records[after]["status"]) == ("failed", "completed")


def test_contention_past_the_stores_bound_is_retried_by_the_versions_policy(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a node whose first recording meets a conflict on every call the store makes
    workflow_id, version_id = new_version(api, max_retries=2, retry_delay_seconds=1)
    node = add_node(api, version_id, "only", builtin_model(api, "echo"), "{{input}}")
    first_attempt = Cancel([None, "TransactionConflict"])

    def decide(items: list[dict[str, Any]]) -> Cancel | None:
        attempt = items[-1].get("Update", {}).get("ExpressionAttributeValues", {}).get(":att")
        return first_attempt if updates_node(items, node, "completed") and attempt == {"N": "1"} else None

    with cancelling_transactions(monkeypatch, decide) as calls:
        # When it runs
        execution = wait(api, workflow_id, start(api, workflow_id, "x"))

    # Then the store gave up after its bound and the second attempt recorded the node
    assert len(calls.cancelled) == 8
    assert execution["status"] == "completed", execution
    assert execution["node_executions"][node]["attempts"] == 2


def test_an_attempt_error_the_store_cannot_note_still_reaches_the_retry_policy(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a node whose first attempt fails transiently, and the note of that error refused with
    # TransactionConflictException on every call (a transaction holds the record)
    workflow_id, version_id = new_version(api, max_retries=1, retry_delay_seconds=1)
    node = add_node(api, version_id, "flaky", builtin_model(api, "flaky", failures=1), "{{input}}")

    def decide(kwargs: dict[str, Any]) -> str | None:
        return "TransactionConflictException" if "attempt_errors" in kwargs["UpdateExpression"] else None

    with refusing_updates(monkeypatch, decide) as refused:
        # When it runs
        execution = wait(api, workflow_id, start(api, workflow_id, "x"))

    # Then the store tried within its bound, and the error was retried by the version's policy
    assert refused == ["TransactionConflictException"] * 8
    assert execution["status"] == "completed", execution
    assert execution["node_executions"][node]["attempts"] == 2


def test_fan_out_runs_complete_while_a_share_of_transactions_is_cancelled_for_conflicts(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB cancelling 30% of TransactWriteItems calls for a conflict on one of their
    # items (seeded: a failure replays), and a five-node fan-out graph
    workflow_id, nodes = fan_out(api)
    rng = random.Random(23)

    def decide(items: list[dict[str, Any]]) -> Cancel | None:
        if rng.random() >= 0.3:
            return None
        reasons: list[str | None] = [None] * len(items)
        reasons[rng.randrange(len(items))] = "TransactionConflict"
        return Cancel(reasons)

    # When four runs go at once
    with cancelling_transactions(monkeypatch, decide) as calls, ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: start(api, workflow_id, f"run {i} of four"), range(4)))
        executions = list(pool.map(lambda x: wait(api, workflow_id, x), ids))

    # Then conflicts happened, and every run completed with each node recorded once, by its
    # first attempt, and the run's usage the sum of its nodes'
    assert len(calls.cancelled) >= 5
    for execution in executions:
        assert execution["status"] == "completed", execution
        records = execution["node_executions"]
        assert {n: (records[n]["status"], records[n]["attempts"]) for n in nodes} == dict.fromkeys(
            nodes, ("completed", 1)
        )
        tokens = sum(records[n]["usage"]["input_tokens"] for n in nodes)
        assert execution["usage"]["input_tokens"] == tokens > 0


def test_a_lone_surrogate_in_a_node_output_is_repaired_and_the_run_completes(
    api: Any, local_stack: LocalStack
) -> None:
    # Given a JSON node whose model answers a lone surrogate (the escape "\ud800", as an answer cut
    # inside a surrogate pair) and a valid pair split in two escapes, and a child reading it
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api)
    parse = add_node(api, version_id, "parse", echo, "{{input}}", output_format="json")
    child = add_node(api, version_id, "child", echo, "got {{nodes.parse.answer}}")
    connect(api, version_id, (parse, child))
    answer = json.dumps({"answer": "cut \ud800 here, whole \U0001f600"})  # ASCII: \\ud800, \\ud83d\\ude00

    # When it runs
    execution = wait(api, workflow_id, start(api, workflow_id, answer))

    # Then the lone surrogate is stored as U+FFFD, the pair as its one character, and the run completed
    assert execution["status"] == "completed", execution
    repaired = "cut \ufffd here, whole \U0001f600"
    assert execution["node_executions"][parse]["parsed_output"] == {"answer": repaired}
    assert execution["node_executions"][child]["output"] == f"got {repaired}"


def pdf_with_a_lone_surrogate() -> bytes:
    """A one-page PDF drawing "AB" in a font whose ToUnicode map reads B as U+D800 (a lone
    surrogate): what pypdf's text extraction then returns."""
    cmap = (
        b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def "
        b"1 begincodespacerange <00> <FF> endcodespacerange 2 beginbfchar <41> <0041> <42> <D800> "
        b"endbfchar endcmap CMapName currentdict /CMap defineresource pop end end"
    )
    content = b"BT /F1 12 Tf 10 10 Td (AB) Tj ET"
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%b\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        b"<< /Length %d >>\nstream\n%b\nendstream" % (len(cmap), cmap),
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(bodies, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    table = b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    size = len(bodies) + 1
    trailer = b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, len(out))
    return out + b"xref\n0 %d\n0000000000 65535 f \n" % size + table + trailer


def test_a_pdf_whose_text_has_a_lone_surrogate_runs_to_the_end(api: Any, local_stack: LocalStack) -> None:
    # Given a text_extract node and a PDF input whose extracted text holds a lone surrogate
    extract = builtin_model(api, "text_extract")
    workflow_id, version_id = new_version(api)
    node = add_node(api, version_id, "read", extract, "{{input}}")
    file = {"filename": "scan.pdf", "content_base64": base64.b64encode(pdf_with_a_lone_surrogate()).decode()}

    # When it runs
    execution_id = ok(api("POST", f"/workflows/{workflow_id}/executions", {"file": file}))["id"]
    execution = wait(api, workflow_id, execution_id)

    # Then the text is stored with U+FFFD in the surrogate's place and the run completed
    assert execution["status"] == "completed", execution
    assert execution["node_executions"][node]["output"] == "A\ufffd"


def test_a_write_refused_for_another_reason_is_a_recorded_node_error_not_a_quiet_stop(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a node whose recording DynamoDB refuses for a reason other than a failed condition
    workflow_id, nodes = fan_out(api)
    root = nodes[0]

    def decide(items: list[dict[str, Any]]) -> Cancel | None:
        return Cancel([None, "ValidationError"]) if updates_node(items, root, "completed") else None

    with cancelling_transactions(monkeypatch, decide):
        # When it runs
        execution = wait(api, workflow_id, start(api, workflow_id, "one two"))

    # Then the run ends failed, the node's error says why, and nothing is left running
    assert execution["status"] == "failed", execution
    assert "ValidationError" in (execution["node_executions"][root]["error"] or "")
    statuses = {execution["node_executions"][n]["status"] for n in nodes}
    assert "running" not in statuses and "pending" not in statuses
    assert execution_item(TENANT, execution["id"])["status"] == "failed"


def test_a_batch_item_whose_answer_holds_a_lone_surrogate_is_recorded_with_the_others(
    api: Any, local_stack: LocalStack
) -> None:
    # Given a batch of three items through a JSON node, one answering a lone surrogate
    texts = [json.dumps({"answer": a}) for a in ("plain", "cut \ud800", "emoji \U0001f600")]
    items = [{"id": f"i{n}", "text": text} for n, text in enumerate(texts)]
    dataset_id, dataset_version = batches.dataset(api, items)
    workflow_id, _ = batches.workflow(api, [("parse", {"model": "echo"}, {"output_format": "json"})])
    config = {"dataset_id": dataset_id, "dataset_version_id": dataset_version}
    body = {"input_mode": "batch", "batch_config": config}

    # When it runs
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", body))
    execution = wait(api, workflow_id, execution["id"], timeout=60.0)

    # Then every item is recorded completed, the surrogate stored as U+FFFD
    assert execution["status"] == "completed", execution
    assert (execution["progress"]["processed_items"], execution["progress"]["failed_items"]) == (3, 0)
    status, item = api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}/items/i1")
    assert status == 200, item
    assert item["parsed_output"] == {"answer": "cut \ufffd"}

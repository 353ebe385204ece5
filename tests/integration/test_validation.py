"""Validation of workflow versions through the API: edges refused at creation, every problem of a
version reported at once without saving anything, and runs of invalid versions refused."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from relayflow.local.stack import LocalStack

# One stack for the module: each test makes its own workflows and versions.
pytestmark = pytest.mark.shared_stack


def ok(response: tuple[int, Any], status: int = 201) -> Any:
    assert response[0] == status, response
    return response[1]


def echo_model(api: Any) -> str:
    return str(
        ok(api("POST", "/models", {"name": "echo", "provider": "builtin", "config": {"model": "echo"}}))["id"]
    )


def new_version(api: Any) -> tuple[str, str]:
    workflow = ok(api("POST", "/workflows", {"name": "validated"}))
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {}))
    return workflow["id"], version["id"]


def add_node(api: Any, version_id: str, name: str, model_id: str, template: str = "{{input}}") -> str:
    body = {"name": name, "entity_id": model_id, "config": {"input_template": template}}
    return str(ok(api("POST", f"/versions/{version_id}/nodes", body))["id"])


def edge(api: Any, version_id: str, begin: str, end: str) -> tuple[int, Any]:
    return api("POST", f"/versions/{version_id}/edges", {"begin_node_id": begin, "end_node_id": end})


def validate(api: Any, workflow_id: str, version_id: str, mode: str = "single") -> dict[str, Any]:
    path = f"/workflows/{workflow_id}/versions/{version_id}/validate"
    return dict(ok(api("POST", path, query={"input_mode": mode}), 200))


def snapshot(api: Any, workflow_id: str, version_id: str) -> Any:
    """Everything validation could have written: the version, its nodes and edges, the runs."""
    return (
        ok(api("GET", f"/workflows/{workflow_id}/versions/{version_id}"), 200),
        ok(api("GET", f"/versions/{version_id}/nodes"), 200),
        ok(api("GET", f"/versions/{version_id}/edges"), 200),
        ok(api("GET", f"/workflows/{workflow_id}/executions"), 200)["items"],
    )


# --------------------------------------------------------------------------- edges, at creation


def test_a_self_loop_is_refused(api: Any) -> None:
    model = echo_model(api)
    _, version_id = new_version(api)
    a = add_node(api, version_id, "a", model)
    # When a node is connected to itself
    status, body = edge(api, version_id, a, a)
    # Then 409 self_loop (the edge conflicts with the graph) naming the node, and no edge is stored
    assert status == 409
    assert body["code"] == "self_loop"
    assert body["details"][0]["node_id"] == a
    assert ok(api("GET", f"/versions/{version_id}/edges"), 200)["items"] == []


def test_a_dangling_end_is_refused(api: Any) -> None:
    model = echo_model(api)
    _, version_id = new_version(api)
    a = add_node(api, version_id, "a", model)
    ghost = str(uuid.uuid4())
    # When an edge names a node that is not in the version
    status, body = edge(api, version_id, a, ghost)
    # Then 409 dangling_edge naming the unknown id
    assert status == 409
    assert body["code"] == "dangling_edge"
    assert body["details"][0]["node_id"] == ghost


def test_an_edge_closing_a_cycle_is_refused(api: Any) -> None:
    model = echo_model(api)
    _, version_id = new_version(api)
    a, b, c = (add_node(api, version_id, name, model) for name in "abc")
    ok(edge(api, version_id, a, b))
    ok(edge(api, version_id, b, c))
    # When c → a would close the loop a → b → c → a
    status, body = edge(api, version_id, c, a)
    # Then 409 cycle, and the two earlier edges are all that is stored
    assert status == 409
    assert body["code"] == "cycle"
    assert "(a → b → c → a)" in body["message"]
    assert sorted(body["details"][0]["node_ids"]) == sorted([a, b, c])
    assert len(ok(api("GET", f"/versions/{version_id}/edges"), 200)["items"]) == 2


def test_the_same_edge_twice_is_a_conflict(api: Any) -> None:
    model = echo_model(api)
    _, version_id = new_version(api)
    a, b = add_node(api, version_id, "a", model), add_node(api, version_id, "b", model)
    ok(edge(api, version_id, a, b))
    status, body = edge(api, version_id, a, b)
    assert (status, body["code"]) == (409, "duplicate_edge")


# --------------------------------------------------------------------------- validate_workflow_version


def test_a_valid_version_has_no_problems(api: Any) -> None:
    model = echo_model(api)
    workflow_id, version_id = new_version(api)
    a = add_node(api, version_id, "a", model)
    b = add_node(api, version_id, "b", model, "{{nodes.a}} / {{input}}")
    ok(edge(api, version_id, a, b))
    assert validate(api, workflow_id, version_id) == {"valid": True, "problems": [], "warnings": []}


def test_every_problem_is_reported_at_once_and_nothing_is_saved(api: Any) -> None:
    # Given a version with: a node whose model was deleted, a template naming a node that is not
    # upstream, a template naming a node that does not exist, 'item' outside batch mode, and a
    # node no edge touches while the others are connected
    model, doomed = echo_model(api), echo_model(api)
    workflow_id, version_id = new_version(api)
    first = add_node(api, version_id, "first", model, "{{nodes.second}}")
    second = add_node(api, version_id, "second", model, "{{nodes.ghost}} {{item.text}}")
    lonely = add_node(api, version_id, "lonely", doomed)
    ok(edge(api, version_id, first, second))
    ok(api("DELETE", f"/models/{doomed}"), 200)
    before = snapshot(api, workflow_id, version_id)

    # When it is validated
    result = validate(api, workflow_id, version_id)

    # Then every problem comes back in one answer, each with its code and node ids
    assert result["valid"] is False
    found = {(p["code"], p["node_id"]) for p in result["problems"]}
    assert found == {
        ("unreachable_node", lonely),
        ("unknown_model", lonely),
        ("unknown_template_variable", first),
        ("unknown_template_variable", second),
    }
    assert len(result["problems"]) == 5  # nodes.second, nodes.ghost, item.text, the model, the lonely node
    messages = " | ".join(p["message"] for p in result["problems"])
    assert "node 'second' is not upstream of 'first'" in messages
    assert "no node of this version is named 'ghost'" in messages
    assert "'item' exists only in batch runs" in messages
    assert "'lonely'" in messages  # graph problems name nodes by name, not id
    assert all(p["node_ids"] for p in result["problems"])
    # And validating saved nothing
    assert snapshot(api, workflow_id, version_id) == before

    # And in batch mode, 'item' is no longer a problem
    batch = validate(api, workflow_id, version_id, mode="batch")
    assert not any("item.text" in p["message"] for p in batch["problems"])
    assert len(batch["problems"]) == 4

    # When the version is run anyway
    status, body = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"})

    # Then the run is refused with the same list (409: the version cannot run), and no execution exists
    assert status == 409
    assert body["code"] == "invalid_workflow_version"
    assert body["details"] == result["problems"]
    assert ok(api("GET", f"/workflows/{workflow_id}/executions"), 200)["items"] == []


def test_a_template_syntax_error_is_a_problem_of_its_node(api: Any, local_stack: LocalStack) -> None:
    # Given a node whose stored template does not parse (the API refuses such templates, so it is
    # written directly to the table, as an older release might have left it)
    model = echo_model(api)
    workflow_id, version_id = new_version(api)
    node = add_node(api, version_id, "broken", model)
    table = local_stack.client("dynamodb")
    item = find_child(local_stack, version_id, f"N#{node}")
    item["config"]["M"]["input_template"] = {"S": "{{#input}} never closed"}
    table.put_item(TableName=os.environ["RELAYFLOW_TABLE"], Item=item)

    # When validated
    problems = validate(api, workflow_id, version_id)["problems"]

    # Then the problem names the node and the line
    assert [(p["code"], p["node_id"]) for p in problems] == [("invalid_template", node)]
    assert "line 1" in problems[0]["message"]


def find_child(local_stack: LocalStack, version_id: str, sk: str) -> dict[str, Any]:
    """The raw item of a version's node or edge (its key carries the tenant, which tests do not know)."""
    table = local_stack.client("dynamodb")
    found = table.scan(
        TableName=os.environ["RELAYFLOW_TABLE"],
        FilterExpression="sk = :sk AND begins_with(pk, :t) AND contains(pk, :v)",
        ExpressionAttributeValues={":sk": {"S": sk}, ":t": {"S": "T#"}, ":v": {"S": f"#V#{version_id}"}},
    )["Items"]
    assert len(found) == 1, found
    return dict(found[0])


def test_a_stored_cycle_is_reported_with_all_its_nodes(api: Any, local_stack: LocalStack) -> None:
    # Given a → b → c stored through the API, and c → a written directly to the table (the API
    # refuses it; a version copied from an older release could still hold one)
    model = echo_model(api)
    workflow_id, version_id = new_version(api)
    a, b, c = (add_node(api, version_id, name, model) for name in "abc")
    ok(edge(api, version_id, a, b))
    created = ok(edge(api, version_id, b, c))
    item = find_child(local_stack, version_id, f"E#{created['id']}")
    back = str(uuid.uuid4())
    item.update(sk={"S": f"E#{back}"}, id={"S": back}, begin_node_id={"S": c}, end_node_id={"S": a})
    local_stack.client("dynamodb").put_item(TableName=os.environ["RELAYFLOW_TABLE"], Item=item)

    # When validated, and when run
    problems = validate(api, workflow_id, version_id)["problems"]
    status, body = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"})

    # Then one cycle problem names every node of the loop, by name in the message
    assert [p["code"] for p in problems] == ["cycle"]
    assert problems[0]["node_id"] == a
    assert sorted(problems[0]["node_ids"]) == sorted([a, b, c])
    assert "(a → b → c → a)" in problems[0]["message"]
    # And the run is refused with that same problem
    assert (status, body["code"], body["details"]) == (409, "invalid_workflow_version", problems)

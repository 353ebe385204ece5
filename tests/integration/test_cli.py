"""The `relayflow` command against the local stack's HTTP server: what it prints and its exit codes
(0 completed, 1 failed, 2 usage error, 3 cancelled, 4 API error, 5 API unreachable)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from relayflow.cli import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
)
from relayflow.client import Client
from relayflow.local.stack import LocalStack

# One stack for the module: each test makes its own workflows (and keys).
pytestmark = pytest.mark.shared_stack


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Outcome]


@pytest.fixture
def client(local_stack: LocalStack, served: str) -> Client:
    return Client(base_url=served, api_key=local_stack.api_key)


@pytest.fixture
def cli(local_stack: LocalStack, served: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """cli("run", ...) runs `relayflow --url <served> --api-key <key> run ...` in this process."""
    assert local_stack.api_key
    # Tables as wide as the CLI's own default for output that is not a terminal (a test runner may
    # set COLUMNS to its own width, e.g. pytest-xdist's workers: ids would be cut)
    monkeypatch.setenv("COLUMNS", "160")

    def run(*args: str, auth: bool = True) -> Outcome:
        out, err = io.StringIO(), io.StringIO()
        prefix = ["--url", served, "--api-key", local_stack.api_key] if auth else []
        code = main([*prefix, *args], stdout=out, stderr=err)
        assert "Traceback" not in err.getvalue()
        return Outcome(code, out.getvalue(), err.getvalue())

    return run


def make_workflow(client: Client, *models: tuple[str, dict[str, Any]], retries: int = 0) -> str:
    """A workflow of builtin model nodes in a chain: (node name, model config)."""
    workflow = client.create_workflow(name="cli test")
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"max_retries": retries, "retry_delay_seconds": 1}
    )
    for name, config in models:
        model = client.create_model(name=name, provider="builtin", config=config)
        client.create_workflow_node(version_id=version.id, name=name, entity_id=model.id)
    return workflow.id


@pytest.fixture
def shout(client: Client) -> str:
    return make_workflow(client, ("Echo", {"model": "echo"}), ("Shout", {"model": "uppercase"}))


def wait_status(client: Client, workflow_id: str, execution_id: str, statuses: set[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = client.get_workflow_execution(workflow_id, execution_id).status
        if status in statuses:
            return status
        time.sleep(0.05)
    raise AssertionError(f"execution never reached {statuses}")


def test_run_watch_shows_each_node_and_the_result_and_exits_0(cli: Cli, client: Client) -> None:
    # Given a workflow with a node that fails once and is retried
    workflow_id = make_workflow(
        client,
        ("Echo", {"model": "echo"}),
        ("Flaky", {"model": "flaky", "failures": 1}),
        ("Shout", {"model": "uppercase"}),
        retries=2,
    )

    # When a text is run with --watch
    outcome = cli("run", workflow_id, "--input", "hello cli", "--watch", "--poll", "0.1")

    # Then every node is shown completed, the retry is visible, the result printed, exit 0
    assert outcome.code == EXIT_OK, outcome
    lines = outcome.out.splitlines()
    for name in ("Echo", "Flaky", "Shout"):
        line = next(line for line in lines if line.startswith(name))
        assert "completed" in line
    assert "↻ 2 attempts" in next(line for line in lines if line.startswith("Flaky"))
    assert "execution #1 completed" in outcome.out
    assert lines[-1] == "HELLO CLI"


def test_run_wait_json_prints_the_finished_execution(cli: Cli, shout: str) -> None:
    outcome = cli("run", shout, "--input", "quiet please", "--wait", "--poll", "0.1", "--json")

    assert outcome.code == EXIT_OK
    execution = outcome.json()
    assert execution["status"] == "completed"
    assert execution["results"]["output"] == "QUIET PLEASE"
    assert [n["status"] for n in execution["node_executions"].values()] == ["completed", "completed"]


def test_run_without_waiting_prints_the_id_and_exits_0_at_once(cli: Cli, client: Client, shout: str) -> None:
    outcome = cli("run", shout, "--input", "later")

    assert outcome.code == EXIT_OK
    execution_id = outcome.out.split()[3]
    assert client.get_workflow_execution(shout, execution_id).single_input == "later"
    assert f"relayflow status {shout} {execution_id}" in outcome.err


def test_a_failed_run_exits_1_with_the_error_on_stderr(cli: Cli, client: Client) -> None:
    # Given a workflow whose second node always fails
    workflow_id = make_workflow(client, ("Echo", {"model": "echo"}), ("Broken", {"model": "fail"}))

    # When it is run and watched
    outcome = cli("run", workflow_id, "--input", "doomed", "--watch", "--poll", "0.1")

    # Then the failed node is shown, the error goes to stderr, exit code 1
    assert outcome.code == EXIT_FAILED
    assert "failed" in next(line for line in outcome.out.splitlines() if line.startswith("Broken"))
    assert "execution #1 failed" in outcome.out
    assert "error: node 'Broken' failed" in outcome.err

    # And `status` of that run exits 1 too and shows the node's error
    execution_id = client.get_workflow_executions(workflow_id)[0].id
    status = cli("status", workflow_id, execution_id)
    assert status.code == EXIT_FAILED
    assert "builtin fail model always fails" in status.out


def test_a_failed_run_shows_how_far_it_got_in_the_api_status_and_list(cli: Cli, client: Client) -> None:
    # Given a run of three nodes whose second fails and stops it
    workflow_id = make_workflow(
        client, ("Echo", {"model": "echo"}), ("Broken", {"model": "fail"}), ("Shout", {"model": "uppercase"})
    )
    outcome = cli("run", workflow_id, "--input", "halfway", "--wait", "--poll", "0.1", "--json")
    assert outcome.code == EXIT_FAILED

    # Then the API counts its nodes by how they ended, in the execution and on list pages alike
    execution = client.get_workflow_execution(workflow_id, outcome.json()["id"])
    listed = client.get_workflow_executions(workflow_id)[0]
    for x in (execution, listed):
        p = x.progress
        assert (p.completed_nodes, p.failed_nodes, p.skipped_nodes, p.cancelled_nodes) == (1, 1, 1, 0)
        assert x.completed_with_failures is False
    # And `status` and `list` say the same: one node of three completed, not a full bar
    expected = "1/3 nodes completed, 1 failed, 1 skipped"
    assert expected in cli("status", workflow_id, execution.id).out
    assert expected in cli("list", workflow_id).out


def test_a_completed_run_with_a_failed_continue_node_says_so(cli: Cli, client: Client) -> None:
    # Given a workflow whose middle node fails with on_failure: continue
    workflow_id = make_workflow(
        client, ("Echo", {"model": "echo"}), ("Broken", {"model": "fail"}), ("Shout", {"model": "uppercase"})
    )
    version_id = client.get_workflow(workflow_id).active_version_id or ""
    broken = next(n for n in client.get_workflow_nodes(version_id) if n.name == "Broken")
    client.update_workflow_node(version_id, broken.id, config={"on_failure": "continue"})

    # When it runs to its end
    outcome = cli("run", workflow_id, "--input", "onwards", "--wait", "--poll", "0.1")

    # Then it completed, and the API, the outcome line, `status` and `list` say it had a failure
    assert outcome.code == EXIT_OK, outcome
    execution = client.get_workflow_executions(workflow_id)[0]
    assert execution.status == "completed" and execution.completed_with_failures is True
    assert (execution.progress.completed_nodes, execution.progress.failed_nodes) == (2, 1)
    assert "completed with failures" in outcome.out and "2/3 nodes completed, 1 failed" in outcome.out
    status = cli("status", workflow_id, execution.id).out
    assert "completed with failures" in status
    listed = cli("list", workflow_id).out
    assert "completed with failures" in listed and "2/3 nodes completed, 1 failed" in listed


def test_status_and_list_times_carry_the_date_and_the_time_zone(cli: Cli, shout: str) -> None:
    execution_id = cli("run", shout, "--input", "when", "--wait", "--poll", "0.1", "--json").json()["id"]

    # Then `status` shows each time in this machine's zone with its date and the zone's name, and
    # `list` the creation time so
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+-][A-Za-z0-9+-]*")
    status = cli("status", shout, execution_id).out
    for label in ("created", "started", "finished"):
        assert stamp.search(next(line for line in status.splitlines() if line.startswith(label))), status
    assert stamp.search(next(line for line in cli("list", shout).out.splitlines() if execution_id in line))


def test_status_watch_follows_a_running_execution_to_its_end(cli: Cli, client: Client) -> None:
    # Given a run that is still going
    workflow_id = make_workflow(
        client, ("Nap", {"model": "sleep", "seconds": 0.5}), ("Shout", {"model": "uppercase"})
    )
    execution_id = cli("run", workflow_id, "--input", "follow me", "--json").json()["id"]

    # When `status --watch` follows it
    outcome = cli("status", workflow_id, execution_id, "--watch", "--poll", "0.1")

    # Then it draws the nodes until the end, prints the result and exits 0
    assert outcome.code == EXIT_OK
    assert "completed" in next(line for line in outcome.out.splitlines() if line.startswith("Nap"))
    assert outcome.out.splitlines()[-1] == "FOLLOW ME"


def test_cancel_then_status_exits_3(cli: Cli, client: Client) -> None:
    # Given a run of a slow node
    workflow_id = make_workflow(client, ("Nap", {"model": "sleep", "seconds": 3}))
    started = cli("run", workflow_id, "--input", "zzz", "--json")
    execution_id = started.json()["id"]
    wait_status(client, workflow_id, execution_id, {"running"})

    # When it is cancelled
    outcome = cli("cancel", workflow_id, execution_id)

    # Then the command says so and `status` exits with the cancelled code
    assert outcome.code == EXIT_OK
    assert "cancelled" in outcome.out
    status = cli("status", workflow_id, execution_id)
    assert status.code == EXIT_CANCELLED
    assert "cancelled by request" in status.out

    # And cancelling it again is fine, but cancelling a completed run is an API error (409)
    assert cli("cancel", workflow_id, execution_id).code == EXIT_OK


def test_cancelling_a_finished_run_is_an_api_error_with_a_readable_message(cli: Cli, shout: str) -> None:
    done = cli("run", shout, "--input", "fast", "--wait", "--poll", "0.1", "--json").json()
    assert done["status"] == "completed", done

    outcome = cli("cancel", shout, done["id"])

    assert outcome.code == EXIT_API_ERROR
    assert "already finished (completed)" in outcome.err
    assert "HTTP 409, execution_finished" in outcome.err


def test_list_shows_a_table_filters_by_status_and_pages(cli: Cli, client: Client) -> None:
    # Given two completed runs and one failed run of a workflow
    workflow_id = make_workflow(client, ("Echo", {"model": "echo"}))
    ids = [
        cli("run", workflow_id, "--input", f"run {i}", "--wait", "--poll", "0.1", "--json").json()["id"]
        for i in range(2)
    ]
    broken = make_workflow(client, ("Broken", {"model": "fail"}))
    failed_id = cli("run", broken, "--input", "x", "--wait", "--poll", "0.1", "--json").json()["id"]

    # When the history is listed
    outcome = cli("list", workflow_id)

    # Then a table shows each run, newest first
    assert outcome.code == EXIT_OK
    rows = [line for line in outcome.out.splitlines() if any(i in line for i in ids)]
    assert [ids[1] in rows[0], ids[0] in rows[1]] == [True, True]
    assert all("completed" in row and "1/1 nodes" in row for row in rows)

    # And --status filters, here to nothing for the good workflow and to one run for the broken one
    assert cli("list", workflow_id, "--status", "failed", "--json").json()["items"] == []
    failed = cli("list", broken, "--status", "failed", "--json").json()
    assert [x["id"] for x in failed["items"]] == [failed_id]

    # And --limit pages: the first page says how to get the next, --all follows every page
    first = cli("list", workflow_id, "--limit", "1")
    assert ids[1] in first.out and ids[0] not in first.out
    assert "--next-token" in first.err
    token = first.err.split("--next-token")[1].split()[0]
    second = cli("list", workflow_id, "--limit", "1", "--next-token", token, "--json").json()
    assert [x["id"] for x in second["items"]] == [ids[0]]
    every = cli("list", workflow_id, "--limit", "1", "--all", "--json").json()
    assert [x["id"] for x in every["items"]] == [ids[1], ids[0]]
    assert every["next_token"] is None


def test_a_batch_run_watch_shows_the_items_bar_and_results_page_through_every_item(
    cli: Cli, client: Client
) -> None:
    # Given a dataset of 12 items, every fourth of which is not JSON and fails the parsing node
    dataset = client.create_dataset(name="cli batch")
    version = client.create_dataset_version(dataset_id=dataset.id)
    items = [{"id": f"i{n:02d}", "text": "oops" if n % 4 == 1 else f'{{"n": {n}}}'} for n in range(12)]
    client.upload_dataset_items(dataset_id=dataset.id, version_id=version.id, items=items)
    workflow_id = make_workflow(client, ("Parse", {"model": "echo"}))
    node = client.get_workflow_nodes(client.get_workflow(workflow_id).active_version_id or "")[0]
    client.update_workflow_node(node.version_id, node.id, config={"output_format": "json"})

    # When it runs over the dataset with --watch
    outcome = cli(
        "run", workflow_id, "--dataset", dataset.id, "--dataset-version", version.id,
        "--parallelism", "4", "--watch", "--poll", "0.1",
    )  # fmt: skip

    # Then the items bar ends at 12/12 with 3 failed, and the run completed (item failures are counted)
    assert outcome.code == EXIT_OK, outcome
    bar = next(line for line in outcome.out.splitlines() if line.startswith("items"))
    assert "12/12" in bar and "3 failed" in bar and "items/s" in bar
    # (processed = completed + failed, said as such, and the run completed with failures)
    assert "execution #1 completed with failures" in outcome.out
    assert "(12/12 items processed: 9 completed, 3 failed)" in outcome.out
    assert "processed: 9 completed, 3 failed" in bar
    execution_id = client.get_workflow_executions(workflow_id)[0].id

    # And `results` shows a page as a table, and every item exactly once as JSONL across pages
    table = cli("results", workflow_id, execution_id, "--limit", "5")
    rows = [line for line in table.out.splitlines() if line.startswith("│ i")]
    assert [row.split()[1] for row in rows] == ["i00", "i01", "i02", "i03", "i04"]
    assert "failed" in rows[1] and "declared JSON output" in rows[1]
    assert "--next-token" in table.err
    lines = cli("results", workflow_id, execution_id, "--jsonl", "--limit", "5").out.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["source_item_id"] for r in results] == [item["id"] for item in items]
    assert [r["source_item_id"] for r in results if r["status"] == "failed"] == ["i01", "i05", "i09"]
    assert json.loads(results[0]["output"]) == results[0]["parsed_output"] == {"n": 0}


def test_run_dataset_estimate_prints_the_estimate_and_starts_nothing_on_the_latest_version(
    cli: Cli, client: Client
) -> None:
    # Given a dataset with two versions, the latest of 6 items of which the filter keeps 4
    dataset = client.create_dataset(name="cli estimate")
    old = client.create_dataset_version(dataset_id=dataset.id)
    client.upload_dataset_items(dataset_id=dataset.id, version_id=old.id, items=[{"id": "o", "text": "old"}])
    latest = client.create_dataset_version(dataset_id=dataset.id)
    items = [{"id": f"i{n}", "text": "four words each time", "n": n} for n in range(6)]
    client.upload_dataset_items(dataset_id=dataset.id, version_id=latest.id, items=items)
    workflow_id = make_workflow(client, ("Echo", {"model": "echo"}), ("Shout", {"model": "uppercase"}))

    # When `run --dataset --estimate` is given no --dataset-version
    outcome = cli("run", workflow_id, "--dataset", dataset.id, "--filter", "n < `4`", "--estimate")

    # Then it estimates the latest version (and says so): 4 items, 8 calls, 16 + 16 tokens, nothing started
    assert outcome.code == EXIT_OK, outcome
    assert f"dataset version {latest.id}" in outcome.err and "the latest" in outcome.err
    lines = outcome.out.splitlines()
    assert "estimate (nothing started)" in lines[0]
    assert "4 kept by the filter" in next(line for line in lines if line.startswith("items"))
    assert next(line for line in lines if line.startswith("model calls")).split()[-1] == "8"
    assert "32 in, 32 out" in next(line for line in lines if line.startswith("tokens"))
    assert "$0" in next(line for line in lines if line.startswith("model cost"))
    assert client.get_workflow_executions(workflow_id) == []
    as_json = cli("run", workflow_id, "--dataset", dataset.id, "--estimate", "--json").json()
    assert (as_json["items"], as_json["dataset_version_id"], as_json["model_calls"]) == (6, latest.id, 12)

    # And a run without --dataset-version goes over the latest version too
    run = cli("run", workflow_id, "--dataset", dataset.id, "--wait", "--poll", "0.1", "--json")
    assert run.code == EXIT_OK and run.json()["batch_config"]["dataset_version_id"] == latest.id


def test_workflows_by_name_and_executions_by_number_wherever_an_id_is_taken(cli: Cli, client: Client) -> None:
    # Given a workflow with a name of its own, run twice
    name = f"named {uuid.uuid4().hex[:8]}"
    workflow_id = make_workflow(client, ("Shout", {"model": "uppercase"}))
    client.update_workflow(workflow_id, name=name)
    first = cli("run", name, "--input", "first", "--wait", "--poll", "0.1", "--json")
    second = cli("run", name, "--input", "second", "--wait", "--poll", "0.1", "--json")
    assert first.code == second.code == EXIT_OK and first.json()["workflow_id"] == workflow_id

    # Then `status` and `results` take the name and the number (3 or '#3') the CLI prints
    assert "execution  #1 " + first.json()["id"] in cli("status", name, "1").out
    assert "#2" in cli("status", name, "#2").out.splitlines()[0]
    assert cli("results", name, "#1").out.strip() == "FIRST"
    assert cli("results", workflow_id, "2").out.strip() == "SECOND"


def test_an_id_that_names_nothing_says_what_exists(cli: Cli, client: Client, shout: str) -> None:
    # A number beyond the workflow's executions names the ones there are
    cli("run", shout, "--input", "one", "--wait", "--poll", "0.1")
    outcome = cli("status", shout, "#7")
    assert outcome.code == EXIT_API_ERROR
    assert f"workflow {shout} has no execution #7; its executions are #1 to #1" in outcome.err

    # An execution id that names nothing says how to list the workflow's executions
    outcome = cli("status", shout, str(uuid.uuid4()))
    assert outcome.code == EXIT_API_ERROR and "`relayflow list WORKFLOW`" in outcome.err

    # A workflow name no workflow has names the workflows there are
    outcome = cli("list", "No Such Workflow")
    assert outcome.code == EXIT_API_ERROR
    assert "no workflow has the id or the name 'No Such Workflow'; the workflows: " in outcome.err
    assert "'cli test' (" in outcome.err


def test_graph_draws_a_versions_dag_by_stage_with_what_each_node_waits_for(cli: Cli, client: Client) -> None:
    # Given a diamond Split -> (Left, Right) -> Join, Right continuing on failure
    workflow_id = make_workflow(
        client,
        ("Split", {"model": "echo"}),
        ("Left", {"model": "uppercase"}),
        ("Right", {"model": "word_count"}),
        ("Join", {"model": "echo"}),
    )
    version = client.get_workflow_version(
        workflow_id, client.get_workflow(workflow_id).active_version_id or ""
    )
    client.update_workflow_version(workflow_id, version.id, name="diamond")
    nodes = {n.name: n for n in client.get_workflow_nodes(version.id)}
    for begin, end in (("Split", "Left"), ("Split", "Right"), ("Left", "Join"), ("Right", "Join")):
        client.create_workflow_edge(version.id, nodes[begin].id, nodes[end].id)
    client.update_workflow_node(version.id, nodes["Right"].id, config={"on_failure": "continue"})

    # When its graph is drawn (the version named by its name)
    outcome = cli("graph", workflow_id, "--version", "diamond")

    # Then each stage lists its nodes, their models and the nodes they wait for
    assert outcome.code == EXIT_OK, outcome
    lines = outcome.out.splitlines()
    assert "version diamond (active)" in lines[0] and "4 nodes, 4 edges" in lines[0]
    row = {name: next(line for line in lines if f"[{name}]" in line) for name in nodes}
    assert row["Split"].split()[0] == "1" and "(start)" in row["Split"] and "builtin Split" in row["Split"]
    assert row["Left"].split()[0] == "2" and "← Split" in row["Left"]
    assert "← Split" in row["Right"] and "continues on failure" in row["Right"]
    assert row["Join"].split()[0] == "3" and "← Left, Right" in row["Join"]
    stages = cli("graph", workflow_id, "--json").json()["stages"]
    assert [[next(n for n in nodes if nodes[n].id == i) for i in stage] for stage in stages] == [
        ["Split"],
        ["Left", "Right"],
        ["Join"],
    ]


def test_retry_failed_runs_a_batchs_failed_items_and_results_json_prints_its_items(
    cli: Cli, client: Client
) -> None:
    # Given a finished batch of 6 items of which 2 failed (not JSON for a JSON node)
    dataset = client.create_dataset(name="cli retry")
    version = client.create_dataset_version(dataset_id=dataset.id)
    items = [{"id": f"i{n}", "text": "oops" if n in (1, 4) else f'{{"n": {n}}}'} for n in range(6)]
    client.upload_dataset_items(dataset_id=dataset.id, version_id=version.id, items=items)
    workflow_id = make_workflow(client, ("Parse", {"model": "echo"}))
    node = client.get_workflow_nodes(client.get_workflow(workflow_id).active_version_id or "")[0]
    client.update_workflow_node(node.version_id, node.id, config={"output_format": "json"})
    assert cli("run", workflow_id, "--dataset", dataset.id, "--wait", "--poll", "0.1").code == EXIT_OK

    # When `results --json` reads it, then `retry-failed` runs its failed items
    results = cli("results", workflow_id, "1", "--json")
    retried = cli("retry-failed", workflow_id, "#1", "--wait", "--poll", "0.1", "--json")

    # Then the results are JSON with every item, and the retry ran the 2 failed ones
    assert results.code == EXIT_OK
    page = results.json()
    assert [item["source_item_id"] for item in page["items"]] == [item["id"] for item in items]
    assert (page["progress"]["completed_items"], page["progress"]["failed_items"]) == (4, 2)
    assert retried.code == EXIT_OK, retried
    assert retried.json()["retry_of"] == page["execution_id"]
    assert retried.json()["progress"]["total_items"] == 2


def test_results_of_a_single_run_as_text_and_jsonl(cli: Cli, shout: str) -> None:
    execution_id = cli("run", shout, "--input", "result me", "--wait", "--poll", "0.1", "--json").json()["id"]

    text = cli("results", shout, execution_id)
    assert (text.code, text.out) == (EXIT_OK, "RESULT ME\n")

    lines = cli("results", shout, execution_id, "--jsonl").out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"execution_id": execution_id, "status": "completed", "output": "RESULT ME"}
    ]


def test_run_a_file_then_download_its_input(cli: Cli, shout: str, tmp_path: Path) -> None:
    # Given a run started from a file
    source = tmp_path / "notes.txt"
    source.write_bytes(b"milk, eggs\n")
    outcome = cli("run", shout, "--file", str(source), "--wait", "--poll", "0.1", "--json")
    assert outcome.code == EXIT_OK
    execution_id = outcome.json()["id"]

    # When its input is downloaded into a folder
    target = tmp_path / "out"
    target.mkdir()
    saved = cli("download-input", shout, execution_id, "-o", str(target))

    # Then the same bytes are there under the original name
    assert saved.code == EXIT_OK
    assert (target / "notes.txt").read_bytes() == b"milk, eggs\n"

    # And a second download does not overwrite it without --force
    again = cli("download-input", shout, execution_id, "-o", str(target))
    assert again.code == EXIT_USAGE
    assert "--force" in again.err
    assert cli("download-input", shout, execution_id, "-o", str(target), "--force").code == EXIT_OK

    # And a run without a file has no input to download (an API error)
    text_run = cli("run", shout, "--input", "no file", "--wait", "--poll", "0.1", "--json").json()["id"]
    missing = cli("download-input", shout, text_run, "-o", str(tmp_path / "x"))
    assert missing.code == EXIT_API_ERROR
    assert "not started with a file input" in missing.err


def test_rerun_starts_a_new_execution_with_the_same_input(cli: Cli, client: Client, shout: str) -> None:
    first = cli("run", shout, "--input", "again", "--wait", "--poll", "0.1", "--json").json()

    outcome = cli("rerun", shout, first["id"], "--wait", "--poll", "0.1", "--json")

    assert outcome.code == EXIT_OK
    second = outcome.json()
    assert second["id"] != first["id"]
    assert (second["rerun_of"], second["number"], second["results"]["output"]) == (first["id"], 2, "AGAIN")


def test_delete_removes_the_execution_from_the_history(cli: Cli, shout: str) -> None:
    execution_id = cli("run", shout, "--input", "bye", "--wait", "--poll", "0.1", "--json").json()["id"]

    outcome = cli("delete", shout, execution_id)

    assert outcome.code == EXIT_OK
    assert cli("list", shout, "--json").json()["items"] == []
    assert cli("status", shout, execution_id).code == EXIT_API_ERROR


def test_workflows_lists_ids_to_use_with_the_other_commands(cli: Cli, shout: str) -> None:
    outcome = cli("workflows")
    assert outcome.code == EXIT_OK
    assert shout in outcome.out and "cli test" in outcome.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "WF"], "exactly one input"),
        (["run", "WF", "--input", "a", "--file", "b"], "exactly one input"),
        (["run", "WF", "--input", "a", "--parallelism", "3"], "need --dataset"),
        (["run", "WF", "--input", "a", "--estimate"], "--estimate is for batches"),
        (["run", "WF", "--file", "/no/such/file.pdf"], "no such file"),
        (["list", "WF", "--status", "done"], "invalid choice"),
        (["list", "WF", "--limit", "0"], "must be at least 1"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2_with_a_message(cli: Cli, args: list[str], message: str) -> None:
    outcome = cli(*args)
    assert outcome.code == EXIT_USAGE
    assert message in outcome.err


def test_api_errors_exit_4_with_the_message_and_no_traceback(cli: Cli, shout: str) -> None:
    # An unknown workflow
    outcome = cli("run", "no-such-workflow", "--input", "x")
    assert outcome.code == EXIT_API_ERROR
    assert "no workflow has the id or the name 'no-such-workflow'" in outcome.err
    assert "HTTP 404" in outcome.err

    # A key the API does not know
    outcome = cli("list", shout, "--api-key", "rf_0000000000000000_" + "x" * 43)
    assert outcome.code == EXIT_API_ERROR
    assert "HTTP 403" in outcome.err and "the API key was refused" in outcome.err


def test_an_unreachable_api_exits_5(cli: Cli) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = cli("--url", f"http://127.0.0.1:{port}", "status", "wf", "x", auth=False)
    assert outcome.code == EXIT_UNREACHABLE
    assert f"cannot reach the relayflow API at http://127.0.0.1:{port}" in outcome.err


def test_openapi_prints_the_document_of_the_http_api(cli: Cli, tmp_path: Path) -> None:
    document = cli("openapi", auth=False).json()
    assert "/workflows/{workflow_id}/executions" in document["paths"]

    target = tmp_path / "openapi.json"
    assert cli("openapi", "-o", str(target), auth=False).code == EXIT_OK
    assert json.loads(target.read_text()) == document


def test_create_api_key_writes_a_working_key_into_the_deployments_table(
    local_stack: LocalStack, cli: Cli, client: Client, served: str
) -> None:
    # Given a deployment's table (here the local stack's, named by RELAYFLOW_TABLE as on AWS)
    # When a key with only the read scope is created
    outcome = cli("create-api-key", "--scopes", "read", "--name", "ci reader", auth=False)

    # Then the key alone is on stdout, and it reads but cannot write
    assert outcome.code == EXIT_OK
    key = outcome.out.strip()
    assert re.fullmatch(r"rf_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    assert "shown only once" in outcome.err
    reader = cli("workflows", "--api-key", key, "--json")
    assert reader.code == EXIT_OK
    denied = cli("run", str(uuid.uuid4()), "--input", "x", "--api-key", key)
    assert denied.code == EXIT_API_ERROR and "HTTP 403" in denied.err


def test_the_console_script_runs_and_reports_exit_codes(served: str) -> None:
    # The installed entry point (pyproject's [project.scripts]), as a user runs it
    script = Path(sys.executable).with_name("relayflow")
    version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, "relayflow 0.1.0")
    refused = subprocess.run(
        [script, "--url", served, "status", "wf", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "RELAYFLOW_API_KEY": ""},
    )
    assert refused.returncode == EXIT_API_ERROR
    assert "HTTP 401" in refused.stderr and "RELAYFLOW_API_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_serve_prints_the_dashboard_url_with_a_key_serves_both_and_stops_on_sigterm() -> None:
    # Given `relayflow serve` on a free port, as a user starts it
    script = Path(sys.executable).with_name("relayflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAYFLOW_", "AWS_"))}
    server = subprocess.Popen(
        [script, "serve", "--port", "0", "--ephemeral"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        # When it is ready
        assert server.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            line.startswith("  export RELAYFLOW_API_KEY") for line in lines
        ):
            line = server.stdout.readline()
            assert line, f"serve ended early: {lines}"
            lines.append(line.rstrip("\n"))

        # Then it printed the dashboard's URL with the key in its fragment, and the variables to export
        dashboard = next(line for line in lines if line.startswith("dashboard: ")).removeprefix("dashboard: ")
        page, key = dashboard.split("#key=")
        base_url = page.removesuffix("/dashboard")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        assert f"  export RELAYFLOW_URL={base_url}" in lines

        # And the page is public while the API takes that key
        html = httpx.get(page, timeout=10)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert httpx.get(f"{base_url}/workflows", timeout=10).status_code == 401
        with Client(base_url=base_url, api_key=key) as client:
            assert list(client.get_workflows()) == []

        # And SIGTERM stops it cleanly, saying what it waits for; the requests logged no line
        # (the key printed at start stays in view: a polling dashboard would have buried it)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        rest = server.stdout.read().splitlines()
        assert rest[-1] == "stopped.", rest
        assert rest[-2].startswith("stopping: waiting for the requests in flight"), rest
        assert "the in-memory stack to stop" in rest[-2]
        assert not any("GET /workflows" in line for line in rest), rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

"""Every snippet of the reference documentation (Execution & Monitoring) runs unchanged against
relayflow's Python client, but for its import (``from seeme import Client``) and its placeholder
workflow id (``"workflow-id"``): against a single text run, a file run, a batch run, a failed run
and a cancelled run.

The snippets are copied here verbatim. The harness only provides what they read (``client``,
``workflow``, ``version``, ``model``, ``specific_version``, ``source_dataset``, ``source_version``,
``execution``), waits for runs between them, and shortens the Complete Example's 5-second polling
sleep (``time.sleep`` is the harness's; the snippet's code is not touched).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relayflow import Client
from relayflow.client import Execution
from relayflow.local.stack import LocalStack
from relayflow.samples import SAMPLE_PDF_LINES, minimal_pdf

# ---- the reference documentation's snippets, verbatim --------------------------------------------------
SPECIFIC_VERSION = """
execution = client.execute_workflow(
    workflow_id=workflow.id,
    version_id=specific_version.id,  # Not the active version
    input_mode="single",
    single_input="Test input"
)
"""

BATCH_EXECUTION = """
# Execute batch from dataset
execution = client.execute_workflow(
    workflow_id=workflow.id,
    input_mode="batch",
    batch_config={
        "dataset_id": source_dataset.id,
        "dataset_version_id": source_version.id,
        "input_field": "text",        # Column to use as input
        "filter_query": "",            # Optional filter
        "parallelism": 5               # Concurrent items
    }
)

print(f"Processing {execution.progress.total_items} items")
"""

PROGRESS_OBJECT = """
class ExecutionProgress:
    total_nodes: int           # Total nodes in workflow
    current_node_idx: int      # Current node index
    current_node_id: str       # Current node ID

    # Batch mode only
    total_items: int           # Items to process
    processed_items: int       # Completed items
    failed_items: int          # Failed items
"""

SUCCESSFUL_EXECUTION = """
if execution.status == "completed":
    # Results contain final workflow output
    results = execution.results

    # For single execution
    print(f"Output: {results}")

    # For batch execution
    for item_result in results.get("items", []):
        print(f"Item {item_result['source_item_id']}: {item_result['output']}")
"""

PER_NODE_RESULTS = """
# Node executions contain per-node details
node_results = execution.node_executions

for node_id, node_result in node_results.items():
    print(f"\\nNode: {node_id}")
    print(f"  Status: {node_result['status']}")
    print(f"  Output: {node_result['output']}")
    print(f"  Prompt sent: {node_result.get('prompt', 'N/A')}")
    print(f"  Duration: {node_result.get('duration_ms', 'N/A')}ms")
"""

FAILED_EXECUTION = """
if execution.status == "failed":
    print(f"Error: {execution.error}")

    # Check which node failed
    if execution.progress:
        print(f"Failed at node: {execution.progress.current_node_id}")

    # Check node-level errors
    for node_id, node_result in execution.node_executions.items():
        if node_result.get("error"):
            print(f"Node {node_id} error: {node_result['error']}")
"""

LIST_EXECUTIONS = """
# Get all executions for a workflow
executions = client.get_workflow_executions(
    workflow_id=workflow.id,
    limit=50,
    status="completed"  # Optional filter
)

for exec in executions:
    print(f"{exec.id}: {exec.status} - {exec.created_at}")
"""

DOWNLOAD_INPUT = """
# Download the input file that was processed
input_file = client.download_execution_input(
    workflow_id=workflow.id,
    execution_id=execution.id,
    output_path="./input_file.pdf"
)
"""

WORKFLOW_TIMEOUT = """
execution = client.execute_workflow(
    workflow_id=workflow.id,
    input_mode="single",
    single_input="...",
    timeout=600  # 10 minutes max
)
"""

NODE_TIMEOUT = """
node = client.create_workflow_node(
    version_id=version.id,
    name="Slow Model",
    entity_type="model",
    entity_id=model.id,
    config={
        "input_template": "{{input}}",
        "timeout": 120  # 2 minutes for this node
    }
)
"""

RETRY_LOGIC = """
# Default: 3 retries with exponential backoff
# Configurable at version level
version = client.update_workflow_version(
    workflow_id=workflow.id,
    version_id=version.id,
    config={
        "max_retries": 5,
        "retry_delay_seconds": 10
    }
)
"""

CONTINUE_ON_FAILURE = """
optional_node = client.create_workflow_node(
    version_id=version.id,
    name="Optional Enhancement",
    entity_type="model",
    entity_id=model.id,
    config={
        "input_template": "{{input}}",
        "on_failure": "continue"  # Don't stop workflow
    }
)
"""

COMPLETE_EXAMPLE = """
from seeme import Client
import time

client = Client()

# Execute workflow
execution = client.execute_workflow(
    workflow_id="workflow-id",
    input_mode="single",
    item="./document.pdf"
)

print(f"Started execution: {execution.id}")

# Monitor until complete
while execution.status in ["pending", "running"]:
    time.sleep(5)
    execution = client.get_workflow_execution(
        workflow_id="workflow-id",
        execution_id=execution.id
    )

    if execution.progress:
        print(f"Processing node {execution.progress.current_node_idx + 1}/{execution.progress.total_nodes}")

# Handle result
if execution.status == "completed":
    print("\\n=== Results ===")
    print(execution.results)

    # Show per-node outputs
    print("\\n=== Node Details ===")
    for node_id, details in execution.node_executions.items():
        print(f"{node_id}: {details.get('output', 'No output')[:100]}...")

elif execution.status == "failed":
    print(f"\\nExecution failed: {execution.error}")

elif execution.status == "cancelled":
    print("\\nExecution was cancelled")
"""

MONITORING = (SUCCESSFUL_EXECUTION, PER_NODE_RESULTS, FAILED_EXECUTION)


# ---- the harness ----------------------------------------------------------------------------------------
def run_snippet(code: str, namespace: dict[str, Any], *, workflow_id: str | None = None) -> dict[str, Any]:
    """Run a snippet as written; only the import and the placeholder workflow id are relayflow's."""
    code = code.replace("from seeme import Client", "from relayflow import Client")
    if workflow_id is not None:
        code = code.replace('"workflow-id"', repr(workflow_id))
    exec(compile(code, "<reference snippet>", "exec"), namespace)
    return namespace


def finished(client: Client, execution: Execution) -> Execution:
    return client.wait_for_execution(execution.workflow_id, execution.id, poll_interval=0.05, timeout=60)


@pytest.fixture
def docs(
    client: Client, local_stack: LocalStack, served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """What the snippets read: a workflow whose last node answers JSON (the Complete Example's crash
    in the issue), a dataset, a model; the client the Complete Example builds from the environment;
    ./document.pdf in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELAYFLOW_URL", served)
    monkeypatch.setenv("RELAYFLOW_API_KEY", local_stack.api_key or "")
    (tmp_path / "document.pdf").write_bytes(minimal_pdf(SAMPLE_PDF_LINES))
    extract = client.create_model(name="extract", provider="builtin", config={"model": "text_extract"})
    mood = client.create_model(name="mood", provider="builtin", config={"model": "sentiment"})
    workflow = client.create_workflow(name="reference docs")
    version = client.create_workflow_version(workflow_id=workflow.id)
    client.create_workflow_node(version_id=version.id, name="Extract", entity_id=extract.id)
    client.create_workflow_node(
        version_id=version.id, name="Mood", entity_id=mood.id, config={"output_format": "json"}
    )
    specific_version = client.create_workflow_version(
        workflow_id=workflow.id, copy_from_version_id=version.id
    )
    source_dataset = client.create_dataset(name="reviews")
    source_version = client.create_dataset_version(dataset_id=source_dataset.id)
    items = [
        {"id": f"r{n}", "text": text} for n, text in enumerate(["great support", "slow and broken", "ok"])
    ]
    client.upload_dataset_items(dataset_id=source_dataset.id, version_id=source_version.id, items=items)
    return {
        "client": client,
        "workflow": workflow,
        "version": version,
        "model": mood,
        "specific_version": specific_version,
        "source_dataset": source_dataset,
        "source_version": source_version,
    }


@pytest.fixture
def quick_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[], None]]]:
    """time.sleep, shortened (the Complete Example polls every 5 s); callbacks run on each sleep."""
    real_sleep = time.sleep
    on_sleep: list[Callable[[], None]] = []

    def sleep(seconds: float) -> None:
        for callback in on_sleep:
            callback()
        real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(time, "sleep", sleep)
    yield on_sleep


def test_single_text_run(docs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    client = docs["client"]
    # Given a text run of a specific version, and one with a workflow timeout
    namespace = run_snippet(SPECIFIC_VERSION, dict(docs))
    assert namespace["execution"].version_id == docs["specific_version"].id
    namespace = run_snippet(WORKFLOW_TIMEOUT, dict(docs))
    assert namespace["execution"].timeout == 600
    execution = finished(client, namespace["execution"])
    # When the monitoring snippets read it
    for snippet in MONITORING:
        run_snippet(snippet, {**docs, "execution": execution})
    run_snippet(LIST_EXECUTIONS, dict(docs))
    # Then they print the final output and each node's output, the text its model produced
    out = capsys.readouterr().out
    assert execution.status == "completed"
    assert f"Output: {execution.results}" in out
    mood = next(n for n in execution.node_executions.values() if n["name"] == "Mood")
    assert isinstance(mood["output"], str) and f"  Output: {mood['output']}" in out
    assert mood["parsed_output"]["label"] in ("positive", "negative", "neutral")
    assert f"{execution.id}: completed - {execution.created_at}" in out


def test_file_run_and_the_complete_example(
    docs: dict[str, Any], quick_sleep: list[Callable[[], None]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the Complete Example, on the workflow whose last node declares JSON output
    # When it runs (it starts a file run of ./document.pdf and polls it to its end)
    namespace = run_snippet(COMPLETE_EXAMPLE, {}, workflow_id=docs["workflow"].id)
    # Then it completes and prints every node's output, cut to 100 characters (no TypeError)
    execution = namespace["execution"]
    out = capsys.readouterr().out
    assert execution.status == "completed", execution.error
    assert "=== Node Details ===" in out
    for node_id, details in execution.node_executions.items():
        assert f"{node_id}: {details['output'][:100]}..." in out
    # And the input file downloads as it was sent, and the monitoring snippets read the run
    run_snippet(DOWNLOAD_INPUT, {**docs, "execution": execution})
    assert Path("input_file.pdf").read_bytes() == Path("document.pdf").read_bytes()
    for snippet in MONITORING:
        run_snippet(snippet, {**docs, "execution": execution})


def test_batch_run(docs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    client = docs["client"]
    # Given the batch snippet over the dataset
    namespace = run_snippet(BATCH_EXECUTION, dict(docs))
    execution = finished(client, namespace["execution"])
    # When the monitoring snippets read it
    for snippet in MONITORING:
        run_snippet(snippet, {**docs, "execution": execution})
    # Then each item's output is printed, the text its last node produced
    out = capsys.readouterr().out
    assert out.startswith("Processing ") and execution.progress.total_items == 3
    for item in execution.results["items"]:
        assert isinstance(item["output"], str)
        assert f"Item {item['source_item_id']}: {item['output']}" in out
    run_snippet(PROGRESS_OBJECT, {})


def test_failed_run(
    docs: dict[str, Any], quick_sleep: list[Callable[[], None]], capsys: pytest.CaptureFixture[str]
) -> None:
    client = docs["client"]
    # Given a workflow whose node fails, retried per its version's config (the retry snippet), and
    # an optional node added with on_failure "continue"
    fail = client.create_model(name="fail", provider="builtin", config={"model": "fail"})
    workflow = client.create_workflow(name="failing")
    version = client.create_workflow_version(workflow_id=workflow.id)
    context = {**docs, "workflow": workflow, "version": version, "model": fail}
    run_snippet(CONTINUE_ON_FAILURE, context)
    run_snippet(NODE_TIMEOUT, context)
    namespace = run_snippet(RETRY_LOGIC, context)
    assert namespace["version"].config.max_retries == 5
    # When it runs (the Complete Example on it) and the failure snippets read it
    namespace = run_snippet(COMPLETE_EXAMPLE, {}, workflow_id=workflow.id)
    execution = namespace["execution"]
    for snippet in MONITORING:
        run_snippet(snippet, {**context, "execution": execution})
    # Then the run failed at the node that stops it, and the errors are printed
    out = capsys.readouterr().out
    assert execution.status == "failed"
    assert f"Execution failed: {execution.error}" in out and f"Error: {execution.error}" in out
    assert f"Failed at node: {execution.progress.current_node_id}" in out
    for node_id, node in execution.node_executions.items():
        if node["error"]:
            assert f"Node {node_id} error: {node['error']}" in out


def test_cancelled_run(
    docs: dict[str, Any], quick_sleep: list[Callable[[], None]], capsys: pytest.CaptureFixture[str]
) -> None:
    client = docs["client"]
    # Given a slow workflow, and a user who cancels the run while the Complete Example polls it
    slow = client.create_model(name="slow", provider="builtin", config={"model": "sleep", "seconds": 30})
    workflow = client.create_workflow(name="slow")
    version = client.create_workflow_version(workflow_id=workflow.id)
    client.create_workflow_node(version_id=version.id, name="Slow", entity_id=slow.id)

    def cancel_once() -> None:
        runs = client.get_workflow_executions(workflow_id=workflow.id, limit=1)
        if runs and runs[0].status in ("pending", "running"):
            client.cancel_workflow_execution(workflow_id=workflow.id, execution_id=runs[0].id)

    quick_sleep.append(cancel_once)
    # When the Complete Example runs it, and the monitoring snippets read it
    namespace = run_snippet(COMPLETE_EXAMPLE, {}, workflow_id=workflow.id)
    execution = namespace["execution"]
    for snippet in MONITORING:
        run_snippet(snippet, {**docs, "workflow": workflow, "execution": execution})
    # Then it ends cancelled, and says so
    assert execution.status == "cancelled"
    assert "Execution was cancelled" in capsys.readouterr().out

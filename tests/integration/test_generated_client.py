"""A client generated from the served document by a tool nobody here wrote (openapi-python-client)
builds without a warning and drives a real run end to end with typed answers: what someone
integrating relayflow from another language gets from the document alone."""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from relayflow.local.stack import LocalStack

PACKAGE = "relayflow_api_client"


@pytest.fixture
def generated(served: str, tmp_path: Path) -> Any:
    """The generated package, imported from a temporary directory (nothing is installed)."""
    # Given the document as the server serves it, without a key
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{served}/openapi.json").raise_for_status().content)
    # When openapi-python-client generates a package from it (its ruff hooks from this venv)
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [bin_dir / "openapi-python-client", "generate", "--path", document, "--meta", "none",
         "--output-path", tmp_path / PACKAGE],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        timeout=120,
    )  # fmt: skip
    # Then it is generated whole: no schema it could not read, no warning
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output and "Unable" not in output, output
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_runs_a_workflow_end_to_end_with_typed_answers(
    generated: Any, served: str, local_stack: LocalStack
) -> None:
    api, models = _module("api"), _module("models")
    create_model = _module("api.models.create_model")
    create_workflow = _module("api.workflows.create_workflow")
    create_version = _module("api.versions.create_workflow_version")
    create_node = _module("api.nodes.create_workflow_node")
    execute = _module("api.executions.execute_workflow")
    get_execution = _module("api.executions.get_workflow_execution")
    list_executions = _module("api.executions.get_workflow_executions")
    assert api  # the operations are grouped by tag, named by operationId
    client = generated.AuthenticatedClient(
        base_url=served, token=local_stack.api_key, auth_header_name="x-api-key", prefix=""
    )

    # Given a model, a workflow, a version and two nodes, the last one declaring JSON output
    shout = create_model.sync(
        client=client,
        body=models.CreateBuiltinModel(
            name="shout",
            provider="builtin",
            config=models.BuiltinModelConfig(model=models.BuiltinModelConfigModel.UPPERCASE),
        ),
    )
    sentiment = create_model.sync(
        client=client,
        body=models.CreateBuiltinModel(
            name="mood",
            provider="builtin",
            config=models.BuiltinModelConfig(model=models.BuiltinModelConfigModel.SENTIMENT),
        ),
    )
    assert isinstance(shout, models.Model) and shout.provider == "builtin"
    workflow = create_workflow.sync(client=client, body=models.CreateWorkflow(name="generated"))
    assert isinstance(workflow, models.Workflow)
    version = create_version.sync(workflow.id, client=client, body=models.CreateVersion())
    assert isinstance(version, models.WorkflowVersion) and version.config.max_retries == 3
    first = create_node.sync(
        version.id,
        client=client,
        body=models.CreateNode(
            name="Shout",
            entity_id=shout.id,
            config=models.NodeConfigInput(input_template="{{input}}", timeout=120),
        ),
    )
    last = create_node.sync(
        version.id,
        client=client,
        body=models.CreateNode(
            name="Mood",
            entity_id=sentiment.id,
            config=models.NodeConfigInput(output_format=models.NodeConfigInputOutputFormat.JSON),
        ),
    )
    assert isinstance(first, models.WorkflowNode) and isinstance(last, models.WorkflowNode)

    # When it is run and polled until it ends
    started = execute.sync(
        workflow.id,
        client=client,
        body=models.Execute(input_mode=models.ExecuteInputMode.SINGLE, single_input="what a great day"),
    )
    assert isinstance(started, models.Execution), started
    assert started.status == models.ExecutionStatus.PENDING
    deadline = time.monotonic() + 60
    execution = started
    while execution.status in (models.ExecutionStatus.PENDING, models.ExecutionStatus.RUNNING):
        assert time.monotonic() < deadline, execution
        time.sleep(0.1)
        execution = get_execution.sync(workflow.id, started.id, client=client)
        assert isinstance(execution, models.Execution)

    # Then it completed, and every node's record is typed: the text the model produced as output,
    # the JSON node's value as parsed_output
    assert execution.status == models.ExecutionStatus.COMPLETED, execution.error
    assert execution.progress.total_nodes == 2
    nodes = execution.node_executions.additional_properties
    assert set(nodes) == {first.id, last.id}
    shouted, mood = nodes[first.id], nodes[last.id]
    assert isinstance(shouted, models.NodeExecution)
    assert shouted.status == models.NodeExecutionStatus.COMPLETED
    assert (shouted.output, shouted.parsed_output, shouted.prompt) == (
        "WHAT A GREAT DAY",
        None,
        "what a great day",
    )
    assert isinstance(mood.output, str) and mood.parsed_output["label"] == "positive"
    assert isinstance(execution.results, models.ExecutionResults)
    assert execution.results.output == mood.output and execution.results.parsed_output == mood.parsed_output

    # And the history lists it, typed too
    page = list_executions.sync(workflow.id, client=client, limit=10)
    assert isinstance(page, models.ExecutionPage)
    assert [e.id for e in page.items] == [started.id] and page.next_token is None

    # And an error is typed as the document's Error
    missing = get_execution.sync(workflow.id, "nope", client=client)
    assert isinstance(missing, models.Error) and missing.code == "execution_not_found"


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_typescript_command_works_as_written_and_its_client_type_checks(
    served: str, tmp_path: Path
) -> None:
    # Given the README's TypeScript command, as a user copies it, and the served document
    line = next(
        line for line in README.read_text().splitlines() if line.startswith("npx ") and "openapi-ts" in line
    )
    command = shlex.split(line.split("#")[0])
    typescript = next(part for part in command if part.startswith("typescript@"))
    (tmp_path / "relayflow.json").write_bytes(httpx.get(f"{served}/openapi.json").raise_for_status().content)

    # When it runs (npm fetches the pinned packages once, then its cache serves them)
    generated = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    # Then it generates the client, which the pinned TypeScript compiles under --strict
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (tmp_path / "src/relayflow/sdk.gen.ts").is_file()
    checked = subprocess.run(
        ["npx", "--yes", "-p", typescript, "tsc", "--noEmit", "--strict", "--target", "es2022",
         "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom,dom.iterable",
         "src/relayflow/index.ts"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "estimateWorkflowExecution" in (tmp_path / "src/relayflow/sdk.gen.ts").read_text()

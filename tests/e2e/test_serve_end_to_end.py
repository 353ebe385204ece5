"""End to end as a user runs it: `relayflow serve` in its own process, the Python client over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayflow import Client
from relayflow.samples import SAMPLE_PDF_LINES, minimal_pdf

KEY = "rf_" + "0123456789abcdef" + "_" + "k" * 43


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAYFLOW_", "AWS_"))}
    env["RELAYFLOW_API_KEY"] = KEY
    process = subprocess.Popen(
        [Path(sys.executable).with_name("relayflow"), "serve", "--port", str(port), "--ephemeral"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "relayflow serve exited early"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "relayflow serve never listened"
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_three_node_workflow_runs_to_completed_through_serve_and_the_client(server: str, tmp_path: Path):
    with Client(base_url=server, api_key=KEY) as client:
        # Given the reference documentation's calls, unchanged
        extract = client.create_model(name="extract", provider="builtin", config={"model": "text_extract"})
        upper = client.create_model(name="upper", provider="builtin", config={"model": "uppercase"})
        count = client.create_model(name="count", provider="builtin", config={"model": "word_count"})
        workflow = client.create_workflow(name="e2e")
        version = client.create_workflow_version(workflow_id=workflow.id)
        client.create_workflow_node(
            version_id=version.id,
            name="Extract",
            entity_type="model",
            entity_id=extract.id,
            config={"input_template": "{{input}}", "timeout": 120},
        )
        client.create_workflow_node(
            version_id=version.id, name="Shout", entity_type="model", entity_id=upper.id
        )
        client.create_workflow_node(
            version_id=version.id,
            name="Count",
            entity_type="model",
            entity_id=count.id,
            config={"input_template": "{{nodes.Shout}}"},
        )

        # When a text input and a PDF file input run
        text = client.execute_workflow(
            workflow_id=workflow.id, input_mode="single", single_input="one two three"
        )
        pdf_path = tmp_path / "document.pdf"
        pdf_path.write_bytes(minimal_pdf(SAMPLE_PDF_LINES))
        pdf = client.execute_workflow(workflow_id=workflow.id, input_mode="single", item=str(pdf_path))
        seen_progress: list[int] = []
        done_text = client.wait_for_execution(
            workflow_id=workflow.id,
            execution_id=text.id,
            poll_interval=0.05,
            timeout=60,
            on_update=lambda e: seen_progress.append(e.progress.current_node_idx),
        )
        done_pdf = client.wait_for_execution(workflow_id=workflow.id, execution_id=pdf.id, timeout=60)

        # Then both completed with every node's details recorded
        assert text.status == "pending"
        assert (done_text.status, done_text.results["output"]) == ("completed", "3")
        assert seen_progress == sorted(seen_progress)
        assert done_text.progress.total_nodes == 3
        for node_id, node_result in done_text.node_executions.items():
            assert node_result["status"] == "completed", node_id
            assert node_result.get("duration_ms") is not None
            assert node_result.get("error") is None
        shout = next(n for n in done_text.node_executions.values() if n["name"] == "Shout")
        assert (shout["prompt"], shout["output"]) == ("one two three", "ONE TWO THREE")
        words = sum(len(line.split()) for line in SAMPLE_PDF_LINES)
        assert (done_pdf.status, done_pdf.results["output"]) == ("completed", str(words))

        # And the original file downloads again byte for byte
        copy = client.download_execution_input(
            workflow_id=workflow.id, execution_id=pdf.id, output_path=tmp_path / "copy.pdf"
        )
        assert copy.read_bytes() == pdf_path.read_bytes()
        listed = client.get_workflow_executions(workflow_id=workflow.id, limit=50, status="completed")
        assert {e.id for e in listed} == {text.id, pdf.id}

"""A PDF input over its reading budget fails its node with a clear error (providers/pdf.py), in
seconds, instead of holding a node runner for minutes of CPU."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from tests.integration.test_webhooks import make_workflow, run_to_end
from tests.support.pdfs import costly_pdf


def test_a_pdf_input_over_its_cpu_budget_fails_the_node_saying_why(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a budget of 1 s of CPU, a workflow whose node extracts its input file's text, and a
    # small PDF that takes ~13 s of CPU to read
    monkeypatch.setenv("PDF_CPU_SECONDS", "1")
    workflow_id = make_workflow(api, model="text_extract")
    file = {
        "filename": "costly.pdf",
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(costly_pdf()).decode(),
    }
    # When it runs
    execution = run_to_end(api, workflow_id, {"input_mode": "single", "file": file})
    # Then the run fails, its node's error saying the PDF is over its budget
    assert execution["status"] == "failed", execution
    _, full = api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}")
    (node,) = full["node_executions"].values()
    assert node["status"] == "failed"
    assert "within its budget of 1 s of CPU" in node["error"], node

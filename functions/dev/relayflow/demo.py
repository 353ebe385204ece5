"""`make demo`: real workflows end to end on the embedded local stack, through the HTTP API.

It starts the local stack (moto, built from template.yaml) and `relayflow serve` on a free port on
127.0.0.1, then drives everything with the Python client, as a user would.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from relayflow.client import Client, Execution
from relayflow.samples import SAMPLE_PDF_LINES, SAMPLE_TEXT, minimal_pdf

console = Console(highlight=False)


@contextmanager
def local_api(data_dir: Path | None = None) -> Iterator[Client]:
    """The local stack (in memory, or kept in ``data_dir``) and its HTTP server on 127.0.0.1, and a
    client for it."""
    from relayflow.local.server import start_server
    from relayflow.local.stack import LocalStack

    with LocalStack(data_dir=data_dir) as stack:
        # The handlers log JSON at the template's LOG_LEVEL; the demo shows its own story instead.
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        logging.getLogger("relayflow").setLevel(logging.WARNING)
        server, _thread = start_server(stack, host="127.0.0.1", port=0)
        try:
            url = f"http://127.0.0.1:{server.server_port}"
            with Client(base_url=url, api_key=getattr(stack, "api_key", None)) as client:
                yield client
        finally:
            server.shutdown()
            server.server_close()


def _short(value: Any, width: int = 90) -> str:
    text = value if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def watch(client: Client, workflow_id: str, execution: Execution, poll: float = 0.2) -> Execution:
    """Print each node as it starts, retries and finishes; return the finished execution."""
    seen: dict[str, tuple[str, int]] = {}

    def show(update: Execution) -> None:
        total = update.progress.total_nodes
        for node_id, node in update.node_executions.items():
            state = (node["status"], node.get("attempts") or 0)
            if seen.get(node_id) == state:
                continue
            seen[node_id] = state
            position = list(update.node_executions).index(node_id) + 1
            label = f"  node {position}/{total} {node['name']:<22}"
            if node["status"] == "running":
                retry = f" (attempt {state[1]})" if state[1] > 1 else ""
                console.print(f"{label} [yellow]running[/]{retry}")
            elif node["status"] == "completed":
                console.print(f"{label} [green]completed[/] in {node.get('duration_ms')} ms")
            elif node["status"] in ("failed", "timed_out", "cancelled", "skipped"):
                console.print(f"{label} [red]{node['status']}[/]: {_short(node.get('error') or '', 70)}")

    done = client.wait_for_execution(
        workflow_id, execution.id, poll_interval=poll, timeout=120, on_update=show
    )
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}[done.status]
    console.print(f"  execution #{done.number} [bold {colour}]{done.status}[/]")
    return done


def report(execution: Execution) -> None:
    if execution.status == "completed":
        console.print(f"  [bold]results:[/] {_short((execution.results or {}).get('output') or '', 200)}")
    elif execution.error:
        console.print(f"  [bold red]error:[/] {execution.error}")
    table = Table(show_lines=False, pad_edge=False)
    for column in ("node", "status", "attempts", "ms", "prompt", "output / error"):
        table.add_column(column, overflow="fold")
    for node in execution.node_executions.values():
        outcome = node.get("output") if node["status"] == "completed" else node.get("error")
        table.add_row(
            node["name"],
            node["status"],
            str(node.get("attempts")),
            str(node.get("duration_ms") if node.get("duration_ms") is not None else "-"),
            _short(node.get("prompt") or "-", 50),
            _short(outcome if outcome is not None else "-", 60),
        )
    console.print(table)


def build_document_workflow(client: Client) -> tuple[str, dict[str, str]]:
    models = {
        name: client.create_model(name=f"builtin {name}", provider="builtin", config={"model": name}).id
        for name in ("text_extract", "summarize", "sentiment")
    }
    workflow = client.create_workflow(name="Document insights", description="extract, summarize, judge")
    version = client.create_workflow_version(workflow_id=workflow.id)
    client.create_workflow_node(
        version_id=version.id,
        name="Extract text",
        entity_type="model",
        entity_id=models["text_extract"],
        config={"input_template": "{{input}}"},
    )
    client.create_workflow_node(
        version_id=version.id,
        name="Summarize",
        entity_type="model",
        entity_id=models["summarize"],
        config={"input_template": "{{input}}", "timeout": 60},
    )
    client.create_workflow_node(
        version_id=version.id,
        name="Sentiment",
        entity_type="model",
        entity_id=models["sentiment"],
        config={"input_template": "{{nodes.Summarize}}"},
    )
    return workflow.id, models


def build_resilience_workflow(client: Client) -> str:
    flaky = client.create_model(name="flaky", provider="builtin", config={"model": "flaky", "failures": 2})
    broken = client.create_model(name="always fails", provider="builtin", config={"model": "fail"})
    shout = client.create_model(name="uppercase", provider="builtin", config={"model": "uppercase"})
    workflow = client.create_workflow(name="Resilience", description="retries and continue-on-failure")
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"max_retries": 3, "retry_delay_seconds": 1}
    )
    client.create_workflow_node(version_id=version.id, name="Flaky service", entity_id=flaky.id)
    client.create_workflow_node(
        version_id=version.id,
        name="Optional enhancement",
        entity_id=broken.id,
        config={"input_template": "{{input}}", "on_failure": "continue"},
    )
    client.create_workflow_node(version_id=version.id, name="Shout", entity_id=shout.id)
    return workflow.id


REVIEWS = [
    "Great product, fast delivery",
    "Terrible support, never again",
    "Works as described",
    "Excellent value and lovely design",
    "Broken on arrival, awful",
    "Good enough for the price",
]


def run_batch(client: Client) -> Execution:
    """Sentiment of every English review of a small dataset, with a live item count."""
    sentiment = client.create_model(name="sentiment", provider="builtin", config={"model": "sentiment"})
    workflow = client.create_workflow(name="Review sentiment")
    version = client.create_workflow_version(workflow_id=workflow.id, config={"max_retries": 0})
    client.create_workflow_node(
        version_id=version.id,
        name="Sentiment",
        entity_id=sentiment.id,
        config={"input_template": "{{item.text}}"},
    )
    dataset = client.create_dataset(name="reviews")
    dataset_version = client.create_dataset_version(dataset_id=dataset.id)
    items = [
        {"id": f"review-{i:02d}", "text": REVIEWS[i % len(REVIEWS)], "lang": "en" if i % 4 else "fr"}
        for i in range(24)
    ]
    client.upload_dataset_items(dataset_id=dataset.id, version_id=dataset_version.id, items=items)
    execution = client.execute_workflow(
        workflow_id=workflow.id,
        input_mode="batch",
        batch_config={
            "dataset_id": dataset.id,
            "dataset_version_id": dataset_version.id,
            "input_field": "text",
            "filter_query": "lang == 'en'",
            "parallelism": 4,
        },
    )
    console.print(f"  submitted ({execution.status}): the filter lang == 'en' runs over {len(items)} items")
    last = -1
    counted = False

    def show(update: Execution) -> None:
        nonlocal last, counted
        progress = update.progress
        if progress.total_items is not None and not counted:
            counted = True
            console.print(f"  processing {progress.total_items} of {len(items)} items")
        if progress.processed_items != last and progress.total_items is not None:
            last = progress.processed_items or 0
            failed = progress.failed_items or 0
            console.print(
                f"  items {last}/{progress.total_items} processed: [green]{last - failed} completed[/], "
                f"[red]{failed} failed[/]"
            )

    done = client.wait_for_execution(
        workflow.id, execution.id, poll_interval=0.3, timeout=120, on_update=show
    )
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}[done.status]
    console.print(f"  execution #{done.number} [bold {colour}]{done.status}[/]")
    page = client.get_execution_results(workflow_id=workflow.id, execution_id=execution.id, limit=5)
    table = Table(pad_edge=False)
    for column in ("item", "input", "output"):
        table.add_column(column)
    for row in page:
        table.add_row(row.source_item_id, _short(row.input or "", 40), _short(row.output, 50))
    console.print(table)
    return done


def main(argv: list[str] | None = None, *, data_dir: Path | None = None) -> int:
    started = time.monotonic()
    console.rule("[bold]relayflow demo[/] — embedded local stack (moto + template.yaml), no AWS account")
    outcomes: list[str] = []
    with local_api(data_dir) as client, tempfile.TemporaryDirectory() as tmp:
        console.print(f"API: {client.base_url}")
        workflow_id, _ = build_document_workflow(client)

        console.rule("1. a text input through three nodes")
        execution = client.execute_workflow(
            workflow_id=workflow_id, input_mode="single", single_input=SAMPLE_TEXT
        )
        done = watch(client, workflow_id, execution)
        report(done)
        outcomes.append(done.status)

        console.rule("2. a PDF file input")
        pdf = Path(tmp) / "report.pdf"
        pdf.write_bytes(minimal_pdf(SAMPLE_PDF_LINES))
        execution = client.execute_workflow(workflow_id=workflow_id, input_mode="single", item=str(pdf))
        done = watch(client, workflow_id, execution)
        report(done)
        outcomes.append(done.status)
        copy = client.download_execution_input(workflow_id, done.id, output_path=Path(tmp) / "copy.pdf")
        same = copy.read_bytes() == pdf.read_bytes()
        console.print(f"  input file downloaded again: {copy.stat().st_size} bytes, identical: {same}")

        console.rule("3. a flaky node that is retried, and a failing node set to continue")
        resilience = build_resilience_workflow(client)
        execution = client.execute_workflow(
            workflow_id=resilience, input_mode="single", single_input="it works"
        )
        done = watch(client, resilience, execution)
        report(done)
        outcomes.append(done.status)

        console.rule("4. a batch over a dataset: 24 reviews, a filter, parallelism 4")
        done = run_batch(client)
        outcomes.append(done.status)

    console.rule(f"done in {time.monotonic() - started:.1f} s: " + ", ".join(outcomes))
    return 0 if all(o == "completed" for o in outcomes) else 1

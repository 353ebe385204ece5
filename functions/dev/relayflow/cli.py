"""The ``relayflow`` command: run, watch and inspect workflow executions through the HTTP API.

It talks to the API with :class:`relayflow.Client` (``--url`` / ``RELAYFLOW_URL``, ``--api-key`` /
``RELAYFLOW_API_KEY``), except ``serve`` and ``demo`` (the embedded local stack), ``openapi`` (the
document generated from the handlers) and ``create-api-key`` (writes a bootstrap key straight into
the deployment's table with your AWS credentials).

Exit codes (``relayflow run --wait``/``--watch``, ``rerun`` likewise, and ``status``):

====  =====================================================================================
0     success; a run that completed (or, for ``status``, one still pending or running)
1     the run failed
2     usage error: bad arguments, a file that cannot be read or written
3     the run was cancelled
4     the API refused the request (the message and the API's error code are printed)
5     the API could not be reached
130   interrupted (Ctrl-C) while watching; the run itself goes on
====  =====================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from relayflow import __version__
from relayflow.client import ApiError, ApiUnreachable, Client, Execution
from relayflow_runtime.domain import graph
from relayflow_runtime.schemas.entities import WorkflowVersion
from relayflow_runtime.schemas.responses import ExecutionEstimate

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_API_ERROR = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130

STATUS_EXIT = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "skipped": "dim",
}
NODE_RAN = frozenset({"completed", "failed", "timed_out"})


WORKFLOW_HELP = "the workflow: its id or its name (relayflow workflows lists them)"
EXECUTION_HELP = (
    "the execution: its id or its number in the workflow (3, or '#3' in quotes: # starts a shell comment)"
)


class UsageError(Exception):
    """Bad arguments or a local file problem (exit code 2)."""


# ---- output ------------------------------------------------------------------------------------------
class Ui:
    """Where the command writes: rich for people, plain JSON when ``--json`` asks for it."""

    def __init__(
        self, *, as_json: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        interactive = self.stdout.isatty()
        width = None if interactive else int(os.environ.get("COLUMNS", "160"))
        self.out = Console(file=self.stdout, highlight=False, width=width, soft_wrap=False)
        self.err = Console(file=self.stderr, highlight=False, width=width, soft_wrap=True)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.out.print(*objects, **kwargs)

    def json(self, value: Any) -> None:
        # Plain print: rich would wrap long lines and mark up brackets.
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.stdout, flush=True)

    def jsonl(self, value: Any) -> None:
        print(json.dumps(value, ensure_ascii=False), file=self.stdout, flush=True)

    def note(self, message: str) -> None:
        """A hint for people, on stderr so that stdout stays clean for pipes."""
        self.err.print(message, style="dim")

    def error(self, message: str) -> None:
        self.err.print(Text("error: ", style="bold red") + Text(message))


def status_text(status: str) -> Text:
    return Text(status.replace("_", " "), style=STATUS_STYLE.get(status, ""))


def short(value: Any, width: int = 80) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def final_output(execution: Execution) -> str | None:
    """A finished single run's output: the text its last node produced."""
    return (execution.results or {}).get("output")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def run_seconds(execution: Execution) -> float | None:
    start = parse_time(execution.started_at or execution.created_at)
    end = parse_time(execution.completed_at) or (time.time() if execution.status not in TERMINAL else None)
    return None if start is None or end is None else max(0.0, end - start)


def run_status_text(execution: Execution) -> Text:
    """The run's status, and for a completed run that still had failures (a failed ``continue``
    node, failed items) that it had them."""
    if execution.completed_with_failures:
        return Text("completed with failures", style="yellow")
    return status_text(execution.status)


def local_time(value: str | None) -> str:
    """An API timestamp (UTC, RFC 3339) in this machine's time zone, with the date and the zone."""
    if not value:
        return "-"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def node_counts(execution: Execution) -> dict[str, int] | None:
    """A single run's nodes by how they ended, as the API counts them (``progress``: the domain's
    node_tally), or None (a run recorded before the counts existed)."""
    p = execution.progress
    if p.completed_nodes is None:
        return None
    return {
        "completed": p.completed_nodes,
        "failed": p.failed_nodes or 0,
        "skipped": p.skipped_nodes or 0,
        "cancelled": p.cancelled_nodes or 0,
    }


def progress_text(execution: Execution) -> Text:
    """How far the run got, in the statuses' colours: a batch's processed items as completed +
    failed; a single run's completed nodes of all, then those that failed, were skipped or
    cancelled."""
    p = execution.progress
    if execution.input_mode == "batch":
        failed = p.failed_items or 0
        processed = p.processed_items or 0
        text = Text(f"{processed}/{p.total_items if p.total_items is not None else '?'} items processed")
        if processed:
            text.append(": ")
            text.append(f"{processed - failed} completed", style="green")
            text.append(", ")
            text.append(f"{failed} failed", style="red" if failed else "")
        return text
    counts = node_counts(execution)
    if counts is None:  # recorded before node counts: the index of the node it stopped at
        done = p.total_nodes if execution.status == "completed" else p.current_node_idx
        return Text(f"{done}/{p.total_nodes} nodes")
    text = Text(f"{counts['completed']}/{p.total_nodes} nodes completed")
    for status in ("failed", "skipped", "cancelled"):
        if counts[status]:
            text.append(", ")
            text.append(f"{counts[status]} {status}", style=STATUS_STYLE[status])
    return text


def execution_json(execution: Execution) -> dict[str, Any]:
    return execution.model_dump(mode="json")


# ---- watching ----------------------------------------------------------------------------------------
class StatusBar(BarColumn):
    """A bar coloured by the node's status: green done, red failed, pulsing while it runs."""

    def render(self, task: Task) -> Any:
        status = task.fields.get("status", "pending")
        self.complete_style = self.finished_style = "red" if status in ("failed", "timed_out") else "green"
        if status in ("cancelled", "skipped"):
            self.finished_style = "yellow"
        return super().render(task)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} items/s" if speed else "- items/s", style="progress.data.speed")


class NodeBars:
    """One bar per node of a single run: name, status, duration, attempts."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            StatusBar(bar_width=30),
            TextColumn("{task.fields[status_text]}"),
            TextColumn("{task.fields[duration]}", justify="right"),
            TextColumn("{task.fields[attempts]}", style="yellow"),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.tasks: dict[str, TaskID] = {}

    def update(self, execution: Execution) -> None:
        width = max((len(n.get("name") or "") for n in execution.node_executions.values()), default=10)
        for node_id, node in execution.node_executions.items():
            status = node.get("status", "pending")
            attempts = int(node.get("attempts") or 0)
            started, ended = parse_time(node.get("started_at")), parse_time(node.get("completed_at"))
            if node.get("duration_ms") is not None and status == "completed":
                duration = seconds(node["duration_ms"] / 1000)
            elif started is not None:
                duration = seconds((ended or time.time()) - started)
            else:
                duration = ""
            fields = {
                "status": status,
                "status_text": f"[{STATUS_STYLE.get(status, '')}]{status.replace('_', ' '):<9}[/]",
                "duration": duration,
                "attempts": f"↻ {attempts} attempts" if attempts > 1 else "",
            }
            name = escape((node.get("name") or node_id).ljust(width))
            if node_id not in self.tasks:
                self.tasks[node_id] = self.progress.add_task(name, total=1, completed=0, **fields)
            # A node that never ran (skipped, cancelled) keeps an empty bar: the run did not get there.
            self.progress.update(
                self.tasks[node_id],
                total=None if status == "running" else 1,
                completed=1 if status in NODE_RAN else 0,
                **fields,
            )


class ItemsBar:
    """The items of a batch: processed / total, of which completed (green) and failed (red), rate
    and ETA."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]items"),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TextColumn(
                "processed: [green]{task.fields[succeeded]} completed[/], [red]{task.fields[failed]} failed"
            ),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("items", total=None, succeeded=0, failed=0)

    def update(self, execution: Execution) -> None:
        p = execution.progress
        processed, failed = p.processed_items or 0, p.failed_items or 0
        self.progress.update(
            self.task, total=p.total_items, completed=processed, succeeded=processed - failed, failed=failed
        )


def watch(client: Client, ui: Ui, execution: Execution, *, live: bool, poll: float) -> Execution:
    """Poll until the run ends; with ``live`` draw node bars (single) or the items bar (batch)."""
    workflow_id, execution_id = execution.workflow_id, execution.id
    if not live:
        return client.wait_for_execution(workflow_id, execution_id, poll_interval=poll)
    display: NodeBars | ItemsBar = ItemsBar(ui.out) if execution.input_mode == "batch" else NodeBars(ui.out)
    ui.print(f"[bold]execution #{execution.number}[/] [dim]{execution.id}[/]")
    with display.progress:
        return client.wait_for_execution(
            workflow_id, execution_id, poll_interval=poll, on_update=display.update
        )


def outcome(ui: Ui, execution: Execution) -> int:
    """Print how the run ended; its exit code."""
    if ui.as_json:
        ui.json(execution_json(execution))
        return STATUS_EXIT.get(execution.status, EXIT_OK)
    line = Text.assemble(
        (f"execution #{execution.number} ", "bold"),
        run_status_text(execution),
        f" in {seconds(run_seconds(execution))}  (",
        progress_text(execution),
        ")",
    )
    ui.print(line)
    if execution.status == "completed" and execution.input_mode == "single":
        ui.print(Text(final_output(execution) or ""))
    elif execution.error:
        ui.err.print(Text("error: ", style="bold red") + Text(execution.error))
    return STATUS_EXIT.get(execution.status, EXIT_OK)


def started(ui: Ui, execution: Execution, verb: str = "started") -> None:
    if ui.as_json:
        ui.json(execution_json(execution))
        return
    ui.print(f"{verb} execution #{execution.number} [bold]{execution.id}[/] ({execution.status})")
    ui.note(f"watch it: relayflow status {execution.workflow_id} {execution.id}")


# ---- commands ----------------------------------------------------------------------------------------
def check_run(args: argparse.Namespace) -> None:
    """What `run` gets wrong before the API is asked anything (a usage error, exit 2)."""
    sources = [args.input is not None, args.file is not None, args.dataset is not None]
    if sum(sources) != 1:
        raise UsageError("give exactly one input: --input TEXT, --file PATH or --dataset ID.")
    batch_only = ("dataset_version", "input_field", "filter", "parallelism", "max_failed_percent")
    if args.dataset is None and any(getattr(args, name) is not None for name in batch_only):
        raise UsageError("--dataset-version, --input-field, --filter and --parallelism need --dataset.")
    if args.estimate and args.dataset is None:
        raise UsageError("--estimate is for batches: give --dataset (and its filter and parallelism).")
    if args.file is not None and not Path(args.file).is_file():
        raise UsageError(f"--file {args.file}: no such file.")


def cmd_run(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    version_id = version_of(client, args.workflow_id, args.version).id if args.version else None
    kwargs: dict[str, Any] = {"version_id": version_id, "timeout": args.timeout}
    if args.dataset is not None:
        batch: dict[str, Any] = {
            "dataset_id": args.dataset,
            "dataset_version_id": args.dataset_version or latest_dataset_version(client, ui, args.dataset),
            "input_field": args.input_field or "text",
            "filter_query": args.filter or "",
        }
        if args.parallelism is not None:
            batch["parallelism"] = args.parallelism
        if args.max_failed_percent is not None:
            batch["max_failed_percent"] = args.max_failed_percent
        if args.estimate:
            return show_estimate(
                ui, client.estimate_workflow_execution(args.workflow_id, batch_config=batch, **kwargs)
            )
        execution = client.execute_workflow(
            args.workflow_id, input_mode="batch", batch_config=batch, **kwargs
        )
    elif args.file is not None:
        execution = client.execute_workflow(args.workflow_id, input_mode="single", item=args.file, **kwargs)
    else:
        text = sys.stdin.read() if args.input == "-" else args.input
        execution = client.execute_workflow(
            args.workflow_id, input_mode="single", single_input=text, **kwargs
        )
    return follow(args, client, ui, execution)


def latest_dataset_version(client: Client, ui: Ui, dataset_id: str) -> str:
    """The dataset's newest version whose items are ready: what --dataset runs over by default."""
    versions = [v for v in client.get_dataset_versions(dataset_id) if v.status == "ready"]
    if not versions:
        raise UsageError(f"dataset {dataset_id} has no version with items yet; upload items first.")
    latest = max(versions, key=lambda v: v.created_at)
    ui.note(f"dataset version {latest.id} ({latest.item_count} items), the latest; --dataset-version chooses")
    return latest.id


def dollars(value: float | None) -> str:
    if value is None:
        return "unknown"
    if not value:
        return "$0"
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.6f}"


def show_estimate(ui: Ui, estimate: ExecutionEstimate) -> int:
    """A batch's estimate: what it would do, nothing started."""
    if ui.as_json:
        ui.json(estimate.model_dump(mode="json"))
        return EXIT_OK
    items = f"{estimate.items:,}" + (
        ""
        if estimate.items_exact
        else f" (extrapolated from a sample: the first {estimate.items_read:,} items, "
        f"read until its {estimate.read_stopped_by} bound)"
    )
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="dim")
    summary.add_column()
    summary.add_row("items", f"{items} kept by the filter, parallelism {estimate.parallelism}")
    summary.add_row("model calls", f"{estimate.model_calls:,}")
    summary.add_row("tokens", f"{estimate.input_tokens:,} in, {estimate.output_tokens:,} out")
    unpriced = [n.name for n in estimate.nodes if n.model_calls and n.model_cost is None]
    summary.add_row(
        "model cost",
        dollars(estimate.model_cost) + (f" (no price for {', '.join(unpriced)})" if unpriced else ""),
    )
    summary.add_row("AWS cost", dollars(estimate.aws_cost) + " (list prices, us-east-1)")
    summary.add_row("duration", "about " + seconds(estimate.duration_seconds))
    summary.add_row(
        "sample",
        f"{estimate.sample_size} items rendered"
        + (f", {estimate.sample_failures} of them would fail" if estimate.sample_failures else ""),
    )
    ui.print(Text("estimate (nothing started)", style="bold"))
    ui.print(summary)
    table = Table(title="nodes", title_justify="left")
    for column in ("node", "provider", "calls", "tokens in", "tokens out", "cost", "output from"):
        table.add_column(
            column, justify="right" if column in ("calls", "tokens in", "tokens out") else "left"
        )
    for n in estimate.nodes:
        table.add_row(
            n.name,
            n.provider,
            f"{n.model_calls:,}",
            f"{n.input_tokens:,}",
            f"{n.output_tokens:,}",
            dollars(n.model_cost),
            "computed" if n.output_tokens_from == "dry_run" else "as long as its prompt",
        )
    ui.print(table)
    return EXIT_OK


def follow(
    args: argparse.Namespace, client: Client, ui: Ui, execution: Execution, verb: str = "started"
) -> int:
    if not (args.watch or args.wait):
        started(ui, execution, verb)
        return EXIT_OK
    live = bool(args.watch) and not ui.as_json
    try:
        done = watch(client, ui, execution, live=live, poll=args.poll)
    except KeyboardInterrupt:
        ui.note(f"stopped watching; the run goes on: relayflow status {execution.workflow_id} {execution.id}")
        return EXIT_INTERRUPTED
    return outcome(ui, done)


def cmd_status(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    execution = client.get_workflow_execution(args.workflow_id, args.execution_id)
    if (args.watch or args.wait) and execution.status not in TERMINAL:
        return follow(args, client, ui, execution)
    code = STATUS_EXIT.get(execution.status, EXIT_OK)
    if ui.as_json:
        ui.json(execution_json(execution))
        return code
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="dim")
    summary.add_column()
    summary.add_row("execution", Text.assemble((f"#{execution.number} ", "bold"), execution.id))
    summary.add_row("status", run_status_text(execution))
    if execution.status == "pending" and execution.waiting_reason:
        summary.add_row("waiting", Text(execution.waiting_reason, style="yellow"))
    summary.add_row("mode", execution.input_mode)
    summary.add_row("progress", progress_text(execution))
    for label, value in (
        ("created", execution.created_at),
        ("started", execution.started_at),
        ("finished", execution.completed_at),
    ):
        summary.add_row(label, local_time(value))
    summary.add_row("duration", seconds(run_seconds(execution)))
    if execution.batch_config:
        batch = execution.batch_config
        summary.add_row("dataset", f"{batch.dataset_id} version {batch.dataset_version_id}")
        summary.add_row("items", f"input field '{batch.input_field}', parallelism {batch.parallelism}")
        if batch.filter_query:
            summary.add_row("filter", batch.filter_query)
    if execution.rerun_of:
        summary.add_row("re-run of", execution.rerun_of)
    if execution.input_file:
        summary.add_row("input file", f"{execution.input_file.filename} ({execution.input_file.size} bytes)")
    elif execution.single_input is not None:
        summary.add_row("input", short(execution.single_input, 100))
    if execution.error:
        summary.add_row("error", Text(execution.error, style="red"))
    if execution.status == "completed" and execution.input_mode == "single":
        summary.add_row("result", short(final_output(execution), 200))
    ui.print(summary)
    if execution.node_executions:
        ui.print(node_table(execution))
    return code


def node_table(execution: Execution) -> Table:
    table = Table(title="nodes", title_justify="left")
    for column in ("#", "node", "status", "attempts", "duration", "output / error"):
        table.add_column(column, overflow="fold", no_wrap=column in ("#", "status"))
    for position, node in enumerate(execution.node_executions.values(), start=1):
        failed = node.get("status") in ("failed", "timed_out")
        outcome_text = node.get("error") if failed or node.get("output") is None else node.get("output")
        duration = node.get("duration_ms")
        table.add_row(
            str(position),
            node.get("name") or node.get("node_id", ""),
            status_text(node.get("status", "pending")),
            str(node.get("attempts") or 0),
            seconds(duration / 1000) if duration is not None else "-",
            Text(short(outcome_text, 100), style="red" if failed else ""),
        )
    return table


def collect(
    fetch: Callable[[str | None], Any], token: str | None, follow_all: bool
) -> tuple[list[Any], str | None]:
    """The items of one page (or of every page with follow_all) and the token of the next page."""
    items: list[Any] = []
    while True:
        page = fetch(token)
        items.extend(page)
        token = page.next_token
        if not (follow_all and token):
            return items, token


def cmd_list(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    def fetch(token: str | None) -> Any:
        return client.get_workflow_executions(
            args.workflow_id,
            limit=args.limit,
            status=args.status,
            next_token=token,
            created_after=args.since,
            created_before=args.until,
        )

    items, next_token = collect(fetch, args.next_token, args.all)
    if ui.as_json:
        ui.json({"items": [execution_json(x) for x in items], "next_token": next_token})
        return EXIT_OK
    table = Table()
    for column in ("#", "id", "status", "mode", "progress", "created", "duration"):
        table.add_column(column, no_wrap=True, justify="right" if column == "#" else "left")
    for x in items:
        table.add_row(
            str(x.number),
            x.id,
            run_status_text(x),
            x.input_mode,
            progress_text(x),
            local_time(x.created_at),
            seconds(run_seconds(x)),
        )
    ui.print(table)
    if not items:
        ui.note("no executions" + (f" with status {args.status}" if args.status else "") + ".")
    if next_token:
        ui.note(f"more: relayflow list {args.workflow_id} --limit {args.limit} --next-token {next_token}")
    return EXIT_OK


def cmd_workflows(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    def fetch(token: str | None) -> Any:
        return client.get_workflows(limit=args.limit, next_token=token)

    workflows, next_token = collect(fetch, None, args.all)
    if ui.as_json:
        ui.json({"items": [w.model_dump(mode="json") for w in workflows], "next_token": next_token})
        return EXIT_OK
    table = Table()
    for column in ("id", "name", "active version", "created"):
        table.add_column(column, no_wrap=column != "name")
    for w in workflows:
        table.add_row(w.id, w.name, w.active_version_id or "-", local_time(w.created_at))
    ui.print(table)
    if next_token:
        ui.note("more workflows: add --all")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    execution = client.cancel_workflow_execution(args.workflow_id, args.execution_id)
    if ui.as_json:
        ui.json(execution_json(execution))
    else:
        ui.print(Text.assemble(f"execution #{execution.number} ", status_text(execution.status)))
    return EXIT_OK


def cmd_deliveries(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    def fetch(token: str | None) -> Any:
        return client.get_webhook_deliveries(
            args.workflow_id, args.execution_id, limit=args.limit, next_token=token
        )

    attempts, next_token = collect(fetch, None, args.all)
    if ui.as_json:
        ui.json({"items": [a.model_dump(mode="json") for a in attempts], "next_token": next_token})
        return EXIT_OK
    table = Table()
    for column in ("attempted", "execution", "round", "attempt", "outcome", "answer / error", "next"):
        table.add_column(column, overflow="fold", no_wrap=column in ("round", "attempt", "outcome"))
    for a in attempts:
        style = "green" if a.outcome == "delivered" else "red"
        table.add_row(
            a.attempted_at,
            a.execution_id,
            str(a.round),
            str(a.attempt) + (" (last)" if a.final else ""),
            Text(a.outcome, style=style),
            short(a.error if a.error else a.response_status, 80),
            a.next_attempt_at or "-",
        )
    ui.print(table)
    if not attempts:
        ui.note("no webhook deliveries yet.")
    if next_token:
        ui.note("more deliveries: add --all")
    return EXIT_OK


def cmd_resend_webhook(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    queued = client.resend_webhook(args.workflow_id, args.execution_id)
    if ui.as_json:
        ui.json(queued.model_dump(mode="json"))
    else:
        ui.print(
            f"{queued.event_type} queued for {queued.url} (delivery {queued.delivery_id}, round "
            f"{queued.round}); follow it with: relayflow deliveries {args.workflow_id} {args.execution_id}"
        )
    return EXIT_OK


def cmd_rerun(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    execution = client.rerun_workflow_execution(args.workflow_id, args.execution_id)
    return follow(args, client, ui, execution, verb="re-ran as")


def cmd_retry_failed(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    execution = client.retry_failed_items(
        args.workflow_id,
        args.execution_id,
        version_id=version_of(client, args.workflow_id, args.version).id if args.version else None,
        parallelism=args.parallelism,
    )
    return follow(args, client, ui, execution, verb="retrying the failed items as")


def version_of(client: Client, workflow_id: str, version: str | None) -> WorkflowVersion:
    """The workflow's version by id or name; its active version without one."""
    if version is None:
        active = client.get_workflow(workflow_id).active_version_id
        if not active:
            raise UsageError("the workflow has no active version; name one with --version.")
        return client.get_workflow_version(workflow_id, active)
    versions = list(client.get_workflow_versions(workflow_id))
    found = [v for v in versions if version in (v.id, v.name)]
    if len(found) != 1:
        names = ", ".join(f"{v.name or '(unnamed)'} ({v.id})" for v in versions)
        why = "several versions are named" if found else "no version has the id or the name"
        raise ApiError(404, "version_not_found", f"{why} {version!r}; the versions: {names or 'none'}.")
    return found[0]


def cmd_graph(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    """The version's DAG, one stage a row group: each node with its model and the nodes it waits for."""
    version = version_of(client, args.workflow_id, args.version)
    nodes = sorted(client.get_workflow_nodes(version.id), key=lambda n: n.position)
    edges = list(client.get_workflow_edges(version.id))
    ids = [n.id for n in nodes]
    pairs = [(e.begin_node_id, e.end_node_id) for e in edges]
    try:
        stages, waits_for = graph.levels(ids, pairs), graph.parents(ids, pairs)
    except graph.GraphError as exc:
        raise ApiError(409, "invalid_graph", f"the version's graph cannot run: {exc}") from None
    models = {m.id: m for m in collect(lambda t: client.get_models(limit=200, next_token=t), None, True)[0]}
    by_id = {n.id: n for n in nodes}
    if ui.as_json:
        ui.json(
            {
                "version": version.model_dump(mode="json"),
                "stages": stages,
                "nodes": [n.model_dump(mode="json") | {"parents": waits_for[n.id]} for n in nodes],
                "edges": [e.model_dump(mode="json") for e in edges],
            }
        )
        return EXIT_OK
    active = client.get_workflow(args.workflow_id).active_version_id == version.id
    ui.print(
        Text.assemble(
            (f"version {version.name or version.id}", "bold"),
            " (active)" if active else "",
            f"  {len(nodes)} nodes, {len(edges)} edges"
            + ("" if edges else " (none: the nodes run in the order they were made)"),
        )
    )
    table = Table(box=None, show_header=True, padding=(0, 1))
    for column in ("stage", "node", "model", "waits for", "template"):
        table.add_column(column, overflow="fold", no_wrap=column in ("stage", "node"))
    for number, stage in enumerate(stages, start=1):
        for position, node_id in enumerate(stage):
            node = by_id[node_id]
            model = models.get(node.entity_id)
            marks = [m for m in (node.config.on_failure == "continue" and "continues on failure",
                                 node.config.output_format == "json" and "json") if m]  # fmt: skip
            label = Text(f"[{node.name}]", style="bold cyan")
            if marks:
                label.append(f" ({', '.join(marks)})", style="dim")
            parents = waits_for[node_id]
            table.add_row(
                str(number) if position == 0 else "",
                label,
                f"{model.provider} {model.name}" if model else node.entity_id,
                Text("← " + ", ".join(by_id[p].name for p in parents), style="dim") if parents else "(start)",
                short(node.config.input_template, 60),
            )
    ui.print(table)
    for node_id in stages[-1] if stages else []:
        ui.note(f"ends: {by_id[node_id].name}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    client.delete_workflow_execution(args.workflow_id, args.execution_id)
    if ui.as_json:
        ui.json({"deleted": args.execution_id})
    else:
        ui.print(f"deleted execution {args.execution_id} with its files and results")
    return EXIT_OK


def result_pages(
    client: Client, args: argparse.Namespace
) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
    """Items of a batch in dataset order, a page at a time (``--all`` and ``--jsonl`` follow every page)."""
    limit = args.limit or (1000 if args.jsonl else 50)
    token = args.next_token
    while True:
        page = client.get_execution_results(
            workflow_id=args.workflow_id, execution_id=args.execution_id, limit=limit, next_token=token
        )
        yield [item.model_dump(mode="json") for item in page], page.next_token
        token = page.next_token
        if not ((args.all or args.jsonl) and token):
            return


def cmd_results(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    execution = client.get_workflow_execution(args.workflow_id, args.execution_id)
    if ui.as_json and not args.jsonl:
        return results_json(client, ui, args, execution)
    if execution.input_mode == "single":
        if execution.status != "completed":
            ui.note(f"execution #{execution.number} is {execution.status}: it has no final result.")
        if args.jsonl:
            output = final_output(execution)
            ui.jsonl({"execution_id": execution.id, "status": execution.status, "output": output})
        elif final_output(execution) is not None:
            ui.print(Text(final_output(execution) or ""))
        return STATUS_EXIT.get(execution.status, EXIT_OK)
    count, next_token = 0, None
    table = Table()
    for column in ("item", "status", "output / error"):
        table.add_column(column, overflow="fold", no_wrap=column != "output / error")
    for items, token in result_pages(client, args):
        next_token = token
        for item in items:
            count += 1
            if args.jsonl:
                ui.jsonl(item)
                continue
            failed = bool(item.get("error"))
            table.add_row(
                str(item.get("source_item_id")),
                status_text(item.get("status") or ("failed" if failed else "completed")),
                Text(
                    short(item.get("error") if failed else item.get("output"), 120),
                    style="red" if failed else "",
                ),
            )
    if not args.jsonl:
        ui.print(table)
        ui.err.print(
            Text.assemble(
                f"{count} items shown; ", progress_text(execution), " (", run_status_text(execution), ")"
            )
        )
        if next_token:
            ui.note(
                f"more: relayflow results {args.workflow_id} {args.execution_id}"
                + (f" --limit {args.limit}" if args.limit else "")
                + f" --next-token {next_token} (or --all, or --jsonl for everything)"
            )
    return EXIT_OK


def results_json(client: Client, ui: Ui, args: argparse.Namespace, execution: Execution) -> int:
    """``--json``: a single run's results, or a batch's page of items (every page with --all)."""
    if execution.input_mode == "single":
        ui.json({"execution_id": execution.id, "status": execution.status, **(execution.results or {})})
        return STATUS_EXIT.get(execution.status, EXIT_OK)
    items: list[dict[str, Any]] = []
    next_token: str | None = None
    for page, token in result_pages(client, args):
        items.extend(page)
        next_token = token
    ui.json(
        {
            "execution_id": execution.id,
            "status": execution.status,
            "progress": execution.progress.model_dump(mode="json"),
            "items": items,
            "next_token": next_token,
        }
    )
    return EXIT_OK


def cmd_download_input(args: argparse.Namespace, client: Client, ui: Ui) -> int:
    execution = client.get_workflow_execution(args.workflow_id, args.execution_id)
    if execution.input_file is None:
        raise ApiError(404, "no_input_file", "this execution was not started with a file input.")
    target = Path(args.output or Path(execution.input_file.filename).name)
    if target.is_dir():
        target = target / Path(execution.input_file.filename).name
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; pass --force to overwrite it or -o to choose another path.")
    try:
        path = client.download_execution_input(args.workflow_id, args.execution_id, output_path=target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    if ui.as_json:
        ui.json({"path": str(path), "size": path.stat().st_size})
    else:
        ui.print(f"saved {execution.input_file.filename} ({path.stat().st_size} bytes) to {path}")
    return EXIT_OK


def cmd_openapi(args: argparse.Namespace, ui: Ui) -> int:
    from relayflow_runtime.handlers.api import openapi_text

    text = openapi_text()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        ui.note(f"wrote the OpenAPI document to {args.output}")
    else:
        ui.stdout.write(text)
    return EXIT_OK


def cmd_create_api_key(args: argparse.Namespace, ui: Ui) -> int:
    from relayflow_runtime.errors import RelayflowError
    from relayflow_runtime.services import apikeys
    from relayflow_runtime.settings import reset_caches

    if args.table:
        os.environ["RELAYFLOW_TABLE"] = args.table
        reset_caches()
    if not os.environ.get("RELAYFLOW_TABLE"):
        raise UsageError(
            "name the deployment's table: --table NAME or RELAYFLOW_TABLE "
            "(the stack output TableName: `aws cloudformation describe-stacks --stack-name relayflow`)."
        )
    try:
        key = apikeys.bootstrap_key(
            args.tenant, args.scopes, name=args.name, expires_in_days=args.expires_in_days
        )
    except RelayflowError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    print(key, file=ui.stdout, flush=True)
    ui.note(f"a key for tenant '{args.tenant}' with scopes {', '.join(args.scopes)}; it is shown only once.")
    return EXIT_OK


def data_dir_of(args: argparse.Namespace) -> Path | None:
    """--data-dir, else $RELAYFLOW_DATA_DIR or ~/.relayflow; None with --ephemeral."""
    from relayflow.local.datadir import default_data_dir

    if args.ephemeral:
        if args.data_dir:
            raise UsageError("give --data-dir or --ephemeral, not both")
        return None
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def cmd_serve(args: argparse.Namespace, ui: Ui) -> int:
    from relayflow.local.datadir import DataDirError
    from relayflow.local.faults import FaultProfile
    from relayflow.local.server import run_server
    from relayflow.local.stack import LocalStack

    data_dir = data_dir_of(args)
    faults = None
    if args.faults is not None:
        try:
            faults = FaultProfile.named(args.faults, seed=args.fault_seed or 0)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif args.fault_seed is not None:
        raise UsageError("--fault-seed needs --faults (e.g. --faults aws)")
    s3_port = args.s3_port
    if s3_port is None:  # next to the API's port when that is fixed, else any free one
        s3_port = args.port + 1 if args.port and port_is_free(args.port + 1) else 0

    def ready(base_url: str, stack: Any) -> None:
        key = getattr(stack, "api_key", None)
        where = (
            f"data: {data_dir} (kept between runs; delete the folder to start afresh)"
            if data_dir
            else "data: in memory only (--ephemeral): gone when this server stops"
        )
        # The key travels in the fragment: the page keeps it, and browsers never send fragments.
        lines = [where, f"dashboard: {base_url}/dashboard" + (f"#key={key}" if key else "")]
        if faults is not None:
            lines.append(f"faults: the {args.faults} profile, seed {faults.seed} (see docs/operations.md)")
        lines += ["for the CLI and the Python client:", f"  export RELAYFLOW_URL={base_url}"]
        if key:
            lines.append(f"  export RELAYFLOW_API_KEY={key}")
        endpoint = getattr(stack, "s3_endpoint", None)
        if endpoint is not None:
            bucket = stack.environment.get("RELAYFLOW_BUCKET", "")
            lines += [
                "for S3 and the event bus (aws s3 cp FILE s3://$BUCKET/inputs/WORKFLOW_ID/ starts a run;",
                "  any credentials do, e.g. AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local):",
                f"  export AWS_ENDPOINT_URL_S3={endpoint.url}",
                f"  export AWS_ENDPOINT_URL_EVENTBRIDGE={endpoint.url}",
                f"  export BUCKET={bucket}",
                f"  export EVENT_BUS={stack.environment.get('EVENT_BUS_NAME', '')}",
            ]
        print("\n".join(lines), file=ui.stdout, flush=True)

    try:
        # Callback URLs on this machine or its network are refused unless asked for (as on AWS).
        parameters = {"WebhookAllowPrivateAddresses": "true"} if args.allow_private_webhooks else {}
        stack = LocalStack(data_dir=data_dir, run_schedules=True, faults=faults, parameters=parameters)
        run_server(args.port, on_ready=ready, stack=stack, s3_port=s3_port, access_log=args.verbose)
    except DataDirError as exc:
        ui.error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        ui.error(f"{exc.strerror}: choose another --port or --s3-port (0 picks a free one)")
        return EXIT_USAGE
    return EXIT_OK


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_demo(args: argparse.Namespace, ui: Ui) -> int:
    from relayflow import demo
    from relayflow.local.datadir import DataDirError

    try:
        return int(demo.main(data_dir=Path(args.data_dir).expanduser() if args.data_dir else None) or 0)
    except DataDirError as exc:
        ui.error(str(exc))
        return EXIT_USAGE


# ---- parsing -----------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="relayflow",
        description="Run, watch and inspect relayflow workflow executions.",
        epilog="Exit codes: 0 completed/ok, 1 run failed, 2 usage error, 3 run cancelled, "
        "4 API error, 5 API unreachable, 130 interrupted.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"relayflow {__version__}")
    parser.add_argument("--url", help="API base URL (default: $RELAYFLOW_URL or http://127.0.0.1:8765)")
    parser.add_argument("--api-key", help="API key (default: $RELAYFLOW_API_KEY)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    def command(name: str, help_text: str, *, api: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(needs_api=api)
        if api:
            sub.add_argument("--url", default=argparse.SUPPRESS, help="API base URL")
            sub.add_argument("--api-key", default=argparse.SUPPRESS, help="API key")
            sub.add_argument("--json", action="store_true", help="print JSON instead of tables")
        return sub

    def workflow_arg(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("workflow_id", metavar="WORKFLOW", help=WORKFLOW_HELP)

    def execution_args(sub: argparse.ArgumentParser) -> None:
        workflow_arg(sub)
        sub.add_argument("execution_id", metavar="EXECUTION", help=EXECUTION_HELP)

    def follow_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--watch", action="store_true", help="show live progress until the run ends")
        sub.add_argument("--wait", action="store_true", help="wait quietly until the run ends")
        sub.add_argument("--poll", type=float, default=0.5, help="seconds between status reads (0.5)")

    sub = command("serve", "serve the API and the dashboard on 127.0.0.1 (embedded local stack)", api=False)
    sub.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
    sub.add_argument(
        "--data-dir",
        help="where workflows, runs, datasets, files and the API key are kept between runs "
        "(default: $RELAYFLOW_DATA_DIR or ~/.relayflow)",
    )
    sub.add_argument("--ephemeral", action="store_true", help="keep nothing: all in memory, gone at stop")
    sub.add_argument(
        "--s3-port",
        type=int,
        help="port of the local S3 and EventBridge endpoint (default: --port + 1 if free; 0 picks one)",
    )
    sub.add_argument(
        "--faults",
        metavar="PROFILE",
        help="show AWS's weather: 'aws' injects transaction conflicts, throttles, Lambda concurrency "
        "and timeouts, Express repeats, late, duplicate and lost events (default: none)",
    )
    sub.add_argument("--fault-seed", type=int, help="the fault profile's seed (0): a failure replays")
    sub.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        help="let callback URLs name loopback and private addresses (a receiver on this machine); "
        "refused by default, as on AWS",
    )
    sub.add_argument(
        "--verbose",
        action="store_true",
        help="log a line per HTTP request (the dashboard polls every second)",
    )
    sub.set_defaults(handler=cmd_serve)

    sub = command("demo", "run real workflows end to end on the embedded local stack", api=False)
    sub.add_argument("--data-dir", help="keep the demo's workflows and runs there (default: nothing is kept)")
    sub.set_defaults(handler=cmd_demo)

    sub = command("run", "start a workflow on one text, one file or a dataset")
    workflow_arg(sub)
    source = sub.add_argument_group("input (exactly one)")
    source.add_argument("--input", help="the text to process ('-' reads standard input)")
    source.add_argument("--file", help="a file to process (PDF, text, …)")
    source.add_argument("--dataset", help="batch: the dataset id")
    batch = sub.add_argument_group("batch")
    batch.add_argument("--dataset-version", help="the dataset version id (default: its latest ready version)")
    batch.add_argument("--input-field", help="the item field that becomes {{input}} (text)")
    batch.add_argument(
        "--filter",
        help="a JMESPath filter over the items; quote it in single quotes, since literals use "
        "backticks: --filter 'score > `3`', --filter 'lang == `\"en\"`' (or the raw string "
        "'en': --filter \"lang == 'en'\")",
    )
    batch.add_argument("--parallelism", type=positive_int, help="items processed at once")
    batch.add_argument("--max-failed-percent", type=float, help="fail the run above this share of failures")
    batch.add_argument(
        "--estimate",
        action="store_true",
        help="start nothing: print the items the filter keeps, model calls, tokens, cost and time",
    )
    sub.add_argument("--version", help="a workflow version id or name (default: the active version)")
    sub.add_argument("--timeout", type=positive_int, help="seconds the whole run may take")
    follow_args(sub)
    sub.set_defaults(handler=cmd_run, check=check_run)

    sub = command("status", "show one execution: status, progress, each node (--watch: follow it)")
    execution_args(sub)
    follow_args(sub)
    sub.set_defaults(handler=cmd_status)

    sub = command("list", "list a workflow's executions, newest first")
    workflow_arg(sub)
    sub.add_argument("--status", choices=STATUSES, help="only executions with this status")
    sub.add_argument("--limit", type=positive_int, default=20, help="executions per page (20, at most 200)")
    sub.add_argument("--next-token", help="continue from a previous page")
    sub.add_argument("--all", action="store_true", help="follow every page")
    sub.add_argument("--since", help="created at or after (ISO 8601, e.g. 2025-01-31T12:00:00Z)")
    sub.add_argument("--until", help="created at or before (ISO 8601)")
    sub.set_defaults(handler=cmd_list)

    sub = command("workflows", "list workflows (their ids are what the other commands take)")
    sub.add_argument("--limit", type=positive_int, default=50)
    sub.add_argument("--all", action="store_true", help="follow every page")
    sub.set_defaults(handler=cmd_workflows)

    sub = command("cancel", "cancel a pending or running execution")
    execution_args(sub)
    sub.set_defaults(handler=cmd_cancel)

    sub = command("rerun", "start a new execution with the same input and version snapshot")
    execution_args(sub)
    follow_args(sub)
    sub.set_defaults(handler=cmd_rerun)

    sub = command("deliveries", "webhook delivery attempts, newest first: of a workflow or one execution")
    workflow_arg(sub)
    sub.add_argument(
        "execution_id", metavar="EXECUTION", nargs="?", help="only this execution's (id or number)"
    )
    sub.add_argument("--limit", type=positive_int, default=50, help="attempts per page (50, at most 200)")
    sub.add_argument("--all", action="store_true", help="follow every page")
    sub.set_defaults(handler=cmd_deliveries)

    sub = command("resend-webhook", "send a finished execution's webhook again (a new round of attempts)")
    execution_args(sub)
    sub.set_defaults(handler=cmd_resend_webhook)

    sub = command("delete", "delete a finished execution with its stored files and results")
    execution_args(sub)
    sub.set_defaults(handler=cmd_delete)

    sub = command("results", "an execution's results: the output, or a batch's items")
    execution_args(sub)
    sub.add_argument("--jsonl", action="store_true", help="one JSON object per line (every item)")
    sub.add_argument(
        "--limit", type=positive_int, help="items per page (50; 1000 with --jsonl; at most 1000)"
    )
    sub.add_argument("--next-token", help="continue from a previous page")
    sub.add_argument("--all", action="store_true", help="follow every page")
    sub.set_defaults(handler=cmd_results)

    sub = command("retry-failed", "start a new batch run over the items of a finished one that failed")
    execution_args(sub)
    sub.add_argument(
        "--version", help="run them with this workflow version (default: the run's own snapshot)"
    )
    sub.add_argument("--parallelism", type=positive_int, help="items processed at once (default: the run's)")
    follow_args(sub)
    sub.set_defaults(handler=cmd_retry_failed)

    sub = command("graph", "draw a workflow version's graph: its stages, nodes, models and edges")
    workflow_arg(sub)
    sub.add_argument("--version", help="a version id or name (default: the active version)")
    sub.set_defaults(handler=cmd_graph)

    sub = command("download-input", "save the file an execution was started with")
    execution_args(sub)
    sub.add_argument("-o", "--output", help="file or folder to write (default: the original name here)")
    sub.add_argument("--force", action="store_true", help="overwrite an existing file")
    sub.set_defaults(handler=cmd_download_input)

    sub = command("openapi", "print (or write) the OpenAPI document of the HTTP API", api=False)
    sub.add_argument("-o", "--output", help="write to this file instead of standard output")
    sub.set_defaults(handler=cmd_openapi)

    sub = command(
        "create-api-key",
        "create a key in a deployment's table with your AWS credentials (the first key of a stack)",
        api=False,
    )
    sub.add_argument("--table", help="the deployment's DynamoDB table (default: $RELAYFLOW_TABLE)")
    sub.add_argument("--tenant", default="default", help="tenant of the key (default)")
    sub.add_argument(
        "--scopes", nargs="+", default=["read", "write", "execute"], choices=["read", "write", "execute"]
    )
    sub.add_argument("--name", default="bootstrap", help="a label for the key")
    sub.add_argument("--expires-in-days", type=positive_int, help="the key stops working after this")
    sub.set_defaults(handler=cmd_create_api_key)
    return parser


def resolve_references(args: argparse.Namespace, client: Client) -> None:
    """A workflow named by its name and an execution by its number (3 or '#3') become their ids."""
    if getattr(args, "workflow_id", None):
        args.workflow_id = client.workflow_id_of(args.workflow_id)
        if getattr(args, "execution_id", None):
            args.execution_id = client.execution_id_of(args.workflow_id, args.execution_id)


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one command; returns its exit code. stdout / stderr default to the process's own."""
    try:
        with (
            contextlib.redirect_stdout(stdout or sys.stdout),
            contextlib.redirect_stderr(stderr or sys.stderr),
        ):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    ui = Ui(as_json=getattr(args, "json", False), stdout=stdout, stderr=stderr)
    try:
        if not args.needs_api:
            return int(args.handler(args, ui))
        if getattr(args, "check", None) is not None:
            args.check(args)
        with Client(base_url=args.url, api_key=args.api_key) as client:
            resolve_references(args, client)
            return int(args.handler(args, client, ui))
    except UsageError as exc:
        ui.error(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        hint = f"; {exc.hint}" if exc.hint else ""
        ui.error(f"{exc.message or 'the API refused the request'} (HTTP {exc.status}, {exc.code}){hint}")
        return EXIT_API_ERROR
    except ApiUnreachable as exc:
        ui.error(str(exc).replace("base_url (CLI: --url)", "--url"))
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        ui.note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `relayflow results ... --jsonl | head`: the reader has had enough
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), ui.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

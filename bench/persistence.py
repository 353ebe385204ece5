"""What keeping the embedded stack's state in a data directory costs (relayflow.local.persistence),
measured side by side with ``--ephemeral`` in this one run:

(a) pipeline: ms per node of a 10-node run (bench/pipeline.py's measurement), each mode in
    alternating rounds, a fresh stack (and a fresh data directory) per round;
(b) batch: a three-node builtin workflow over BATCH_ITEMS items at parallelism 30 (bench/batch.py's
    (b), smaller), alternating rounds; with what the flusher wrote meanwhile;
(c) start-up with 100,000 stored items: a finished batch's 100,000 item outcomes (~600-byte items)
    and its item list in S3, written straight into moto's table and bucket of a persistent stack
    (not through the API), stopped (the journal merged into the snapshot); then starts of a stack
    on that directory against starts of an ephemeral one;
(d) SIGKILL: ``relayflow serve --data-dir`` in its own process takes API writes one after another
    and is killed with SIGKILL; restarted, which acknowledged writes are missing, and how long
    before the kill the oldest of them was acknowledged (the promise: about a second at most);
(e) the write path: what recording adds to one DynamoDB write, timed directly, and how many writes
    a pipeline node makes: their product over a node's CPU time is the recording's share.

(a) and (b) report wall time (the runs' own timestamps) and this process's CPU time (all the
stack's threads, the flusher's too). On a shared machine both move from round to round by more
than persistence costs: (e), and the recording's and the flusher's CPU in (b), measure that cost
directly. Each figure is a median over the rounds; the rounds' own figures are printed too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

Row = tuple[str, float | int, str]

PIPELINE_NODES = 10
PIPELINE_RUNS = 5
PIPELINE_ROUNDS = 5
BATCH_ITEMS = 2_000
BATCH_PARALLELISM = 30  # 3 children of 10 (bench/batch.py)
BATCH_ROUNDS = 5
STARTUP_ITEMS = 100_000
STARTUP_REPEATS = 3
KILL_ROUNDS = 3
WRITE_BURSTS = 15
WRITES_PER_BURST = 2000
KILL_AFTER_SECONDS = 3.0
PROMPT = "the quick brown fox jumps over the lazy dog"


@contextmanager
def _stack(data_dir: Path | None) -> Iterator[tuple[Any, Any]]:
    """A local stack (persistent when data_dir is given), its HTTP server and a client."""
    from relayflow import Client
    from relayflow.local.server import start_server
    from relayflow.local.stack import LocalStack

    with LocalStack(data_dir=data_dir) as stack:
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        logging.getLogger("relayflow").setLevel(logging.WARNING)
        server, _ = start_server(stack, host="127.0.0.1", port=0)
        try:
            with Client(base_url=f"http://127.0.0.1:{server.server_port}", api_key=stack.api_key) as client:
                yield stack, client
        finally:
            server.shutdown()
            server.server_close()


def _modes(rounds: int) -> list[bool]:
    """Both modes in each round, back to back, the first alternating: E P, P E, E P, ... (round i
    is entries 2i and 2i+1: _side_by_side pairs them)."""
    order: list[bool] = []
    for index in range(rounds):
        order += [False, True] if index % 2 == 0 else [True, False]
    return order


def _seconds(done: Any) -> float:
    return (
        datetime.fromisoformat(done.completed_at) - datetime.fromisoformat(done.created_at)
    ).total_seconds()


# ---- (a) pipeline ------------------------------------------------------------------------------------
def _pipeline_round(client: Any) -> tuple[float, float]:
    """(median ms per node by the runs' own timestamps, this process's CPU ms per node)."""
    model = client.create_model(name="upper", provider="builtin", config={"model": "uppercase"})
    workflow = client.create_workflow(name="bench")
    version = client.create_workflow_version(workflow_id=workflow.id)
    for i in range(PIPELINE_NODES):
        client.create_workflow_node(version_id=version.id, name=f"n{i}", entity_id=model.id)
    first = client.execute_workflow(workflow_id=workflow.id, single_input=PROMPT)
    client.wait_for_execution(workflow.id, first.id, poll_interval=0.05, timeout=120)
    per_node = []
    cpu = time.process_time()
    for _ in range(PIPELINE_RUNS):
        execution = client.execute_workflow(workflow_id=workflow.id, single_input=PROMPT)
        done = client.wait_for_execution(workflow.id, execution.id, poll_interval=0.25, timeout=120)
        assert done.status == "completed", done.error
        per_node.append(_seconds(done) * 1000 / PIPELINE_NODES)
    cpu_ms = (time.process_time() - cpu) * 1000 / (PIPELINE_RUNS * PIPELINE_NODES)
    return statistics.median(per_node), cpu_ms


def pipeline() -> list[Row]:
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    with _stack(None) as (_, client):  # warm-up: imports, botocore's models, first clients
        _pipeline_round(client)
    for persistent in _modes(PIPELINE_ROUNDS):
        with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp) if persistent else None) as (_, client):
            per_node, cpu_per_node = _pipeline_round(client)
            wall[persistent].append(per_node)
            cpu[persistent].append(cpu_per_node)
    return _side_by_side("(a)", f"{PIPELINE_NODES}-node run", "ms/node", wall, cpu, PIPELINE_ROUNDS)


def _side_by_side(
    tag: str, what: str, unit: str, wall: dict[bool, list[float]], cpu: dict[bool, list[float]], rounds: int
) -> list[Row]:
    """Medians of each mode, wall time (the runs' own timestamps) and this process's CPU time (every
    thread of the stack, the flusher's included: less disturbed by the machine's other work); and
    the ratio the comparison rests on: each round runs the two modes back to back (_modes), so a
    round's data-dir figure over its ephemeral one sees the same machine load, and the median of
    those ratios is not moved by one busy round, as a ratio of two medians taken from different
    rounds is."""
    rows: list[Row] = []
    for label, figures in (("time", wall), ("CPU", cpu)):
        ephemeral, persistent = statistics.median(figures[False]), statistics.median(figures[True])
        paired = [p / e for e, p in zip(figures[False], figures[True], strict=True)]
        rows += [
            (f"{tag} {what}, {label}, --ephemeral, median of {rounds} rounds", ephemeral, unit),
            (f"{tag} {what}, {label}, --data-dir, median of {rounds} rounds", persistent, unit),
            (
                f"{tag}   rounds: ephemeral {_list(figures[False])}; data dir {_list(figures[True])}",
                rounds,
                "rounds",
            ),
            (f"{tag}   each round's data dir over ephemeral: {_list(paired)}", rounds, "rounds"),
            (
                f"{tag} {what}, {label}: data dir over ephemeral, median of the rounds",
                statistics.median(paired),
                "x",
            ),
        ]
    return rows


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# ---- (b) batch ---------------------------------------------------------------------------------------
def _batch_round(client: Any) -> tuple[float, float]:
    """(seconds from submission to end by the run's own timestamps, this process's CPU seconds)."""
    dataset = client.create_dataset(name="bench persistence")
    version = client.create_dataset_version(dataset.id)
    items = [{"id": f"t{i}", "text": f"the quick brown fox {i}"} for i in range(BATCH_ITEMS)]
    client.upload_dataset_items(dataset.id, version.id, items=items, poll_interval=0.2, timeout=600)
    workflow = client.create_workflow(name="bench batch")
    # 60 s node timeouts: a worst-case item of three nodes fits one 15-minute child invocation.
    flow = client.create_workflow_version(workflow.id, config={"max_retries": 0, "node_timeout": 60})
    for name, config, template in (
        ("upper", {"model": "uppercase"}, "{{input}}"),
        ("count", {"model": "word_count"}, "{{input}}"),
        ("report", {"model": "echo"}, "{{nodes.upper}} has {{input}} words"),
    ):
        model = client.create_model(name=name, provider="builtin", config=config)
        client.create_workflow_node(flow.id, name, model.id, config={"input_template": template})
    client.update_workflow(workflow.id, active_version_id=flow.id)
    config = {
        "dataset_id": dataset.id,
        "dataset_version_id": version.id,
        "input_field": "text",
        "parallelism": BATCH_PARALLELISM,
    }
    cpu = time.process_time()
    execution = client.execute_workflow(workflow.id, input_mode="batch", batch_config=config)
    done = client.wait_for_execution(workflow.id, execution.id, poll_interval=1.0, timeout=3600)
    assert done.status == "completed" and done.progress.processed_items == BATCH_ITEMS, done.error
    return _seconds(done), time.process_time() - cpu


def batch() -> list[Row]:
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    flushed: list[Any] = []
    for persistent in _modes(BATCH_ROUNDS):
        with (
            tempfile.TemporaryDirectory() as tmp,
            _stack(Path(tmp) if persistent else None) as (stack, client),
        ):
            seconds, cpu_seconds = _batch_round(client)
            wall[persistent].append(seconds)
            cpu[persistent].append(cpu_seconds)
            if persistent:
                flushed.append((stack.durable.persistence.stats, seconds, cpu_seconds))
    what = f"{BATCH_ITEMS:,} items x 3 nodes, p{BATCH_PARALLELISM}"
    rows = _side_by_side("(b)", what, "s", wall, cpu, BATCH_ROUNDS)
    stats, seconds, cpu_seconds = flushed[-1]
    last = "(b) last data-dir round:"
    rows += [
        (f"{last} writes recorded", stats.writes, ""),
        (
            f"{last} recording inside the writes, share of the run's CPU",
            stats.recording_seconds / cpu_seconds * 100,
            "%",
        ),
        (f"{last} flushes", stats.flushes, ""),
        (f"{last} records written (items, objects)", stats.records, ""),
        (f"{last} journal written", stats.bytes / 2**20, "MiB"),
        (
            f"{last} flusher's own CPU time, share of the run's CPU",
            stats.cpu_seconds / cpu_seconds * 100,
            "%",
        ),
        (
            f"{last} flusher's time (fsync waits included), share of the run",
            stats.seconds / seconds * 100,
            "%",
        ),
        (f"{last} longest flush", stats.longest_seconds * 1000, "ms"),
    ]
    return rows


# ---- (c) start-up with 100,000 stored items ------------------------------------------------------------
def _fill(directory: Path) -> tuple[float, float]:
    """A finished batch of STARTUP_ITEMS items, written into moto's table and bucket directly (the
    journal records them as it does API writes); returns (seconds to write, seconds to stop)."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.s3.models import s3_backends

    from relayflow.local import moto_shim
    from relayflow.local.stack import LocalStack

    started = time.perf_counter()
    stack = LocalStack(data_dir=directory).start()
    try:
        table = dynamodb_backends[stack.account_id][stack.region].get_table(
            stack.environment["RELAYFLOW_TABLE"]
        )
        execution = "0195f3c2-bench-startup"
        now = "2025-01-01T00:00:00.000Z"
        for start in range(0, STARTUP_ITEMS, 1000):
            with moto_shim._dynamodb_lock:
                for i in range(start, min(start + 1000, STARTUP_ITEMS)):
                    text = f"item {i}: the quick brown fox jumps over the lazy dog"
                    key = {"pk": f"T#default#X#{execution}", "sk": f"R#item-{i:06d}"}
                    usage = {"input_tokens": {"N": "9"}, "output_tokens": {"N": "9"}}
                    last = {
                        "node_id": {"S": "report"},
                        "status": {"S": "completed"},
                        "attempts": {"N": "1"},
                        "duration_ms": {"N": "3"},
                        "started_at": {"S": now},
                        "completed_at": {"S": now},
                        "prompt": {"S": text.upper()},
                        "usage": {"M": usage},
                    }
                    table.put_item(
                        {
                            "pk": {"S": key["pk"]},
                            "sk": {"S": key["sk"]},
                            "kind": {"S": "item_result"},
                            "tenant": {"S": "default"},
                            "source_item_id": {"S": f"item-{i:06d}"},
                            "status": {"S": "completed"},
                            "output": {"S": f"{text.upper()} has 11 words"},
                            "duration_ms": {"N": "12"},
                            "completed_at": {"S": now},
                            "output_node_id": {"NULL": True},
                            "last_node": {"M": last},
                        }
                    )
        entries = "".join(
            json.dumps({"id": f"item-{i:06d}", "item": {"text": f"item {i}"}}) + "\n"
            for i in range(STARTUP_ITEMS)
        )
        s3 = s3_backends[stack.account_id]["aws"]
        list_key = f"t/default/executions/{execution}/items.jsonl"
        s3.put_object(stack.environment["RELAYFLOW_BUCKET"], list_key, entries.encode())
        written = time.perf_counter() - started
    finally:
        stopping = time.perf_counter()
        stack.stop()
    return written, time.perf_counter() - stopping


def startup() -> list[Row]:
    from relayflow.local.stack import LocalStack

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        LocalStack().start().stop()  # warm-up: imports, botocore's models
        written, stopped = _fill(directory)
        snapshot = (directory / "state" / "snapshot.log").stat().st_size
        objects = sum(p.stat().st_size for p in (directory / "state" / "objects").glob("*/*"))
        ephemeral, persistent, restores, stops = [], [], [], []
        for _ in range(STARTUP_REPEATS):
            for with_data in (False, True):
                started = time.perf_counter()
                stack = LocalStack(data_dir=directory if with_data else None).start()
                elapsed = time.perf_counter() - started
                if with_data:
                    assert stack.durable is not None and stack.durable.restored.items >= STARTUP_ITEMS
                    persistent.append(elapsed)
                    restores.append(stack.durable.restored.seconds)
                else:
                    ephemeral.append(elapsed)
                stopping = time.perf_counter()
                stack.stop()
                if with_data:
                    stops.append(time.perf_counter() - stopping)
    return [
        (f"(c) {STARTUP_ITEMS:,} items written straight into the store (journaled)", written, "s"),
        ("(c) first stop: last flush and journal merged into the snapshot", stopped, "s"),
        (
            "(c) snapshot (DynamoDB items)",
            snapshot / 2**20,
            "MiB",
        ),
        ("(c) object files", objects / 2**20, "MiB"),
        (f"(c) start, --ephemeral (empty), median of {STARTUP_REPEATS}", statistics.median(ephemeral), "s"),
        (
            f"(c) start with {STARTUP_ITEMS:,} stored items, median of {STARTUP_REPEATS}",
            statistics.median(persistent),
            "s",
        ),
        ("(c)   of which reading them back into moto", statistics.median(restores), "s"),
        (
            f"(c)   starts, s: ephemeral {_list(ephemeral)}; data dir {_list(persistent)}",
            STARTUP_REPEATS,
            "each",
        ),
        ("(c) stop of that stack (nothing new: no merge)", statistics.median(stops), "s"),
    ]


# ---- (d) SIGKILL -------------------------------------------------------------------------------------
def _serve(directory: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    offset = log.stat().st_size if log.exists() else 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAYFLOW_", "AWS_"))}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                Path(sys.executable).with_name("relayflow"),
                "serve",
                "--port",
                "0",
                "--s3-port",
                "0",
                "--data-dir",
                str(directory),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    exports: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while "RELAYFLOW_API_KEY" not in exports:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"relayflow serve did not start: {log.read_bytes()[offset:][-2000:]!r}")
        time.sleep(0.1)
        for line in log.read_bytes()[offset:].decode(errors="replace").splitlines():
            if line.startswith("  export "):
                name, _, value = line.removeprefix("  export ").partition("=")
                exports[name] = value
    return process, exports


def _kill_round(directory: Path, log: Path) -> tuple[int, int, float | None, float]:
    """(acknowledged, lost, age at the kill of the oldest lost write in s, of the newest kept one)."""
    from relayflow import Client

    process, exports = _serve(directory, log)
    acknowledged: dict[str, float] = {}
    try:
        with Client(base_url=exports["RELAYFLOW_URL"], api_key=exports["RELAYFLOW_API_KEY"]) as client:
            deadline = time.monotonic() + KILL_AFTER_SECONDS
            number = 0
            while time.monotonic() < deadline:
                name = f"w{len(acknowledged)}-{number}"
                client.create_model(name=name, provider="builtin", config={"model": "echo"})
                acknowledged[name] = time.monotonic()
                number += 1
    finally:
        killed_at = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait()
    process, exports = _serve(directory, log)
    try:
        with Client(base_url=exports["RELAYFLOW_URL"], api_key=exports["RELAYFLOW_API_KEY"]) as client:
            kept: set[str] = set()
            token = None
            while True:
                page = client.get_models(limit=100, next_token=token)
                kept.update(m.name for m in page)
                token = page.next_token
                if not token:
                    break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    lost = [when for name, when in acknowledged.items() if name not in kept]
    newest_kept = max(when for name, when in acknowledged.items() if name in kept)
    return len(acknowledged), len(lost), (killed_at - min(lost)) if lost else None, killed_at - newest_kept


def sigkill() -> list[Row]:
    rows: list[Row] = []
    oldest: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(KILL_ROUNDS):
            acknowledged, lost, oldest_lost, newest_kept = _kill_round(
                Path(tmp) / f"round{index}", Path(tmp) / "log"
            )
            oldest.append(oldest_lost or 0.0)
            rows.append(
                (
                    f"(d) round {index + 1}: {acknowledged} writes acknowledged, {lost} lost; newest kept "
                    f"was {newest_kept * 1000:.0f} ms old at the kill; oldest lost",
                    (oldest_lost or 0.0) * 1000,
                    "ms before the kill",
                )
            )
    rows.append(("(d) oldest lost acknowledged write, worst round", max(oldest) * 1000, "ms before the kill"))
    return rows


# ---- (e) the write path ------------------------------------------------------------------------------
def write_path() -> list[Row]:
    """What recording adds to each DynamoDB write: the hook that copies the written item out as
    JSON, timed directly on a real item of a persistent stack (a whole PutItem through the stack
    takes milliseconds on this machine, with more noise than the hook costs); and how many writes a
    node of a pipeline run makes, to put the two together."""
    from moto.dynamodb.models import dynamodb_backends

    from relayflow.local import persistence

    item = {
        "pk": {"S": "T#default#X#0195f3c2-0000-7000-8000-000000000000"},
        "sk": {"S": "N#0195f3c2-0000-7000-8000-000000000001"},
        "kind": {"S": "node"},
        "status": {"S": "completed"},
        "prompt": {"S": PROMPT * 4},
        "output": {"S": PROMPT.upper() * 4},
        "attempts": {"N": "1"},
        "duration_ms": {"N": "12"},
        "started_at": {"S": "2025-01-01T00:00:00.000Z"},
        "completed_at": {"S": "2025-01-01T00:00:00.012Z"},
        "usage": {"M": {"input_tokens": {"N": "9"}, "output_tokens": {"N": "9"}}},
    }
    with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp)) as (stack, client):
        recorder = persistence._active
        assert recorder is not None
        stack.client("dynamodb").put_item(TableName=stack.environment["RELAYFLOW_TABLE"], Item=item)
        table = dynamodb_backends[stack.account_id][stack.region].get_table(
            stack.environment["RELAYFLOW_TABLE"]
        )
        stored = next(iter(next(iter(table.items.values())).values()))
        size = len(json.dumps(item))
        timings = []
        for _ in range(WRITE_BURSTS):
            started = time.perf_counter()
            for _ in range(WRITES_PER_BURST):
                recorder._mark_item(table, stored.hash_key, stored.range_key, stored)
            timings.append((time.perf_counter() - started) / WRITES_PER_BURST * 1e6)
        writes_before = recorder.stats.writes
        cpu_per_node = _pipeline_round(client)[1]
        writes = (recorder.stats.writes - writes_before) / ((PIPELINE_RUNS + 1) * PIPELINE_NODES)
    cost = statistics.median(timings)
    return [
        (
            f"(e) recording one write of a {size}-byte item, median of {WRITE_BURSTS} x {WRITES_PER_BURST}",
            cost,
            "us",
        ),
        (
            f"(e) item and object writes per node of a {PIPELINE_NODES}-node run (everything, API's too)",
            writes,
            "",
        ),
        ("(e) this process's CPU per node in that run", cpu_per_node, "ms"),
        (
            "(e) recording's share of it: writes x cost / CPU per node",
            writes * cost / (cpu_per_node * 1000) * 100,
            "%",
        ),
    ]


def run() -> list[Row]:
    return pipeline() + batch() + startup() + sigkill() + write_path()


if __name__ == "__main__":
    for label, value, unit in run():
        print(f"{label:<100} {value:>12,.3f} {unit}")

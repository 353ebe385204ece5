"""Batch runs on the embedded local stack (docs/batch.md), measured side by side in one process:

(a) parallel efficiency: 200 items through a ``sleep`` model of 0.1 s at parallelism 1 and 10;
(b) throughput: items per second of a three-node builtin workflow over 10,000 items;
(c) memory: peak Python memory (tracemalloc) of the batch data path — upload and ingest, a
    submission with a filter, reading every result — at 10,000 and 100,000 items: relayflow's own
    allocations (client and functions), and the whole process with moto's in-memory S3.

Everything runs in this one Python process (moto's Step Functions interpreter, the Lambda
handlers, DynamoDB and S3 in memory), so CPU work does not run in parallel (the GIL) and the
figures are those of a laptop emulator, not of AWS: see docs/batch.md for what they mean there.
Running the Map itself over 100,000 items is left out: at the local rate of (b) it would take
about two hours; (c) measures the paths whose memory could grow with the dataset.
"""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import threading
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

Row = tuple[str, float | int, str]

SLEEP_ITEMS = 200
SLEEP_SECONDS = 0.1
SLEEP_REPEATS = 3
THROUGHPUT_ITEMS = 10_000
THROUGHPUT_PARALLELISM = 25
MEMORY_SIZES = (10_000, 100_000)
# ~600-byte items (a review, a short message): even 10,000 of them fill every fixed-size buffer (a
# 5 MiB S3 part, a 4 MiB upload part), so what is left to grow with the items does grow with them.
FILLER = "the quick brown fox jumps over the lazy dog " * 13


def _dataset(client: Any, items: int, make: Callable[[int], dict[str, Any]]) -> tuple[str, str]:
    dataset = client.create_dataset(name=f"bench {items}")
    version = client.create_dataset_version(dataset.id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.jsonl"
        with path.open("w") as out:
            for i in range(items):
                out.write(json.dumps(make(i)) + "\n")
        client.upload_dataset_items(dataset.id, version.id, path=path, poll_interval=0.2, timeout=600)
    return dataset.id, version.id


def _workflow(client: Any, nodes: list[tuple[str, dict[str, Any], str]]) -> str:
    workflow = client.create_workflow(name="bench batch")
    version = client.create_workflow_version(workflow.id, config={"max_retries": 0})
    for name, config, template in nodes:
        model = client.create_model(name=name, provider="builtin", config=config)
        client.create_workflow_node(version.id, name, model.id, config={"input_template": template})
    client.update_workflow(workflow.id, active_version_id=version.id)
    return str(workflow.id)


def _timed_batch(client: Any, workflow_id: str, dataset: tuple[str, str], parallelism: int) -> float:
    """Seconds from the run's submission to its end, as the run itself recorded them (created_at,
    completed_at): a client's polling interval would otherwise add up to a second to each run."""
    config = {
        "dataset_id": dataset[0],
        "dataset_version_id": dataset[1],
        "input_field": "text",
        "parallelism": parallelism,
    }
    execution = client.execute_workflow(workflow_id, input_mode="batch", batch_config=config)
    # Poll once a second, as a progress bar would: every poll costs this process CPU.
    done = client.wait_for_execution(workflow_id, execution.id, poll_interval=1.0, timeout=3600)
    assert done.status == "completed", done.error
    assert done.progress.processed_items == done.progress.total_items, done.progress
    assert done.completed_at is not None
    ended, submitted = datetime.fromisoformat(done.completed_at), datetime.fromisoformat(done.created_at)
    return (ended - submitted).total_seconds()


def parallel_efficiency(client: Any) -> list[Row]:
    """Each parallelism three times, alternating, after one small warm-up batch at parallelism 10
    (one-time costs — the first concurrent boto3 clients, moto's lazy imports — count in neither);
    the medians are compared."""
    dataset = _dataset(client, SLEEP_ITEMS, lambda i: {"id": f"s{i}", "text": f"item {i}"})
    warm = _dataset(client, 20, lambda i: {"id": f"w{i}", "text": f"warm {i}"})
    workflow_id = _workflow(client, [("sleep", {"model": "sleep", "seconds": SLEEP_SECONDS}, "{{input}}")])
    _timed_batch(client, workflow_id, warm, 10)
    serial_runs, parallel_runs = [], []
    for _ in range(SLEEP_REPEATS):
        serial_runs.append(_timed_batch(client, workflow_id, dataset, 1))
        parallel_runs.append(_timed_batch(client, workflow_id, dataset, 10))
    serial, parallel = statistics.median(serial_runs), statistics.median(parallel_runs)
    floor = SLEEP_ITEMS * SLEEP_SECONDS
    runs = (
        f"p1 {', '.join(f'{r:.2f}' for r in serial_runs)}; p10 {', '.join(f'{r:.2f}' for r in parallel_runs)}"
    )
    return [
        (f"(a) {SLEEP_ITEMS} items x {SLEEP_SECONDS} s sleep, parallelism 1, median", serial, "s"),
        (f"(a) {SLEEP_ITEMS} items x {SLEEP_SECONDS} s sleep, parallelism 10, median", parallel, "s"),
        (f"(a)   each run, s: {runs}", len(serial_runs), "runs"),
        ("(a) speed-up, parallelism 10 over 1 (medians)", serial / parallel, "x"),
        (
            "(a) overhead per item at parallelism 1 (beyond its sleep)",
            (serial - floor) / SLEEP_ITEMS * 1000,
            "ms",
        ),
    ]


def throughput(client: Any) -> list[Row]:
    dataset = _dataset(
        client, THROUGHPUT_ITEMS, lambda i: {"id": f"t{i}", "text": f"the quick brown fox {i}"}
    )
    workflow_id = _workflow(
        client,
        [
            ("upper", {"model": "uppercase"}, "{{input}}"),
            ("count", {"model": "word_count"}, "{{input}}"),
            ("report", {"model": "echo"}, "{{nodes.upper}} has {{input}} words"),
        ],
    )
    elapsed = _timed_batch(client, workflow_id, dataset, THROUGHPUT_PARALLELISM)
    return [
        (
            f"(b) 3-node builtin workflow, {THROUGHPUT_ITEMS:,} items, parallelism {THROUGHPUT_PARALLELISM}",
            elapsed,
            "s",
        ),
        ("(b) throughput", THROUGHPUT_ITEMS / elapsed, "items/s"),
    ]


# Frames of the emulator: moto's in-memory AWS (it reads whole S3 objects, copies multipart parts)
# and the local HTTP server in front of the API function. On AWS those are services, not memory.
EMULATOR_FRAMES = (
    "*/site-packages/moto/*",
    "*/site-packages/werkzeug/*",
    "*/relayflow/local/*",
    "*/http/server.py",
)


class _PeakSampler:
    """Peak traced memory of a step: of the whole process (tracemalloc's own peak), and of the
    allocations with no emulator frame among their innermost frames (a snapshot every 0.25 s; the
    buffers it looks for live as long as the step)."""

    def __init__(self) -> None:
        self.filters = [tracemalloc.Filter(False, pattern, all_frames=True) for pattern in EMULATOR_FRAMES]
        self.filters.append(tracemalloc.Filter(False, tracemalloc.__file__))
        self.own_peak = 0

    def own(self) -> int:
        return sum(
            stat.size
            for stat in tracemalloc.take_snapshot().filter_traces(self.filters).statistics("filename")
        )

    def measure(self, step: Callable[[], Any]) -> tuple[float, float]:
        """(own peak, whole-process peak) of what the step allocates, in MiB. Tracing starts with
        the step, so snapshots walk only its allocations, not everything stored before."""
        gc.collect()
        tracemalloc.start(10)
        self.own_peak = 0
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.25):
                self.own_peak = max(self.own_peak, self.own())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            step()
        finally:
            done.set()
            sampler.join()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return self.own_peak / 2**20, peak / 2**20


def _count_results(execution: Any, into: list[int]) -> None:
    from relayflow.logic import batch
    from relayflow.logic.apikeys import DEFAULT_TENANT

    into.append(sum(1 for _ in batch.iter_results(DEFAULT_TENANT, execution)))


def memory(client: Any) -> list[Row]:
    from relayflow.logic import batch, executions
    from relayflow.logic.apikeys import DEFAULT_TENANT
    from relayflow.logic.clock import new_id, now_iso
    from relayflow.models import api
    from relayflow.models.entities import Execution

    workflow_id = _workflow(client, [("upper", {"model": "uppercase"}, "{{input}}")])
    plan = {"nodes": [{"id": "n"}]}
    rows: list[Row] = []
    own: dict[tuple[int, str], float] = {}
    sampler = _PeakSampler()
    for size in MEMORY_SIZES:
        dataset = client.create_dataset(name=f"memory {size}")
        version = client.create_dataset_version(dataset.id)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "items.jsonl"
            with path.open("w") as out:
                for i in range(size):
                    out.write(json.dumps({"id": f"m{i}", "text": f"review {i}: {FILLER}", "n": i}) + "\n")
            upload = sampler.measure(
                partial(client.upload_dataset_items, dataset.id, version.id, path=path, poll_interval=0.2)
            )
        config: Any = {
            "dataset_id": dataset.id,
            "dataset_version_id": version.id,
            "input_field": "text",
            "filter_query": "n >= `0`",
        }
        execution_id = new_id()
        body = api.Execute(input_mode="batch", batch_config=config)
        submit = sampler.measure(partial(batch.prepare, DEFAULT_TENANT, execution_id, body, plan))
        execution = Execution(
            id=execution_id,
            workflow_id=workflow_id,
            version_id="bench",
            input_mode="batch",
            batch_config=body.batch_config,
            created_at=now_iso(),
        )
        counted: list[int] = []
        read = sampler.measure(partial(_count_results, execution, counted))
        assert counted == [size], counted
        executions.blobs().delete_prefix(executions.execution_prefix(DEFAULT_TENANT, execution_id))
        for what, (mine, whole) in (
            ("upload + ingest", upload),
            ("submission with a filter", submit),
            ("reading every result", read),
        ):
            own[(size, what)] = mine
            rows.append((f"(c) {size:>7,} items, {what}: relayflow's peak", mine, "MiB"))
            rows.append((f"(c) {size:>7,} items, {what}: whole process incl. moto", whole, "MiB"))
    small, large = MEMORY_SIZES
    for what in ("upload + ingest", "submission with a filter", "reading every result"):
        ratio = own[(large, what)] / max(own[(small, what)], 0.01)
        rows.append((f"(c) {what}: relayflow's peak, {large:,} over {small:,} items", ratio, "x"))
    return rows


def run() -> list[Row]:
    from relayflow.client import Client
    from relayflow.demo import local_api

    with local_api() as client:
        rows = parallel_efficiency(client)
        rows += throughput(client)
    with local_api() as client:  # a fresh stack: (c) measures a heap without (b)'s 10,000 runs
        # tracemalloc slows this process several times over: give the calls time
        key = client._http.headers.get("x-api-key")
        with Client(client.base_url, api_key=key, timeout=900) as patient:
            rows += memory(patient)
    return rows

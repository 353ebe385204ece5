"""Batch runs on the embedded local stack (docs/batch.md), measured side by side in one process:

(a) parallel efficiency: 200 items through a ``sleep`` model of 0.1 s at parallelism 1 and 10;
(b) throughput: items per second of a three-node builtin workflow over 10,000 items;
(c) memory: peak Python memory (tracemalloc) of the batch data path — uploading the parts,
    ingesting them, a submission with a filter, reading every result — at 10,000 and 100,000
    items, each step measured from a reset peak (deterministic: no sampling).

(a) and (b) run in this one Python process (moto's Step Functions interpreter, the Lambda
handlers, DynamoDB and S3 in memory), so CPU work does not run in parallel (the GIL) and the
figures are those of a laptop emulator, not of AWS: see docs/batch.md for what they mean there.
(c) runs after them against a moto server in another process (moto[server], 127.0.0.1), so what
this process holds is what a Lambda function would: relayflow, boto3/botocore, urllib3.
Running the Map itself over 100,000 items is left out: at the local rate of (b) it would take
about two hours; (c) measures the paths whose memory could grow with the dataset.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

Row = tuple[str, float | int, str]

SLEEP_ITEMS = 200
SLEEP_SECONDS = 0.1
SLEEP_REPEATS = 5
THROUGHPUT_ITEMS = 10_000
#: 3 children of 10 items: 30 at once, what parallelism 25 ran before parallelism became a maximum
#: never exceeded (domain/batch.py), so the figure stays comparable with earlier runs.
THROUGHPUT_PARALLELISM = 30
#: Where today's sizing differs from the former one (children of 20 instead of 10): measured both ways.
SIZED_PARALLELISM = 40
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
    # 60 s node timeouts: a worst-case item of three nodes fits in one 15-minute child invocation.
    version = client.create_workflow_version(workflow.id, config={"max_retries": 0, "node_timeout": 60})
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
    """Each parallelism five times, alternating, after one small warm-up batch at parallelism 10
    (one-time costs — the first concurrent boto3 clients, moto's lazy imports — count in neither);
    the medians are compared (five, so that two runs slowed by the machine's other work move
    neither median)."""
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


def _former_sizing(
    plan: Any, parallelism: int, total: int, items_key: str, largest_entry: int | None = None
) -> Any:
    """The Map's shape as batch_settings sized it before children of 20 (commit 96603fa): at most
    10 items a child, the size of most items at once (the larger on a tie)."""
    from relayflow_runtime.domain.batch import batch_settings, children_for

    most = min(10, max(1, parallelism // 2))
    size = max(range(max(1, most // 2), most + 1), key=lambda s: (parallelism // s * s, s))
    settings = batch_settings(plan, parallelism, total, items_key, largest_entry)
    return settings.model_copy(update={"items_per_child": size, "children": children_for(parallelism, size)})


def throughput(client: Any) -> list[Row]:
    """(b) at parallelism 30 (3 children of 10 by either sizing: comparable with earlier runs), then
    at SIZED_PARALLELISM, where today's sizing runs children of 20: the former sizing (children of
    10) and today's, side by side, former first."""
    from unittest import mock

    from relayflow_runtime.services import batch as batch_service

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
    with mock.patch.object(batch_service, "batch_settings", _former_sizing):
        former = _timed_batch(client, workflow_id, dataset, SIZED_PARALLELISM)
    sized = _timed_batch(client, workflow_id, dataset, SIZED_PARALLELISM)
    label = f"(b) 3-node builtin workflow, {THROUGHPUT_ITEMS:,} items, parallelism"
    return [
        (f"{label} {THROUGHPUT_PARALLELISM}", elapsed, "s"),
        ("(b) throughput", THROUGHPUT_ITEMS / elapsed, "items/s"),
        (
            f"(b) throughput, parallelism {SIZED_PARALLELISM}, former sizing (4 children of 10)",
            THROUGHPUT_ITEMS / former,
            "items/s",
        ),
        (
            f"(b) throughput, parallelism {SIZED_PARALLELISM}, today's sizing (2 children of 20)",
            THROUGHPUT_ITEMS / sized,
            "items/s",
        ),
    ]


# ---- (c) memory ---------------------------------------------------------------------------------
# AWS is a moto server in another process (this venv's moto[server], on 127.0.0.1), so this process
# holds what a Lambda function holds: relayflow, boto3/botocore, urllib3. tracemalloc traces every
# allocation; each step starts from a collected heap and a reset peak, and reports its high-water
# mark (peak - start) and what it kept (end - start): no sampling, no frames filtered out.
MEMORY_STEPS = (
    "upload, each part (put_part)",
    "ingest (run_ingest_job)",
    "a filtered run's item list and index (prepare_batch)",
    "reading every result (iter_results)",
)
MEMORY_RESOURCES = "relayflow-bench-memory"  # the table and the bucket on the moto server
# The plan snapshot of the runs (c) prepares: one echo node.
_BENCH_PLAN = {
    "workflow_id": "bench",
    "version_id": "bench",
    "mode": "batch",
    "config": {"max_retries": 0},
    "nodes": [
        {
            "id": "n",
            "name": "echo",
            "idx": 0,
            "template": "{{input}}",
            "timeout": 60,
            "model": {"id": "m", "provider": "builtin", "config": {"model": "echo"}},
        }
    ],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _moto_server() -> Iterator[str]:
    """A moto server of this venv on 127.0.0.1 (a free port) while the block runs: its URL."""
    port = _free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the moto server did not start (exit code {server.poll()}): "
                        "is moto[server] installed (make bench installs it)?"
                    ) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def _aws_at(url: str) -> Iterator[None]:
    """relayflow's AWS is the server at ``url`` while the block runs (no profile, no real account);
    then the environment is as it was and relayflow forgets the settings and clients it built."""
    from relayflow_runtime.settings import reset_caches

    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        RELAYFLOW_TABLE=MEMORY_RESOURCES,
        RELAYFLOW_BUCKET=MEMORY_RESOURCES,
        RELAYFLOW_PRESIGNED_UPLOADS="0",
    )
    reset_caches()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_caches()


def _create_resources() -> None:
    """The template's table (keys and indexes) and a bucket, on the moto server."""
    import boto3

    from relayflow.local.cfn import load_template
    from relayflow.local.stack import default_template_path

    table = load_template(default_template_path())["Resources"]["RelayflowTable"]["Properties"]
    boto3.client("dynamodb").create_table(
        TableName=MEMORY_RESOURCES,
        AttributeDefinitions=table["AttributeDefinitions"],
        KeySchema=table["KeySchema"],
        GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
        BillingMode="PAY_PER_REQUEST",
    )
    boto3.client("s3").create_bucket(Bucket=MEMORY_RESOURCES)


def _traced(step: Callable[[], Any]) -> tuple[float, float, Any]:
    """(peak - start, end - start) of traced memory in MiB, and the step's result."""
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = step()
    end, peak = tracemalloc.get_traced_memory()
    return (peak - start) / 2**20, (end - start) / 2**20, result


def _reset_peak_rss() -> bool:
    """Linux: this process's peak RSS (VmHWM) starts again from its RSS now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _memory_round(size: int, tmp: Path) -> tuple[dict[str, tuple[float, float]], float, int]:
    """The four steps over ``size`` items, each as a Lambda function runs it: ({step: (peak, kept)},
    the file's MiB, its parts)."""
    from relayflow_runtime.domain.clock import new_id, now_iso
    from relayflow_runtime.domain.engine import RunRef
    from relayflow_runtime.schemas import dataset_api
    from relayflow_runtime.schemas.entities import BatchConfig, Execution
    from relayflow_runtime.services import batch, batch_results, dataset_service, deps, run_records
    from relayflow_runtime.services.apikeys import DEFAULT_TENANT as TENANT

    path = tmp / f"items-{size}.jsonl"
    with path.open("w") as out:
        for i in range(size):
            out.write(json.dumps({"id": f"m{i}", "text": f"review {i}: {FILLER}", "n": i}) + "\n")
    dataset = dataset_service.create_dataset(TENANT, dataset_api.CreateDataset(name=f"memory {size}"))
    version = dataset_service.create_version(TENANT, dataset.id, dataset_api.CreateDatasetVersion())
    upload = dataset_service.start_upload(
        TENANT,
        dataset.id,
        version.id,
        dataset_api.StartUpload(filename="items.jsonl", size=path.stat().st_size),
    )
    steps: dict[str, tuple[float, float]] = {}

    # One request per part: its body (the part in base64) is there before the step starts, as a
    # Lambda event is; the step is put_part's own work. Its peak is the largest over the parts.
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    parts, upload_peak = 0, 0.0
    with path.open("rb") as stream:
        while chunk := stream.read(upload.part_size):
            parts += 1
            body = dataset_api.UploadPart(content_base64=base64.b64encode(chunk).decode())
            del chunk
            peak, _, _ = _traced(
                partial(dataset_service.put_part, TENANT, dataset.id, version.id, upload.id, parts, body)
            )
            upload_peak = max(upload_peak, peak)
            del body  # as a request's body is gone before the next request arrives
    gc.collect()
    steps[MEMORY_STEPS[0]] = upload_peak, (tracemalloc.get_traced_memory()[0] - before) / 2**20
    # What commit_upload does before it starts the ingest job (a Step Functions execution that runs
    # run_ingest_job in the node runner): the moto server runs no functions, so it is called here.
    dataset_service._claim(TENANT, dataset.id, version.id, "jsonl")
    job = {
        "tenant": TENANT,
        "dataset_id": dataset.id,
        "version_id": version.id,
        "upload_id": upload.id,
        "parts": parts,
    }
    peak, kept, outcome = _traced(partial(dataset_service.run_ingest_job, job))
    assert outcome == {"status": "ready", "item_count": size}, outcome
    steps[MEMORY_STEPS[1]] = peak, kept

    # A pending batch run as the API writes it (its record, its plan), then the batch machine's
    # prepare_batch: the filter streamed into the run's own item list and its index.
    execution_id = new_id()
    config = BatchConfig(
        dataset_id=dataset.id, dataset_version_id=version.id, input_field="text", filter_query="n >= `0`"
    )
    execution = Execution(
        id=execution_id,
        workflow_id="bench",
        version_id="bench",
        status="pending",
        input_mode="batch",
        batch_config=config,
        created_at=now_iso(),
    )
    deps.blobs().put_json(run_records.plan_key(TENANT, execution_id), _BENCH_PLAN)
    deps.stores().executions.put_execution(
        TENANT, execution.model_dump(mode="json", exclude={"node_executions"})
    )
    run = RunRef(tenant=TENANT, workflow_id="bench", execution_id=execution_id)
    peak, kept, prepared = _traced(partial(batch.prepare_batch, run))
    assert prepared["batch"]["total"] == size, prepared
    steps[MEMORY_STEPS[2]] = peak, kept

    peak, kept, count = _traced(lambda: sum(1 for _ in batch_results.iter_results(TENANT, execution)))
    assert count == size, count
    steps[MEMORY_STEPS[3]] = peak, kept

    file_mib = path.stat().st_size / 2**20
    path.unlink()
    dataset_service.delete_dataset(TENANT, dataset.id)
    deps.blobs().delete_prefix(run_records.execution_prefix(TENANT, execution_id))
    deps.stores().executions.delete_execution(TENANT, execution_id)
    return steps, file_mib, parts


def memory() -> list[Row]:
    """(c): relayflow's peak memory per step at each of MEMORY_SIZES, after a warm-up round at the
    smallest (botocore loads its models, relayflow builds its clients, on first use)."""
    rows: list[Row] = []
    peaks: dict[tuple[int, str], float] = {}
    tracing = tracemalloc.is_tracing()
    with _moto_server() as url, _aws_at(url), tempfile.TemporaryDirectory() as tmp:
        _create_resources()
        if not tracing:
            tracemalloc.start()
        try:
            _memory_round(min(MEMORY_SIZES), Path(tmp))
            for size in MEMORY_SIZES:
                rss = _reset_peak_rss()
                steps, file_mib, parts = _memory_round(size, Path(tmp))
                rows.append(
                    (f"(c) {size:>7,} items: the JSONL file uploaded, in {parts} parts", file_mib, "MiB")
                )
                for step, (peak, kept) in steps.items():
                    peaks[(size, step)] = peak
                    rows.append((f"(c) {size:>7,} items, {step}: relayflow's peak", peak, "MiB"))
                    rows.append((f"(c) {size:>7,} items, {step}: kept after it", kept, "MiB"))
                if rss:
                    rows.append(
                        (
                            f"(c) {size:>7,} items, all four steps: whole process's peak RSS",
                            _peak_rss_mib(),
                            "MiB",
                        )
                    )
        finally:
            if not tracing:
                tracemalloc.stop()
    small, large = min(MEMORY_SIZES), max(MEMORY_SIZES)
    for step in MEMORY_STEPS:
        ratio = peaks[(large, step)] / max(peaks[(small, step)], 0.01)
        rows.append((f"(c) {step}: relayflow's peak, {large:,} over {small:,} items", ratio, "x"))
    return rows


def run() -> list[Row]:
    from relayflow.demo import local_api

    with local_api() as client:
        rows = parallel_efficiency(client)
        rows += throughput(client)
    # After the embedded stack has stopped (and put the environment back): (c) runs against a
    # moto server of its own.
    rows += memory()
    return rows

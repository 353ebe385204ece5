"""The same work on the local stack calm and under AWS's weather (the "aws" fault profile), side by
side: for five seeds, how many runs ended as they should (after one sweep), how many model calls
were made twice (an Express child of a batch that ran its items again), and what the faults cost
in wall time against the calm run.

The work: fan-out runs (A -> B, C, D -> E) and a batch of items, started at once, each run bounded
by its own timeout (a run that hangs costs at most that). The node runner's reserved concurrency is
made small (as in tests/integration/test_chaos.py) so that the reservation bites.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from relayflow.local.faults import FaultProfile
from relayflow.local.server import build_http_event, parse_http_response
from relayflow.local.stack import LocalStack
from relayflow_runtime.providers import builtin

SEEDS = (1, 2, 3, 4, 5)
FAN_OUT_RUNS = 4
BATCH_ITEMS = 40
RUN_TIMEOUT = 45
NODE_RUNNER_CONCURRENCY = 8
TERMINAL = ("completed", "failed", "cancelled")

Api = Callable[..., Any]


def _api(stack: LocalStack) -> Api:
    def call(method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        headers = {"x-api-key": stack.api_key} if stack.api_key else {}
        extra = {} if body is None else {"json_body": body}
        event = build_http_event(method, path, headers=headers, **extra)
        response = parse_http_response(stack.handle_api_request(event))
        if status is not None and response.status != status:
            raise RuntimeError(f"{method} {path}: {response.status} {response.body[:300]!r}")
        return json.loads(response.body) if response.body else None

    return call


@contextmanager
def _counted_model_calls() -> Iterator[Counter[str]]:
    """Every call of the builtin uppercase model, by prompt, while the block runs."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    original = builtin.MODELS["uppercase"]

    def counted(config: Mapping[str, Any], prompt: str, ctx: Any) -> str:
        with lock:
            calls[prompt] += 1
        return original(config, prompt, ctx)

    builtin.MODELS["uppercase"] = counted
    try:
        yield calls
    finally:
        builtin.MODELS["uppercase"] = original


def _workload(api: Api) -> dict[str, str]:
    """Start the runs; returns execution id -> workflow id."""
    upper = {"name": "upper", "provider": "builtin", "config": {"model": "uppercase"}}
    model = api("POST", "/models", upper, 201)
    workflow = api("POST", "/workflows", {"name": "fan-out"}, 201)
    version = api("POST", f"/workflows/{workflow['id']}/versions", {"config": {"max_retries": 0}}, 201)
    nodes = {
        name: api(
            "POST",
            f"/versions/{version['id']}/nodes",
            {"name": name, "entity_id": model["id"], "config": {"input_template": f"{name} {{{{input}}}}"}},
            201,
        )["id"]
        for name in "ABCDE"
    }
    for begin, end in (("A", "B"), ("A", "C"), ("A", "D"), ("B", "E"), ("C", "E"), ("D", "E")):
        edge = {"begin_node_id": nodes[begin], "end_node_id": nodes[end]}
        api("POST", f"/versions/{version['id']}/edges", edge, 201)
    dataset = api("POST", "/datasets", {"name": "items"}, 201)
    items_version = api("POST", f"/datasets/{dataset['id']}/versions", {}, 201)
    items = [{"text": f"item {n}"} for n in range(BATCH_ITEMS)]
    api("POST", f"/datasets/{dataset['id']}/versions/{items_version['id']}/items", {"items": items}, 200)
    batch = api("POST", "/workflows", {"name": "batch"}, 201)
    express = {"config": {"max_retries": 0, "node_timeout": 30}}  # its children fit Express
    batch_version = api("POST", f"/workflows/{batch['id']}/versions", express, 201)
    api("POST", f"/versions/{batch_version['id']}/nodes", {"name": "Shout", "entity_id": model["id"]}, 201)

    runs: dict[str, str] = {}
    for n in range(FAN_OUT_RUNS):
        body = {"single_input": f"in{n}", "timeout": RUN_TIMEOUT}
        runs[api("POST", f"/workflows/{workflow['id']}/executions", body, 201)["id"]] = workflow["id"]
    config = {"dataset_id": dataset["id"], "dataset_version_id": items_version["id"], "parallelism": 4}
    body = {"input_mode": "batch", "batch_config": config, "timeout": RUN_TIMEOUT}
    runs[api("POST", f"/workflows/{batch['id']}/executions", body, 201)["id"]] = batch["id"]
    return runs


def _one(profile: FaultProfile | None) -> dict[str, Any]:
    parameters = {"NodeRunnerMaxConcurrency": NODE_RUNNER_CONCURRENCY}
    with _counted_model_calls() as calls, LocalStack(faults=profile, parameters=parameters) as stack:
        os.environ["SWEEPER_GRACE_SECONDS"] = "0"  # runs of any age (after the start sets the template's)
        api = _api(stack)
        began = time.monotonic()
        runs = _workload(api)
        stack.wait_idle(timeout=RUN_TIMEOUT + 30)
        stack.run_schedule("SweeperFunction")
        elapsed = time.monotonic() - began
        final = [
            api("GET", f"/workflows/{workflow_id}/executions/{run_id}", status=200)
            for run_id, workflow_id in runs.items()
        ]
        consistent = sum(
            run["status"] == "completed"
            and (run["input_mode"] != "batch" or run["progress"]["processed_items"] == BATCH_ITEMS)
            for run in final
        )
        batch_prompts = [prompt for prompt in calls if prompt.startswith("item ")]
        return {
            "started": len(runs),
            "ended": sum(run["status"] in TERMINAL for run in final),
            "consistent": consistent,
            "duplicate calls": sum(calls[p] - 1 for p in batch_prompts),
            "repeats": stack.faults.injected["express_repeat"] if stack.faults else 0,
            "seconds": elapsed,
            "injected": dict(stack.faults.injected) if stack.faults else {},
        }


def run() -> list[tuple[str, float | int, str]]:
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # the handlers' JSON logs, as in the demo
    logging.getLogger("relayflow").setLevel(logging.WARNING)
    calm = _one(None)
    rows: list[tuple[str, float | int, str]] = [
        ("calm: runs ended consistent", calm["consistent"], f"of {calm['started']}"),
        ("calm: duplicate model calls", calm["duplicate calls"], "(0 repeats)"),
        ("calm: wall time", calm["seconds"], "s"),
    ]
    for seed in SEEDS:
        weather = _one(FaultProfile.named("aws", seed=seed))
        repeats = weather["repeats"]
        faults = ", ".join(f"{name} {count}" for name, count in sorted(weather["injected"].items()))
        print(f"  seed {seed}: {faults}", flush=True)
        rows += [
            (f"seed {seed}: runs ended consistent", weather["consistent"], f"of {weather['started']}"),
            (f"seed {seed}: duplicate model calls", weather["duplicate calls"], f"({repeats} repeats)"),
            (f"seed {seed}: wall time / calm", weather["seconds"] / calm["seconds"], "x"),
        ]
    return rows

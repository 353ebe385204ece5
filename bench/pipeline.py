"""Per-node overhead of the whole local stack against a direct call of the same model function.

Through the stack a node costs: the API's start, Step Functions' interpreter, a Lambda task
(in-process through the moto shim), the node runner's DynamoDB writes, and the status polling.
Wall time per node moves with the machine's other work (on a shared 2-core machine, by half or
more from run to run); the process's CPU time per node (every thread of the stack, the client's
polling too) moves less and says what the stack itself spends.
"""

from __future__ import annotations

import statistics
import time

from relayflow_runtime.domain.clock import parse_iso
from relayflow_runtime.providers import invoke_model
from relayflow_runtime.providers.base import InvocationContext

NODES = 10
RUNS = 5
DIRECT_CALLS = 5000
PROMPT = "the quick brown fox jumps over the lazy dog"


def _direct_per_call_ms() -> float:
    ctx = InvocationContext(execution_id="bench", node_id="n")
    started = time.perf_counter()
    for _ in range(DIRECT_CALLS):
        invoke_model("builtin", {"model": "uppercase"}, PROMPT, ctx)
    return (time.perf_counter() - started) * 1000 / DIRECT_CALLS


def _stack_per_node_ms() -> tuple[float, float, float]:
    from relayflow.demo import local_api

    with local_api() as client:
        model = client.create_model(name="upper", provider="builtin", config={"model": "uppercase"})
        workflow = client.create_workflow(name="bench")
        version = client.create_workflow_version(workflow_id=workflow.id)
        for i in range(NODES):
            client.create_workflow_node(version_id=version.id, name=f"n{i}", entity_id=model.id)
        # one warm-up run creates the state machine and warms imports
        first = client.execute_workflow(workflow_id=workflow.id, single_input=PROMPT)
        client.wait_for_execution(workflow.id, first.id, poll_interval=0.01, timeout=120)
        per_node = []
        cpu = time.process_time()
        for _ in range(RUNS):
            execution = client.execute_workflow(workflow_id=workflow.id, single_input=PROMPT)
            # Poll gently: the measurement is the server's own clock, from the run's record
            done = client.wait_for_execution(workflow.id, execution.id, poll_interval=0.25, timeout=120)
            assert done.status == "completed" and done.started_at and done.completed_at, done.error
            elapsed = parse_iso(done.completed_at) - parse_iso(done.created_at)
            per_node.append(elapsed.total_seconds() * 1000 / NODES)
        cpu_ms = (time.process_time() - cpu) * 1000 / (RUNS * NODES)
        return statistics.median(per_node), min(per_node), cpu_ms


def run() -> list[tuple[str, float | int, str]]:
    direct = _direct_per_call_ms()
    median, best, cpu = _stack_per_node_ms()
    return [
        ("direct call of the uppercase model", direct, "ms/call"),
        (f"through the local stack ({NODES}-node run, median of {RUNS})", median, "ms/node"),
        ("through the local stack, best run", best, "ms/node"),
        (f"this process's CPU per node over the {RUNS} runs", cpu, "ms/node"),
        ("overhead ratio (stack median / direct)", median / direct, "x"),
    ]

"""What a batch would do, before it starts: ``POST /workflows/{wf}/estimate``.

The request is a batch start's body. Checked as a start checks it (services/batch.submission: the
dataset version is ready, the filter compiles, the input field is known; the version can run),
then:

* **items**: the filter run over the version's items, as ``prepare_batch`` will (the same reader,
  ``dataset_service.filtered_items``), within an API answer's time (``ReadBounds``): at most
  20,000 items, 64 MiB read (the list and the items stored apart) and 10 s. Stopped by one of
  them, the items read are a sample (the answer says so: ``items_exact`` false,
  ``read_stopped_by``) and the kept share is extrapolated to the version's item count;
* **a sample** of the kept items (``sample_size``, drawn uniformly with a fixed seed, so the same
  request gives the same answer) goes through the graph as a run would take it: each node's
  template rendered with the item and its upstream outputs, in plan order, a node skipped when a
  parent stopped the item, each answer read as an attempt reads it
  (``node_execution.render_prompt`` / ``read_output`` / ``call_usage``: the same JSON parse and
  cost). A builtin
  model's answer is computed (``providers.dry_run_model``: exact tokens); another provider's is
  assumed as long as its prompt (at most its parsed config's ``output_cap``), its tokens counted
  as the rate limits count them (``rate_limits.text_tokens``);
* the sample's calls and tokens, scaled to the kept items; model cost from each model's parsed
  ``price`` (domain/costs.py); AWS cost from the price table bench/ uses too (domain/costs.py), for
  the Map's shape that ``prepare_batch`` would choose (domain/batch.py); duration at the
  parallelism.

Nothing is written: the estimate reads the version and the items only.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.batch import batch_settings
from relayflow_runtime.domain.costs import batch_aws_cost, nanos_to_dollars
from relayflow_runtime.domain.engine import NodeSpec, Plan
from relayflow_runtime.errors import referenced
from relayflow_runtime.providers import ModelError, ModelResult, Usage, dry_run_model, parsed_config
from relayflow_runtime.providers.builtin import BuiltinModelConfig
from relayflow_runtime.providers.config import or_default
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.responses import ExecutionEstimate, NodeEstimate
from relayflow_runtime.services import batch, dataset_service, executions
from relayflow_runtime.services.node_execution import (
    NodeOutput,
    call_usage,
    read_output,
    render_prompt,
    template_scope,
)
from relayflow_runtime.services.plan import build_plan
from relayflow_runtime.services.rate_limits import CHARS_PER_TOKEN, text_tokens

#: relayflow's own work per node of an item (the runner, its records), as bench/calls.py assumes.
NODE_WORK_SECONDS = 0.05
#: How long a call of a model takes when nothing says (a hosted model; bench/calls.py's slow case).
UNKNOWN_MODEL_SECONDS = 2.0
#: Preparing the item list and starting the Map, before the first item runs.
START_SECONDS = 2.0
SAMPLE_SEED = 0

StoppedBy = Literal["items", "bytes", "seconds"]


@dataclass(frozen=True)
class ReadBounds:
    """What the filter is run over at most: an API answer has ~30 s (API Gateway), and the
    sample's dry runs come after the read. Past any of them the items read are a sample."""

    items: int = 20_000
    bytes: int = 64 * 1024 * 1024
    seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic


@dataclass
class _NodeSum:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    priced: bool = True


@dataclass
class _Sample:
    """The sampled items' model calls, by node, and how many of the items would fail."""

    nodes: dict[str, _NodeSum] = field(default_factory=dict)
    failures: int = 0


def _call(node: NodeSpec, prompt: str, total: _NodeSum) -> NodeOutput | None:
    """One node's call on one sampled item, added to ``total``; its output (None: it fails)."""
    total.calls += 1
    try:
        config = parsed_config(node.model.provider, node.model.config)
        result = dry_run_model(config, prompt)
    except ModelError:
        return None
    if result is None:  # the answer needs the call: assumed as long as the prompt
        cap = config.output_cap
        text = prompt if cap is None else prompt[: cap * CHARS_PER_TOKEN]
        result = ModelResult(output=text, usage=Usage(text_tokens(prompt), text_tokens(text)))
    usage = call_usage(config, result)
    total.input_tokens += usage["input_tokens"]
    total.output_tokens += usage["output_tokens"]
    cost = usage.get("estimated_cost_nanos")
    if cost is not None:
        total.cost_nanos += cost
    elif not isinstance(config, BuiltinModelConfig):  # a builtin model without a price costs nothing
        total.priced = False
    try:
        return read_output(node, result)
    except ModelError:
        return None


def _run_item(plan: Plan, item: dict[str, Any], field: str, sample: _Sample) -> None:
    """One sampled item through the graph, as the batch runtime takes it (services/batch_items.py):
    plan order, a node once its parents are done, a failed ``stop`` node ending the item."""

    def run_input() -> str:
        return datasets.input_text(item, field)

    outputs: dict[str, NodeOutput] = {}  # in plan order, as template_scope needs
    done: set[str] = set()
    failed = False
    for node in plan.nodes:
        if not all(parent in done for parent in node.parents):
            continue
        try:
            prompt = render_prompt(node, template_scope(node, outputs, run_input, item))
        except (ModelError, datasets.InputFieldError):
            output = None
        else:
            output = _call(node, prompt, sample.nodes[node.id])
        if output is not None:
            outputs[node.id] = output
            done.add(node.id)
        elif node.on_failure == "continue":
            done.add(node.id)
        else:
            failed = True
    sample.failures += failed


@dataclass
class _Read:
    """What the filter kept of the items read: ``kept`` (extrapolated to the version when the read
    stopped early), ``read``, what stopped it (None: every item was read), a uniform sample of the
    kept items."""

    kept: int
    read: int
    stopped_by: StoppedBy | None
    sample: list[dict[str, Any]]


def _kept_items(tenant: str, body: api.EstimateBatch, bounds: ReadBounds) -> _Read:
    config = body.batch_config
    source = dataset_service.item_source(tenant, config.dataset_id, config.dataset_version_id)
    chooser = random.Random(SAMPLE_SEED)
    sample: list[dict[str, Any]] = []
    kept = read = 0
    stopped_by: StoppedBy | None = None
    deadline = bounds.clock() + bounds.seconds
    for found in dataset_service.filtered_items(source.key, config.filter_query):
        read += 1
        if found.kept:  # a filter over its work budget (found.refused) would refuse the run
            kept += 1
            # Reservoir sampling: every kept item read has the same chance to be in the sample.
            if len(sample) < body.sample_size:
                sample.append(found.item)
            else:
                slot = chooser.randrange(kept)
                if slot < body.sample_size:
                    sample[slot] = found.item
        stopped_by = _stopped_by(read, found.read_bytes, bounds.clock() >= deadline, bounds)
        if stopped_by:
            break
    if stopped_by and read >= source.count:
        stopped_by = None  # the last item was read as a bound was reached
    if stopped_by and read:
        kept = round(kept * source.count / read)
    return _Read(kept, read, stopped_by, sample)


def _item_seconds(plan: Plan) -> float:
    """One item's time: the longest path of its graph, each node its model's time and relayflow's
    own work (a builtin ``sleep`` its seconds, other builtin models none, a hosted model
    ``UNKNOWN_MODEL_SECONDS``)."""
    ends: dict[str, float] = {}
    for node in plan.nodes:
        try:
            config = parsed_config(node.model.provider, node.model.config)
        except ModelError:  # a config that no longer validates: its calls fail at once
            config = None
        if isinstance(config, BuiltinModelConfig):
            model = float(or_default(config.seconds, 1)) if config.model == "sleep" else 0.0
        else:
            model = UNKNOWN_MODEL_SECONDS if config is not None else 0.0
        ends[node.id] = max((ends[p] for p in node.parents), default=0.0) + model + NODE_WORK_SECONDS
    return max(ends.values(), default=0.0)


def _stopped_by(read: int, read_bytes: int, late: bool, bounds: ReadBounds) -> StoppedBy | None:
    if read >= bounds.items:
        return "items"
    if read_bytes >= bounds.bytes:
        return "bytes"
    return "seconds" if late else None


def estimate_batch(
    tenant: str, workflow_id: str, body: api.EstimateBatch, bounds: ReadBounds | None = None
) -> ExecutionEstimate:
    version_id = executions.resolve_version(tenant, workflow_id, body.version_id)
    with referenced("version_id") if body.version_id else contextlib.nullcontext():
        plan = build_plan(tenant, workflow_id, version_id, mode="batch", run_timeout=body.timeout)
    start = api.Execute(
        input_mode="batch", batch_config=body.batch_config, version_id=body.version_id, timeout=body.timeout
    )
    batch.submission(tenant, start)  # what a start refuses, the estimate refuses
    config = body.batch_config
    found = _kept_items(tenant, body, bounds or ReadBounds())
    kept, items = found.kept, found.sample

    sample = _Sample(nodes={node.id: _NodeSum() for node in plan.nodes})
    for item in items:
        _run_item(plan, item, config.input_field, sample)
    scale = kept / len(items) if items else 0.0

    def scaled(amount: int) -> int:
        return round(amount * scale)

    nodes = [
        NodeEstimate(
            node_id=node.id,
            name=node.name,
            provider=node.model.provider,
            model_calls=scaled(total.calls),
            input_tokens=scaled(total.input_tokens),
            output_tokens=scaled(total.output_tokens),
            model_cost=nanos_to_dollars(scaled(total.cost_nanos)) if total.priced else None,
            output_tokens_from="dry_run" if node.model.provider == "builtin" else "prompt_length",
        )
        for node in plan.nodes
        for total in (sample.nodes[node.id],)
    ]
    item_seconds = _item_seconds(plan)
    settings = batch_settings(plan, config.parallelism, kept, "")
    waves = math.ceil(kept / config.parallelism)
    priced = all(n.model_cost is not None for n in nodes if n.model_calls)
    return ExecutionEstimate(
        workflow_id=workflow_id,
        version_id=version_id,
        dataset_id=config.dataset_id,
        dataset_version_id=config.dataset_version_id,
        parallelism=config.parallelism,
        items=kept,
        items_exact=found.stopped_by is None,
        items_read=found.read,
        read_stopped_by=found.stopped_by,
        sample_size=len(items),
        sample_failures=sample.failures,
        model_calls=sum(n.model_calls for n in nodes),
        input_tokens=sum(n.input_tokens for n in nodes),
        output_tokens=sum(n.output_tokens for n in nodes),
        model_cost=sum(n.model_cost or 0.0 for n in nodes) if priced else None,
        aws_cost=batch_aws_cost(
            kept,
            items_per_child=settings.items_per_child,
            express=settings.express,
            item_seconds=item_seconds,
        ),
        duration_seconds=round(START_SECONDS + waves * item_seconds, 1) if kept else 0.0,
        nodes=nodes,
    )

"""What a batch would do, before it starts: ``POST /workflows/{wf}/estimate``.

The request is a batch start's body. Checked as a start checks it (services/batch.submission: the
dataset version is ready, the filter compiles, the input field is known; the version can run),
then:

* **items**: the filter run over the version's items, as ``prepare_batch`` will (at most
  ``READ_ITEMS`` of them; past that the kept share is extrapolated to the version's item count);
* **a sample** of the kept items (``sample_size``, drawn uniformly with a fixed seed, so the same
  request gives the same answer) goes through the graph as a run would take it: each node's
  template rendered with the item and its upstream outputs, in plan order, a node skipped when a
  parent stopped the item. A builtin model's answer is computed (``providers.dry_run_model``:
  exact tokens); another provider's is assumed as long as its prompt (at most ``max_tokens``), its
  tokens counted as the rate limits count them (characters / 4);
* the sample's calls and tokens, scaled to the kept items; model cost from each model's ``price``
  (domain/costs.py); AWS cost from the price table bench/ uses too (domain/costs.py), for the Map's
  shape that ``prepare_batch`` would choose (domain/batch.py); duration at the parallelism.

Nothing is written: the estimate reads the version and the items only.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.batch import batch_settings
from relayflow_runtime.domain.costs import batch_aws_cost, estimate_cost_nanos, nanos_to_dollars
from relayflow_runtime.domain.engine import NodeSpec, Plan
from relayflow_runtime.domain.templating import TemplateError, render
from relayflow_runtime.domain.text import storable
from relayflow_runtime.errors import referenced
from relayflow_runtime.providers import ModelError, dry_run_model
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.responses import ExecutionEstimate, NodeEstimate
from relayflow_runtime.services import batch, dataset_service, executions
from relayflow_runtime.services.node_execution import NodeOutput, template_scope
from relayflow_runtime.services.plan import build_plan
from relayflow_runtime.services.rate_limits import CHARS_PER_TOKEN

#: Items of the version the filter is run over at most (an API answer has ~30 s).
READ_ITEMS = 20_000
#: relayflow's own work per node of an item (the runner, its records), as bench/calls.py assumes.
NODE_WORK_SECONDS = 0.05
#: How long a call of a model takes when nothing says (a hosted model; bench/calls.py's slow case).
UNKNOWN_MODEL_SECONDS = 2.0
#: Preparing the item list and starting the Map, before the first item runs.
START_SECONDS = 2.0
SAMPLE_SEED = 0


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


def _tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _price(node: NodeSpec) -> Mapping[str, Any] | None:
    """The model's price; a builtin model without one costs nothing; None: not known."""
    price = node.model.config.get("price")
    if price:
        return dict(price)
    return {"input_per_1k": 0} if node.model.provider == "builtin" else None


def _output_cap(node: NodeSpec) -> int | None:
    config = node.model.config
    cap = config.get("max_tokens") or (config.get("inference") or {}).get("maxTokens")
    return int(cap) if isinstance(cap, int) else None


def _call(node: NodeSpec, prompt: str, total: _NodeSum) -> NodeOutput | None:
    """One node's call on one sampled item, added to ``total``; its output (None: it fails)."""
    total.calls += 1
    try:
        result = dry_run_model(node.model.provider, node.model.config, prompt)
    except ModelError:
        return None
    if result is None:  # the answer needs the call: assumed as long as the prompt
        cap = _output_cap(node)
        text = prompt if cap is None else prompt[: cap * CHARS_PER_TOKEN]
        input_tokens, output_tokens = _tokens(prompt), _tokens(text)
    else:
        text = storable(result.output)
        input_tokens, output_tokens = result.usage.input_tokens, result.usage.output_tokens
    total.input_tokens += input_tokens
    total.output_tokens += output_tokens
    cost = estimate_cost_nanos(input_tokens, output_tokens, _price(node))
    if cost is None:
        total.priced = False
    else:
        total.cost_nanos += cost
    parsed: Any = None
    if node.output_format == "json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return None
    return NodeOutput(text=text, parsed=parsed)


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
        total = sample.nodes[node.id]
        try:
            prompt = storable(render(node.template, template_scope(node, outputs, run_input, item)))
        except (TemplateError, datasets.InputFieldError):
            output = None
        else:
            output = _call(node, prompt, total)
        if output is not None:
            outputs[node.id] = output
            done.add(node.id)
        elif node.on_failure == "continue":
            done.add(node.id)
        else:
            failed = True
    sample.failures += failed


def _kept_items(
    tenant: str, body: api.EstimateBatch, version: dict[str, Any]
) -> tuple[int, int, bool, list[dict[str, Any]]]:
    """(items kept, items read, whether that count is exact, a uniform sample of the kept items)."""
    config = body.batch_config
    source = version.get("items_key") or dataset_service.items_key(
        tenant, config.dataset_id, config.dataset_version_id
    )
    matches = datasets.compile_filter(config.filter_query)
    total = int(version.get("item_count") or 0)
    chooser = random.Random(SAMPLE_SEED)
    sample: list[dict[str, Any]] = []
    kept = read = 0
    entries: Iterator[tuple[int, int, dict[str, Any]]] = dataset_service.iter_entries(source)
    for _, _, entry in entries:
        if read == READ_ITEMS:
            break
        read += 1
        item = dataset_service.entry_item(entry)
        try:
            keep = matches(item)
        except datasets.FilterError:  # over its work budget: the run would refuse it
            keep = False
        if not keep:
            continue
        kept += 1
        # Reservoir sampling: every kept item read has the same chance to be in the sample.
        if len(sample) < body.sample_size:
            sample.append(item)
        else:
            slot = chooser.randrange(kept)
            if slot < body.sample_size:
                sample[slot] = item
    exact = read >= total
    if not exact and read:
        kept = round(kept * total / read)
    return kept, read, exact, sample


def _item_seconds(plan: Plan) -> float:
    """One item's time: the longest path of its graph, each node its model's time and relayflow's
    own work (a builtin ``sleep`` its seconds, other builtin models none, a hosted model
    ``UNKNOWN_MODEL_SECONDS``)."""
    ends: dict[str, float] = {}
    for node in plan.nodes:
        config = node.model.config
        if node.model.provider == "builtin":
            model = float(config.get("seconds", 1)) if config.get("model") == "sleep" else 0.0
        else:
            model = UNKNOWN_MODEL_SECONDS
        ends[node.id] = max((ends[p] for p in node.parents), default=0.0) + model + NODE_WORK_SECONDS
    return max(ends.values(), default=0.0)


def estimate_batch(tenant: str, workflow_id: str, body: api.EstimateBatch) -> ExecutionEstimate:
    version_id = executions.resolve_version(tenant, workflow_id, body.version_id)
    with referenced("version_id") if body.version_id else contextlib.nullcontext():
        plan_record = build_plan(tenant, workflow_id, version_id, mode="batch", timeout=body.timeout)
    start = api.Execute(
        input_mode="batch", batch_config=body.batch_config, version_id=body.version_id, timeout=body.timeout
    )
    batch.submission(tenant, start)  # what a start refuses, the estimate refuses
    config = body.batch_config
    version = dataset_service.get_version_record(tenant, config.dataset_id, config.dataset_version_id)
    plan = Plan.model_validate(plan_record)
    kept, read, exact, items = _kept_items(tenant, body, version)

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
        items_exact=exact,
        items_read=read,
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

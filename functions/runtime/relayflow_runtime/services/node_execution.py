"""One attempt of one node: render its template, call its model within its timeout, read the output.

Shared by the run machine's ``node`` action (single runs) and the batch runtime (every node of
every item); neither records anything here — recording differs (a node record per attempt for a
single run, one outcome per item for a batch), the attempt itself does not.

Errors leave as the classes whose names the state machines' Catch match: ``TransientModelError``
and ``NodeTimeout`` are retried by the version's policy, ``PermanentModelError`` is not. Each
carries ``prompt`` (the rendered prompt, or None when rendering itself failed), so a failed
attempt's record shows what was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from relayflow_runtime.domain.costs import estimate_cost_nanos
from relayflow_runtime.domain.engine import NodeSpec
from relayflow_runtime.domain.templating import TemplateError, render
from relayflow_runtime.domain.text import storable, storable_value
from relayflow_runtime.providers import configured_model
from relayflow_runtime.providers.base import (
    ConfiguredModel,
    InvocationContext,
    ModelError,
    ModelResult,
    PermanentModelError,
    TransientModelError,
)
from relayflow_runtime.providers.config import ModelConfig
from relayflow_runtime.services import rate_limits


class NodeTimeout(TransientModelError):
    """The node's attempt ran past its timeout (retried like any transient error)."""


def retried(error: Exception) -> bool:
    """Whether the version's retry policy applies to a failed attempt: the one list of which
    errors retry. Step Functions matches error names, not classes: the run machine's RunNode Catch
    that leads to its retry loop names ``TransientModelError`` and each of its subclasses
    (tests/unit/test_machine_contract.py holds the two to each other)."""
    return isinstance(error, TransientModelError)


class ExecutionNotRunning(Exception):
    """The execution was cancelled or has ended: this node must not run or record."""


@dataclass(frozen=True)
class NodeOutput:
    """What a finished node hands its children: the text the model produced and, for a node
    declared ``output_format: "json"``, the parsed value."""

    text: str
    parsed: Any = None

    @property
    def value(self) -> Any:
        """What ``{{nodes.NAME}}`` reads: the parsed value of a JSON node, else the text."""
        return self.text if self.parsed is None else self.parsed


@dataclass(frozen=True)
class AttemptOutcome:
    output: str
    parsed_output: Any
    prompt: str
    usage: dict[str, int]
    duration_ms: int


def _with_prompt(error: ModelError, prompt: str | None) -> ModelError:
    error.prompt = prompt  # type: ignore[attr-defined]
    return error


def node_input(node: NodeSpec, outputs: Mapping[str, NodeOutput], run_input: Callable[[], str]) -> str:
    """``{{input}}``: the parents' outputs (joined by a blank line when several); when no parent
    produced one (a root, or parents that failed with on_failure "continue"), the output of the
    latest upstream node that produced one; else the execution's input."""
    available = [outputs[p].text for p in node.parents if p in outputs]
    if available:
        return "\n\n".join(available)
    upstream = [node_id for node_id in node.upstream.values() if node_id in outputs]
    if upstream:
        # node ids are not ordered; the outputs mapping is filled in plan (topological) order
        latest = [node_id for node_id in outputs if node_id in upstream][-1]
        return outputs[latest].text
    return run_input()


class _UpstreamValues(Mapping[str, Any]):
    """``nodes``: upstream outputs by node name, each read only when the template uses it."""

    def __init__(self, upstream: Mapping[str, str], outputs: Mapping[str, NodeOutput]) -> None:
        self._ids = {name: node_id for name, node_id in upstream.items() if node_id in outputs}
        self._outputs = outputs

    def __getitem__(self, name: str) -> Any:
        return self._outputs[self._ids[name]].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def template_scope(
    node: NodeSpec,
    outputs: Mapping[str, NodeOutput],
    run_input: Callable[[], str],
    item: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables a node's template sees: ``input``, ``nodes.NAME`` (upstream only) and, in a
    batch, ``item``. ``outputs`` must be in plan order (node id -> output)."""
    scope: dict[str, Any] = {
        "input": node_input(node, outputs, run_input),
        "nodes": _UpstreamValues(node.upstream, outputs),
    }
    if item is not None:
        scope["item"] = item
    return scope


#: Threads that make model calls, kept for the warm function's next attempt: starting a thread per
#: call was the largest part of a short node's overhead once the machine is busy (bench/batch.py).
#: Above what one child can run at once (batch_items: 128 items, 256 nodes beside them). A call
#: that times out keeps its thread until it returns — the engine never waits for it — so this also
#: bounds what hung calls can hold; a call queued behind them times out like any slow call.
MODEL_CALL_THREADS = 512

_calls = ThreadPoolExecutor(max_workers=MODEL_CALL_THREADS, thread_name_prefix="model-call")


def _call(
    node: NodeSpec, model: ConfiguredModel, prompt: str, context: InvocationContext, timeout: float
) -> ModelResult:
    """``model`` (``node``'s, configured) called with ``prompt`` on the kept threads, waited for at
    most ``timeout`` seconds."""
    future = _calls.submit(model.invoke, prompt, context)
    try:
        return future.result(timeout=max(timeout, 0.001))
    except FutureTimeout:
        future.cancel()  # never started (every thread busy): it never will
        raise NodeTimeout(f"node '{node.name}' timed out after {node.node_timeout} seconds") from None


def render_prompt(node: NodeSpec, scope: Mapping[str, Any]) -> str:
    """The node's template rendered with ``scope``, as text the store can take; a template that
    does not render is a ``PermanentModelError`` (prompt None)."""
    try:
        return storable(render(node.template, scope))
    except TemplateError as exc:
        raise _with_prompt(PermanentModelError(f"template of node '{node.name}': {exc}"), None) from None


def read_output(node: NodeSpec, result: ModelResult) -> NodeOutput:
    """A model's answer as the node keeps it: its text (storable), parsed for a node declared
    ``output_format: "json"`` (else a ``PermanentModelError``)."""
    # A model's text may hold lone surrogates (an answer cut inside a pair, a "\ud800" escape in
    # JSON): repaired here, so every record and every child reads text that can be stored.
    output = storable(result.output)
    parsed: Any = None
    if node.output_format == "json":
        try:
            parsed = storable_value(json.loads(output))
        except json.JSONDecodeError as exc:
            raise PermanentModelError(
                f"node '{node.name}' declared JSON output but returned: {exc}"
            ) from None
    return NodeOutput(text=output, parsed=parsed)


def call_usage(config: ModelConfig, result: ModelResult) -> dict[str, int]:
    """A call's usage as records keep it: its tokens, and its cost in nano-dollars where the
    model's parsed config has a price."""
    usage = {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens}
    cost = estimate_cost_nanos(result.usage.input_tokens, result.usage.output_tokens, config.declared_price)
    if cost is not None:
        usage["estimated_cost_nanos"] = cost
    return usage


def run_attempt(
    node: NodeSpec, scope: Mapping[str, Any], context: InvocationContext, *, tenant: str | None = None
) -> AttemptOutcome:
    """Render, call, parse. Raises ``NodeTimeout`` / ``TransientModelError`` / ``PermanentModelError``
    (with ``.prompt``); an adapter's unexpected exception is a permanent failure of the node.

    A model with a ``rate_limit`` in its config first takes a slot of the tenant's window
    (services/rate_limits.py), waiting at most half the node's timeout; the call then has what is
    left of the timeout, so waiting and calling together never pass the node's limit. Still no slot:
    a transient error, retried by the version's policy. The model is called configured
    (``providers.configured_model``: its config parsed once per plan's model, bound to its
    provider's typed call), never with the stored mapping."""
    started = time.monotonic()
    prompt = render_prompt(node, scope)
    try:
        model = configured_model(node.model.provider, node.model.config)
        config = model.config
        permit = rate_limits.acquire(
            tenant or "",
            node.model.id,
            config.declared_rate_limit,
            rate_limits.estimate_tokens(prompt, config),
            max_wait_seconds=node.node_timeout / 2,
        )
        result = _call(node, model, prompt, context, node.node_timeout - permit.waited_seconds)
        permit.settle(result.usage.input_tokens + result.usage.output_tokens)
        answer = read_output(node, result)
    except NodeTimeout as exc:
        raise _with_prompt(exc, prompt) from None
    except ModelError as exc:
        error_class = TransientModelError if exc.transient else PermanentModelError
        raise _with_prompt(error_class(str(exc)), prompt) from None
    except Exception as exc:  # an adapter bug fails this node, not the run
        raise _with_prompt(PermanentModelError(f"{type(exc).__name__}: {exc}"), prompt) from None
    return AttemptOutcome(
        output=answer.text,
        parsed_output=answer.parsed,
        prompt=prompt,
        usage=call_usage(config, result),
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def error_message(error: Mapping[str, Any] | None) -> tuple[str, str]:
    """(error name, readable message) from a Catch's ``ResultPath`` value."""
    if not error:
        return "Error", "unknown error"
    name = str(error.get("Error") or "Error")
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        message = parsed.get("errorMessage") or cause
    except (json.JSONDecodeError, AttributeError, TypeError):
        message = cause
    return name, str(message or name)

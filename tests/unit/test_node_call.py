"""A node attempt's model call (services/node_execution._call): it runs on a kept pool of threads,
within the node's timeout, and the engine never waits for a call that has timed out."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from relayflow_runtime.domain.engine import ModelRef, NodeSpec
from relayflow_runtime.providers import configured_model
from relayflow_runtime.providers.base import InvocationContext, ModelResult
from relayflow_runtime.providers.config import ModelConfig
from relayflow_runtime.services import node_execution

NODE = NodeSpec(
    id="n1",
    name="slow",
    idx=0,
    template="{{input}}",
    node_timeout=1,
    model=ModelRef(id="m1", provider="builtin", config={"model": "echo"}),
)
CONTEXT = InvocationContext(execution_id="e1", node_id="n1", attempt=1, time_budget=1.0)


ECHO = configured_model(NODE.model.provider, NODE.model.config)


@dataclass
class BlockingModel:
    """A configured model whose calls block until released."""

    release: threading.Event = field(default_factory=threading.Event)
    started: list[str] = field(default_factory=list)

    @property
    def config(self) -> ModelConfig:
        return ECHO.config

    def invoke(self, prompt: str, ctx: InvocationContext) -> ModelResult:
        self.started.append(prompt)
        self.release.wait(10)
        return ModelResult(output=prompt.upper())


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A one-thread pool in place of the module's, and a model whose calls block until released."""
    pool = ThreadPoolExecutor(max_workers=1)
    model = BlockingModel()
    monkeypatch.setattr(node_execution, "_calls", pool)
    yield model
    model.release.set()
    pool.shutdown(wait=True)


def test_a_call_that_returns_in_time_gives_its_result(calls: BlockingModel) -> None:
    calls.release.set()
    assert node_execution._call(NODE, calls, "hello", CONTEXT, 1.0).output == "HELLO"


def test_a_hung_call_times_out_without_the_engine_waiting_for_it(calls: BlockingModel) -> None:
    began = time.monotonic()
    with pytest.raises(node_execution.NodeTimeout, match="timed out after 1 seconds"):
        node_execution._call(NODE, calls, "first", CONTEXT, 0.2)
    assert time.monotonic() - began < 5  # the call itself is still blocked (up to 10 s)
    assert calls.started == ["first"]


def test_a_call_queued_behind_hung_calls_times_out_and_never_runs(calls: BlockingModel) -> None:
    with pytest.raises(node_execution.NodeTimeout):
        node_execution._call(NODE, calls, "first", CONTEXT, 0.2)  # holds the pool's only thread
    with pytest.raises(node_execution.NodeTimeout):
        node_execution._call(NODE, calls, "second", CONTEXT, 0.2)  # waits in the queue, then gives up
    calls.release.set()
    time.sleep(0.2)
    assert calls.started == ["first"]  # the queued call was cancelled, not run late


def test_threads_are_kept_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's pool reuses its threads: a short call does not start a thread each time."""
    node_execution._call(NODE, ECHO, "warm", CONTEXT, 1.0)
    starts: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        starts.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    for i in range(20):
        assert node_execution._call(NODE, ECHO, f"call {i}", CONTEXT, 1.0).output == f"call {i}"
    assert starts == []

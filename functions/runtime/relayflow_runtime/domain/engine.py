"""The engine's run state, written down once.

The state machines in ``statemachine/`` interpret an execution's **plan snapshot** (``Plan``, kept
in S3 with the execution); what travels between their states and the node runner is small and
typed here: the run's ids (``RunRef``), one node's scheduling facts (``NodeTask``), the version's
retry policy (``RetryPolicy``) and what ``start`` hands the run machine (``RunStart``); every
action's event and answer is typed here or in domain/batch.py, and tests/unit/test_machine_contract.py
checks the definitions against them (what each Task sends, each JSONPath a state reads). Nothing in
here touches AWS: these are the shapes and the arithmetic (retry delays, worst-case item time)
that the runner, the batch runtime and the tests share. docs/engine.md draws the machines.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field

from relayflow_runtime.domain.templating import TemplateError, parse_template

#: A run without a timeout of its own still races a clock (Standard executions live at most a year).
NO_TIMEOUT_SECONDS = 30_000_000
#: Step Functions' TimeoutSecondsPath backs up the runner's own node timeout by this much, so the
#: recorded error names the node's limit rather than a task timeout.
TIMEOUT_BACKSTOP_SECONDS = 2
#: A gate that has timed out this many times with its parents still not done fails its node.
MAX_GATE_CHECKS = 3
#: Express child executions run at most 5 minutes; a batch keeps this much of it as a margin: the
#: child's own margin (domain/batch.py CHILD_MARGIN_SECONDS, 15 s) plus EXPRESS_RESERVE_SECONDS.
EXPRESS_LIMIT_SECONDS = 300
EXPRESS_MARGIN_SECONDS = 60
#: What an Express child keeps after its ``run_items`` task's timeout: time for ``items_failed``
#: (and both tasks' short Retry), so a timed-out child still records its items' error.
EXPRESS_RESERVE_SECONDS = 45
#: A child batch of items runs in one node-runner invocation (Lambda: at most 15 minutes).
LAMBDA_LIMIT_SECONDS = 900


class _Shape(BaseModel):
    # Plans written by older versions carry fields this one no longer reads (e.g. "levels").
    model_config = ConfigDict(extra="ignore", frozen=True)


class RunRef(_Shape):
    """Which run: the execution input of both machines is ``{"run": RunRef}``."""

    tenant: str
    workflow_id: str
    execution_id: str


class ModelRef(_Shape):
    id: str
    provider: str
    config: dict[str, Any] = Field(default_factory=dict)


class NodeSpec(_Shape):
    """One node as the snapshot keeps it: everything its attempts need. ``node_timeout``: the most
    one attempt may take (the node's ``timeout``, else its version's ``node_timeout``); plans
    written before it had that name read ``timeout``."""

    id: str
    name: str
    idx: int
    template: str
    node_timeout: int = Field(validation_alias=AliasChoices("node_timeout", "timeout"))
    on_failure: Literal["stop", "continue"] = "stop"
    output_format: str | None = None
    #: Nodes whose end releases this one (without edges: the node created before it).
    parents: list[str] = Field(default_factory=list)
    #: Every ancestor, by name: what ``{{nodes.NAME}}`` may read.
    upstream: dict[str, str] = Field(default_factory=dict)
    model: ModelRef

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timeout(self) -> int:
        """``node_timeout`` under its former name, still written: a node runner of the previous
        deploy (a deploy updates the API and the runner one after the other) reads it from the
        plan an updated API wrote. To be removed once no such runner can be running."""
        return self.node_timeout


class Plan(_Shape):
    """The validated snapshot of a workflow version an execution runs (nodes in topological order).
    ``run_timeout``: the run's own ``timeout`` as asked (None: none); plans written before it had
    that name read ``timeout``."""

    workflow_id: str
    version_id: str
    mode: Literal["single", "batch"]
    run_timeout: int | None = Field(None, validation_alias=AliasChoices("run_timeout", "timeout"))
    config: dict[str, Any]
    nodes: list[NodeSpec]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timeout(self) -> int | None:
        """``run_timeout`` under its former name, still written for the previous deploy's runner
        (see ``NodeSpec.timeout``)."""
        return self.run_timeout

    def waited_for(self) -> set[str]:
        """The ids of the nodes some node waits for (its parents)."""
        return {parent for node in self.nodes for parent in node.parents}

    def ungated_roots(self) -> list[NodeSpec]:
        """The nodes the run machine's roots' Map runs (see :func:`runs_ungated`)."""
        waited_for = self.waited_for()
        return [n for n in self.nodes if runs_ungated(n.id, bool(n.parents), waited_for)]

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def children(self, node_id: str) -> list[NodeSpec]:
        return [n for n in self.nodes if node_id in n.parents]

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy.from_config(self.config)


class RetryPolicy(_Shape):
    """The version's retry policy, the one definition both engines read: the run machine (its
    AttemptsLeft / Backoff / RetryWait states, handed this by ``start``) and the batch engine
    (services/batch_items.py). After ``retried`` retries of a node, another attempt follows while
    :meth:`retries_left`; its wait is drawn in whole seconds from 0 to :meth:`wait_bound`, both
    included (full jitter: the machine's ``States.MathRandom``). Which errors retry:
    services/node_execution.py ``retried``."""

    max_retries: int
    #: ``delays[i]`` bounds the wait before retry ``i + 1``.
    delays: list[int]

    def retries_left(self, retried: int) -> bool:
        return retried < self.max_retries

    def wait_bound(self, retried: int) -> int:
        return self.delays[retried]

    def draw_wait(self, retried: int, rng: random.Random) -> int:
        return rng.randint(0, self.wait_bound(retried))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RetryPolicy:
        max_retries = int(config.get("max_retries") or 0)
        return cls(
            max_retries=max_retries,
            delays=retry_delays(
                max_retries,
                int(config.get("retry_delay_seconds") or 1),
                int(config.get("max_retry_delay_seconds") or 60),
            ),
        )


def retry_delays(max_retries: int, base_seconds: int, cap_seconds: int) -> list[int]:
    """Capped doubling: ``min(cap, base * 2**i)``, at least 1 s (the state machine draws a uniform
    wait below each: full jitter)."""
    return [max(1, min(cap_seconds, base_seconds * 2**i)) for i in range(max_retries)]


class GateKey(_Shape):
    """The node record the run machine's gate writes its task token on (DynamoDB key)."""

    pk: str
    sk: str


class NodeTask(_Shape):
    """An item of the run machine's node Maps: only what Step Functions itself needs.
    ``parents``: how many parents the node waits for (a root: 0, it has no gate); ``gate``:
    the node record its gate (AwaitParents) writes its token on, while fewer than ``parents`` are
    done; ``gate_timeout``: how long the gate stays parked before it checks again (see
    :func:`gate_timeouts`), at most ``max_gate_checks`` times."""

    id: str
    idx: int
    task_timeout: int
    parents: int = 0
    gate: GateKey | None = None
    gate_timeout: int = NO_TIMEOUT_SECONDS
    max_gate_checks: int = MAX_GATE_CHECKS

    @classmethod
    def of(
        cls,
        node: NodeSpec,
        gate_timeout: int = NO_TIMEOUT_SECONDS,
        *,
        gate: GateKey | None = None,
        max_gate_checks: int = MAX_GATE_CHECKS,
    ) -> NodeTask:
        return cls(
            id=node.id,
            idx=node.idx,
            task_timeout=node.node_timeout + TIMEOUT_BACKSTOP_SECONDS,
            parents=len(node.parents),
            gate=gate,
            gate_timeout=gate_timeout,
            max_gate_checks=max_gate_checks,
        )


#: The packed outputs (JSON bytes) a releasing parent hands its child at most: well under Step
#: Functions' 256 KB state payload, beside the rest of the node's state. A single run keeps values
#: above 4 KB in S3 (a pointer travels), so a node of up to a few parents always fits; past it the
#: child reads its parents' records instead.
CARRY_LIMIT_BYTES = 32 * 1024
#: What the parents of a node of several (a fan-in) write onto its record together, at most, to be
#: carried: each byte on the waiting node's record is billed again in every later write to it (the
#: other parents' updates, the gate's, the attempt's begin), a write unit per KB, while the Query
#: it saves is half a read unit (a fifth of a write unit's price). Within one KB the record mostly
#: stays in its write unit (measured: 10.3 write units a node either way); 1.5 KB outputs carried
#: cost 32.7 write units a node against 29.0 queried (bench/calls.py).
FAN_IN_CARRY_BYTES = 1024


class CarriedOutput(_Shape):
    """A completed parent's output as its record keeps it: packed (inline, or an S3 reference)."""

    output: Any = None
    parsed_output: Any = None


class Carried(_Shape):
    """What the parent that releases a node's gate hands it (its SendTaskSuccess output, which the
    gate puts at ``$.carried`` for RunNode): the packed outputs of the node's parents, by id; empty
    when they did not fit CARRY_LIMIT_BYTES or another writer released the gate."""

    outputs: dict[str, CarriedOutput] = Field(default_factory=dict)


def carried_suffices(node: NodeSpec, carried: Carried | None) -> bool:
    """Whether the outputs carried to a node are all its attempt reads, so it needs no Query of its
    run's node records: every parent's output is there (a parent that failed with on_failure
    "continue" carries none, and ``{{input}}`` then falls back to other upstream nodes), and
    :func:`reads_only_parents`."""
    if carried is None or not node.parents or set(carried.outputs) != set(node.parents):
        return False
    return reads_only_parents(node)


def reads_only_parents(node: NodeSpec) -> bool:
    """Whether the node's template names no upstream node but its parents (``{{nodes.NAME}}`` of
    an ancestor, or ``nodes`` whole, reads outputs nobody carries): else carrying its parents'
    outputs to it is of no use, and they are not carried."""
    return _reads_only(node.template, frozenset(n for n, i in node.upstream.items() if i in node.parents))


@lru_cache(maxsize=1024)
def _reads_only(template: str, parent_names: frozenset[str]) -> bool:
    try:
        variables = parse_template(template).variables
    except TemplateError:
        return False  # the attempt fails on it anyway; the Query path says how
    for path in variables:
        parts = path.split(".")
        if parts[0] == "nodes" and (len(parts) == 1 or parts[1] not in parent_names):
            return False
    return True


class RunInput(_Shape):
    """The input of the run and batch machines (their StartExecution)."""

    run: RunRef


class RunClock(_Shape):
    """A machine's answer that sets its run's clock. ``run_timeout``: the seconds the machine's
    RunClock races the run (the run's ``timeout``, at most what is left of the longest a run may
    take since it was created: services/retention.py). An execution on the machine's previous
    definition (running executions keep theirs across a deploy) sends and reads it as
    ``timeout``."""

    run_timeout: int = Field(validation_alias=AliasChoices("run_timeout", "timeout"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timeout(self) -> int:
        """``run_timeout`` under its former name, still answered for executions on the previous
        definitions. To be removed once no such execution can be running."""
        return self.run_timeout


def runs_ungated(node_id: str, has_parents: bool, waited_for: Collection[str]) -> bool:
    """Whether a node runs in the run machine's roots' Map, with no gate call: a root some node
    waits for (``waited_for``: those ids). See :class:`RunStart` for why a childless root is gated."""
    return not has_parents and node_id in waited_for


class RunStart(RunClock):
    """What ``start`` returns to the run machine: its two Maps' items, each list in plan order.
    ``roots``: the roots that have children, which run at once (no gate call); ``gated``: every
    other node, each of which first waits at its gate for its own parents (a root without children
    too: its gate write fails at once). The machine's branch of ``gated`` ends the run, so it must
    end last: each of ``roots`` has a child in it, which starts only after its parents end, while a
    childless root would end nothing after it (so it stays gated, and ``gated`` is never empty). A
    child whose gate gives up does not wait for its parents: if a root of ``roots`` is then still
    open, the run stops (services/run_machine.py ``node_failed``), whatever the child's on_failure."""

    run: RunRef
    roots: list[NodeTask]
    gated: list[NodeTask]
    retry: RetryPolicy

    @classmethod
    def of(
        cls,
        run: RunRef,
        nodes: list[NodeTask],
        retry: RetryPolicy,
        run_timeout: int,
        parents: Collection[str],
    ) -> RunStart:
        """``nodes`` (in plan order) split into the roots with children (``parents``: the ids some
        node waits for) and the rest."""
        ungated = {n.id for n in nodes if runs_ungated(n.id, bool(n.parents), parents)}
        return cls(
            run=run,
            roots=[n for n in nodes if n.id in ungated],
            gated=[n for n in nodes if n.id not in ungated],
            retry=retry,
            run_timeout=run_timeout,
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def nodes(self) -> list[NodeTask]:
        """Every node in plan order, for an execution on the previous definition, whose one Map
        gated every node (a root's gate write failed at once). Only such an execution's LoadPlan
        reads it (one past LoadPlan holds its own copy), and a deploy updates the runner minutes
        before the machine: to be removed in the release after this one."""
        return sorted([*self.roots, *self.gated], key=lambda node: node.idx)


# ---- what the machines' Tasks send the node runner (their Parameters) -----------------------------
class RunEvent(_Shape):
    """``start``, ``complete`` (both machines) and the batch's ``prepare_batch``: the run alone."""

    run: RunRef


class GateEvent(RunEvent):
    """``gate``: the node, its task token, and how often its gate timed out already."""

    node: NodeTask
    token: str
    checks: int = 0


class NodeEvent(RunEvent):
    """``node``: one attempt (``attempt`` counts retries: 0 for the first). ``retry`` travels with
    the node through the machine's retry loop; the runner does not read it."""

    node: NodeTask
    attempt: int = 0
    retry: RetryPolicy | None = None
    #: What the releasing parent handed the node's gate (absent: an execution of the previous
    #: definition, a root, a gate that found its parents done): see :func:`carried_suffices`.
    carried: Carried | None = None


class NodeFailedEvent(NodeEvent):
    """``node_failed``: the node whose attempts are spent, with the Catch's error."""

    error: dict[str, Any] | None = None


class FailEvent(RunEvent):
    """``fail`` (both machines): the run's own timeout, or an error of the machine."""

    reason: Literal["timeout", "error"] = "error"
    error: dict[str, Any] | None = None


# ---- what the node runner answers the machines ----------------------------------------------------
class NodeFailure(_Shape):
    """What ``node_failed`` returns to the run machine: whether the node's failure stops the run."""

    stop: bool


class JobRound(BaseModel):
    """What a job of the jobs machine (statemachine/jobs.asl.json) returns: its outcome, or, with
    ``more``, the job itself again with its ``round`` (the machine runs it again)."""

    model_config = ConfigDict(extra="allow")

    kind: str | None = None
    more: bool | None = None
    round: int | None = None


class JobEvent(_Shape):
    """``job``: the jobs machine's input, or the round before's answer (``"job.$": "$"``)."""

    job: JobRound


def node_worst_case_seconds(node: NodeSpec, retry: RetryPolicy) -> int:
    """Every attempt of the node times out and every wait is the longest allowed."""
    return node.node_timeout * (retry.max_retries + 1) + sum(retry.delays)


def worst_case_starts(plan: Plan) -> dict[str, int]:
    """The latest each node can start: the slowest path through its ancestors, each at its worst
    case (a node runs as its own parents finish, so parallel branches overlap)."""
    retry = plan.retry
    start: dict[str, int] = {}
    finish: dict[str, int] = {}
    for node in plan.nodes:  # topological order
        start[node.id] = max((finish[p] for p in node.parents if p in finish), default=0)
        finish[node.id] = start[node.id] + node_worst_case_seconds(node, retry)
    return start


def worst_case_item_seconds(plan: Plan) -> int:
    """The longest one batch item (or one single run) can take: the slowest path through the
    graph, each node at its worst case."""
    starts = worst_case_starts(plan)
    return max((starts[n.id] + node_worst_case_seconds(n, plan.retry) for n in plan.nodes), default=0)


#: A gate waits for its parents' worst case plus this much (a throttled task waits out up to ~8
#: minutes of Retry), then checks again: a gate whose release was lost releases itself then.
GATE_MARGIN_SECONDS = 600


def gate_timeouts(plan: Plan) -> dict[str, int]:
    """How long each node's gate stays parked before it checks its parents again (AwaitParents'
    TimeoutSecondsPath): its ancestors' worst case plus GATE_MARGIN_SECONDS."""
    return {node_id: start + GATE_MARGIN_SECONDS for node_id, start in worst_case_starts(plan).items()}


#: A run still running this long after its worst case (or its own timeout) is overdue: the sweeper
#: counts it (metric OverdueRuns, alarmed). The margin covers throttled tasks waiting their turn.
OVERDUE_MARGIN_SECONDS = 1800


def overdue_after_seconds(plan: Plan) -> int:
    """How long after its start a single run is overdue: its own timeout (the machine's clock ends
    it then) or, sooner, its worst case; plus OVERDUE_MARGIN_SECONDS."""
    return min(plan.run_timeout or NO_TIMEOUT_SECONDS, worst_case_item_seconds(plan)) + OVERDUE_MARGIN_SECONDS


def fits_express(plan: Plan) -> bool:
    return worst_case_item_seconds(plan) + EXPRESS_MARGIN_SECONDS <= EXPRESS_LIMIT_SECONDS

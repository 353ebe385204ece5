"""Announce what happens to runs on the relayflow EventBridge bus (schema: docs/events-and-triggers.md).

Three detail types, each with ``schema_version`` "1":

* ``Execution Status Change``: every change of an execution's status, ``pending`` included;
* ``Node Execution Finished``: each node of a single-input run that completed, failed or timed out;
* ``Upload Rejected``: an upload under ``inputs/`` that could not start a run (services/uploads.py).

Webhooks are not sent from here: rules send the terminal status changes, and the rejected uploads
that name a workflow, on the bus to the webhook queue (see services/webhooks.py), so a slow receiver
can never hold up a run.

Nothing is announced to nobody: a publish is tried three times; a status event the bus still
refuses is counted (metric ``StatusEventsNotPublished``, alarmed), logged, and kept on its run, where
the sweeper finds it (sweep index) and publishes it again (see services/sweeper.py). Node events are
informational: they are retried and counted the same way, but not kept.

Node events are sent only while some rule on the bus could match them (domain/event_rules.py reads
each rule's pattern, conservatively): the template's own rules match none, so without a rule of the
user's each one would be a paid call that reaches nobody. The bus's rules are listed at most once
per RULES_TTL_SECONDS per warm container: a rule added for node events gets them within that
time. When the rules cannot be listed, node events are sent.
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.event_rules import any_rule_could_match
from relayflow_runtime.services import deps, metrics
from relayflow_runtime.services.execution_view import to_execution

logger = Logger(child=True)

EVENT_SOURCE = "relayflow"
SCHEMA_VERSION = "1"
STATUS_CHANGE = "Execution Status Change"
NODE_FINISHED = "Node Execution Finished"
UPLOAD_REJECTED = "Upload Rejected"


def _progress(tenant: str, record: dict[str, Any], env: deps.Deps | None = None) -> Any:
    """Progress as GET execution shows it (current node, batch counters), results left out."""
    try:
        without_results = {k: v for k, v in record.items() if k != "results"}
        execution = to_execution(tenant, without_results, with_nodes=False, env=env)
        return execution.progress.model_dump(mode="json")
    except Exception:  # an announcement must never fail the run it announces
        logger.exception("could not compute progress for an event")
        return record.get("progress")


def status_event(tenant: str, record: dict[str, Any], env: deps.Deps | None = None) -> dict[str, Any]:
    """The detail of an ``Execution Status Change`` event (schema version 1)."""
    env = deps.given(env)
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": tenant,
        "execution_id": record["id"],
        "workflow_id": record["workflow_id"],
        "version_id": record["version_id"],
        "number": record.get("number"),
        "input_mode": record.get("input_mode", "single"),
        "status": record["status"],
        "progress": _progress(tenant, record, env),
        "error": record.get("error"),
        "created_at": record.get("created_at"),
        "started_at": record.get("started_at"),
        "completed_at": record.get("completed_at"),
        "time": env.now(),
    }


def node_event(
    ctx: dict[str, Any], node: dict[str, Any], record: dict[str, Any] | None, status: str, error: str | None
) -> dict[str, Any]:
    """The detail of a ``Node Execution Finished`` event (schema version 1)."""
    record = record or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": ctx["tenant"],
        "execution_id": ctx["execution_id"],
        "workflow_id": ctx["workflow_id"],
        "version_id": ctx.get("version_id"),
        "node_id": node["id"],
        "node_name": node["name"],
        "node_idx": node["idx"],
        "status": status,
        "attempts": record.get("attempts"),
        "duration_ms": record.get("duration_ms"),
        "error": error,
        "time": now_iso(),
    }


# The bus is one of the dependencies a use case is given (services/deps.py); these stay here for the
# callers that name them on this module.
Bus = deps.Bus
event_bus = deps.event_bus
using_bus = deps.using_bus
PUBLISH_ATTEMPTS = 3
PUBLISH_BACKOFF_SECONDS = 0.2


class EventNotPublished(Exception):
    """A status event could not be published, nor kept on its run for the sweeper to publish."""


def publish(detail_type: str, detail: dict[str, Any], env: deps.Deps | None = None) -> bool:
    """Put one event on the bus, trying PUBLISH_ATTEMPTS times (a refused entry or an error of the
    call). False when it still failed: counted (metric StatusEventsNotPublished) and logged at
    ERROR; :func:`status_changed` then keeps the event on its run for the sweeper."""
    env = deps.given(env)
    bus = env.bus
    if bus is None:
        return True
    problem: str | None = None
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            problem = bus.put(EVENT_SOURCE, detail_type, detail)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return True
        if attempt < PUBLISH_ATTEMPTS:
            env.sleep(PUBLISH_BACKOFF_SECONDS * 2 ** (attempt - 1))
    metrics.count(metrics.STATUS_EVENTS_NOT_PUBLISHED, DetailType=detail_type)
    logger.error(
        "could not publish an event",
        extra={"detail_type": detail_type, "problem": problem, "execution_id": detail.get("execution_id")},
    )
    return False


def status_changed(tenant: str, record: dict[str, Any], env: deps.Deps | None = None) -> None:
    """Announce the run's status. An event the bus refuses (after retries) is kept on the run
    (``unpublished_event``, sweep index) and published by the sweeper later; if it cannot even be
    kept, :class:`EventNotPublished` is raised: never a status change announced to nobody."""
    env = deps.given(env)
    detail = status_event(tenant, record, env)
    if publish(STATUS_CHANGE, detail, env):
        return
    try:
        env.sweep.keep_unpublished(tenant, record["id"], record["status"], detail)
    except Exception as exc:
        raise EventNotPublished(
            f"the {record['status']} event of execution {record['id']} was neither published nor kept"
        ) from exc


def republish(tenant: str, execution_id: str, detail: dict[str, Any]) -> bool:
    """Publish a kept status event again (the sweeper); True once it is out and forgotten."""
    if not publish(STATUS_CHANGE, detail):
        return False
    deps.stores().sweep.forget_unpublished(tenant, execution_id, str(detail.get("time")))
    metrics.count(metrics.STATUS_EVENTS_REPUBLISHED)
    return True


#: How long a container trusts what it last read of the bus's rules: the longest a rule added for
#: node events waits for its first one (docs/events-and-triggers.md).
RULES_TTL_SECONDS = 60.0


class _RuleCheck:
    """Whether some rule on a bus could match node events, as last read (per bus, per container)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, bool]] = {}  # bus name -> (when read, could match)

    def node_events_wanted(self, bus: Bus, now: float) -> bool:
        with self._lock:
            last = self._read.get(bus.name)
        if last is not None and 0 <= now - last[0] < RULES_TTL_SECONDS:
            return last[1]
        try:
            wanted = any_rule_could_match(bus.rule_patterns(), EVENT_SOURCE, NODE_FINISHED)
        except Exception:  # never lose an event to the check: unsure is "wanted" (until the TTL)
            logger.warning("could not list the bus's rules: node events are sent", exc_info=True)
            wanted = True
        with self._lock:
            self._read[bus.name] = (now, wanted)
        return wanted

    def forget(self) -> None:
        with self._lock:
            self._read.clear()


_rules = _RuleCheck()


def forget_rules() -> None:
    """Read the bus's rules again at the next node event (a test that has just added a rule)."""
    _rules.forget()


def node_finished(
    ctx: dict[str, Any],
    node: dict[str, Any],
    record: dict[str, Any] | None,
    status: str,
    error: str | None,
    env: deps.Deps | None = None,
) -> None:
    """A node of a single-input run reached completed / failed / timed_out: announced while some
    rule on the bus could match it. Batch runs announce only their status changes: one event per
    item per node would flood the bus."""
    if ctx.get("mode") == "batch":
        return
    env = deps.given(env)
    if node_events_wanted(env):
        publish(NODE_FINISHED, node_event(ctx, node, record, status, error), env)


def node_events_wanted(env: deps.Deps | None = None) -> bool:
    """Whether some rule on the bus could match a node event (as read at most RULES_TTL_SECONDS
    ago): what a caller checks before it reads what only the event needs."""
    env = deps.given(env)
    return env.bus is not None and _rules.node_events_wanted(env.bus, env.time())


def upload_rejected(reason: dict[str, Any]) -> None:
    """An upload could not start a run: the reason its uploader finds beside the key, on the bus.
    Informational, as node events: retried and counted, not kept."""
    publish(UPLOAD_REJECTED, {"schema_version": SCHEMA_VERSION, **reason, "time": now_iso()})

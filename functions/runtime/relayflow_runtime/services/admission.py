"""Admission control for single runs: at most ``SingleRunStartsPerSecond`` StartExecution calls a
second, however many runs are asked for at once (1,000 uploads to ``inputs/``, a script posting
runs, a few wide runs together), so the node runner's capped concurrency is met by a bounded
stream of runs that wait their turn, never by a burst that fails on throttling.

* **A window per second**: one counter item per second (adapters/rate_windows.py, partition
  ``ADMISSION#single_runs``); a start takes a slot with one conditional ``ADD`` that succeeds only
  while the second's starts stay below the rate. Any number of API and trigger instances share it.
* **Started now** when a slot is free (a start costs one more write than before).
* **Otherwise queued**: the run stays ``pending`` with a ``waiting_reason`` (the field a batch
  waiting for its budget uses) and ``admission_queued_at``, and a message goes to the admission
  queue (template: AdmissionQueue). Its consumer (handlers/admission.py, at most two at once)
  drains the queue at the rate: for each message it waits for a slot (a second at most at a time),
  then starts the run. A run cancelled meanwhile is not started.
* **Exactly once**: the execution is named by the run's id, so a second StartExecution (a repeated
  message, the sweeper's re-send) is refused by Step Functions and answered with the first one's
  ARN; a run already started or no longer pending is skipped before any slot is taken.
* **Nothing lost**: a message the consumer fails on 10 times goes to the failed-events queue
  (alarmed); the sweeper re-queues a pending run that has waited in the queue longer than
  REQUEUE_AFTER_SECONDS (services/sweeper.py), instead of failing it as "never started".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.engine import StartNotAccepted
from relayflow_runtime.adapters.queue import MessageQueue
from relayflow_runtime.adapters.rate_windows import ADMISSION_PARTITION
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain.clock import parse_iso
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.domain.status import ExecutionStatus
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import deps, metrics
from relayflow_runtime.services.transitions import transition
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

#: A window's counter item lives this long after its second (DynamoDB TTL deletes it later).
WINDOW_TTL_SECONDS = 3600
#: A run waiting in the queue this long is sent again by the sweeper (its message may be lost).
REQUEUE_AFTER_SECONDS = 3600


def rate() -> int:
    return max(1, get_settings().single_run_starts_per_second)


def take_slot(clock: Callable[[], float] = time.time, env: deps.Deps | None = None) -> bool:
    """One start in this second's window, if the rate allows it."""
    window = int(clock())
    return bool(
        deps.given(env).rate_windows.try_take(
            "",
            "",
            window,
            max_requests=rate(),
            max_tokens=None,
            tokens=0,
            expires_at=window + 1 + WINDOW_TTL_SECONDS,
            partition=ADMISSION_PARTITION,
        )
    )


def wait_for_slot(
    deadline: float, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Take a slot, waiting for the next second's window while this one is full, until ``deadline``
    (``clock`` time); False when none freed up by then."""
    while True:
        if take_slot(clock):
            return True
        now = clock()
        pause = int(now) + 1 - now + random.uniform(0, 0.05)
        if now + pause >= deadline:
            return False
        sleep(pause)


def queue() -> MessageQueue:
    url = get_settings().admission_queue_url
    if not url:
        raise RuntimeError("ADMISSION_QUEUE_URL is not set (template: AdmissionQueue)")
    return MessageQueue(url)


def waiting_reason() -> str:
    return (
        f"waiting for admission: single runs start at most {rate()} a second (stack parameter "
        "SingleRunStartsPerSecond) and others were started just before; it starts in its turn"
    )


def launch(tenant: str, record: ExecutionRecord, env: deps.Deps | None = None) -> str | None:
    """Start the run (a pending single run just written) now if a slot is free, else queue it (as
    when Step Functions throttles the start); the execution ARN when it started, None when it waits."""
    env = deps.given(env)
    if take_slot(env.time, env):
        try:
            return start(tenant, record, env=env)
        except StartNotAccepted:
            logger.warning("StartExecution throttled: queued", extra={"execution_id": record.id})
    defer(tenant, record, env)
    return None


def defer(tenant: str, record: ExecutionRecord, env: deps.Deps | None = None) -> None:
    """Queue the run's start: say why it waits, then send its message."""
    env = deps.given(env)
    execution_id = record.id
    try:
        env.executions.update_execution(
            tenant,
            execution_id,
            {"waiting_reason": waiting_reason(), "admission_queued_at": env.now()},
            only_if_status=(ExecutionStatus.PENDING.value,),
        )
    except ConditionFailed:
        return  # cancelled (or started) meanwhile: nothing to queue
    (env.admission_queue or queue()).send(
        {"tenant": tenant, "workflow_id": record.workflow_id, "execution_id": execution_id}
    )
    metrics.count(metrics.RUNS_WAITING_FOR_ADMISSION)
    logger.info("run waits for admission", extra={"execution_id": execution_id})


def start(
    tenant: str, record: ExecutionRecord, *, can_wait: bool = True, env: deps.Deps | None = None
) -> str:
    """StartExecution of the run's machine, named by its id (a second start returns the first
    one's ARN); a start refused for good moves the run ``pending -> failed`` and raises; one not
    accepted now (throttled) raises StartNotAccepted and leaves the run pending, when the caller
    ``can_wait`` (queue it), else it fails the run too."""
    env = deps.given(env)
    execution_id = record.id
    run = {"tenant": tenant, "workflow_id": record.workflow_id, "execution_id": execution_id}
    try:
        execution_arn = env.machines.start(str(record.state_machine_arn), execution_id, {"run": run})
    except StartNotAccepted:
        if can_wait:
            raise
        _failed_to_start(tenant, record, "Step Functions did not accept the start (throttled)", env)
        raise
    except Exception as exc:
        _failed_to_start(tenant, record, str(exc), env)
        raise
    env.executions.update_execution(tenant, execution_id, {"sfn_execution_arn": execution_arn})
    return execution_arn


def _failed_to_start(tenant: str, record: ExecutionRecord, why: str, env: deps.Deps) -> None:
    transition(
        tenant,
        record,
        (ExecutionStatus.PENDING,),
        "failed",
        {"error": f"the run could not be started: {why}", "completed_at": env.now()},
        env=env,
    )


def admit_queued(tenant: str, execution_id: str, deadline: float) -> bool:
    """The consumer's part for one message: start the run in its turn. True when the message is
    done (started, or nothing to start: the run is gone, no longer pending, or started already);
    False when no slot freed up before ``deadline`` (the message comes back later)."""
    try:
        record = deps.stores().executions.get_record(tenant, execution_id)
    except NotFound:
        return True
    if record.status != ExecutionStatus.PENDING.value or record.sfn_execution_arn:
        return True
    if not wait_for_slot(deadline):
        return False
    start(tenant, record)
    return True


def requeue_if_lost(tenant: str, record: ExecutionRecord, now: float | None = None) -> bool:
    """The sweeper's part: a pending run queued for admission is not a run that never started.
    Sends its message again once it has waited REQUEUE_AFTER_SECONDS since it was (re)queued;
    True when the run is waiting for admission (so it must not be failed)."""
    queued_at = record.admission_queued_at
    if record.status != ExecutionStatus.PENDING.value or not queued_at:
        return False
    if (now or time.time()) - parse_iso(queued_at).timestamp() >= REQUEUE_AFTER_SECONDS:
        logger.warning("re-queued a run waiting for admission", extra={"execution_id": record.id})
        defer(tenant, record)
    return True

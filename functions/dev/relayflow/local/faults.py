"""AWS's weather for the local stack: a seeded fault profile, off unless asked for.

The local stack is calmer than AWS: one lock serialises DynamoDB (no transaction ever conflicts),
every Lambda runs in-process without a concurrency cap or a hard kill, an Express child runs
exactly once, no event is lost. With a :class:`FaultProfile` (``LocalStack(faults=...)``,
``relayflow serve --faults aws [--fault-seed N]``) the stack shows the behaviours below, each one
AWS documents, each a small named function here (the table is in docs/operations.md):

* :func:`transaction_conflict` - DynamoDB cancels a ``TransactWriteItems`` with
  ``TransactionCanceledException``, reason ``TransactionConflict`` on one item, ``None`` on the
  others (the SDK does not retry it);
* :func:`throttled` - DynamoDB answers ``ProvisionedThroughputExceededException`` or
  ``ThrottlingException`` (the SDK retries both);
* :func:`over_reserved_concurrency` - Lambda refuses an invocation over the function's
  ``ReservedConcurrentExecutions`` with ``TooManyRequestsException`` (429; Step Functions:
  ``Lambda.TooManyRequestsException``);
* :func:`timed_out` - Lambda ends an invocation at the function's ``Timeout``: the caller gets
  ``Sandbox.Timedout`` at the deadline; the handler's thread cannot be killed in-process, so it
  finishes in the background and its result is dropped;
* :func:`lambda_service_exception` - Lambda answers ``ServiceException`` (500; Step Functions:
  ``Lambda.ServiceException``);
* :func:`history_limit_exceeded` - an execution that reaches 25,000 history events fails
  (``States.Runtime``); a distributed Map's children have histories of their own (moto keeps
  them apart too);
* :func:`express_repeat` - a distributed Map's Express child runs at least once: sometimes its items
  run twice; and an Express child is not stopped by StopExecution nor the parent's timeout;
* :func:`lost_event`, :func:`duplicate_event`, :func:`event_delay` - EventBridge and S3 deliver at
  least once, sometimes late; a Step Functions status-change event can be missed (the sweeper
  settles those runs).

State input/output over 256 KiB fails with ``States.DataLimitExceeded`` with or without the profile:
moto's interpreter enforces that quota itself.

Every decision comes from ``random.Random`` seeded by the profile's seed and the fault's name, so a
failure replays: the n-th draw of a fault is the same for the same seed (with several threads, the
order in which calls draw can differ between runs; a single-threaded sequence replays exactly).
:attr:`FaultInjector.injected` counts what fired, by fault.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from relayflow.local import moto_shim

__all__ = [
    "HISTORY_EVENT_LIMIT",
    "PROFILES",
    "FaultInjector",
    "FaultProfile",
    "duplicate_event",
    "event_delay",
    "express_repeat",
    "history_limit_exceeded",
    "lambda_service_exception",
    "lost_event",
    "over_reserved_concurrency",
    "throttled",
    "timed_out",
    "transaction_conflict",
]

log = logging.getLogger("relayflow.local")

#: Step Functions quota: events in one execution's history (Standard workflows).
HISTORY_EVENT_LIMIT = 25_000

_DYNAMODB_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_DYNAMODB_MODELS = "moto.dynamodb.models"
_DYNAMODB_EXCEPTIONS = "moto.dynamodb.exceptions"
_LAMBDA_MODELS = "moto.awslambda.models"
_EVENT_MANAGER = "moto.stepfunctions.parser.asl.eval.event.event_manager"
_ENVIRONMENT = "moto.stepfunctions.parser.asl.eval.environment"
_EXECUTION_WORKER = "moto.stepfunctions.parser.backend.execution_worker"
_DISTRIBUTED_WORKER = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor"
    ".distributed_item_processor_worker"
)
#: The DynamoDB operations a throttle can answer (the data plane the engine and the machines use).
_THROTTLED_OPERATIONS = (
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "query",
    "scan",
    "transact_write_items",
)


class FaultProfile(BaseModel):
    """Which of AWS's behaviours the local stack shows, and how often. Rates are per call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    #: TransactWriteItems cancelled, reason TransactionConflict on one item.
    transaction_conflict_rate: float = Field(0.05, ge=0, le=1)
    #: Any DynamoDB data-plane call throttled.
    throttle_rate: float = Field(0.02, ge=0, le=1)
    #: ReservedConcurrentExecutions enforced (TooManyRequestsException over it).
    reserved_concurrency: bool = True
    #: The function's Timeout enforced (Sandbox.Timedout at the deadline).
    function_timeout: bool = True
    #: Lambda Invoke answered ServiceException.
    lambda_service_exception_rate: float = Field(0.01, ge=0, le=1)
    #: History events per execution before it fails (None: not counted).
    history_event_limit: int | None = Field(HISTORY_EVENT_LIMIT, ge=1)
    #: An Express child's items run twice.
    express_repeat_rate: float = Field(0.1, ge=0, le=1)
    #: Express children keep running when the parent is stopped or times out.
    express_outlive_parent: bool = True
    #: An EventBridge / S3 notification event delivered twice.
    event_duplicate_rate: float = Field(0.1, ge=0, le=1)
    #: An event delivered late, by up to event_max_delay_seconds.
    event_delay_rate: float = Field(0.2, ge=0, le=1)
    event_max_delay_seconds: float = Field(1.0, ge=0)
    #: A Step Functions status-change event never delivered.
    status_event_loss_rate: float = Field(0.05, ge=0, le=1)

    @classmethod
    def calm(cls, seed: int = 0) -> FaultProfile:
        """No fault at all (what the local stack does without a profile)."""
        return cls(
            seed=seed,
            transaction_conflict_rate=0,
            throttle_rate=0,
            reserved_concurrency=False,
            function_timeout=False,
            lambda_service_exception_rate=0,
            history_event_limit=None,
            express_repeat_rate=0,
            express_outlive_parent=False,
            event_duplicate_rate=0,
            event_delay_rate=0,
            status_event_loss_rate=0,
        )

    @classmethod
    def named(cls, name: str, seed: int = 0) -> FaultProfile:
        """A profile by its name (``relayflow serve --faults NAME``): see :data:`PROFILES`."""
        try:
            return PROFILES[name](seed)
        except KeyError:
            known = ", ".join(sorted(PROFILES))
            raise ValueError(f"unknown fault profile {name!r}; known: {known}") from None


#: The profiles `relayflow serve --faults` knows: "aws" (every fault at its default rate), "none".
PROFILES: dict[str, Callable[[int], FaultProfile]] = {
    "aws": lambda seed: FaultProfile(seed=seed),
    "none": FaultProfile.calm,
}

EventKind = Literal["status-change", "s3"]


class FaultInjector:
    """A profile at work: draws the faults (seeded), counts what fired, patches moto while installed.

    ``reserved`` maps function names to their ReservedConcurrentExecutions (the stack fills it
    from the template)."""

    def __init__(self, profile: FaultProfile) -> None:
        self.profile = profile
        self.reserved: dict[str, int] = {}
        self.injected: Counter[str] = Counter()
        self._randoms: dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()  # function name -> invocations under way
        self._pending = 0  # delayed deliveries not yet made
        self._patches: list[tuple[Any, str, Any]] = []
        self._in_request = threading.local()  # a DynamoDB request is being answered in this thread

    def fired(self) -> dict[str, int]:
        """What fired so far, by fault: a copy taken under the lock (other threads keep counting)."""
        with self._lock:
            return {fault: count for fault, count in self.injected.items() if count}

    # ------------------------------------------------------------------ the draws

    def chance(self, fault: str, rate: float) -> bool:
        """Whether `fault` fires on this call (and count it when it does)."""
        if rate <= 0:
            return False
        with self._lock:
            hit = self._random(fault).random() < rate
            if hit:
                self.injected[fault] += 1
        return hit

    def draw(self, fault: str, upper: int) -> int:
        """A number in range(upper), from the fault's own sequence."""
        with self._lock:
            return self._random(fault).randrange(upper)

    def uniform(self, fault: str, low: float, high: float) -> float:
        with self._lock:
            return self._random(fault).uniform(low, high)

    def _random(self, fault: str) -> random.Random:
        rng = self._randoms.get(fault)
        if rng is None:
            rng = self._randoms[fault] = random.Random(f"{self.profile.seed}:{fault}")
        return rng

    # ------------------------------------------------------------------ Lambda concurrency

    @contextlib.contextmanager
    def invocation(self, function_name: str) -> Iterator[Callable[[], None]]:
        """Hold one of the function's concurrent executions for the block; raises
        TooManyRequestsException when the function has none left. Yields `release`, which gives
        the execution back early (at a timeout's deadline) and is a no-op after."""
        refusal = over_reserved_concurrency(self, function_name)
        if refusal is not None:
            raise refusal
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._running[function_name] -= 1

        try:
            yield release
        finally:
            release()

    def try_acquire(self, function_name: str) -> bool:
        limit = self.reserved.get(function_name) if self.profile.reserved_concurrency else None
        with self._lock:
            if limit is not None and self._running[function_name] >= limit:
                self.injected["lambda_too_many_requests"] += 1
                return False
            self._running[function_name] += 1
            return True

    # ------------------------------------------------------------------ event delivery

    def deliver(self, kind: EventKind, send: Callable[[], Any]) -> None:
        """Deliver an event as EventBridge or S3 would: maybe lost (status changes only), maybe
        twice, maybe late (then from a thread of its own; `idle()` waits for it)."""
        if kind == "status-change" and lost_event(self):
            log.info("a status-change event lost (fault profile)")
            return
        for _ in range(2 if duplicate_event(self) else 1):
            delay = event_delay(self)
            if delay <= 0:
                send()
                continue
            with self._lock:
                self._pending += 1
            timer = threading.Timer(delay, self._send_late, args=(send,))
            timer.daemon = True
            timer.start()

    def _send_late(self, send: Callable[[], Any]) -> None:
        try:
            send()
        except Exception:
            log.warning("a delayed event delivery failed", exc_info=True)
        finally:
            with self._lock:
                self._pending -= 1

    def idle(self) -> bool:
        """No delayed event waiting to be delivered."""
        with self._lock:
            return self._pending == 0

    # ------------------------------------------------------------------ install into moto

    def install(self) -> None:
        """Patch moto (after `moto_shim.install()`; `uninstall()` before the shim's)."""
        models = importlib.import_module(_DYNAMODB_MODELS)
        backend = models.DynamoDBBackend
        for operation in _THROTTLED_OPERATIONS:
            self._patch(backend, operation, self._dynamodb_call(operation, getattr(backend, operation)))
        function = importlib.import_module(_LAMBDA_MODELS).LambdaFunction
        self._patch(function, "invoke", self._lambda_invoke(function.invoke))
        manager = importlib.import_module(_EVENT_MANAGER).EventManager
        self._patch(manager, "add_event", self._counted_event(manager.add_event))
        worker = importlib.import_module(_EXECUTION_WORKER).ExecutionWorker
        self._patch(
            worker, "_get_evaluation_environment", _root_environment(worker._get_evaluation_environment)
        )
        environment = importlib.import_module(_ENVIRONMENT).Environment
        self._patch(environment, "set_error", _first_error_kept(environment.set_error))
        child = importlib.import_module(_DISTRIBUTED_WORKER).DistributedItemProcessorWorker
        self._patch(child, "_eval_job", self._child_job(child.__dict__["_eval_job"]))

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._patches.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)

    def _dynamodb_call(self, operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(backend: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(self._in_request, "active", False):  # moto's own calls within a request
                return original(backend, *args, **kwargs)
            refusal = throttled(self, operation)
            if refusal is None and operation == "transact_write_items":
                items = args[0] if args else kwargs.get("transact_items", [])
                refusal = transaction_conflict(self, items)
            if refusal is not None:
                raise refusal
            self._in_request.active = True
            try:
                return original(backend, *args, **kwargs)
            finally:
                self._in_request.active = False

        return call

    def _lambda_invoke(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def invoke(function: Any, body: Any, request_headers: Any, response_headers: Any) -> Any:
            refusal = lambda_service_exception(self)
            if refusal is not None:
                raise refusal
            with self.invocation(str(function.function_name)) as release:
                if not self.profile.function_timeout:
                    return original(function, body, request_headers, response_headers)
                return _with_deadline(
                    self,
                    lambda headers: original(function, body, request_headers, headers),
                    response_headers,
                    float(function.timeout or 3),
                    release,
                )

        return invoke

    def _counted_event(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def add_event(manager: Any, *args: Any, **kwargs: Any) -> int:
            event_id: int = original(manager, *args, **kwargs)
            history_limit_exceeded(self, manager)
            return event_id

        return add_event

    def _child_job(self, original: Callable[..., Any]) -> Callable[..., None]:
        def eval_job(worker: Any, env: Any, job: Any) -> None:
            if getattr(worker._map_run_record, "_relayflow_express", False):
                if self.profile.express_outlive_parent:
                    _detach_from_parent(worker, env)
                if express_repeat(self):
                    _run_again(worker, job)
            original(worker, env, job)

        return eval_job


# ---------------------------------------------------------------------------------------------
# The faults: one AWS behaviour each


def transaction_conflict(faults: FaultInjector, transact_items: list[Any]) -> Exception | None:
    """DynamoDB cancels a TransactWriteItems when another request changes one of its items at the
    same time: ``TransactionCanceledException`` with one ``CancellationReasons`` entry per item,
    ``TransactionConflict`` on the contended one and ``None`` on the others. The SDK does not retry
    it. AWS: DynamoDB Developer Guide, "Transaction conflict handling in DynamoDB"; API Reference,
    TransactWriteItems (Errors: TransactionCanceledException)."""
    rate = faults.profile.transaction_conflict_rate
    if not transact_items or not faults.chance("transaction_conflict", rate):
        return None
    exceptions = importlib.import_module(_DYNAMODB_EXCEPTIONS)
    contended = faults.draw("transaction_conflict.item", len(transact_items))
    reasons: list[tuple[str | None, str | None, Any]] = [(None, None, None)] * len(transact_items)
    reasons[contended] = ("TransactionConflict", "Transaction is ongoing for the item", None)
    conflict: Exception = exceptions.TransactionCanceledException(reasons)
    return conflict


def throttled(faults: FaultInjector, operation: str) -> Exception | None:
    """DynamoDB throttles a request over a partition's (or an on-demand table's) throughput:
    ``ProvisionedThroughputExceededException`` or ``ThrottlingException``, both retried by the SDK
    (botocore's retry modes treat them as throttles). AWS: DynamoDB Developer Guide, "Error
    handling with DynamoDB" and "Troubleshooting throttling"."""
    if not faults.chance("dynamodb_throttle", faults.profile.throttle_rate):
        return None
    exceptions = importlib.import_module(_DYNAMODB_EXCEPTIONS)
    if faults.draw("dynamodb_throttle.kind", 2):
        name = "ThrottlingException"
        message = "Throughput exceeds the current capacity of your table or index."
    else:
        name = "ProvisionedThroughputExceededException"
        message = (
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API."
        )
    throttle: Exception = exceptions.DynamodbException(_DYNAMODB_PREFIX + name, f"{message} ({operation})")
    return throttle


def over_reserved_concurrency(faults: FaultInjector, function_name: str) -> Exception | None:
    """Lambda refuses an invocation when the function's ReservedConcurrentExecutions are all in use:
    ``TooManyRequestsException`` (HTTP 429, Reason ReservedFunctionConcurrentInvocationLimitExceeded),
    which Step Functions names ``Lambda.TooManyRequestsException``. AWS: Lambda Developer Guide,
    "Configuring reserved concurrency"; API Reference, Invoke (Errors)."""
    if faults.try_acquire(function_name):
        return None
    return _lambda_error(
        "TooManyRequestsException",
        "Rate Exceeded.",
        429,
        Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
        Type="User",
    )


def timed_out(function_timeout: float, request_id: str) -> dict[str, str]:
    """Lambda stops an invocation at the function's Timeout: the caller gets a function error
    ``Sandbox.Timedout`` (Step Functions uses it as the error name) and nothing the handler returns
    later. AWS: Lambda Developer Guide, "Configure Lambda function timeout" and "Troubleshoot
    invocation issues" (Sandbox.Timedout)."""
    return {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after {function_timeout:.2f} seconds",
    }


def lambda_service_exception(faults: FaultInjector) -> Exception | None:
    """Lambda answers an Invoke with ``ServiceException`` (HTTP 500, an internal error), which Step
    Functions names ``Lambda.ServiceException`` and asks every Task to retry. AWS: Lambda API
    Reference, Invoke (Errors); Step Functions Developer Guide, "Handling transient Lambda service
    exceptions"."""
    if not faults.chance("lambda_service_exception", faults.profile.lambda_service_exception_rate):
        return None
    return _lambda_error("ServiceException", "The AWS Lambda service encountered an internal error.", 500)


def history_limit_exceeded(faults: FaultInjector, manager: Any) -> bool:
    """A Standard execution fails when its history reaches 25,000 events (``States.Runtime``, not
    catchable); a distributed Map's children have histories of their own. AWS: Step Functions
    Developer Guide, "Step Functions service quotas" (Maximum execution history size)."""
    limit = faults.profile.history_event_limit
    if limit is None:
        return False
    with faults._lock:
        count = getattr(manager, "_relayflow_events", 0) + 1
        manager._relayflow_events = count
        if count <= limit or getattr(manager, "_relayflow_failed", False):
            return False
        manager._relayflow_failed = True
        faults.injected["history_limit"] += 1
    root = getattr(manager, "_relayflow_root", None)
    if root is not None:
        details = importlib.import_module("moto.stepfunctions.parser.api").ExecutionFailedEventDetails
        manager._relayflow_failing = True
        try:
            root.set_error(
                details(
                    error="States.Runtime",
                    cause=f"The execution reached the maximum number of history events ({limit}).",
                )
            )
        finally:
            manager._relayflow_failing = False
    return True


def express_repeat(faults: FaultInjector) -> bool:
    """Express workflows run at least once: a distributed Map's Express child can run its items
    twice, and an Express child is not stopped by StopExecution on the parent nor by the parent's
    timeout (it runs until it ends or its own 5 minutes). AWS: Step Functions Developer Guide,
    "Choosing workflow type" (Express: at-least-once) and "Distributed Map state" (child workflow
    executions)."""
    return faults.chance("express_repeat", faults.profile.express_repeat_rate)


def lost_event(faults: FaultInjector) -> bool:
    """A Step Functions status-change event that never reaches its rule (EventBridge delivers on a
    best-effort basis; the sweeper settles the run). AWS: Step Functions Developer Guide,
    "Automating Step Functions event delivery with EventBridge" (best-effort delivery)."""
    return faults.chance("status_event_lost", faults.profile.status_event_loss_rate)


def duplicate_event(faults: FaultInjector) -> bool:
    """An EventBridge event or an S3 event notification delivered twice. AWS: EventBridge User
    Guide, "Event delivery" (at least once); S3 User Guide, "Amazon S3 Event Notifications"
    (delivered at least once)."""
    return faults.chance("event_duplicate", faults.profile.event_duplicate_rate)


def event_delay(faults: FaultInjector) -> float:
    """Seconds an event arrives late (0: on time). AWS: S3 notifications "typically in seconds but
    can sometimes take a minute or longer"; EventBridge retries delivery for up to 24 hours."""
    if not faults.chance("event_delay", faults.profile.event_delay_rate):
        return 0.0
    return faults.uniform("event_delay.seconds", 0.0, faults.profile.event_max_delay_seconds)


# ---------------------------------------------------------------------------------------------
# Helpers of the patches


def _lambda_error(code: str, message: str, status: int, **fields: str) -> Exception:
    rest_error = importlib.import_module("moto.core.exceptions").JsonRESTError
    error: Any = rest_error(code, message)
    error.code = status
    error.description = json.dumps({"__type": code, "message": message, **fields})
    return error


def _with_deadline(
    faults: FaultInjector,
    call: Callable[[dict[str, Any]], Any],
    response_headers: dict[str, Any],
    timeout: float,
    release: Callable[[], None],
) -> Any:
    """Run `call` in a thread; at `timeout` answer Sandbox.Timedout and drop its later result."""
    done = threading.Event()
    outcome: dict[str, Any] = {}
    headers: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call(headers)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="lambda-invocation", daemon=True).start()
    if not done.wait(timeout):
        release()  # Lambda frees the execution environment at the deadline
        with faults._lock:
            faults.injected["lambda_timeout"] += 1
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(timed_out(timeout, str(uuid.uuid4()))).encode()
    if "error" in outcome:
        raise outcome["error"]
    response_headers.update(headers)
    return outcome["result"]


def _root_environment(original: Callable[..., Any]) -> Callable[..., Any]:
    """ExecutionWorker._get_evaluation_environment, remembering the root environment on the
    execution's event manager (its frames share the manager) so a history limit can fail it."""

    def get_environment(worker: Any) -> Any:
        env = original(worker)
        env.event_manager._relayflow_root = env
        return env

    return get_environment


def _first_error_kept(original: Callable[..., Any]) -> Callable[..., Any]:
    """Environment.set_error, except that an execution failed for its history keeps that error
    (the states it interrupted report errors of their own while they unwind)."""

    def set_error(env: Any, error: Any) -> None:
        manager = env.event_manager
        if getattr(manager, "_relayflow_failed", False) and not getattr(manager, "_relayflow_failing", False):
            return
        original(env, error)

    return set_error


def _detach_from_parent(worker: Any, env: Any) -> None:
    """Take a child's frame out of its parent's frames: a stop or timeout of the parent (which
    moto passes down the frames) no longer reaches it. Its own timeout still does."""
    for frame in (worker._env, *worker._env._frames):
        with frame._state_mutex:
            if env in frame._frames:
                frame._frames.remove(env)
                return


def _run_again(worker: Any, job: Any) -> None:
    """Run a child's program once more on the same input, in a frame of its own, its result
    dropped: the child that ran twice."""
    frame = worker._env.open_inner_frame()
    try:
        moto_shim.run_child_program(worker, frame, job)
    except Exception:
        log.debug("a repeated Express child failed", exc_info=True)
    finally:
        worker._env.delete_frame(frame)


def describe(profile: FaultProfile) -> str:
    """One line saying what a profile does (for `relayflow serve`)."""
    fields: Mapping[str, Any] = profile.model_dump()
    return ", ".join(f"{name}={value}" for name, value in fields.items())


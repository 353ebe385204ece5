"""The EventBridge emulator: the rules of the template's functions, run on moto.

moto keeps event buses and rules, matches events against their patterns and puts what matches on
queue targets; it neither sends events of its own for Step Functions nor invokes Lambda targets.
This module does those two things, and leaves every pattern decision to moto's own matcher
(`moto.events.models.EventPattern`, the one `put_events` uses), so that a rule reads the same here
as in moto's buses:

* The rule on `aws.states` "Step Functions Execution Status Change" (the reconciler's): moto emits
  no such events. moto tells `ExecutionWatcher` when an execution of the template's state machines
  ends (`moto_shim.on_execution_end`; a full listing every `watch_interval` seconds is the safety
  net), and `EventBridge.deliver_status_change` builds the event Step Functions would send
  (`status_change_event`) and hands it, once, to each such rule whose pattern matches, as an
  asynchronous invocation.
* The functions' other EventBridgeRule events (e.g. on the template's own bus): a real rule in moto
  whose target is a queue of the stack; `RuleDispatcher` long-polls each queue and hands every
  event to the rule's function in a thread of its own, as EventBridge invokes Lambda
  (asynchronously: a failing invocation is retried, then sent to its on-failure destination).

Every pattern is read once, at start (`compile_pattern`): moto's parser checks its shape as AWS's
PutRule does, and a filter moto's matcher does not know is refused there (the matcher would read
it as a match). tests/unit/test_local_event_patterns.py pins what moto matches, filter by filter.

The template's `AWS::Events::Rule` resources with queue targets need nothing of this: they are
created in moto by `relayflow.local.provision` and moto delivers to their queues itself.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from moto.events.exceptions import InvalidEventPatternException
from moto.events.models import EventPattern
from moto.events.utils import EventMessageType

from relayflow.local import moto_shim
from relayflow.local.faults import FaultInjector
from relayflow.local.provision import EVENTBRIDGE_EVENT_TYPES, Deployment, StackError, as_list, physical_name

__all__ = [
    "STATUS_CHANGE",
    "BusRule",
    "EventBridge",
    "ExecutionWatcher",
    "RuleDispatcher",
    "StatusRule",
    "compile_pattern",
    "event_matches",
    "function_rules",
    "status_change_event",
]

log = logging.getLogger("relayflow.local")

STATUS_CHANGE = "Step Functions Execution Status Change"

#: Invokes a function of the stack asynchronously (retries, on-failure destination); True on success.
InvokeAsync = Callable[[str, Any], bool]


#: The filters moto's matcher knows. It reads any other name as a match, where AWS refuses the rule.
KNOWN_FILTERS = frozenset(
    {"anything-but", "cidr", "equals-ignore-case", "exists", "numeric", "prefix", "suffix", "wildcard"}
)


def compile_pattern(pattern: Mapping[str, Any], where: str) -> EventPattern:
    """An event pattern as moto's parser reads it: AWS's rules for its shape (every value an object
    or a non-empty array of values and filters), and filters moto knows; a pattern AWS would refuse
    fails the stack's start instead of matching what it should not."""
    try:
        compiled = EventPattern.load(json.dumps(pattern))
    except InvalidEventPatternException as exc:
        raise StackError(f"{where}: {exc.message}") from exc
    unknown = sorted(_filter_names(compiled.get_pattern()) - KNOWN_FILTERS)
    if unknown:
        raise StackError(
            f"{where}: the event pattern uses {', '.join(unknown)}, which is not an EventBridge filter"
        )
    return compiled


def event_matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether EventBridge would match `event` against `pattern`, decided by moto's matcher."""
    return _matches(compile_pattern(pattern, "event pattern"), event)


def _filter_names(pattern: Mapping[str, Any]) -> set[str]:
    """The names of the filters a parsed pattern uses ({"prefix": ...} in a field's array, and
    the filter an anything-but holds), through nested fields and $or branches."""
    names: set[str] = set()
    for key, value in pattern.items():
        if key == "$or" and isinstance(value, list):
            names.update(*(_filter_names(branch) for branch in value if isinstance(branch, Mapping)))
        elif isinstance(value, Mapping):
            names |= _filter_names(value)
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, Mapping):
                    continue
                names.update(item)
                if isinstance(item.get("anything-but"), Mapping):
                    names.update(item["anything-but"])
    return names


def _matches(pattern: EventPattern, event: Mapping[str, Any]) -> bool:
    # moto types an event as its TypedDict of the envelope; any JSON object is matched alike.
    return pattern.matches_event(cast(EventMessageType, dict(event)))


@dataclass(frozen=True)
class StatusRule:
    """A function's rule on Step Functions' status changes, which the watcher feeds."""

    logical_id: str  # "<function>.<event name>"
    function_id: str
    pattern: EventPattern


@dataclass(frozen=True)
class BusRule:
    """A function's rule on an event bus: a rule in moto with a queue of the stack as its target."""

    logical_id: str  # "<function>.<event name>"
    function_id: str
    pattern: dict[str, Any]
    bus_name: str


def function_rules(deployment: Deployment) -> tuple[list[StatusRule], list[BusRule]]:
    """The EventBridgeRule (and CloudWatchEvent) events of the template's functions."""
    status_rules: list[StatusRule] = []
    bus_rules: list[BusRule] = []
    for logical_id, function in deployment.functions.items():
        for event_name, event in function.events.items():
            if event.get("Type") not in EVENTBRIDGE_EVENT_TYPES:
                continue
            rule_id = f"{logical_id}.{event_name}"
            properties = event.get("Properties") or {}
            pattern = deployment.resolve(properties.get("Pattern") or {}, logical_id)
            compiled = compile_pattern(pattern, rule_id)
            if "aws.states" in as_list(pattern.get("source")):
                status_rules.append(StatusRule(rule_id, logical_id, compiled))
            else:
                bus = deployment.resolve(properties.get("EventBusName") or "default", logical_id)
                bus_rules.append(BusRule(rule_id, logical_id, pattern, str(bus)))
    return status_rules, bus_rules


def status_change_event(description: Mapping[str, Any], *, account_id: str, region: str) -> dict[str, Any]:
    """The EventBridge event Step Functions sends for this DescribeExecution result."""
    status = description["status"]
    stop_date = description.get("stopDate")
    output = description.get("output") if status == "SUCCEEDED" else None
    redrivable = status in ("FAILED", "TIMED_OUT", "ABORTED")
    when = stop_date or description.get("startDate") or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": STATUS_CHANGE,
        "source": "aws.states",
        "account": account_id,
        "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [description["executionArn"]],
        "detail": {
            "executionArn": description["executionArn"],
            "stateMachineArn": description["stateMachineArn"],
            "name": description.get("name") or description["executionArn"].rsplit(":", 1)[-1],
            "status": status,
            "startDate": _epoch_ms(description.get("startDate")),
            "stopDate": _epoch_ms(stop_date),
            "input": description.get("input"),
            "output": output,
            "inputDetails": {"included": True},
            "outputDetails": {"included": True} if output is not None else None,
            "error": description.get("error"),
            "cause": description.get("cause"),
            "redriveCount": 0,
            "redriveDate": None,
            "redriveStatus": "REDRIVABLE" if redrivable else "NOT_REDRIVABLE",
            "redriveStatusReason": (
                f"Execution is {status} and can be redriven"
                if redrivable
                else f"Execution is {status} and cannot be redriven"
            ),
        },
    }


class EventBridge:
    """The template's functions' rules while the stack runs (`start()` reads them from the
    deployment): status changes delivered by the watcher (`watch_executions`), bus events by the
    dispatcher. `delivered_events` lists the status changes handed to a rule, as
    (function logical id, event)."""

    def __init__(
        self,
        deployment: Deployment,
        invoke_async: InvokeAsync,
        *,
        watch_executions: bool = True,
        watch_interval: float = 5.0,
    ) -> None:
        self._deployment = deployment
        self._invoke_async = invoke_async
        self.watch_executions = watch_executions
        self.watch_interval = watch_interval
        self.delivered_events: list[tuple[str, dict[str, Any]]] = []
        self._status_rules: list[StatusRule] = []
        self._watcher: ExecutionWatcher | None = None
        self._dispatcher: RuleDispatcher | None = None
        self._lose_status_event: Callable[[dict[str, Any]], bool] | None = None
        #: AWS's weather (the stack's fault profile): late, duplicate and lost status changes.
        self.faults: FaultInjector | None = None

    def start(self) -> None:
        self._status_rules, bus_rules = function_rules(self._deployment)
        if self.watch_executions and self._status_rules:
            self._watcher = ExecutionWatcher(
                self._deployment, self.deliver_status_change, self.watch_interval
            )
            self._watcher.start()
        if bus_rules:
            self._dispatcher = RuleDispatcher(self._deployment, bus_rules, self._invoke_async)
            self._dispatcher.start()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None

    def catch_up(self) -> None:
        """Deliver every status change not delivered yet (see `ExecutionWatcher.catch_up`)."""
        if self._watcher is not None:
            self._watcher.catch_up()

    def idle(self) -> bool:
        """No bus event waiting for its function, nor being handed to it."""
        return self._dispatcher is None or self._dispatcher.idle()

    @contextlib.contextmanager
    def losing_status_events(self, lose: Callable[[dict[str, Any]], bool]) -> Iterator[None]:
        """While the block runs, status changes for which ``lose(event)`` holds reach no rule."""
        self._lose_status_event = lose
        try:
            yield
        finally:
            self._lose_status_event = None

    def status_change_event(self, description: Mapping[str, Any]) -> dict[str, Any]:
        return status_change_event(
            description, account_id=self._deployment.account_id, region=self._deployment.region
        )

    def deliver_status_change(self, description: Mapping[str, Any]) -> None:
        """Hand the status change of this DescribeExecution result to each rule that matches it."""
        event = self.status_change_event(description)
        for rule in self._status_rules:
            if not _matches(rule.pattern, event):
                continue
            self.delivered_events.append((rule.function_id, event))
            lose = self._lose_status_event
            if lose is not None and lose(event):
                log.info("status change of %s lost on purpose", description["executionArn"])
                continue
            if self.faults is not None:
                send = functools.partial(self._hand_over, rule.function_id, event)
                self.faults.deliver("status-change", send)
            else:
                self._hand_over(rule.function_id, event)

    def _hand_over(self, function_id: str, event: dict[str, Any]) -> None:
        self._invoke_async(function_id, copy.deepcopy(event))


class ExecutionWatcher:
    """Delivers each status change of an execution of the template's state machines once, as Step
    Functions' EventBridge events do (the rules' patterns then decide who gets it; executions of
    other machines, such as a test's own, are never looked at).

    moto tells the watcher when an execution ends (``moto_shim.on_execution_end``), so nothing is
    polled while runs go on; a full listing every ``interval`` seconds (and on ``catch_up``) is the
    safety net for anything a notification could miss.
    """

    def __init__(
        self, deployment: Deployment, deliver: Callable[[Mapping[str, Any]], None], interval: float
    ) -> None:
        self._deployment = deployment
        self._deliver_status_change = deliver
        self._interval = interval
        self._stop = threading.Event()
        self._ended: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._seen: dict[str, str] = {}  # execution arn -> last status delivered
        self._deliver_lock = threading.RLock()
        self._delivering = 0  # deliveries under way (changed only under _deliver_lock)
        self._listening = moto_shim.on_execution_end(self._ended.put)
        self._thread = threading.Thread(target=self._run, name="relayflow-sfn-watcher", daemon=True)

    def start(self) -> None:
        self._listening.__enter__()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._ended.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._listening.__exit__(None, None, None)

    def catch_up(self, timeout: float = 30.0) -> None:
        """Deliver, now, every status change not delivered yet (a full listing), and wait for the
        deliveries under way in the watcher's thread (a failing rule target is retried)."""
        self.poll()
        deadline = time.monotonic() + timeout
        while (not self._ended.empty() or self._delivering) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        next_poll = time.monotonic() + self._interval
        while not self._stop.is_set():
            try:
                arn = self._ended.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                arn = None
            if self._stop.is_set():
                return
            try:
                if arn is not None:
                    self._deliver(arn)
                else:
                    self.poll()
                    next_poll = time.monotonic() + self._interval
            except Exception:
                log.warning("execution watcher failed", exc_info=True)

    def poll(self) -> None:
        deployment = self._deployment
        for state_machine_arn in list(deployment.state_machines.values()):
            for execution in deployment.executions(state_machine_arn):
                if self._stop.is_set():
                    return
                if self._seen.get(execution["executionArn"]) != execution["status"]:
                    self._deliver(execution["executionArn"])

    def _deliver(self, arn: str) -> None:
        if not self._deployment.is_template_execution(arn):
            return  # not a run of the template's machines: no rule could want it
        with self._deliver_lock:
            self._delivering += 1
            try:
                description = self._deployment.client("stepfunctions").describe_execution(executionArn=arn)
                if self._seen.get(arn) == description["status"]:
                    return
                self._seen[arn] = description["status"]
                self._deliver_status_change(description)
            finally:
                self._delivering -= 1


class RuleDispatcher:
    """Runs the functions of EventBridge rules that moto can match but not invoke (it sends events
    to queues, not to Lambda): each rule gets a queue of the stack as its target, long-polled by a
    thread of its own, and every event that arrives there is handed to the rule's function in a
    thread of its own, like EventBridge's asynchronous invocation (Lambda tries a failing
    asynchronous invocation three times)."""

    ATTEMPTS = 3
    WAIT_SECONDS = 1
    _WAKE = json.dumps({"relayflow-local": "stop"})

    def __init__(self, deployment: Deployment, rules: list[BusRule], invoke_async: InvokeAsync) -> None:
        self._deployment = deployment
        self._invoke_async = invoke_async
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queues = [(rule, self._wire(index, rule)) for index, rule in enumerate(rules)]
        self._threads = [
            threading.Thread(target=self._run, args=queue_, name="relayflow-rule-dispatcher", daemon=True)
            for queue_ in self._queues
        ]

    def _wire(self, index: int, rule: BusRule) -> str:
        events, sqs = self._deployment.client("events"), self._deployment.client("sqs")
        name = physical_name(self._deployment.stack_name, f"{rule.function_id}Rule{index}", 64)
        url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventBusName=rule.bus_name, EventPattern=json.dumps(rule.pattern))
        events.put_targets(Rule=name, EventBusName=rule.bus_name, Targets=[{"Id": "local", "Arn": arn}])
        return url

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and wait (up to timeout) for the invocations under way."""
        self._stop.set()
        sqs = self._deployment.client("sqs")
        for _, url in self._queues:  # ends each long poll at once
            with contextlib.suppress(Exception):
                sqs.send_message(QueueUrl=url, MessageBody=self._WAKE)
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._in_flight:
                    return
            time.sleep(0.02)
        log.warning("rule targets still running when the stack stopped")

    def idle(self) -> bool:
        """No event waiting in a rule's queue and no invocation under way."""
        sqs = self._deployment.client("sqs")
        with self._lock:
            if self._in_flight:
                return False
            for _, url in self._queues:
                attributes = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                if int(attributes["ApproximateNumberOfMessages"]) or int(
                    attributes["ApproximateNumberOfMessagesNotVisible"]
                ):
                    return False
        return True

    def _run(self, rule: BusRule, url: str) -> None:
        sqs = self._deployment.client("sqs")
        while not self._stop.is_set():
            try:
                # A received event stays counted by idle() (not visible) until it is deleted, and is
                # counted in flight before that: idle() never misses it.
                response = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=self.WAIT_SECONDS
                )
                for message in response.get("Messages", []):
                    if message["Body"] != self._WAKE and not self._stop.is_set():
                        with self._lock:
                            self._in_flight += 1
                        threading.Thread(
                            target=self._invoke,
                            args=(rule, json.loads(message["Body"])),
                            name=f"rule-{rule.function_id}",
                            daemon=True,
                        ).start()
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("rule dispatcher poll failed", exc_info=True)
                self._stop.wait(0.5)

    def _invoke(self, rule: BusRule, event: dict[str, Any]) -> None:
        try:
            if not self._stop.is_set():
                self._invoke_async(rule.function_id, event)
        finally:
            with self._lock:
                self._in_flight -= 1


def _epoch_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)

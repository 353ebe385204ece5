"""The embedded local stack: template.yaml deployed into moto, in this process.

`LocalStack` reads the SAM template, creates its tables, bucket, event bus, roles and Lambda
functions in moto (Step Functions execution switched on), puts the functions' environment into
`os.environ`, and wires the template's events that moto does not run by itself:

* S3 `ObjectCreated` notifications: configured on the moto bucket from the function's S3 event;
  moto invokes the function in-process (synchronously, inside the upload call) through the shim.
* The EventBridge rule on `aws.states` "Step Functions Execution Status Change": moto emits no such
  events; the shim tells a watcher thread when an execution ends (a full listing every
  `watch_interval` seconds is the safety net), and it delivers a real-shaped event to each rule
  whose pattern matches it, once.
* Other EventBridge rules of functions (e.g. on the template's own bus): a real rule in moto, so
  moto matches the pattern, whose target is a queue of the stack; a dispatcher thread hands each
  event to the function in a thread of its own, as EventBridge invokes Lambda (asynchronously, a
  failed invocation retried twice).
* Asynchronous invocations (S3 notifications, the rules above, schedules) retry a failing function
  and then send the event to its on-failure destination (EventInvokeConfig); `Type: SQS` events
  are polled as Lambda does; `AWS::Events::Rule` resources with queue targets are created in moto;
  schedules fire on `run_schedule(...)` (see `relayflow.local.delivery`).
* The HTTP API: `handle_api_request(event)` does what API Gateway does (the template's routes,
  its Lambda authorizer with header identity and result caching) before calling the function
  with the HttpApi events; `invoke_api(event)` calls that function directly. See
  `relayflow.local.server` for the HTTP server in front of it.

State machines are the template's `AWS::Serverless::StateMachine` resources: each is created in
moto from its `DefinitionUri` file (statemachine/*.asl.json) with its `DefinitionSubstitutions`
resolved like any other property, so `!Ref RunMachine` in a function's environment is the ARN of
exactly the definition AWS would run. Nothing else creates state machines.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import queue
import re
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from relayflow.local import cfn, delivery, moto_shim
from relayflow.local.durable import DurableState
from relayflow.local.s3_endpoint import S3Endpoint

__all__ = ["LocalFunction", "LocalStack", "StackError", "default_template_path", "event_matches"]

log = logging.getLogger("relayflow.local")

ACCOUNT_ID = "123456789012"  # moto's default account
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
STATUS_CHANGE = "Step Functions Execution Status Change"

# Resource types that have nothing to create locally.
_NOTHING_TO_CREATE = frozenset(
    {
        "AWS::Serverless::HttpApi",
        "AWS::Serverless::Api",
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",
        "AWS::CloudWatch::Alarm",
        "AWS::SQS::QueuePolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::CloudWatch::Dashboard",
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Stage",
        "AWS::ApiGatewayV2::Route",
        "AWS::ApiGatewayV2::Integration",
    }
)
_FUNCTION_TYPES = frozenset({"AWS::Serverless::Function"})
_STATE_MACHINE_TYPES = frozenset({"AWS::Serverless::StateMachine"})
# ${Name} in a definition: a DefinitionSubstitutions variable (CloudFormation's syntax).
_DEFINITION_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class StackError(RuntimeError):
    """The local stack could not be built or used."""


def default_template_path() -> Path:
    """template.yaml of the source checkout this package lives in (or $RELAYFLOW_TEMPLATE)."""
    override = os.environ.get("RELAYFLOW_TEMPLATE")
    if override:
        return Path(override)
    # functions/dev/relayflow/local/stack.py -> repository root
    return Path(__file__).resolve().parents[4] / "template.yaml"


@dataclass
class LocalFunction:
    """One Lambda function of the stack, as created in moto."""

    logical_id: str
    function_name: str
    arn: str
    handler: str
    role_arn: str
    timeout: int = 3
    memory_size: int = 128
    environment: dict[str, str] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    reserved_concurrency: int | None = None

    @property
    def info(self) -> moto_shim.FunctionInfo:
        return moto_shim.FunctionInfo(
            function_name=self.function_name,
            function_arn=self.arn,
            memory_mb=self.memory_size,
            timeout_s=self.timeout,
        )


@dataclass
class HttpRoute:
    """One route of the HTTP API (an HttpApi event of the API function)."""

    method: str  # GET, POST, ... or ANY
    path: str  # /workflows/{id}, /{proxy+}
    authorizer: str | None  # name in the API's Auth.Authorizers; None: open route

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route takes the request, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        return _match_path(self.path, path)

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key, most specific first: API Gateway prefers literal segments over parameters,
        parameters over a greedy {proxy+}, an exact method over ANY."""
        segments = [s for s in self.path.split("/") if s]
        greedy = int(any(s.endswith("+}") for s in segments))
        literals = sum(1 for s in segments if not s.startswith("{"))
        return (greedy, -literals, -len(segments), int(self.method == "ANY"))


@dataclass
class HttpAuthorizer:
    """A Lambda authorizer of the HTTP API (REQUEST, simple responses)."""

    name: str
    function_id: str
    identity_headers: list[str]
    ttl_seconds: int = 0
    payload_version: str = "2.0"


@dataclass
class _StatusRule:
    logical_id: str  # rule = "<function>.<event name>"
    function_id: str
    pattern: dict[str, Any]


@dataclass
class _BusRule:
    logical_id: str  # "<function>.<event name>"
    function_id: str
    pattern: dict[str, Any]
    bus_name: str


#: The interpreter's thread switch interval while a stack runs (see LocalStack._start).
SWITCH_INTERVAL_SECONDS = 0.001


class LocalStack:
    """template.yaml on moto, in-process. One may be started at a time (moto's mock is global).

    Attributes after `start()`: `template`, `context` (the intrinsic-function context),
    `resources` (logical id -> physical id, i.e. the value of !Ref), `outputs` (the template's
    resolved Outputs), `functions` (logical id -> LocalFunction), `state_machines` (logical id ->
    ARN of the template's state machines), `environment` (the variables put into os.environ),
    `delivered_events` (status-change events the watcher delivered: (function logical id, event)),
    `api_routes`, `api_authorizers`, `api_cors`,
    `api_id`, `api_key` (a key the template's authorizer accepts, made with relayflow's own
    `services.apikeys.ensure_local_key`, which reuses $RELAYFLOW_API_KEY; None without authorizer).

    With `data_dir`, the tables, objects and API key are kept there between runs, and runs that a
    stop interrupted are settled at the next start (`relayflow.local.durable`); without it, all is
    in memory and gone at stop. `durable` is that state while the stack runs (None without).
    """

    _active: LocalStack | None = None
    _active_lock = threading.Lock()

    def __init__(
        self,
        template_path: str | Path | None = None,
        *,
        stack_name: str = "relayflow",
        region: str = "us-east-1",
        parameters: Mapping[str, Any] | None = None,
        handler_overrides: Mapping[str, str] | None = None,
        watch_executions: bool = True,
        watch_interval: float = 5.0,
        create_api_key: bool = True,
        run_schedules: bool = False,
        data_dir: str | Path | None = None,
    ) -> None:
        self.template_path = Path(template_path) if template_path else default_template_path()
        self.stack_name = stack_name
        self.region = region
        self.account_id = ACCOUNT_ID
        self.parameters = dict(parameters or {})
        self.handler_overrides = dict(handler_overrides or {})
        self.watch_executions = watch_executions
        self.watch_interval = watch_interval

        self.template: dict[str, Any] = {}
        self.context = cfn.Context()
        self.resources: dict[str, str] = {}
        self.outputs: dict[str, Any] = {}
        self.functions: dict[str, LocalFunction] = {}
        self.state_machines: dict[str, str] = {}
        self.environment: dict[str, str] = {}
        self.api_cors: dict[str, Any] | None = None
        self.api_id = "local"
        self.api_routes: list[HttpRoute] = []
        self.api_authorizers: dict[str, HttpAuthorizer] = {}
        self.api_key: str | None = None
        self.create_api_key = create_api_key
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.durable: DurableState | None = None
        self.s3_endpoint: S3Endpoint | None = None
        self._authorizer_cache: dict[tuple[str, tuple[str, ...]], tuple[float, Any]] = {}
        self._authorizer_lock = threading.Lock()
        self.delivered_events: list[tuple[str, dict[str, Any]]] = []

        self._mock: Any = None
        self._shim_installed = False
        self._saved_environ: dict[str, str | None] = {}
        self._saved_switch_interval: float | None = None
        self._api_lock = threading.RLock()
        self._status_rules: list[_StatusRule] = []
        self._watcher: _ExecutionWatcher | None = None
        self._bus_rules: list[_BusRule] = []
        self._dispatcher: _RuleDispatcher | None = None
        self._helper_role_arn: str | None = None
        self._started = False
        self.async_invoker = delivery.AsyncInvoker(
            self.invoke, self.function_arn, lambda: self.client("sqs"), retry_delay=0.1
        )
        self._queue_sources: list[delivery.QueueSource] = []
        self._queue_pollers: delivery.QueueSources | None = None
        self._schedules: dict[str, str] = {}  # "<function>.<event>" -> rule ARN
        self._schedule_rates: dict[str, float] = {}  # "<function>.<event>" -> seconds
        self.run_schedules = run_schedules
        self._ticker: delivery.Ticker | None = None
        self._lose_status_event: Callable[[dict[str, Any]], bool] | None = None
        self._s3_listening: Any = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> LocalStack:
        with LocalStack._active_lock:
            if LocalStack._active is not None:
                raise StackError("another LocalStack is running in this process; stop it first")
            LocalStack._active = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.template_path.is_file():
            raise StackError(
                f"template.yaml not found at {self.template_path}. The local stack builds itself from "
                "the SAM template of a source checkout: install relayflow editable (pip install -e .) "
                "from the repository, pass LocalStack(template_path=...), or set RELAYFLOW_TEMPLATE."
            )
        self.template = cfn.load_template(self.template_path)
        if self.data_dir is not None:  # locked and checked before anything else starts
            self.durable = DurableState(self.data_dir)
            self.durable.open()
        self._isolate_from_real_aws()

        from moto import mock_aws

        self._mock = mock_aws(
            config={
                "stepfunctions": {"execute_state_machine": True},
                # use_docker stays True: the shim replaces the Docker path. False would switch to
                # moto's canned-response Lambda backend, which never runs our handlers.
                "lambda": {"use_docker": True},
                "core": {"mock_credentials": True, "passthrough": {"urls": [], "services": []}},
            }
        )
        self._mock.start()
        moto_shim.install()
        self._shim_installed = True
        # Every Lambda, Step Functions worker and model call of the stack is a thread of this
        # process. A thread woken by its I/O (a model's answer) waits for the interpreter until the
        # running thread's switch interval ends: 1 ms instead of CPython's 5 ms keeps a busy stack's
        # hand-offs short (a batch at parallelism 10 ran ~8% faster). Restored by stop().
        if self._saved_switch_interval is None:
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch_interval, SWITCH_INTERVAL_SECONDS))

        self.context = cfn.Context.from_template(
            self.template,
            parameter_overrides=self.parameters,
            stack_name=self.stack_name,
            region=self.region,
            account_id=self.account_id,
        )
        self._plan_identities()
        self._create_resources()
        self.outputs = {
            name: self._resolve(spec["Value"], f"Outputs.{name}")
            for name, spec in (self.template.get("Outputs") or {}).items()
            if "Condition" not in spec or self.context.condition(spec["Condition"])
        }
        self._apply_environment()
        if self.durable is not None:
            self.durable.restore(self)
        if self.api_authorizers and self.create_api_key:
            self.api_key = self._local_api_key()
        if self.watch_executions and self._status_rules:
            self._watcher = _ExecutionWatcher(self, self.watch_interval)
            self._watcher.start()
        if self._bus_rules:
            self._dispatcher = _RuleDispatcher(self, self._bus_rules)
            self._dispatcher.start()
        if self._queue_sources:
            self._queue_pollers = delivery.QueueSources(
                self._queue_sources, self.invoke, lambda: self.client("sqs"), self.region
            )
            self._queue_pollers.start()
        self._s3_listening = moto_shim.on_s3_lambda_notification(self._s3_notification)
        self._s3_listening.__enter__()
        if self.run_schedules:
            self._ticker = delivery.Ticker(self.run_schedule, self._schedule_rates)
            self._ticker.start()
        if self.durable is not None:  # once the rules run: the failures notify as any other would
            self.durable.settle_interrupted_runs()
        self._started = True

    def serve_s3(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve the stack's S3 and EventBridge on host:port (0: a free port) until stop(): the
        user's own tools (aws s3 cp, boto3) reach the stack's bucket there. Returns the URL."""
        if not self._started:
            raise StackError("start the stack first")
        if self.s3_endpoint is None:
            self.s3_endpoint = S3Endpoint(host, port).start()
        return self.s3_endpoint.url

    def stop(self) -> None:
        """Stop the watcher, abort running executions, stop moto and restore the environment."""
        self._started = False
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self.s3_endpoint is not None:
            self.s3_endpoint.stop()
            self.s3_endpoint = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        if self._queue_pollers is not None:
            self._queue_pollers.stop()
            self._queue_pollers = None
        if self._s3_listening is not None:
            self._s3_listening.__exit__(None, None, None)
            self._s3_listening = None
        if self._mock is not None:
            try:
                self._abort_running_executions()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("aborting executions on stop failed", exc_info=True)
            self._close_durable()  # while moto still holds the state
            self._mock.stop()
            self._mock = None
        self._close_durable()
        if self._shim_installed:
            moto_shim.uninstall()
            self._shim_installed = False
        self._restore_environ()
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None
        with LocalStack._active_lock:
            if LocalStack._active is self:
                LocalStack._active = None

    def _close_durable(self) -> None:
        if self.durable is not None:
            durable, self.durable = self.durable, None
            durable.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ using the stack

    def client(self, service: str) -> Any:
        """A boto3 client for `service` in the stack's region (talks to moto while started)."""
        return _shared_client(service, self.region)

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Call a function's handler in-process, as Lambda would (JSON in, JSON out).
        Its exceptions propagate."""
        function = self._function(logical_id)
        return moto_shim.dispatch(function.handler, event, function=function.info)

    def invoke_async(self, logical_id: str, event: Any) -> bool:
        """Invoke a function as Lambda does for an asynchronous caller (S3, EventBridge): retried,
        then sent to its on-failure destination. True when an attempt succeeded."""
        return self.async_invoker(logical_id, event)

    @property
    def failed_invocations(self) -> list[delivery.FailedInvocation]:
        """Asynchronous invocations whose every attempt failed (see `invoke_async`)."""
        return list(self.async_invoker.failed)

    @contextlib.contextmanager
    def losing_status_events(
        self, lose: Callable[[dict[str, Any]], bool] = lambda event: True
    ) -> Iterator[None]:
        """While the block runs, Step Functions status-change events for which ``lose(event)`` holds
        reach no rule, as if EventBridge had lost them (what the sweeper is for)."""
        self._lose_status_event = lose
        try:
            yield
        finally:
            self._lose_status_event = None

    def run_schedule(self, logical_id: str, event_name: str | None = None) -> bool:
        """Fire a function's schedule once (EventBridge's scheduled event, invoked asynchronously);
        schedules do not tick by themselves locally."""
        keys = [k for k in self._schedules if k.split(".", 1)[0] == logical_id]
        if event_name is not None:
            keys = [k for k in keys if k == f"{logical_id}.{event_name}"]
        if not keys:
            raise StackError(f"{logical_id} has no schedule")
        event = delivery.scheduled_event(self._schedules[keys[0]], self.region, self.account_id)
        return self.invoke_async(logical_id, event)

    def _s3_notification(self, function_arn: str, event: Any) -> None:
        by_arn = {f.arn: logical_id for logical_id, f in self.functions.items()}
        logical_id = by_arn.get(function_arn.split(":$LATEST")[0])
        if logical_id is None:
            log.warning("S3 notification for %s, which is not a function of the stack", function_arn)
            return
        self.invoke_async(logical_id, event)

    def invoke_api(self, event: Mapping[str, Any]) -> Any:
        """Call the HTTP API's function with an API Gateway v2 event; returns its raw result.

        One request at a time: Powertools' resolver keeps the request it is answering on its
        module-level app, which concurrent requests in threads of one process would share (Lambda
        runs concurrent requests in separate instances)."""
        with self._api_lock:
            return self.invoke(self.api_function_id, dict(event))

    def handle_api_request(self, event: Mapping[str, Any]) -> Any:
        """What API Gateway does with a request event built for `ANY /{proxy+}`: pick the
        template's route (routeKey, pathParameters), run the route's Lambda authorizer (401 without
        the identity header, 403 when it refuses, its context in requestContext.authorizer.lambda),
        then call the API function. Returns the function's result or the gateway's own answer."""
        request = copy.deepcopy(dict(event))
        context = request.setdefault("requestContext", {})
        method = context.get("http", {}).get("method", "GET")
        route = self.match_route(method, request.get("rawPath", "/"))
        if route is None:
            return _gateway_answer(404, "Not Found")
        route_key, parameters = route
        request["routeKey"] = context["routeKey"] = route_key.route_key
        if parameters:
            request["pathParameters"] = parameters
        else:
            request.pop("pathParameters", None)
        if route_key.authorizer is not None:
            authorizer = self.api_authorizers[route_key.authorizer]
            headers = request.get("headers") or {}
            identity = tuple(headers.get(h.lower(), "") for h in authorizer.identity_headers)
            if not all(identity):
                return _gateway_answer(401, "Unauthorized")
            try:
                answer = self._authorize(authorizer, identity, request)
            except Exception:
                log.exception("authorizer %s failed", authorizer.name)
                return _gateway_answer(500, "Internal Server Error")
            if not (isinstance(answer, Mapping) and answer.get("isAuthorized") is True):
                return _gateway_answer(403, "Forbidden")
            context["authorizer"] = {"lambda": dict(answer.get("context") or {})}
        return self.invoke_api(request)

    def match_route(self, method: str, raw_path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The template route API Gateway would pick for this request, with its path parameters."""
        for route in self.api_routes:
            parameters = route.match(method, raw_path)
            if parameters is not None:
                return route, parameters
        return None

    def flush_authorizer_cache(self) -> None:
        with self._authorizer_lock:
            self._authorizer_cache.clear()

    def _authorize(
        self, authorizer: HttpAuthorizer, identity: tuple[str, ...], request: dict[str, Any]
    ) -> Any:
        cache_key = (authorizer.name, identity)
        now = time.monotonic()
        with self._authorizer_lock:
            cached = self._authorizer_cache.get(cache_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        event = {key: value for key, value in request.items() if key not in ("body", "isBase64Encoded")}
        event.update(
            {
                "version": authorizer.payload_version,
                "type": "REQUEST",
                "routeArn": self._arn(
                    "execute-api",
                    f"{self.api_id}/$default/{request['requestContext']['http']['method']}{request['rawPath']}",
                ),
                "identitySource": list(identity),
            }
        )
        answer = self.invoke(authorizer.function_id, event)
        if authorizer.ttl_seconds > 0:
            with self._authorizer_lock:
                self._authorizer_cache[cache_key] = (now + authorizer.ttl_seconds, answer)
        return answer

    def _local_api_key(self) -> str | None:
        """A key the local authorizer accepts (relayflow's own; $RELAYFLOW_API_KEY is reused)."""
        try:
            from relayflow_runtime.services import apikeys
        except ImportError:  # pragma: no cover - the package without its key logic
            return None
        if self.durable is not None:
            return self.durable.api_key()
        ensure = getattr(apikeys, "ensure_local_key", None)
        return str(ensure()) if callable(ensure) else None

    @property
    def api_function_id(self) -> str:
        for logical_id, function in self.functions.items():
            if any(e.get("Type") in ("HttpApi", "Api") for e in function.events.values()):
                return logical_id
        raise StackError("no function in the template has an HttpApi event")

    def override_handler(self, logical_id: str, handler: str) -> None:
        """Point a function at another Handler string (a test double), for every path that
        reaches it: Step Functions tasks, S3 notifications, the watcher, invoke()."""
        function = self._function(logical_id)
        self.client("lambda").update_function_configuration(
            FunctionName=function.function_name, Handler=handler
        )
        function.handler = handler

    def function_arn(self, logical_id: str) -> str:
        return self._function(logical_id).arn

    def register_function(
        self,
        logical_id: str,
        handler: str,
        *,
        environment: Mapping[str, str] | None = None,
        timeout: int = 30,
        memory_size: int = 128,
    ) -> str:
        """Create an extra (test-only) Lambda function in moto whose Handler is `handler`; returns
        its ARN. Step Functions tasks and `lambda.invoke` reach it through the shim."""
        if logical_id in self.functions:
            raise StackError(f"function {logical_id!r} already exists")
        if self._helper_role_arn is None:
            self._helper_role_arn = self._create_role(
                f"{self.stack_name}-local-helper-role", _LAMBDA_TRUST, {}
            )
        name = _physical_name(self.stack_name, logical_id, 64)
        function = LocalFunction(
            logical_id=logical_id,
            function_name=name,
            arn=self._arn("lambda", f"function:{name}"),
            handler=handler,
            role_arn=self._helper_role_arn,
            timeout=timeout,
            memory_size=memory_size,
            environment=dict(environment or {}),
        )
        self._create_function(function, {})
        self.functions[logical_id] = function
        return function.arn

    def wait_idle(self, timeout: float = 30.0, interval: float = 0.05) -> bool:
        """Wait until no execution is RUNNING and the watcher delivered every status change.
        True when idle, False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._running_executions():
                if self._watcher is not None:
                    self._watcher.catch_up()  # delivers what ended, maybe waking rule targets
                if (self._dispatcher is None or self._dispatcher.idle()) and (
                    self._queue_pollers is None or self._queue_pollers.idle()
                ):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def wait_for_execution(self, execution_arn: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll DescribeExecution until the execution is no longer RUNNING; returns the description."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            description: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return description
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{execution_arn} still RUNNING after {timeout}s")
            time.sleep(0.05)

    # ------------------------------------------------------------------ building

    def _function(self, logical_id: str) -> LocalFunction:
        try:
            return self.functions[logical_id]
        except KeyError:
            raise StackError(f"no function {logical_id!r}; have {sorted(self.functions)}") from None

    def _resolve(self, value: Any, where: str) -> Any:
        try:
            return cfn.resolve(value, self.context)
        except cfn.TemplateError as exc:
            raise StackError(f"{self.template_path.name}: {where}: {exc}") from exc

    def _arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.context.partition}:{service}:{self.region if region else ''}:"
            f"{self.account_id if account else ''}:{resource}"
        )

    def _active_resources(self) -> dict[str, dict[str, Any]]:
        return {
            logical_id: spec
            for logical_id, spec in self.template["Resources"].items()
            if "Condition" not in spec or self.context.condition(spec["Condition"])
        }

    def _explicit_name(self, logical_id: str, spec: Mapping[str, Any], key: str) -> str | None:
        value = (spec.get("Properties") or {}).get(key)
        if value is None:
            return None
        try:
            return str(cfn.resolve(value, self.context))
        except cfn.UnresolvableError as exc:
            raise StackError(
                f"{logical_id}.{key} may only use parameters / pseudo parameters: {exc}"
            ) from exc

    def _plan_identities(self) -> None:
        """Ref values and GetAtt attributes of every resource, before anything is created."""
        refs, attributes = self.context.refs, self.context.attributes
        for logical_id, spec in self._active_resources().items():
            kind = spec.get("Type", "")
            if kind == "AWS::DynamoDB::Table":
                name = self._explicit_name(logical_id, spec, "TableName") or _physical_name(
                    self.stack_name, logical_id, 255
                )
                arn = self._arn("dynamodb", f"table/{name}")
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": arn, "StreamArn": f"{arn}/stream/1970-01-01T00:00:00.000"}
            elif kind == "AWS::S3::Bucket":
                name = (
                    self._explicit_name(logical_id, spec, "BucketName")
                    or _physical_name(self.stack_name, logical_id, 63).lower()
                )
                refs[logical_id] = name
                attributes[logical_id] = {
                    "Arn": f"arn:{self.context.partition}:s3:::{name}",
                    "DomainName": f"{name}.s3.amazonaws.com",
                    "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
                    "WebsiteURL": f"http://{name}.s3-website-{self.region}.amazonaws.com",
                }
            elif kind == "AWS::Events::EventBus":
                name = self._explicit_name(logical_id, spec, "Name") or logical_id
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": self._arn("events", f"event-bus/{name}"), "Name": name}
            elif kind == "AWS::IAM::Role":
                name = self._explicit_name(logical_id, spec, "RoleName") or _physical_name(
                    self.stack_name, logical_id, 64
                )
                self._plan_role(logical_id, name)
            elif kind == "AWS::SQS::Queue":
                name = self._explicit_name(logical_id, spec, "QueueName") or _physical_name(
                    self.stack_name, logical_id, 80
                )
                if (spec.get("Properties") or {}).get("FifoQueue") and not name.endswith(".fifo"):
                    name = f"{name[:75]}.fifo"
                url = f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{name}"
                refs[logical_id] = url
                attributes[logical_id] = {
                    "Arn": self._arn("sqs", name),
                    "QueueName": name,
                    "QueueUrl": url,
                }
            elif kind == "AWS::Events::Rule":
                name = self._explicit_name(logical_id, spec, "Name") or _physical_name(
                    self.stack_name, logical_id, 64
                )
                refs[logical_id] = name
                # A rule on a custom bus is rule/<bus>/<name>: the ARN moto gives it replaces this.
                attributes[logical_id] = {"Arn": self._arn("events", f"rule/{name}")}
            elif kind == "AWS::SNS::Topic":
                name = self._explicit_name(logical_id, spec, "TopicName") or _physical_name(
                    self.stack_name, logical_id, 256
                )
                refs[logical_id] = self._arn("sns", name)
                attributes[logical_id] = {"TopicArn": refs[logical_id], "TopicName": name}
            elif kind in _FUNCTION_TYPES:
                name = self._explicit_name(logical_id, spec, "FunctionName") or _physical_name(
                    self.stack_name, logical_id, 64
                )
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": self._arn("lambda", f"function:{name}")}
                if "Role" not in (spec.get("Properties") or {}):
                    self._plan_role(
                        f"{logical_id}Role", _physical_name(self.stack_name, f"{logical_id}Role", 64)
                    )
            elif kind in _STATE_MACHINE_TYPES:
                name = self._explicit_name(logical_id, spec, "Name") or _physical_name(
                    self.stack_name, logical_id, 80
                )
                arn = self._arn("states", f"stateMachine:{name}")
                refs[logical_id] = arn
                attributes[logical_id] = {"Arn": arn, "Name": name}
                if "Role" not in (spec.get("Properties") or {}):
                    self._plan_role(
                        f"{logical_id}Role", _physical_name(self.stack_name, f"{logical_id}Role", 64)
                    )
            elif kind in ("AWS::Serverless::HttpApi", "AWS::Serverless::Api"):
                api_id = hashlib.sha1(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:10]
                refs[logical_id] = api_id
                attributes[logical_id] = {
                    "ApiId": api_id,
                    "ApiEndpoint": f"https://{api_id}.execute-api.{self.region}.amazonaws.com",
                    "RootResourceId": api_id,
                }
            elif kind == "AWS::Logs::LogGroup":  # nothing to create; its name and ARN are known
                name = self._explicit_name(logical_id, spec, "LogGroupName") or _physical_name(
                    self.stack_name, logical_id, 512
                )
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": self._arn("logs", f"log-group:{name}:*")}
            elif kind in _NOTHING_TO_CREATE:
                refs[logical_id] = _physical_name(self.stack_name, logical_id, 64)
            else:
                raise StackError(
                    f"{logical_id}: resource type {kind} is not supported by the local stack "
                    "(relayflow/local/stack.py creates the types template.yaml uses)"
                )

    def _plan_role(self, logical_id: str, name: str) -> None:
        self.context.refs[logical_id] = name
        self.context.attributes[logical_id] = {
            "Arn": self._arn("iam", f"role/{name}", region=False),
            "RoleId": "AROA" + hashlib.sha1(name.encode()).hexdigest()[:17].upper(),
        }

    def _create_resources(self) -> None:
        resources = self._active_resources()
        by_type: dict[str, list[str]] = {}
        for logical_id, spec in resources.items():
            by_type.setdefault(spec["Type"], []).append(logical_id)

        for logical_id in by_type.get("AWS::IAM::Role", []):
            properties = self._resolve(resources[logical_id].get("Properties") or {}, logical_id)
            self._create_role(
                self.context.refs[logical_id],
                properties.get("AssumeRolePolicyDocument", _LAMBDA_TRUST),
                {p["PolicyName"]: p["PolicyDocument"] for p in properties.get("Policies", [])},
                path=properties.get("Path", "/"),
            )
        for logical_id in by_type.get("AWS::DynamoDB::Table", []):
            self._create_table(logical_id, self._resolve(resources[logical_id]["Properties"], logical_id))
        for logical_id in by_type.get("AWS::S3::Bucket", []):
            self._create_bucket(
                logical_id, self._resolve(resources[logical_id].get("Properties") or {}, logical_id)
            )
        for logical_id in by_type.get("AWS::Events::EventBus", []):
            self.client("events").create_event_bus(Name=self.context.refs[logical_id])
        for logical_id in by_type.get("AWS::SQS::Queue", []):
            properties = self._resolve(resources[logical_id].get("Properties") or {}, logical_id)
            attributes = {
                key: json.dumps(value)
                if isinstance(value, dict)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
                for key, value in properties.items()
                if key not in ("QueueName", "Tags")
            }
            self.client("sqs").create_queue(
                QueueName=self.context.attributes[logical_id]["QueueName"], Attributes=attributes
            )
        globals_ = (self.template.get("Globals") or {}).get("Function") or {}
        for logical_id in by_type.get("AWS::Serverless::Function", []):
            spec = _merge_sam_globals(globals_, resources[logical_id].get("Properties") or {})
            self._create_sam_function(logical_id, spec)
        # After the functions: a definition's substitutions name their ARNs.
        for logical_id in by_type.get("AWS::Serverless::StateMachine", []):
            self._create_state_machine(logical_id, resources[logical_id].get("Properties") or {})
        for logical_id in by_type.get("AWS::Events::Rule", []):
            self._create_rule(logical_id, resources[logical_id])
        self._wire_s3_notifications(resources)
        self._wire_http_api(resources)
        self.resources = {logical_id: str(ref) for logical_id, ref in self.context.refs.items()}

    def _create_rule(self, logical_id: str, spec: Mapping[str, Any]) -> None:
        """An EventBridge rule of the template, in moto: its queue targets receive what it matches
        (other targets are not run locally)."""
        properties = self._resolve(spec.get("Properties") or {}, logical_id)
        name = self.context.refs[logical_id]
        bus = str(properties.get("EventBusName") or "default")
        events = self.client("events")
        if "EventPattern" not in properties:
            log.warning("%s: only rules with an EventPattern are run locally", logical_id)
            return
        events.put_rule(
            Name=name,
            EventBusName=bus,
            EventPattern=json.dumps(properties["EventPattern"]),
            State=str(properties.get("State", "ENABLED")),
        )
        arn = events.describe_rule(Name=name, EventBusName=bus)["Arn"]
        self.context.attributes[logical_id] = {"Arn": arn}
        targets = []
        for target in properties.get("Targets") or []:
            if ":sqs:" not in str(target.get("Arn", "")):
                log.warning("%s: target %s is not a queue: not run locally", logical_id, target.get("Id"))
                continue
            targets.append({"Id": str(target["Id"]), "Arn": str(target["Arn"])})
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)

    def _create_role(
        self, name: str, trust: Mapping[str, Any], policies: Mapping[str, Any], *, path: str = "/"
    ) -> str:
        iam = self.client("iam")
        arn: str = iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]["Arn"]
        for policy_name, document in policies.items():
            iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        return arn

    def _create_table(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self.context.refs[logical_id]
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in properties:
                request[key] = [
                    {k: v for k, v in index.items() if k != "ContributorInsightsSpecification"}
                    for index in properties[key]
                ]
        for key in ("ProvisionedThroughput", "TableClass", "DeletionProtectionEnabled", "Tags"):
            if key in properties:
                request[key] = properties[key]
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
        if "SSESpecification" in properties:
            sse = properties["SSESpecification"]
            request["SSESpecification"] = {
                "Enabled": bool(sse.get("SSEEnabled")),
                **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
                **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
            }
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(**request)
        ttl = properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        pitr = properties.get("PointInTimeRecoverySpecification")
        if pitr and pitr.get("PointInTimeRecoveryEnabled"):
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self.context.refs[logical_id]
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        encryption = (properties.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration")
        if encryption:
            # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSideEncryptionByDefault
            rules = [
                {("Apply" + k if k == "ServerSideEncryptionByDefault" else k): v for k, v in rule.items()}
                for rule in encryption
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in properties:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"]
            )
        versioning = (properties.get("VersioningConfiguration") or {}).get("Status")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
        if "OwnershipControls" in properties:
            s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=properties["OwnershipControls"])
        lifecycle = (properties.get("LifecycleConfiguration") or {}).get("Rules")
        if lifecycle:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in lifecycle]}
            )
        cors = (properties.get("CorsConfiguration") or {}).get("CorsRules")
        if cors:
            renamed = {"Id": "ID", "MaxAge": "MaxAgeSeconds"}
            rules = [{renamed.get(k, k): v for k, v in rule.items()} for rule in cors]
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})

    def definition_of(self, logical_id: str) -> str:
        """The definition a state machine of the template is created with: its DefinitionUri file
        (or inline Definition) with DefinitionSubstitutions filled in, as CloudFormation does."""
        spec = self.template["Resources"][logical_id]
        properties = spec.get("Properties") or {}
        if "DefinitionUri" in properties:
            uri = properties["DefinitionUri"]
            if not isinstance(uri, str) or uri.startswith("s3://"):
                raise StackError(f"{logical_id}: DefinitionUri must be a file of the checkout, got {uri!r}")
            path = (self.template_path.parent / uri).resolve()
            if not path.is_file():
                raise StackError(f"{logical_id}: DefinitionUri {uri} not found at {path}")
            text = path.read_text(encoding="utf-8")
        elif "Definition" in properties:
            text = json.dumps(self._resolve(properties["Definition"], f"{logical_id}.Definition"))
        else:
            raise StackError(f"{logical_id}: no DefinitionUri or Definition")
        substitutions = self._resolve(
            properties.get("DefinitionSubstitutions") or {}, f"{logical_id}.DefinitionSubstitutions"
        )

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in substitutions:
                raise StackError(
                    f"{logical_id}: the definition uses ${{{name}}}, which DefinitionSubstitutions "
                    f"does not set (it sets {sorted(substitutions)})"
                )
            value = substitutions[name]
            return value if isinstance(value, str) else json.dumps(value)

        return _DEFINITION_VARIABLE.sub(substitute, text)

    def _create_state_machine(self, logical_id: str, spec: Mapping[str, Any]) -> None:
        properties = self._resolve(
            {k: v for k, v in spec.items() if k not in ("Definition", "DefinitionSubstitutions", "Events")},
            logical_id,
        )
        if spec.get("Events"):
            log.warning("%s: state machine events are not run locally", logical_id)
        definition = self.definition_of(logical_id)
        if "Role" in properties:
            role_arn = str(properties["Role"])
        else:
            statements = [
                statement
                for policy in properties.get("Policies") or []
                if isinstance(policy, dict) and "Statement" in policy
                for statement in policy["Statement"]
            ]
            inline = {"inline": {"Version": "2012-10-17", "Statement": statements}} if statements else {}
            role_arn = self._create_role(self.context.refs[f"{logical_id}Role"], _STATES_TRUST, inline)
        request: dict[str, Any] = {
            "name": self.context.attributes[logical_id]["Name"],
            "definition": definition,
            "roleArn": role_arn,
            "type": properties.get("Type", "STANDARD"),
        }
        if (properties.get("Tracing") or {}).get("Enabled") is not None:
            request["tracingConfiguration"] = {"enabled": bool(properties["Tracing"]["Enabled"])}
        arn: str = self.client("stepfunctions").create_state_machine(**request)["stateMachineArn"]
        if arn != self.context.refs[logical_id]:  # pragma: no cover - moto's ARN scheme changed
            raise StackError(
                f"{logical_id}: moto made {arn}, the template's !Ref says {self.context.refs[logical_id]}"
            )
        self.state_machines[logical_id] = arn

    def _create_sam_function(self, logical_id: str, spec: Mapping[str, Any]) -> None:
        properties = self._resolve({k: v for k, v in spec.items() if k != "Events"}, logical_id)
        events = dict(spec.get("Events") or {})
        name = self.context.refs[logical_id]
        if "Role" in properties:
            role_arn = str(properties["Role"])
        else:
            role_id = f"{logical_id}Role"
            statements = [
                statement
                for policy in properties.get("Policies") or []
                if isinstance(policy, dict) and "Statement" in policy
                for statement in policy["Statement"]
            ]
            inline = {"inline": {"Version": "2012-10-17", "Statement": statements}} if statements else {}
            role_arn = self._create_role(self.context.refs[role_id], _LAMBDA_TRUST, inline)
        handler = self.handler_overrides.get(logical_id) or properties.get("Handler")
        if not handler:
            raise StackError(f"{logical_id}: no Handler")
        function = LocalFunction(
            logical_id=logical_id,
            function_name=name,
            arn=self.context.attributes[logical_id]["Arn"],
            handler=str(handler),
            role_arn=role_arn,
            timeout=int(properties.get("Timeout", 3)),
            memory_size=int(properties.get("MemorySize", 128)),
            environment={
                key: _env_string(value)
                for key, value in ((properties.get("Environment") or {}).get("Variables") or {}).items()
            },
            events=events,
            reserved_concurrency=(
                int(properties["ReservedConcurrentExecutions"])
                if "ReservedConcurrentExecutions" in properties
                else None
            ),
        )
        self._create_function(function, properties)
        self.functions[logical_id] = function
        self.async_invoker.configs[logical_id] = delivery.AsyncInvokeConfig.of(properties)
        for event_name, event in events.items():
            if event.get("Type") in ("EventBridgeRule", "CloudWatchEvent"):
                pattern = self._resolve((event.get("Properties") or {}).get("Pattern") or {}, logical_id)
                if "aws.states" in _as_list(pattern.get("source")):
                    self._status_rules.append(_StatusRule(f"{logical_id}.{event_name}", logical_id, pattern))
                else:
                    bus = self._resolve(
                        (event.get("Properties") or {}).get("EventBusName") or "default", logical_id
                    )
                    self._bus_rules.append(
                        _BusRule(f"{logical_id}.{event_name}", logical_id, pattern, str(bus))
                    )
            elif event.get("Type") == "SQS":
                source = self._resolve(event.get("Properties") or {}, f"{logical_id}.{event_name}")
                responses = source.get("FunctionResponseTypes") or []
                self._queue_sources.append(
                    delivery.QueueSource(
                        function_id=logical_id,
                        queue_arn=str(source["Queue"]),
                        batch_size=int(source.get("BatchSize", 10)),
                        report_failures="ReportBatchItemFailures" in responses,
                    )
                )
            elif event.get("Type") in ("Schedule", "ScheduleV2"):
                key = f"{logical_id}.{event_name}"
                self._schedules[key] = self._arn(
                    "events", f"rule/{_physical_name(self.stack_name, f'{logical_id}{event_name}', 64)}"
                )
                expression = self._resolve((event.get("Properties") or {}).get("Schedule", ""), key)
                period = delivery.rate_seconds(str(expression))
                if period is not None:
                    self._schedule_rates[key] = period
                else:
                    log.warning("%s: schedule %r does not tick locally (only rate(...))", key, expression)
            elif event.get("Type") not in ("HttpApi", "Api", "S3"):
                log.warning("%s.%s: %s events are not run locally", logical_id, event_name, event.get("Type"))

    def _create_function(self, function: LocalFunction, properties: Mapping[str, Any]) -> None:
        request: dict[str, Any] = {
            "FunctionName": function.function_name,
            "Runtime": properties.get("Runtime", "python3.13"),
            "Role": function.role_arn,
            "Handler": function.handler,
            "Code": {"ZipFile": _DUMMY_ZIP},
            "Timeout": function.timeout,
            "MemorySize": function.memory_size,
            "Environment": {"Variables": function.environment},
        }
        if properties.get("Architectures"):
            request["Architectures"] = properties["Architectures"]
        if properties.get("Tracing"):
            request["TracingConfig"] = {"Mode": properties["Tracing"]}
        if properties.get("Description"):
            request["Description"] = properties["Description"]
        self.client("lambda").create_function(**request)

    def _wire_s3_notifications(self, resources: Mapping[str, Mapping[str, Any]]) -> None:
        """S3 events of SAM functions (and plain LambdaConfigurations) -> bucket notifications."""
        per_bucket: dict[str, list[dict[str, Any]]] = {}
        for logical_id, function in self.functions.items():
            for event_name, event in function.events.items():
                if event.get("Type") != "S3":
                    continue
                properties = event.get("Properties") or {}
                bucket = properties.get("Bucket")
                if not (isinstance(bucket, dict) and "Ref" in bucket and bucket["Ref"] in resources):
                    raise StackError(
                        f"{logical_id}.{event_name}: Bucket must be !Ref of a bucket in the template"
                    )
                resolved = self._resolve(properties, f"{logical_id}.{event_name}")
                for s3_event in _as_list(resolved.get("Events")):
                    per_bucket.setdefault(bucket["Ref"], []).append(
                        _lambda_notification(
                            f"{logical_id}{event_name}", function.arn, s3_event, resolved.get("Filter")
                        )
                    )
        for logical_id, spec in resources.items():
            if spec.get("Type") != "AWS::S3::Bucket":
                continue
            configuration = self._resolve(
                ((spec.get("Properties") or {}).get("NotificationConfiguration") or {}), logical_id
            )
            for index, item in enumerate(configuration.get("LambdaConfigurations") or []):
                per_bucket.setdefault(logical_id, []).append(
                    _lambda_notification(
                        f"{logical_id}{index}", item["Function"], item["Event"], item.get("Filter")
                    )
                )
        for bucket_id, configurations in per_bucket.items():
            self.client("s3").put_bucket_notification_configuration(
                Bucket=self.context.refs[bucket_id],
                NotificationConfiguration={"LambdaFunctionConfigurations": configurations},
            )

    def _wire_http_api(self, resources: Mapping[str, Mapping[str, Any]]) -> None:
        try:
            function = self.functions[self.api_function_id]
        except StackError:
            return
        api_properties: dict[str, Any] = {}
        for event in function.events.values():
            api_ref = (event.get("Properties") or {}).get("ApiId")
            if isinstance(api_ref, dict) and api_ref.get("Ref") in resources:
                self.api_id = str(self.context.refs[api_ref["Ref"]])
                api_properties = self._resolve(
                    {k: v for k, v in (resources[api_ref["Ref"]].get("Properties") or {}).items()},
                    api_ref["Ref"],
                )
                break
        cors = api_properties.get("CorsConfiguration")
        if cors is True:
            cors = {"AllowOrigins": ["*"], "AllowMethods": ["*"], "AllowHeaders": ["*"]}
        self.api_cors = cors or None
        auth = api_properties.get("Auth") or {}
        by_arn = {f.arn: logical_id for logical_id, f in self.functions.items()}
        for name, spec in (auth.get("Authorizers") or {}).items():
            if "FunctionArn" not in spec:
                log.warning("authorizer %s is not a Lambda authorizer: not run locally", name)
                continue
            if str(spec["FunctionArn"]) not in by_arn:
                raise StackError(f"authorizer {name}: FunctionArn must be a function of the template")
            identity = spec.get("Identity") or {}
            if identity.get("QueryStrings") or identity.get("Context") or identity.get("StageVariables"):
                raise StackError(f"authorizer {name}: only header identity sources are run locally")
            if not spec.get("EnableSimpleResponses"):
                raise StackError(f"authorizer {name}: only simple responses are run locally")
            self.api_authorizers[name] = HttpAuthorizer(
                name=name,
                function_id=by_arn[str(spec["FunctionArn"])],
                identity_headers=[str(h) for h in identity.get("Headers") or []],
                ttl_seconds=int(identity.get("ReauthorizeEvery", 300)),
                payload_version=str(spec.get("AuthorizerPayloadFormatVersion", "2.0")),
            )
        default_authorizer = auth.get("DefaultAuthorizer")
        for event_name, event in function.events.items():
            if event.get("Type") not in ("HttpApi", "Api"):
                continue
            properties = event.get("Properties") or {}
            authorizer = (properties.get("Auth") or {}).get("Authorizer", default_authorizer)
            if authorizer in ("NONE", None):
                authorizer = None
            elif authorizer not in self.api_authorizers:
                raise StackError(f"{function.logical_id}.{event_name}: unknown authorizer {authorizer!r}")
            self.api_routes.append(
                HttpRoute(
                    method=str(properties.get("Method", "ANY")).upper(),
                    path=str(properties.get("Path", "/{proxy+}")),
                    authorizer=authorizer,
                )
            )
        self.api_routes.sort(key=lambda route: route.specificity)

    def _apply_environment(self) -> None:
        """The union of the functions' environments goes into os.environ: one process runs them
        all, so two functions may not disagree on a variable."""
        union: dict[str, str] = {}
        owner: dict[str, str] = {}
        for logical_id, function in self.functions.items():
            for key, value in function.environment.items():
                if key in union and union[key] != value:
                    raise StackError(
                        f"{logical_id} and {owner[key]} set {key} differently ({value!r} vs {union[key]!r}); "
                        "the local stack runs every function in one process and needs one value"
                    )
                union[key] = value
                owner.setdefault(key, logical_id)
        self.environment = union
        for key, value in union.items():
            self._set_environ(key, value)
        # X-Ray has no daemon here; Powertools' Tracer is off outside Lambda anyway.
        if "POWERTOOLS_TRACE_DISABLED" not in os.environ:
            self._set_environ("POWERTOOLS_TRACE_DISABLED", "true")
        # Nor CloudWatch: metrics (EMF lines on stdout) would only clutter the console and test output.
        if "POWERTOOLS_METRICS_DISABLED" not in os.environ:
            self._set_environ("POWERTOOLS_METRICS_DISABLED", "true")
        self._reset_relayflow_caches()

    # ------------------------------------------------------------------ environment

    def _set_environ(self, key: str, value: str | None) -> None:
        if key not in self._saved_environ:
            self._saved_environ[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def _isolate_from_real_aws(self) -> None:
        """Fake credentials and no profile, config file or endpoint override: nothing this process
        does while the stack runs can reach a real account."""
        for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
            self._set_environ(key, None)
        for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            self._set_environ(key, None)
        self._set_environ("AWS_CONFIG_FILE", os.devnull)
        self._set_environ("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        self._set_environ("AWS_ACCESS_KEY_ID", "testing")
        self._set_environ("AWS_SECRET_ACCESS_KEY", "testing")
        self._set_environ("AWS_SESSION_TOKEN", "testing")
        self._set_environ("AWS_DEFAULT_REGION", self.region)
        self._set_environ("AWS_REGION", self.region)

    def _restore_environ(self) -> None:
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ.clear()
        self._reset_relayflow_caches()

    @staticmethod
    def _reset_relayflow_caches() -> None:
        from relayflow_runtime import settings

        settings.reset_caches()

    # ------------------------------------------------------------------ executions

    def _state_machine_arns(self) -> list[str]:
        """Every state machine in moto: the template's, and any a test made."""
        paginator = self.client("stepfunctions").get_paginator("list_state_machines")
        return [sm["stateMachineArn"] for page in paginator.paginate() for sm in page["stateMachines"]]

    def is_template_execution(self, execution_arn: str) -> bool:
        """Whether an execution ARN (arn:...:execution:<machine name>:<id>) is a run of one of the
        template's state machines; a distributed Map's child (<machine>/<label>:<id>) is not."""
        parts = execution_arn.split(":")
        if len(parts) < 8 or parts[5] != "execution":
            return False
        machine = ":".join([*parts[:5], "stateMachine", parts[6]])
        return machine in self.state_machines.values()

    def _executions(self, state_machine_arn: str) -> list[dict[str, Any]]:
        paginator = self.client("stepfunctions").get_paginator("list_executions")
        return [
            execution
            for page in paginator.paginate(stateMachineArn=state_machine_arn)
            for execution in page["executions"]
        ]

    def _running_executions(self) -> list[str]:
        return [
            execution["executionArn"]
            for arn in self._state_machine_arns()
            for execution in self._executions(arn)
            if execution["status"] == "RUNNING"
        ]

    def _abort_running_executions(self) -> None:
        running = self._running_executions()
        sfn = self.client("stepfunctions")
        for arn in running:
            try:
                sfn.stop_execution(executionArn=arn, error="LocalStack.Stopped", cause="local stack stopped")
            except Exception:  # pragma: no cover - it ended meanwhile
                log.debug("stop_execution %s failed", arn, exc_info=True)
        deadline = time.monotonic() + 2.0
        while running and time.monotonic() < deadline and self._running_executions():
            time.sleep(0.05)

    def status_change_event(self, description: Mapping[str, Any]) -> dict[str, Any]:
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
            "account": self.account_id,
            "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
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

    def _deliver_status_change(self, description: Mapping[str, Any]) -> None:
        event = self.status_change_event(description)
        for rule in self._status_rules:
            if not event_matches(rule.pattern, event):
                continue
            self.delivered_events.append((rule.function_id, event))
            lose = self._lose_status_event
            if lose is not None and lose(event):
                log.info("status change of %s lost on purpose", description["executionArn"])
                continue
            self.invoke_async(rule.function_id, copy.deepcopy(event))


class _ExecutionWatcher:
    """Delivers each status change of an execution of the template's state machines once, as Step
    Functions' EventBridge events do (the rules' patterns then decide who gets it; executions of
    other machines, such as a test's own, are never looked at).

    moto tells the stack when an execution ends (``moto_shim.on_execution_end``), so nothing is
    polled while runs go on; a full listing every ``interval`` seconds (and on ``catch_up``) is the
    safety net for anything a notification could miss.
    """

    def __init__(self, stack: LocalStack, interval: float):
        self._stack = stack
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
        stack = self._stack
        for state_machine_arn in list(stack.state_machines.values()):
            for execution in stack._executions(state_machine_arn):
                if self._stop.is_set():
                    return
                if self._seen.get(execution["executionArn"]) != execution["status"]:
                    self._deliver(execution["executionArn"])

    def _deliver(self, arn: str) -> None:
        if not self._stack.is_template_execution(arn):
            return  # not a run of the template's machines: no rule could want it
        with self._deliver_lock:
            self._delivering += 1
            try:
                description = self._stack.client("stepfunctions").describe_execution(executionArn=arn)
                if self._seen.get(arn) == description["status"]:
                    return
                self._seen[arn] = description["status"]
                self._stack._deliver_status_change(description)
            finally:
                self._delivering -= 1


class _RuleDispatcher:
    """Runs the functions of EventBridge rules that moto can match but not invoke (it sends events
    to queues, not to Lambda): each rule gets a queue of the stack as its target, long-polled by a
    thread of its own, and every event that arrives there is handed to the rule's function in a
    thread of its own, like EventBridge's asynchronous invocation (Lambda tries a failing
    asynchronous invocation three times)."""

    ATTEMPTS = 3
    WAIT_SECONDS = 1
    _WAKE = json.dumps({"relayflow-local": "stop"})

    def __init__(self, stack: LocalStack, rules: list[_BusRule]):
        self._stack = stack
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queues = [(rule, self._wire(index, rule)) for index, rule in enumerate(rules)]
        self._threads = [
            threading.Thread(target=self._run, args=queue_, name="relayflow-rule-dispatcher", daemon=True)
            for queue_ in self._queues
        ]

    def _wire(self, index: int, rule: _BusRule) -> str:
        events, sqs = self._stack.client("events"), self._stack.client("sqs")
        name = _physical_name(self._stack.stack_name, f"{rule.function_id}Rule{index}", 64)
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
        sqs = self._stack.client("sqs")
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
        sqs = self._stack.client("sqs")
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

    def _run(self, rule: _BusRule, url: str) -> None:
        sqs = self._stack.client("sqs")
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

    def _invoke(self, rule: _BusRule, event: dict[str, Any]) -> None:
        try:
            if not self._stop.is_set():
                self._stack.invoke_async(rule.function_id, event)
        finally:
            with self._lock:
                self._in_flight -= 1


# ---------------------------------------------------------------------------------------------
# helpers


_LAMBDA_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
_STATES_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


_client_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def _shared_client(service: str, region: str) -> Any:
    """Clients are shared by every LocalStack of the process: building one costs ~60-150 ms and
    moto's interception does not depend on when a client was made. Credentials are fake."""
    with _client_lock:
        key = (service, region)
        if key not in _clients:
            import boto3
            from botocore.config import Config

            global _session
            if _session is None:
                _session = boto3.session.Session(
                    aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing"
                )
            _clients[key] = _session.client(
                service, region_name=region, config=Config(retries={"max_attempts": 1})
            )
        return _clients[key]


_session: Any = None


def _dummy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "relayflow local stack: handlers run in-process (relayflow.local)\n")
    return buffer.getvalue()


_DUMMY_ZIP = _dummy_zip()


def _physical_name(stack_name: str, logical_id: str, limit: int) -> str:
    """CloudFormation-style generated name: <stack>-<LogicalId>-<SUFFIX>, deterministic here."""
    digest = hashlib.sha1(f"{stack_name}/{logical_id}".encode()).digest()
    suffix = base64.b32encode(digest).decode()[:12]
    room = limit - len(suffix) - 2
    head = f"{stack_name}-{logical_id}"
    return f"{head[:room]}-{suffix}"


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape of S3's PutBucketLifecycleConfiguration."""
    converted: dict[str, Any] = {"ID": rule.get("Id", ""), "Status": rule.get("Status", "Enabled")}
    prefix = rule.get("Prefix")
    converted["Filter"] = {"Prefix": prefix} if prefix is not None else {"Prefix": ""}
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        converted["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpiration" in rule:
        days = int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    return converted


def _merge_sam_globals(globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge (the function wins), lists add up, scalars are replaced."""
    merged: dict[str, Any] = copy.deepcopy(dict(globals_))
    for key, value in properties.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = _merge_sam_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + value
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    if len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _lambda_notification(
    notification_id: str, function_arn: str, events: Any, sam_or_cfn_filter: Mapping[str, Any] | None
) -> dict[str, Any]:
    configuration: dict[str, Any] = {
        "Id": notification_id,
        "LambdaFunctionArn": function_arn,
        "Events": _as_list(events),
    }
    rules = ((sam_or_cfn_filter or {}).get("S3Key") or {}).get("Rules") or []
    if rules:
        configuration["Filter"] = {
            "Key": {"FilterRules": [{"Name": rule["Name"], "Value": rule["Value"]} for rule in rules]}
        }
    return configuration


def _match_path(template: str, raw_path: str) -> dict[str, str] | None:
    """Path parameters of raw_path under a route path like /a/{id}/{proxy+}, or None."""
    from urllib.parse import unquote

    wanted = [s for s in template.split("/") if s]
    given = [s for s in raw_path.split("/") if s]
    parameters: dict[str, str] = {}
    for index, segment in enumerate(wanted):
        if segment.startswith("{") and segment.endswith("+}"):
            rest = given[index:]
            if not rest:
                return None
            parameters[segment[1:-2]] = unquote("/".join(rest))
            return parameters
        if index >= len(given):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            parameters[segment[1:-1]] = unquote(given[index])
        elif segment != given[index]:
            return None
    return parameters if len(given) == len(wanted) else None


def _gateway_answer(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": message}),
    }


def _epoch_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


_MISSING = object()


def event_matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge pattern matching: exact values, prefix, suffix, anything-but (values, prefix,
    wildcard), exists, equals-ignore-case, nested objects."""
    for key, rule in pattern.items():
        value = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(rule, Mapping):
            if not isinstance(value, Mapping) or not event_matches(rule, value):
                return False
        elif not any(_matches_one(item, value) for item in _as_list(rule)):
            return False
    return True


def _matches_one(rule: Any, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    if not isinstance(rule, Mapping):
        return any(v is not _MISSING and v == rule for v in values)
    if "exists" in rule:
        return (value is not _MISSING) == bool(rule["exists"])
    if value is _MISSING:
        return False
    if "prefix" in rule:
        return any(isinstance(v, str) and v.startswith(rule["prefix"]) for v in values)
    if "suffix" in rule:
        return any(isinstance(v, str) and v.endswith(rule["suffix"]) for v in values)
    if "equals-ignore-case" in rule:
        return any(
            isinstance(v, str) and v.lower() == str(rule["equals-ignore-case"]).lower() for v in values
        )
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        if isinstance(excluded, Mapping) and "prefix" in excluded:
            return all(not (isinstance(v, str) and v.startswith(excluded["prefix"])) for v in values)
        if isinstance(excluded, Mapping) and "wildcard" in excluded:
            wildcard = excluded["wildcard"]
            return all(not (isinstance(v, str) and _wildcard_matches(wildcard, v)) for v in values)
        return all(v not in _as_list(excluded) for v in values)
    raise StackError(f"event pattern rule {dict(rule)!r} is not supported locally")


def _wildcard_matches(pattern: str, value: str) -> bool:
    """EventBridge's wildcard: ``*`` is any run of characters; ``\\*`` and ``\\\\`` stand for themselves."""
    tokens = re.findall(r"\\.|.", pattern, flags=re.DOTALL)
    regex = "".join(".*" if token == "*" else re.escape(token[-1]) for token in tokens)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None

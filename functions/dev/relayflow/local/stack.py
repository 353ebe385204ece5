"""The embedded local stack: template.yaml deployed into moto, in this process.

`LocalStack` is the composition of the pieces, and the one object the tests, `relayflow serve` and
the demo hold. It starts moto (Step Functions execution switched on, the shim's in-process Lambda
in place of Docker) and then, in order:

* `relayflow.local.provision` deploys the template into moto: tables, bucket, event bus, queues,
  roles, Lambda functions, state machines, `AWS::Events::Rule` resources and the bucket's
  notifications, and puts the functions' environment into `os.environ`;
* `relayflow.local.apigateway` reads the HTTP API (routes, Lambda authorizer, CORS) and does what
  API Gateway does with a request (`handle_api_request`; `invoke_api` calls the function directly);
  `relayflow.local.server` is the HTTP server in front of it;
* `relayflow.local.eventbridge` runs the functions' EventBridge rules that moto does not run by
  itself: Step Functions status changes to the reconciler's rule, events on a bus to functions;
* `relayflow.local.delivery` does Lambda's side: asynchronous invocation (S3 notifications, rules,
  schedules: retried, then the on-failure destination), SQS event sources, schedules on
  `run_schedule(...)`;
* with `data_dir`, `relayflow.local.durable` keeps tables, objects and the API key between runs;
* with `faults` (a `relayflow.local.faults.FaultProfile`), AWS's weather: seeded transaction
  conflicts, throttles, Lambda concurrency and timeouts, Express repeats, late, duplicate and lost
  events. Off by default.

`stop()` undoes it all in the reverse order and restores the environment.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from moto import mock_aws

from relayflow.local import cfn, delivery, moto_shim
from relayflow.local.apigateway import HttpApi, HttpAuthorizer, HttpRoute, api_function_id
from relayflow.local.durable import DurableState
from relayflow.local.eventbridge import EventBridge
from relayflow.local.faults import FaultInjector, FaultProfile
from relayflow.local.provision import (
    Deployment,
    LocalFunction,
    StackError,
    default_template_path,
    share_service_models,
)
from relayflow.local.s3_endpoint import S3Endpoint
from relayflow_runtime.services import apikeys

__all__ = ["LocalFunction", "LocalStack", "StackError", "default_template_path"]

log = logging.getLogger("relayflow.local")

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
    The pieces themselves are `deployment`, `http_api` and `eventbridge`.

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
        faults: FaultProfile | None = None,
    ) -> None:
        self.template_path = Path(template_path) if template_path else default_template_path()
        self.stack_name = stack_name
        self.region = region
        self.deployment = Deployment(
            self.template_path,
            stack_name=stack_name,
            region=region,
            parameters=parameters or {},
            handler_overrides=handler_overrides or {},
        )
        self.account_id = self.deployment.account_id
        self.async_invoker = delivery.AsyncInvoker(
            self.invoke, self.function_arn, lambda: self.client("sqs"), retry_delay=0.1
        )
        self.async_invoker.configs = self.deployment.async_configs
        self.http_api = HttpApi(self.deployment, self.invoke)
        self.eventbridge = EventBridge(
            self.deployment,
            self.invoke_async,
            watch_executions=watch_executions,
            watch_interval=watch_interval,
        )
        self.api_key: str | None = None
        self.create_api_key = create_api_key
        self.run_schedules = run_schedules
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.durable: DurableState | None = None
        self.s3_endpoint: S3Endpoint | None = None
        #: The fault profile at work (None: the calm local stack); `faults.injected` counts what fired.
        self.faults = FaultInjector(faults) if faults is not None else None
        self.eventbridge.faults = self.faults

        self._mock: Any = None
        self._shim_installed = False
        self._saved_switch_interval: float | None = None
        self._queue_pollers: delivery.QueueSources | None = None
        self._ticker: delivery.Ticker | None = None
        self._s3_listening: Any = None
        self._started = False

    # ------------------------------------------------------------------ what the pieces hold

    @property
    def template(self) -> dict[str, Any]:
        return self.deployment.template

    @property
    def context(self) -> cfn.Context:
        return self.deployment.context

    @property
    def resources(self) -> dict[str, str]:
        return self.deployment.resources

    @property
    def outputs(self) -> dict[str, Any]:
        return self.deployment.outputs

    @property
    def functions(self) -> dict[str, LocalFunction]:
        return self.deployment.functions

    @property
    def state_machines(self) -> dict[str, str]:
        return self.deployment.state_machines

    @property
    def environment(self) -> dict[str, str]:
        return self.deployment.environment

    @property
    def api_id(self) -> str:
        return self.http_api.api_id

    @property
    def api_routes(self) -> list[HttpRoute]:
        return self.http_api.routes

    @property
    def api_authorizers(self) -> dict[str, HttpAuthorizer]:
        return self.http_api.authorizers

    @property
    def api_cors(self) -> dict[str, Any] | None:
        return self.http_api.cors

    @property
    def delivered_events(self) -> list[tuple[str, dict[str, Any]]]:
        return self.eventbridge.delivered_events

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
        self.deployment.load()
        if self.data_dir is not None:  # locked and checked before anything else starts
            self.durable = DurableState(self.data_dir)
            self.durable.open()
        self.deployment.isolate_from_real_aws()
        share_service_models(True)
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
        if self.faults is not None:
            self.faults.install()
        # Every Lambda, Step Functions worker and model call of the stack is a thread of this
        # process. A thread woken by its I/O (a model's answer) waits for the interpreter until the
        # running thread's switch interval ends: 1 ms instead of CPython's 5 ms keeps a busy stack's
        # hand-offs short (a batch at parallelism 10 ran ~8% faster). Restored by stop().
        if self._saved_switch_interval is None:
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch_interval, SWITCH_INTERVAL_SECONDS))

        self.deployment.deploy()
        if self.faults is not None:
            self.faults.reserved = {
                f.function_name: f.reserved_concurrency
                for f in self.functions.values()
                if f.reserved_concurrency is not None
            }
        self.http_api.configure()
        if self.durable is not None:
            self.durable.restore(self)
        if self.http_api.authorizers and self.create_api_key:
            self.api_key = self._local_api_key()
        self.eventbridge.start()
        if self.deployment.queue_sources:
            self._queue_pollers = delivery.QueueSources(
                self.deployment.queue_sources, self.invoke, lambda: self.client("sqs"), self.region
            )
            self._queue_pollers.start()
        self._s3_listening = moto_shim.on_s3_lambda_notification(self._s3_notification)
        self._s3_listening.__enter__()
        if self.run_schedules:
            self._ticker = delivery.Ticker(self.run_schedule, self.deployment.schedule_rates)
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
        self.eventbridge.stop()
        if self._queue_pollers is not None:
            self._queue_pollers.stop()
            self._queue_pollers = None
        if self._s3_listening is not None:
            self._s3_listening.__exit__(None, None, None)
            self._s3_listening = None
        if self._mock is not None:
            try:
                self.deployment.abort_running_executions()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("aborting executions on stop failed", exc_info=True)
            self._close_durable()  # while moto still holds the state
            self._mock.stop()
            self._mock = None
        self._close_durable()
        if self.faults is not None:
            self.faults.uninstall()
        if self._shim_installed:
            moto_shim.uninstall()
            self._shim_installed = False
        self.deployment.restore_environment()
        share_service_models(False)
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
        return self.deployment.client(service)

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Call a function's handler in-process, as Lambda would (JSON in, JSON out).
        Its exceptions propagate."""
        function = self.deployment.function(logical_id)
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
        with self.eventbridge.losing_status_events(lose):
            yield

    def run_schedule(self, logical_id: str, event_name: str | None = None) -> bool:
        """Fire a function's schedule once (EventBridge's scheduled event, invoked asynchronously);
        schedules do not tick by themselves locally."""
        schedules = self.deployment.schedules
        keys = [k for k in schedules if k.split(".", 1)[0] == logical_id]
        if event_name is not None:
            keys = [k for k in keys if k == f"{logical_id}.{event_name}"]
        if not keys:
            raise StackError(f"{logical_id} has no schedule")
        event = delivery.scheduled_event(schedules[keys[0]], self.region, self.account_id)
        return self.invoke_async(logical_id, event)

    def _s3_notification(self, function_arn: str, event: Any) -> None:
        by_arn = {f.arn: logical_id for logical_id, f in self.functions.items()}
        logical_id = by_arn.get(function_arn.split(":$LATEST")[0])
        if logical_id is None:
            log.warning("S3 notification for %s, which is not a function of the stack", function_arn)
            return
        if self.faults is not None:
            self.faults.deliver("s3", lambda: self.invoke_async(logical_id, event))
        else:
            self.invoke_async(logical_id, event)

    def invoke_api(self, event: Mapping[str, Any]) -> Any:
        """Call the HTTP API's function with an API Gateway v2 event; returns its raw result
        (see `HttpApi.invoke`)."""
        return self.http_api.invoke(event)

    def handle_api_request(self, event: Mapping[str, Any]) -> Any:
        """What API Gateway does with a request event built for `ANY /{proxy+}` (see
        `HttpApi.handle_request`): returns the function's result or the gateway's own answer."""
        return self.http_api.handle_request(event)

    def match_route(self, method: str, raw_path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The template route API Gateway would pick for this request, with its path parameters."""
        return self.http_api.match_route(method, raw_path)

    def flush_authorizer_cache(self) -> None:
        self.http_api.flush_authorizer_cache()

    def _local_api_key(self) -> str | None:
        """A key the local authorizer accepts (relayflow's own; $RELAYFLOW_API_KEY is reused)."""
        if self.durable is not None:
            return self.durable.api_key()
        return apikeys.ensure_local_key()

    @property
    def api_function_id(self) -> str:
        return api_function_id(self.functions)

    def override_handler(self, logical_id: str, handler: str) -> None:
        """Point a function at another Handler string (a test double), for every path that
        reaches it: Step Functions tasks, S3 notifications, the watcher, invoke()."""
        self.deployment.override_handler(logical_id, handler)

    def function_arn(self, logical_id: str) -> str:
        return self.deployment.function_arn(logical_id)

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
        return self.deployment.register_function(
            logical_id, handler, environment=environment, timeout=timeout, memory_size=memory_size
        )

    def definition_of(self, logical_id: str) -> str:
        """The definition a state machine of the template is created with (see `Deployment`)."""
        return self.deployment.definition_of(logical_id)

    def wait_idle(self, timeout: float = 30.0, interval: float = 0.05) -> bool:
        """Wait until no execution is RUNNING and the watcher delivered every status change.
        True when idle, False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.deployment.running_executions():
                self.eventbridge.catch_up()  # delivers what ended, maybe waking rule targets
                if (
                    self.eventbridge.idle()
                    and (self._queue_pollers is None or self._queue_pollers.idle())
                    and (self.faults is None or self.faults.idle())
                    # a delivery that ended while the checks above ran may have started a run
                    and not self.deployment.running_executions()
                ):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def wait_for_execution(self, execution_arn: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll DescribeExecution until the execution is no longer RUNNING; returns the description."""
        return self.deployment.wait_for_execution(execution_arn, timeout)

    def is_template_execution(self, execution_arn: str) -> bool:
        """Whether an execution ARN is a run of one of the template's state machines (not, e.g., a
        distributed Map's child)."""
        return self.deployment.is_template_execution(execution_arn)

    def status_change_event(self, description: Mapping[str, Any]) -> dict[str, Any]:
        """The EventBridge event Step Functions sends for this DescribeExecution result."""
        return self.eventbridge.status_change_event(description)

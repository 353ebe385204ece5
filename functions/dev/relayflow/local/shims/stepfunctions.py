"""Step Functions' interpreter: a Task's Lambda call straight to moto's Lambda backend, Invoke's
errors named as AWS names them, executions announcing their end, the interpreter's thread list
and JSONPath parses kept small, stopped executions kept stopped, quiet Parallel branches.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from relayflow.local.shims.base import (
    MotoIncompatibleError,
    _incompatible,
    _optional_target,
    log,
    patch_optional,
    patch_required,
)

_client_cache: dict[tuple[Any, ...], Any] = {}
_client_lock = threading.Lock()


def _make_cached_client_for(original: Callable[..., Any]) -> Callable[..., Any]:
    from moto.core.models import botocore_stubber

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        # moto's version ignores the credentials too; the endpoint depends only on the stubber.
        key = (region, service, bool(botocore_stubber.enabled))
        with _client_lock:
            client = _client_cache.get(key)
            if client is None:
                client = _client_cache[key] = original(region, service, state_credentials)
            return client

    return boto_client_for


def _make_direct_lambda_invoke(original: Callable[..., Any]) -> Callable[..., Any]:
    def _invoke_lambda_function(parameters: dict[str, Any], region: str, state_credentials: Any) -> Any:
        from botocore.exceptions import ClientError
        from moto.awslambda.models import lambda_backends
        from moto.core.exceptions import JsonRESTError

        name = str(parameters["FunctionName"])
        if set(parameters) - {"FunctionName", "Payload"} or not name.startswith("arn:"):
            return original(parameters, region, state_credentials)  # not a plain Task call
        try:
            function = lambda_backends[name.split(":")[4]][region].get_function(name, None)
        except Exception:  # unknown function: moto's own path answers with the right error
            return original(parameters, region, state_credentials)
        payload = parameters.get("Payload") or b""
        body = payload.decode() if isinstance(payload, bytes) else str(payload)
        headers: dict[str, str] = {}
        try:
            raw = function.invoke(body, {}, headers)
        except JsonRESTError as exc:  # Invoke's own errors (429, 500), as a client sees them
            raise ClientError(
                {
                    "Error": {"Code": exc.error_type, "Message": exc.message},
                    "ResponseMetadata": {"HTTPStatusCode": exc.code, "RequestId": str(uuid.uuid4())},
                },
                "Invoke",
            ) from exc
        text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        try:
            result: Any = json.loads(text)
        except ValueError:
            result = text
        response: dict[str, Any] = {"StatusCode": 200, "Payload": result, "ExecutedVersion": "$LATEST"}
        if headers.get("x-amz-function-error"):
            response["FunctionError"] = headers["x-amz-function-error"]
        return response

    return _invoke_lambda_function


_STATE_TASK = "moto.stepfunctions.parser.asl.component.state.exec.state_task"
_STATE_TASK_LAMBDA = f"{_STATE_TASK}.state_task_lambda"
_SERVICE_LAMBDA = f"{_STATE_TASK}.service.state_task_service_lambda"


def _lambda_error_names(original: Callable[..., Any]) -> Callable[..., Any]:
    """StateTaskLambda._from_error naming Invoke's own errors as AWS does for a Task whose Resource
    is the function's ARN: ``Lambda.<Code>`` (``Lambda.TooManyRequestsException``,
    ``Lambda.ServiceException``), as for ``arn:aws:states:::lambda:invoke``. moto named them all
    ``Exception``, which no Retry of the template's machines matches."""
    from botocore.exceptions import ClientError

    def _from_error(self: Any, env: Any, ex: Exception) -> Any:
        if not isinstance(ex, ClientError):
            return original(self, env, ex)
        from moto.stepfunctions.parser.api import HistoryEventType, LambdaFunctionFailedEventDetails
        from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
            CustomErrorName,
        )
        from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
        from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

        service = importlib.import_module(_SERVICE_LAMBDA).StateTaskServiceLambda
        error, cause = service._error_cause_from_client_error(ex)
        details: Any = EventDetails  # a TypedDict of every kind of detail, all required
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(error),
            event_type=HistoryEventType.LambdaFunctionFailed,
            event_details=details(
                lambdaFunctionFailedEventDetails=LambdaFunctionFailedEventDetails(error=error, cause=cause)
            ),
        )

    return _from_error


_LAMBDA_EVAL_UTILS = "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils"
_SFN_EXECUTION = "moto.stepfunctions.parser.backend.execution"

# Modules of the interpreter that call jsonpath-ng's parse() by that name.
_JSONPATH_USERS = (
    "moto.stepfunctions.parser.asl.utils.json_path",
    "moto.stepfunctions.parser.asl.component.common.path.result_path",
    # moto's EventBridge imports it inside the function that renders a rule target's input (eight
    # paths per event with the default template): the name is looked up here at each call.
    "jsonpath_ng.ext",
)

# Called with an execution's ARN once it has ended (its status is final): Step Functions sends an
# EventBridge event then; moto sends none, so the local stack listens here instead of polling.
_execution_end_listeners: list[Callable[[str], None]] = []


@contextlib.contextmanager
def on_execution_end(listener: Callable[[str], None]) -> Iterator[None]:
    """Call ``listener(execution_arn)`` for every execution that ends while the block runs."""
    _execution_end_listeners.append(listener)
    try:
        yield
    finally:
        _execution_end_listeners.remove(listener)


class _LiveThreads(list[Any]):
    """moto's TMP_THREADS, forgetting threads that have ended (moto only ever appends to it)."""

    def append(self, thread: Any) -> None:
        if len(self) >= 64:
            self[:] = [t for t in self if t.is_alive()]
        super().append(thread)


# The interpreter's modules that imported moto.stepfunctions.parser.utils.TMP_THREADS by name.
_SFN_THREAD_LISTS = tuple(
    f"moto.stepfunctions.parser.{name}"
    for name in (
        "utils",
        "backend.execution_worker",
        "asl.component.program.program",
        "asl.component.state.exec.execute_state",
        "asl.component.state.exec.state_map.iteration.inline_iteration_component",
        "asl.component.state.exec.state_parallel.branch_worker",
        "asl.component.state.exec.state_task.service.state_task_service_callback",
        "asl.component.test_state.program.test_state_program",
    )
)


def _output_before_status(communication: Any) -> None:
    """moto sets an ended execution's status SUCCEEDED and only then its output: a DescribeExecution
    in between (a poller's thread) saw a succeeded execution whose output was null. The output is
    set first here; moto then sets the same value again, after the status."""
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded

    execution = communication.execution
    env = execution.exec_worker.env
    if isinstance(env.program_state(), ProgramEnded):
        execution.output = env.states.get_input()


def _announce_termination(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def terminated(self: Any) -> None:
        _output_before_status(self)
        original(self)
        for listener in list(_execution_end_listeners):
            try:
                listener(str(self.execution.exec_arn))
            except Exception:  # a listener must not break moto's execution thread
                log.warning("execution-end listener failed", exc_info=True)

    return terminated


_SFN_ENVIRONMENT = "moto.stepfunctions.parser.asl.eval.environment"


def _keep_stopped(original: Callable[..., Any]) -> Callable[..., Any]:
    """A stopped execution ends ABORTED, as on AWS. moto stops an inline Map's iterations by
    raising MapIterationAborted in them, which reaches the program as an error and overwrote the
    stop: every run of the run machine (an inline Map of its nodes) ended FAILED when stopped."""
    stopped = importlib.import_module("moto.stepfunctions.parser.asl.eval.program_state").ProgramStopped

    def set_error(self: Any, error: Any) -> None:
        if isinstance(getattr(self, "_program_state", None), stopped):
            return
        original(self, error)

    return set_error


_SFN_BRANCH_WORKER = "moto.stepfunctions.parser.asl.component.state.exec.state_parallel.branch_worker"


def _quiet_branch_routine(original: Callable[..., Any]) -> Callable[..., Any]:
    """A Parallel branch whose Parallel already ended (the other branch of the run machine's race
    won before this thread ran) found its environment stopped and died with a RuntimeError in its
    thread. It now ends as a stopped branch does."""
    stopped = importlib.import_module("moto.stepfunctions.parser.asl.eval.program_state").ProgramStopped

    def routine(self: Any) -> None:
        try:
            original(self)
        except RuntimeError:
            if not isinstance(self.env.program_state(), stopped):
                raise
            self._branch_worker_comm.on_terminated(env=self.env)

    return routine


def _short_branch_start(self: Any) -> None:
    """BranchWorker.start, without naming its thread after the repr of the branch's whole program
    (moto built that string, the size of the parsed definition, for every branch it started)."""
    if self._worker_thread is not None:
        raise RuntimeError("Attempted to rerun a BranchWorker.")
    module = importlib.import_module(_SFN_BRANCH_WORKER)
    self._worker_thread = threading.Thread(target=self._thread_routine, name="BranchWorker", daemon=True)
    module.TMP_THREADS.append(self._worker_thread)
    self._worker_thread.start()


def clear_client_cache() -> None:
    with _client_lock:
        _client_cache.clear()


def install() -> None:
    """Step Functions' interpreter: Lambda calls, errors, ended executions, threads, JSONPath."""
    service_lambda = _optional_target(_SERVICE_LAMBDA, "StateTaskServiceLambda")
    patch_required(
        _STATE_TASK_LAMBDA,
        "StateTaskLambda._from_error",
        _lambda_error_names,
        check=lambda _: hasattr(service_lambda, "_error_cause_from_client_error"),
        problem="StateTaskServiceLambda._error_cause_from_client_error (which _from_error calls) moved",
    )
    patch_optional(
        _LAMBDA_EVAL_UTILS,
        "_invoke_lambda_function",
        _make_direct_lambda_invoke,
        lost="Step Functions calls Lambda through its HTTP layer (slower tasks)",
    )
    patch_optional(
        _LAMBDA_EVAL_UTILS,
        "boto_client_for",
        _make_cached_client_for,
        lost="Step Functions Lambda client not cached (slower tasks)",
    )
    patch_required(_SFN_EXECUTION, "BaseExecutionWorkerCommunication.terminated", _announce_termination)
    branch_module = importlib.import_module(_SFN_BRANCH_WORKER)
    if "_branch_worker_comm" not in inspect.getsource(branch_module.BranchWorker) or not hasattr(
        branch_module, "TMP_THREADS"
    ):
        raise MotoIncompatibleError(_incompatible("BranchWorker's fields moved"))
    patch_required(_SFN_BRANCH_WORKER, "BranchWorker._thread_routine", _quiet_branch_routine)
    patch_required(_SFN_BRANCH_WORKER, "BranchWorker.start", lambda _: _short_branch_start)
    patch_required(
        _SFN_ENVIRONMENT,
        "Environment.set_error",
        _keep_stopped,
        check=lambda _: (
            "_program_state" in inspect.getsource(importlib.import_module(_SFN_ENVIRONMENT).Environment)
        ),
        problem="Environment.set_error / _program_state moved",
    )
    live_threads = _LiveThreads()
    for module_name in _SFN_THREAD_LISTS:
        patch_optional(
            module_name, "TMP_THREADS", lambda _: live_threads, check=lambda found: isinstance(found, list)
        )
    for module_name in _JSONPATH_USERS:  # parsed expressions are immutable: safe to share
        patch_optional(module_name, "parse", functools.lru_cache(maxsize=4096))

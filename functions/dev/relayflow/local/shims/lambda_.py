"""Lambda: moto's Docker run of a function replaced by an in-process call of its handler.

An exception becomes a Lambda error payload whose `errorType` is the exception's class name.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from relayflow.local.shims.base import (
    MOTO_INVOKE_EVENT_DEFAULT,
    MOTO_INVOKE_SIGNATURE,
    MotoIncompatibleError,
    _incompatible,
    _originals,
    log,
    patch_required,
)

Handler = Callable[[Any, Any], Any]


class HandlerNotFoundError(ImportError):
    """A Handler string ("package.module.function") does not name an importable function."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class FunctionInfo:
    """What a handler's context says about the function it runs in."""

    function_name: str
    function_arn: str
    memory_mb: int = 512
    timeout_s: int = 30
    version: str = "$LATEST"


class LambdaContext:
    """The subset of the Lambda Python runtime's context object that handlers and Powertools use."""

    def __init__(self, function: FunctionInfo):
        self.function_name = function.function_name
        self.function_version = function.version
        self.invoked_function_arn = function.function_arn
        self.memory_limit_in_mb = function.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.function_name}"
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.log_stream_name = f"{day}/[{function.version}]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + function.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_DEFAULT_FUNCTION = FunctionInfo("local", "arn:aws:lambda:us-east-1:123456789012:function:local")


# ---------------------------------------------------------------------------------------------
# Handlers: registry + import


_registry: dict[str, Handler] = {}


def register(handler: str, function: Handler) -> None:
    """Make `handler` (a Handler string) call `function` instead of importing it."""
    _registry[handler] = function


def unregister(handler: str) -> None:
    _registry.pop(handler, None)


@contextlib.contextmanager
def override(handler: str, function: Handler) -> Iterator[None]:
    previous = _registry.get(handler)
    register(handler, function)
    try:
        yield
    finally:
        if previous is None:
            unregister(handler)
        else:
            register(handler, previous)


def resolve_handler(handler: str) -> Handler:
    """The function a Handler string names. Resolved on every call (imports are cached by
    Python), so a test that monkeypatches the module attribute is seen."""
    if handler in _registry:
        return _registry[handler]
    module_name, _, attribute = handler.replace("/", ".").rpartition(".")
    if not module_name:
        raise HandlerNotFoundError("Runtime.MalformedHandlerName", f"Bad handler '{handler}'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerNotFoundError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise HandlerNotFoundError(
            "Runtime.HandlerNotFound", f"Handler '{attribute}' missing on module '{module_name}'"
        )
    return function


def dispatch(handler: str, event: Any, *, function: FunctionInfo | None = None) -> Any:
    """Call a handler as Lambda would: the event and the result go through JSON, the context is a
    fresh LambdaContext. Exceptions propagate."""
    target = resolve_handler(handler)
    decoded_event = json.loads(json.dumps(event))
    result = target(decoded_event, LambdaContext(function or _DEFAULT_FUNCTION))
    return json.loads(json.dumps(result))


def invoke_payload(handler: str, event: Any, function: FunctionInfo | None = None) -> tuple[str, bool]:
    """Run a handler and return what the Lambda service would: (payload JSON, is_error)."""
    info = function or _DEFAULT_FUNCTION
    try:
        target = resolve_handler(handler)
        result = target(event, LambdaContext(info))
    except HandlerNotFoundError as exc:
        log.error("%s: %s", info.function_name, exc)
        return _error_payload(exc.error_type, str(exc), exc), True
    except Exception as exc:
        log.info("%s raised %s: %s", info.function_name, type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        return _error_payload(type(exc).__name__, str(exc), exc), True
    try:
        return json.dumps(result), False
    except (TypeError, ValueError) as exc:
        return _error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}", exc), True


def _error_payload(error_type: str, message: str, exc: BaseException) -> str:
    return json.dumps(
        {
            "errorMessage": message,
            "errorType": error_type,
            "requestId": str(uuid.uuid4()),
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
    )


def _invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
    """Replacement for moto.awslambda.models.LambdaFunction._invoke_lambda."""
    if event is None:
        event = {}
    elif isinstance(event, str | bytes):
        # moto passes the string "{}" when the invoke had no body
        with contextlib.suppress(ValueError):
            event = json.loads(event)
    info = FunctionInfo(
        function_name=str(self.function_name),
        function_arn=str(self.function_arn),
        memory_mb=int(self.memory_size or 128),
        timeout_s=int(self.timeout or 3),
        version=str(self.version or "$LATEST"),
    )
    payload, is_error = invoke_payload(str(self.handler), event, info)
    return payload, is_error, ""


def moto_invoke_lambda() -> Callable[..., Any]:
    """moto's own LambdaFunction._invoke_lambda (not the shim's), or raise MotoIncompatibleError."""
    original = _originals.get(("moto.awslambda.models", "LambdaFunction._invoke_lambda"))
    if original is not None:
        return original
    try:
        from moto.awslambda.models import LambdaFunction
    except ImportError as exc:  # pragma: no cover - moto missing entirely
        raise MotoIncompatibleError(f"moto.awslambda.models is not importable: {exc}") from exc
    method = LambdaFunction.__dict__.get("_invoke_lambda")
    if method is None:
        raise MotoIncompatibleError(_incompatible("LambdaFunction._invoke_lambda is gone"))
    return method


def check_compatible() -> None:
    """Raise MotoIncompatibleError unless moto's private Lambda hook looks as the shim expects."""
    method = moto_invoke_lambda()
    parameters = list(inspect.signature(method).parameters.values())
    names = tuple(parameter.name for parameter in parameters)
    if names != MOTO_INVOKE_SIGNATURE or parameters[1].default is not MOTO_INVOKE_EVENT_DEFAULT:
        raise MotoIncompatibleError(
            _incompatible(f"LambdaFunction._invoke_lambda has signature {inspect.signature(method)}")
        )


def install() -> None:
    """Run Lambda functions in-process (first: it checks that moto is the version this shim knows)."""
    check_compatible()
    patch_required("moto.awslambda.models", "LambdaFunction._invoke_lambda", lambda _: _invoke_lambda)

"""The one place that touches moto's internals.

moto runs a Lambda function by starting a Docker container (`LambdaFunction._invoke_lambda`).
Here that private method is replaced with an in-process call of the function's own handler, so
Step Functions Task states, S3 notifications and `lambda.invoke` all run relayflow's real handlers
without Docker. An exception becomes a Lambda error payload whose `errorType` is the exception's
class name, which Step Functions uses as the error name: Retry / Catch on `["MyError"]` behave as
on AWS.

Also here, because they patch moto too:
* a Task state's Lambda call goes straight to moto's Lambda backend (the function, its error
  header, its payload as Lambda returns it) instead of through a boto3 client, botocore and moto's
  HTTP layer: the round trip cost more than the rest of a local Task; the boto3 Lambda client the
  interpreter builds for other calls is cached;
* S3 notification events get the fields AWS sends and moto leaves out (userIdentity,
  requestParameters, responseElements, ownerIdentity, sequencer, versionId) and AWS's key
  encoding (`quote_plus` keeping `/`; moto also encodes the slashes);
* the interpreter's logger, which logs every (expected) task failure at ERROR, is quieted;
* a state machine definition is parsed (antlr) once per text, not once per execution;
* Invoke's own errors (429, 500) reach a Task as AWS names them, ``Lambda.<Code>``, whether its
  Resource is ``arn:aws:states:::lambda:invoke`` or the function's ARN (moto: ``Exception``);
* JSONPath expressions the interpreter (and EventBridge's target input) evaluates are parsed
  once, not on every use (jsonpath-ng builds a new parser, tables and all, per parse: a fifth of
  the interpreter's time per item);
* a Query does not sort the whole table first: a base-table Query reads its partition only, an
  index Query every item unsorted (moto sorted every item of the table for each Query: seconds
  with 100,000 stored items);
* DynamoDB update expressions are parsed once (moto parses each twice per UpdateItem; the parsed
  tree is only read, and copied before it is filled in), and so are condition expressions with the
  same names and values (moto parses each twice per conditional write; its trees only evaluate);
* a distributed Map's worker runs its items in a loop: moto's calls itself once per item, so a
  worker with more than ~900 items (a large batch at low parallelism) died of RecursionError;
* DynamoDB item operations answer with `json.dumps` of moto's result, which is already in
  DynamoDB's wire shape, instead of moto's serializer walking the botocore model attribute by
  attribute (a Query of 200 items spent ~70% of its time there); anything json cannot write
  (a table description's dates) still goes through moto's serializer;
* the interpreter's list of every thread it ever started (`TMP_THREADS`: one per Task state run,
  never read, never emptied: tens of thousands in a large batch) keeps only threads still alive;
* a succeeded execution's output is set before its status, so no reader sees one without the other;
* an execution that ends tells the listeners of `on_execution_end` (Step Functions' status-change
  event; moto has none), so the local stack need not poll for it.

moto is pinned to `>=5.2.3,<5.3`; `check_compatible()` fails loudly if the private method moved.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib
import inspect
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

__all__ = [
    "MOTO_INVOKE_SIGNATURE",
    "FunctionInfo",
    "HandlerNotFoundError",
    "LambdaContext",
    "MotoIncompatibleError",
    "check_compatible",
    "dispatch",
    "install",
    "invoke_payload",
    "is_installed",
    "moto_invoke_lambda",
    "on_execution_end",
    "override",
    "register",
    "resolve_handler",
    "run_child_program",
    "uninstall",
    "unregister",
]

log = logging.getLogger("relayflow.local")

Handler = Callable[[Any, Any], Any]

# Parameter names of moto.awslambda.models.LambdaFunction._invoke_lambda, and `event`'s default.
# Unchanged from moto 4.2.14 to 5.2.5; it returns (payload_json, is_error, logs).
MOTO_INVOKE_SIGNATURE: tuple[str, ...] = ("self", "event")
MOTO_INVOKE_EVENT_DEFAULT: Any = None

_SFN_LOGGER = "moto.stepfunctions.parser"


class MotoIncompatibleError(RuntimeError):
    """The installed moto does not have the private hook this shim replaces."""


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


# ---------------------------------------------------------------------------------------------
# The patches


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


def _make_s3_event(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_s3_event(event_name: Any, bucket: Any, key: Any, notification_id: str) -> Any:
        body = original(event_name, bucket, key, notification_id)
        for record in body.get("Records", []):
            record.setdefault("userIdentity", {"principalId": "AWS:AIDARELAYFLOWLOCAL"})
            record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
            record.setdefault(
                "responseElements",
                {
                    "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                    "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes * 2).decode(),
                },
            )
            s3 = record.get("s3", {})
            s3.get("bucket", {}).setdefault("ownerIdentity", {"principalId": "ARELAYFLOWLOCAL"})
            obj = s3.get("object", {})
            obj["key"] = quote_plus(str(key.name), safe="/")
            version_id = getattr(key, "version_id", None)
            if version_id and version_id != "null":
                obj.setdefault("versionId", version_id)
            obj.setdefault("sequencer", f"{time.time_ns():018X}")
        return body

    return get_s3_event


# (module path, attribute) -> original, while installed
_originals: dict[tuple[str, str], Any] = {}
_install_count = 0
_install_lock = threading.RLock()
_sfn_logger_level: int | None = None


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


def _incompatible(what: str) -> str:
    import moto

    expected = ", ".join(MOTO_INVOKE_SIGNATURE)
    return (
        f"moto {getattr(moto, '__version__', '?')}: {what}. relayflow's local stack replaces "
        f"LambdaFunction._invoke_lambda({expected}=None) -> (payload_json, is_error, logs). "
        "Install moto in the pinned range (moto>=5.2.3,<5.3) or update relayflow/local/moto_shim.py."
    )


_INHERITED = object()


def _patch(module_name: str, attribute: str, replacement: Any) -> None:
    module = importlib.import_module(module_name)
    owner: Any = module
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    if isinstance(owner, type):  # a class's own attribute, or _INHERITED when it inherits it
        _originals[(module_name, attribute)] = owner.__dict__.get(name, _INHERITED)
    else:
        _originals[(module_name, attribute)] = getattr(owner, name)
    setattr(owner, name, replacement)


def _optional_target(module_name: str, attribute: str) -> Any | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attribute, None)


_DYNAMODB_RESPONSES = "moto.dynamodb.responses"
# DynamoDB applies each request (a write, a transaction) atomically; moto's in-memory tables do not
# when several threads call at once: two conditional writes could both "win", and a read copying an
# item while another thread writes it fails. One lock around every DynamoDB request restores
# DynamoDB's semantics for the local stack (requests take microseconds; nothing waits long).
_dynamodb_lock = threading.RLock()


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        with _dynamodb_lock:
            return method(*args, **kwargs)

    return write


_DYNAMODB_MODELS = "moto.dynamodb.models"


class _TableBackupFreeCopy:
    """moto backs up *whole tables* (a deep copy) before every TransactWriteItems, which makes a
    transaction cost O(items in the table). This stands in for the `copy` module inside moto's
    DynamoDB models: tables are not copied; _transact_with_item_backup keeps the touched items."""

    def __init__(self) -> None:
        import copy

        self._copy = copy

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if isinstance(value, Table):
            return value
        return self._copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._copy, name)


def _transact_with_item_backup(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            if len(entry) != 1:
                continue
            op_type, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            if op_type == "Put":
                attrs = op.get("Item", {})
                names = (table.hash_key_attr, table.range_key_attr)
                key = {name: attrs[name] for name in names if name and name in attrs}
            else:
                key = op.get("Key", {})
            try:
                current = self.get_item(table.name, key)
            except Exception:  # moto raises its own validation error; the call below reports it
                continue
            saved.append((table.name, key, current.to_json()["Attributes"] if current else None))
        try:
            original(self, transact_items)
        except Exception:
            # All or nothing, as DynamoDB: put back every touched item as it was.
            for table_name, key, attrs in reversed(saved):
                if attrs is None:
                    with contextlib.suppress(Exception):
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise

    return transact_write_items


_DYNAMODB_TABLE = "moto.dynamodb.models.table"
# The partition a base-table Query reads, for the thread running it (see _query_one_partition).
_partition_in_query = threading.local()


def _query_one_partition(original: Callable[..., Any]) -> Callable[..., Any]:
    """Table.query without sorting the whole table first. moto's Query starts from every item of
    the table (its ``all_items()``, *sorted* each time: Python comparisons of typed values) and
    filters them: a run's node records cost more with every run stored, and with 100,000 stored
    items one Query took seconds. For the duration of the call ``all_items()`` answers instead:

    * a base-table Query: the items of its partition, which moto keeps by partition key (it filters
      them by partition key and sorts them by sort key itself, as before);
    * an index Query: every item, unsorted (moto keeps no index; it sorts what matches by the
      index's keys and then the table's, a total order, so the answer is the same)."""

    @functools.wraps(original)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if not self.range_key_attr or (hash_key is None and not index_name):
            return original(self, hash_key, *args, **kwargs)
        _partition_in_query.table = self
        if index_name:
            _partition_in_query.items = [item for items in self.items.values() for item in items.values()]
        else:
            _partition_in_query.items = list(self.items.get(hash_key, {}).values())
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            _partition_in_query.table = None
            _partition_in_query.items = None

    return query


def _all_items_of_partition(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def all_items(self: Any) -> Any:
        if getattr(_partition_in_query, "table", None) is self:
            return _partition_in_query.items
        return original(self)

    return all_items


_LAMBDA_EVAL_UTILS = "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils"
_SFN_EXECUTION = "moto.stepfunctions.parser.backend.execution"
# Modules of the interpreter that call jsonpath-ng's parse() by that name.
_DISTRIBUTED_WORKER = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor"
    ".distributed_item_processor_worker"
)
_DYNAMODB_EXPRESSIONS = "moto.dynamodb.parsing.expressions"
_DYNAMODB_COMPARISONS = "moto.dynamodb.comparisons"
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


# Answers whose moto result is plain wire-shaped JSON (items as {"S": ...} maps, counts, keys).
_JSON_DYNAMODB_OPERATIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)


def _without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nones(v) for v in value]
    return value


def _dynamodb_result_as_json(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute_result(self: Any, context: Any) -> Any:
        if context.operation_model.name not in _JSON_DYNAMODB_OPERATIONS:
            return original(self, context)
        try:
            body = json.dumps(_without_nones(self.result), separators=(",", ":"))
        except (TypeError, ValueError):
            return original(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    return execute_result


_condition_trees: dict[tuple[Any, ...], tuple[Any, list[str], list[str]]] = {}


def _parse_condition_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """ConditionExpressionParser.parse, remembered per (expression, names, values)."""

    @functools.wraps(original)
    def parse(self: Any) -> Any:
        try:
            key = (
                self.condition_expression,
                json.dumps(self.expression_attribute_names, sort_keys=True),
                json.dumps(self.expression_attribute_values, sort_keys=True),
            )
        except (TypeError, ValueError):
            return original(self)
        known = _condition_trees.get(key)
        if known is None:
            tree = original(self)
            if len(_condition_trees) >= 4096:
                _condition_trees.clear()
            known = _condition_trees[key] = (tree, self.expr_attr_names_found, self.expr_attr_values_found)
        tree, self.expr_attr_names_found, self.expr_attr_values_found = known
        # Callers read which names and values the expression used: give each its own lists.
        self.expr_attr_names_found = list(self.expr_attr_names_found)
        self.expr_attr_values_found = list(self.expr_attr_values_found)
        return tree

    return parse


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


def _eval_pool_iteratively(self: Any, job: Any, worker_frame: Any) -> None:
    """moto's DistributedItemProcessorWorker._eval_pool, with its tail call made a loop."""
    while job is not None:
        job_frame = worker_frame.open_inner_frame()
        self._eval_job(env=job_frame, job=job)
        worker_frame.delete_frame(job_frame)
        # Evaluation ends on an exception in the job, or when the worker was stopped.
        next_job = None
        if not isinstance(job.job_output, Exception) and not self.stopped():
            next_job = self._job_pool.next_job()
        if next_job is None:
            # The frame is closed before the job: the Map awaits its jobs, not its workers.
            self._env.delete_frame(worker_frame)
            self._job_pool.close_job(job)
            return
        self._job_pool.close_job(job)
        job = next_job
    self._env.delete_frame(worker_frame)


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


# ---------------------------------------------------------------------------------------------
# Distributed Map: what moto 5.2's interpreter lacks for statemachine/batch.asl.json
#
# moto's ANTLR grammar (generated code, not patchable in a small way) has no ItemBatcher, accepts
# only STANDARD child executions and only a float ToleratedFailurePercentage; its map run ignores
# the failure tolerances (a failed item leaves null and the Map succeeds). So: the definition is
# rewritten before moto parses it (the batcher kept aside, EXPRESS run as STANDARD, 100 -> 100.0),
# what was kept aside is attached to the parsed Map, and the map run batches the items, counts
# items (not child executions) and fails the Map past its tolerance as AWS does.

_ASL_PARSER = "moto.stepfunctions.parser.asl.parse.asl_parser"
_RESULT_WRITER = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.result_writer_decl"
)
_DISTRIBUTED_COMPONENT = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component"
)
#: Express child executions end after 5 minutes (Step Functions quotas); moto has no Express children.
EXPRESS_CHILD_TIMEOUT_SECONDS = 300
#: The largest batch input ItemBatcher allows (MaxInputBytesPerBatch, 256 KiB).
MAX_INPUT_BYTES_PER_BATCH = 262_144
_BATCHER_FIELDS = frozenset(
    {
        "MaxItemsPerBatch",
        "MaxItemsPerBatchPath",
        "MaxInputBytesPerBatch",
        "MaxInputBytesPerBatchPath",
        "BatchInput",
    }
)
_TOLERANCE_COUNT = ("ToleratedFailureCount", "ToleratedFailureCountPath")
_TOLERANCE_PERCENTAGE = ("ToleratedFailurePercentage", "ToleratedFailurePercentagePath")
# Integration patterns an Express execution does not support (AWS refuses them in Express workflows).
_NOT_IN_EXPRESS = (".waitForTaskToken", ".sync", ".sync:2")


@dataclass
class DistributedMapSpec:
    """What moto's parser cannot hold for one distributed Map state, attached to its component."""

    name: str
    batcher: dict[str, Any] | None = None
    express: bool = False
    tolerances: frozenset[str] = frozenset()


def _asl_error(message: str) -> Exception:
    from moto.stepfunctions.parser.asl.parse.asl_parser import ASLParserException

    return ASLParserException(errors=[message])


def _check_batcher(state_name: str, batcher: Any) -> dict[str, Any]:
    if not isinstance(batcher, dict):
        raise _asl_error(f"{state_name}: ItemBatcher must be an object")
    unknown = set(batcher) - _BATCHER_FIELDS
    if unknown:
        raise _asl_error(f"{state_name}: ItemBatcher has unknown fields {sorted(unknown)}")
    for field_name in ("MaxItemsPerBatch", "MaxInputBytesPerBatch"):
        if field_name in batcher and f"{field_name}Path" in batcher:
            raise _asl_error(f"{state_name}: ItemBatcher has both {field_name} and {field_name}Path")
    if not any(f in batcher for f in _BATCHER_FIELDS - {"BatchInput"}):
        raise _asl_error(
            f"{state_name}: ItemBatcher needs MaxItemsPerBatch(Path) or MaxInputBytesPerBatch(Path)"
        )
    items = batcher.get("MaxItemsPerBatch")
    if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
        raise _asl_error(f"{state_name}: MaxItemsPerBatch must be a positive integer, got {items!r}")
    size = batcher.get("MaxInputBytesPerBatch")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_INPUT_BYTES_PER_BATCH
    ):
        raise _asl_error(
            f"{state_name}: MaxInputBytesPerBatch must be 1..{MAX_INPUT_BYTES_PER_BATCH}, got {size!r}"
        )
    if "BatchInput" in batcher and not isinstance(batcher["BatchInput"], dict):
        raise _asl_error(f"{state_name}: BatchInput must be an object")
    return batcher


#: ResultWriter's WriterConfig (Step Functions, "ResultWriter (Map)").
_WRITER_CONFIG = {
    "OutputType": frozenset({"JSON", "JSONL"}),
    "Transformation": frozenset({"NONE", "COMPACT", "FLATTEN"}),
}


def _check_writer_config(state_name: str, config: Any) -> None:
    if not isinstance(config, dict) or not config:
        raise _asl_error(f"{state_name}: WriterConfig must be a non-empty object")
    for field_name, value in config.items():
        if value not in _WRITER_CONFIG.get(field_name, ()):
            raise _asl_error(f"{state_name}: WriterConfig {field_name}={value!r} is not one AWS accepts")


def _prepare_states(states: Any, found: dict[str, DistributedMapSpec], in_express: bool) -> None:
    """Rewrite the states (recursively) into what moto's grammar parses; remember the rest."""
    if not isinstance(states, dict):
        return
    for name, state in states.items():
        if not isinstance(state, dict):
            continue
        kind = state.get("Type")
        if in_express and kind == "Task" and str(state.get("Resource", "")).endswith(_NOT_IN_EXPRESS):
            raise _asl_error(f"{name}: Express executions do not support {state['Resource']}")
        if kind == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator") or {}
            config = processor.get("ProcessorConfig") or {}
            distributed = config.get("Mode") == "DISTRIBUTED"
            spec = DistributedMapSpec(name=name)
            if "ItemBatcher" in state:
                if not distributed:
                    raise _asl_error(f"{name}: ItemBatcher is only valid in a DISTRIBUTED Map")
                if "ItemSelector" in state or "Parameters" in state:
                    # AWS applies ItemSelector to each item before batching; the local map run would
                    # apply it to the whole batch. Refuse rather than run something else than AWS.
                    raise _asl_error(
                        f"{name}: ItemSelector with ItemBatcher is not supported by the local stack"
                    )
                spec.batcher = _check_batcher(name, state.pop("ItemBatcher"))
            writer = state.get("ResultWriter")
            if isinstance(writer, dict) and "WriterConfig" in writer:
                # The local ResultWriter writes only its manifest (no result files), so how they
                # would be shaped changes nothing here: checked as AWS does, then dropped.
                _check_writer_config(name, writer.pop("WriterConfig"))
            percentage = state.get("ToleratedFailurePercentage")
            if isinstance(percentage, int) and not isinstance(percentage, bool):
                state["ToleratedFailurePercentage"] = float(percentage)  # moto's grammar wants 100.0
            spec.tolerances = frozenset(f for f in (*_TOLERANCE_COUNT, *_TOLERANCE_PERCENTAGE) if f in state)
            if config.get("ExecutionType") == "EXPRESS":
                config["ExecutionType"] = "STANDARD"  # moto has no Express children: run as Standard
                spec.express = True
            if distributed:
                if name in found:
                    raise _asl_error(f"{name}: state names must be unique in a state machine")
                found[name] = spec
            _prepare_states(processor.get("States"), found, in_express or spec.express)
        for branch in state.get("Branches") or []:
            if isinstance(branch, dict):
                _prepare_states(branch.get("States"), found, in_express)


def _attach_specs(program: Any, found: dict[str, DistributedMapSpec]) -> None:
    """Put each spec on the iteration component of the parsed Map state of the same name."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap

    attached: set[str] = set()
    seen: set[int] = set()
    pending: list[Any] = [program]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, StateMap) and node.name in found:
            component: Any = node.iteration_component
            component._relayflow_map = found[node.name]
            attached.add(node.name)
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
        elif type(node).__module__.startswith("moto.stepfunctions.parser") and hasattr(node, "__dict__"):
            pending.extend(vars(node).values())
    missing = set(found) - attached
    if missing:
        raise MotoIncompatibleError(
            _incompatible(f"parsed Map states {sorted(missing)} not found in the program")
        )


#: Definitions parsed, by their text: the local stack runs a few fixed machines, and antlr's parse
#: of the batch machine alone took ~60 ms of every execution's start. A parsed program is only read
#: by its evaluations (each execution's state lives in its own Environment, as a Map's iterations
#: share one program within an execution), so executions of one definition share it.
_PARSED_LIMIT = 64
_parsed: dict[str, Any] = {}
_parsed_lock = threading.Lock()


def _make_parse(original: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(definition: str) -> Any:
        with _parsed_lock:
            known = _parsed.get(definition)
        if known is not None:
            return known
        result = parse_once(definition)  # a definition that does not parse raises: never kept
        with _parsed_lock:
            if len(_parsed) >= _PARSED_LIMIT:
                _parsed.clear()
            _parsed[definition] = result
        return result

    def parse_once(definition: str) -> Any:
        try:
            document = json.loads(definition)
        except ValueError:
            return original(definition)  # moto reports the syntax error
        found: dict[str, DistributedMapSpec] = {}
        if isinstance(document, dict):
            _prepare_states(document.get("States"), found, in_express=False)
        if not found:
            return original(json.dumps(document))
        program, tree = original(json.dumps(document))
        _attach_specs(program, found)
        return program, tree

    return parse


def _runtime_failure(env: Any, cause: str) -> Exception:
    """States.Runtime, as AWS fails an execution whose path field resolves to a wrong value."""
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.event import event_detail

    EventDetails: Any = event_detail.EventDetails  # a TypedDict of every kind of detail, all required

    name = StatesErrorName(typ=StatesErrorNameType.StatesRuntime)
    return FailureEventException(
        failure_event=FailureEvent(
            env=env,
            error_name=name,
            event_type=HistoryEventType.ExecutionFailed,
            event_details=EventDetails(
                executionFailedEventDetails=ExecutionFailedEventDetails(error=name.error_name, cause=cause)
            ),
        )
    )


def _sample(env: Any, path: str) -> Any:
    """A JSONPath against the Map state's input ($...) or the context object ($$...)."""
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    if path.startswith("$$"):
        return extract_json(path[1:], env.states.context_object.context_object_data)
    return extract_json(path, env.states.get_input())


def _batch_input(env: Any, template: Any) -> Any:
    if isinstance(template, dict):
        value: dict[str, Any] = {}
        for key, item in template.items():
            if key.endswith(".$"):
                if not (isinstance(item, str) and item.startswith("$")):
                    raise _runtime_failure(
                        env, f"BatchInput field {key}: only paths are supported locally, got {item!r}"
                    )
                value[key[:-2]] = _sample(env, item)
            else:
                value[key] = _batch_input(env, item)
        return value
    if isinstance(template, list):
        return [_batch_input(env, item) for item in template]
    return template


def _batcher_limit(env: Any, batcher: dict[str, Any], field_name: str, upper: int | None) -> int | None:
    if field_name in batcher:
        return int(batcher[field_name])
    path = batcher.get(f"{field_name}Path")
    if path is None:
        return None
    try:
        value = _sample(env, path)
    except Exception as exc:
        raise _runtime_failure(env, f"{field_name}Path {path}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper and value > upper):
        raise _runtime_failure(
            env,
            f"The {field_name}Path field refers to value {json.dumps(value)} "
            f"which is not a valid {field_name}: {path}",
        )
    return value


def _make_batches(env: Any, batcher: dict[str, Any], items: list[Any]) -> list[dict[str, Any]]:
    """Items in child inputs of {"Items": [...], "BatchInput": {...}}: at most MaxItemsPerBatch items
    and (MaxInputBytesPerBatch) bytes of JSON each; an item bigger than the byte limit goes alone."""
    max_items = _batcher_limit(env, batcher, "MaxItemsPerBatch", None)
    max_bytes = _batcher_limit(env, batcher, "MaxInputBytesPerBatch", MAX_INPUT_BYTES_PER_BATCH)
    extra = {"BatchInput": _batch_input(env, batcher["BatchInput"])} if "BatchInput" in batcher else {}
    empty = len(json.dumps({"Items": [], **extra}, separators=(",", ":")).encode())
    batches: list[dict[str, Any]] = []
    current: list[Any] = []
    size = empty
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":")).encode()) + (1 if current else 0)
        full = (max_items is not None and len(current) >= max_items) or (
            max_bytes is not None and current and size + item_size > max_bytes
        )
        if full:
            batches.append({"Items": current, **copy_json(extra)})
            current, size = [], empty
            item_size -= 1
        current.append(item)
        size += item_size
    if current:
        batches.append({"Items": current, **copy_json(extra)})
    return batches


def copy_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _tolerance_exceeded(
    spec: DistributedMapSpec, failed: int, total: int, count: int, percentage: float
) -> bool:
    """AWS: no tolerance given -> any failed item fails the Map; else it fails as soon as a given
    threshold (count or percentage of items) is exceeded."""
    if not failed:
        return False
    checks: list[bool] = []
    if spec.tolerances & set(_TOLERANCE_COUNT):
        checks.append(failed > count)
    if spec.tolerances & set(_TOLERANCE_PERCENTAGE):
        checks.append(100.0 * failed / max(total, 1) > percentage)
    return any(checks) if checks else True


def _distributed_map_run(self: Any, env: Any, eval_input: Any) -> None:
    """moto's DistributedIterationComponent._map_run with ItemBatcher, Express children (run as
    Standard, with Express's 5-minute limit) and the failure tolerances."""
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.job import JobPool
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import (
        DEFAULT_MAX_CONCURRENCY_VALUE,
    )
    from moto.stepfunctions.parser.asl.eval.event import event_detail

    EventDetails: Any = event_detail.EventDetails  # a TypedDict of every kind of detail, all required

    spec: DistributedMapSpec = getattr(self, "_relayflow_map", None) or DistributedMapSpec(name="?")
    items: list[Any] = env.stack.pop()
    if spec.batcher is not None:
        inputs: list[Any] = _make_batches(env, spec.batcher, items)
        sizes = [len(batch["Items"]) for batch in inputs]
    else:
        inputs, sizes = items, [1] * len(items)
    record = eval_input.map_run_record
    record._relayflow_sizes = sizes
    record._relayflow_express = spec.express  # read by relayflow.local.faults
    record._relayflow_failures = {}

    program = self._get_iteration_program()
    if spec.express:
        program.timeout_seconds = TimeoutSeconds(EXPRESS_CHILD_TIMEOUT_SECONDS)
    job_pool = JobPool(job_program=program, job_inputs=inputs)
    max_concurrency = record.max_concurrency
    workers = len(inputs) if max_concurrency == DEFAULT_MAX_CONCURRENCY_VALUE else max_concurrency
    for _ in range(workers):
        self._launch_worker(env=env, eval_input=eval_input, job_pool=job_pool)
    job_pool.await_jobs()
    worker_exception = job_pool.get_worker_exception()
    if worker_exception is not None:
        raise worker_exception

    failed = sum(sizes[index] for index in record._relayflow_failures)
    total = sum(sizes)
    if _tolerance_exceeded(
        spec,
        failed,
        total,
        int(eval_input.tolerated_failure_count),
        float(eval_input.tolerated_failure_percentage),
    ):
        name = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
        raise FailureEventException(
            failure_event=FailureEvent(
                env=env,
                error_name=name,
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(
                    mapRunFailedEventDetails=MapRunFailedEventDetails(
                        error=name.error_name,
                        cause=f"tolerated failure threshold exceeded: {failed} of {total} items failed",
                    )
                ),
            )
        )
    env.stack.append([closed.job_output for closed in job_pool.get_closed_jobs()])


def run_child_program(worker: Any, env: Any, job: Any) -> None:
    """Evaluate a distributed Map child's program on its input (a job of the map run) in `env`."""
    from moto.stepfunctions.parser.asl.eval.states import ItemData, MapData

    env.states.context_object.context_object_data["Map"] = MapData(
        Item=ItemData(Index=job.job_index, Value=job.job_input)
    )
    env.states.reset(job.job_input)
    env.stack.append(env.states.get_input())
    worker._eval_input(env_frame=env)
    job.job_program.eval(env)


def _distributed_eval_job(self: Any, env: Any, job: Any) -> None:
    """moto's DistributedItemProcessorWorker._eval_job, counting a batch's items (a failed child
    fails all its items, as on AWS), a timed-out child as timed out (moto counted it a success),
    and noting which children failed for the tolerance check."""
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramError, ProgramStopped, ProgramTimedOut

    record = self._map_run_record
    sizes = getattr(record, "_relayflow_sizes", None)
    items = sizes[job.job_index] if sizes and job.job_index < len(sizes) else 1
    record.item_counter.total.count(items)
    record.item_counter.running.count(items)
    record.execution_counter.total.count()
    record.execution_counter.running.count()
    outcome, job_output = "failed", None
    try:
        run_child_program(self, env, job)
        end = env.program_state()
        if isinstance(end, ProgramError):
            outcome = "failed"
        elif isinstance(end, ProgramStopped):
            outcome = "aborted"
        elif isinstance(end, ProgramTimedOut):
            outcome = "timed_out"
        else:
            outcome, job_output = "succeeded", env.states.get_input()
    except Exception as exc:
        timed_out = type(exc).__name__ == "EvalTimeoutError"
        outcome = "timed_out" if timed_out else "failed"
        log.debug("map run child %s of %s: %r", job.job_index, record.map_run_arn, exc)
    finally:
        for counter, amount in ((record.item_counter, items), (record.execution_counter, 1)):
            getattr(counter, outcome).count(amount)
            counter.running.offset(-amount)
            if outcome == "succeeded":
                counter.results_written.count(amount)
        if outcome != "succeeded":
            failures = getattr(record, "_relayflow_failures", None)
            if failures is not None:
                failures[job.job_index] = outcome
        job.job_output = job_output


def _check_distributed_map_hooks() -> None:
    """Fail loudly unless moto's distributed-Map internals look as the patches above expect."""
    parser = importlib.import_module(_ASL_PARSER).AmazonStateLanguageParser
    if not isinstance(parser.__dict__.get("parse"), staticmethod):
        raise MotoIncompatibleError(
            _incompatible("AmazonStateLanguageParser.parse is no longer a staticmethod")
        )
    component = importlib.import_module(_DISTRIBUTED_COMPONENT).DistributedIterationComponent
    run = component.__dict__.get("_map_run")
    if run is None or list(inspect.signature(run).parameters) != ["self", "env", "eval_input"]:
        raise MotoIncompatibleError(
            _incompatible("DistributedIterationComponent._map_run(env, eval_input) moved")
        )
    for name in ("_get_iteration_program", "_launch_worker"):
        if not callable(getattr(component, name, None)):
            raise MotoIncompatibleError(_incompatible(f"DistributedIterationComponent.{name} is gone"))
    worker = importlib.import_module(_DISTRIBUTED_WORKER).DistributedItemProcessorWorker
    eval_job = worker.__dict__.get("_eval_job")
    if eval_job is None or list(inspect.signature(eval_job).parameters) != ["self", "env", "job"]:
        raise MotoIncompatibleError(_incompatible("DistributedItemProcessorWorker._eval_job(env, job) moved"))
    if not callable(getattr(worker, "_eval_input", None)):
        raise MotoIncompatibleError(_incompatible("DistributedItemProcessorWorker._eval_input is gone"))
    writer = importlib.import_module(_RESULT_WRITER).ResultWriter
    body = writer.__dict__.get("_eval_body")
    if body is None or list(inspect.signature(body).parameters) != ["self", "env"]:
        raise MotoIncompatibleError(_incompatible("ResultWriter._eval_body(env) moved"))
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval import program_state

    if not hasattr(StatesErrorNameType, "StatesExceedToleratedFailureThreshold") or not hasattr(
        program_state, "ProgramTimedOut"
    ):
        raise MotoIncompatibleError(_incompatible("Step Functions error names / program states moved"))


def _result_writer_eval_body(self: Any, env: Any) -> None:
    """ResultWriter's Parameters read the Map state's input, as on AWS (moto read them from the
    Map's results, so ``"Prefix.$": "$.run..."`` failed with States.Runtime)."""
    results = env.stack.pop()
    env.stack.append(env.states.get_input())
    self.parargs.eval(env=env)
    parameters = env.stack.pop()
    env.stack.pop()
    env.stack.extend([results, parameters])
    self.resource_eval.eval_resource(env=env)


def _install_distributed_map() -> None:
    _check_distributed_map_hooks()
    _patch(_RESULT_WRITER, "ResultWriter._eval_body", _result_writer_eval_body)
    parser = importlib.import_module(_ASL_PARSER).AmazonStateLanguageParser
    _patch(
        _ASL_PARSER,
        "AmazonStateLanguageParser.parse",
        staticmethod(_make_parse(parser.__dict__["parse"].__func__)),
    )
    _patch(_DISTRIBUTED_COMPONENT, "DistributedIterationComponent._map_run", _distributed_map_run)
    _patch(_DISTRIBUTED_WORKER, "DistributedItemProcessorWorker._eval_job", _distributed_eval_job)


_S3_NOTIFICATIONS = "moto.s3.notifications"

# S3 invokes Lambda asynchronously: Lambda retries a failed invocation and then hands the event to
# the function's on-failure destination. moto invokes once and drops the error. While a handler is
# registered here, S3's Lambda notifications go to it instead (the local stack's asynchronous
# invocation: LocalStack.invoke_async).
_s3_lambda_handlers: list[Callable[[str, Any], None]] = []


@contextlib.contextmanager
def on_s3_lambda_notification(handler: Callable[[str, Any], None]) -> Iterator[None]:
    """Hand every S3 Lambda notification to ``handler(function_arn, event)`` while the block runs."""
    _s3_lambda_handlers.append(handler)
    try:
        yield
    finally:
        _s3_lambda_handlers.remove(handler)


def _make_s3_lambda_invoke(original: Callable[..., Any]) -> Callable[..., Any]:
    def _invoke_awslambda(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        if _s3_lambda_handlers:
            _s3_lambda_handlers[-1](fn_arn, event_body)
            return
        original(account_id, event_body, fn_arn, region_name)

    return _invoke_awslambda


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


_KMS_MODELS = "moto.kms.models"
_SYMMETRIC_KEY_SPEC = "SYMMETRIC_DEFAULT"
_symmetric_rsa: list[Any] = []  # the RSA key every symmetric KMS key of the process holds
_symmetric_rsa_lock = threading.Lock()


def _symmetric_keys_share_rsa(generate: Callable[[str], Any]) -> Callable[[str], Any]:
    """moto gives every KMS key an RSA-2048 private key, a symmetric key too (which signs nothing):
    ~60 ms of CPU for the default SSE key of each table, at every stack start. Symmetric keys
    share one; asymmetric keys keep their own."""

    @functools.wraps(generate)
    def generate_private_key(key_spec: str) -> Any:
        if key_spec != _SYMMETRIC_KEY_SPEC:
            return generate(key_spec)
        with _symmetric_rsa_lock:
            if not _symmetric_rsa:
                _symmetric_rsa.append(generate(key_spec))
            return _symmetric_rsa[0]

    return generate_private_key


def install() -> None:
    """Patch moto (idempotent, reference-counted: each install() needs one uninstall())."""
    global _install_count, _sfn_logger_level
    with _install_lock:
        _install_count += 1
        if _install_count > 1:
            return
        try:
            check_compatible()
            _patch("moto.awslambda.models", "LambdaFunction._invoke_lambda", _invoke_lambda)
            handler = importlib.import_module(_DYNAMODB_RESPONSES).DynamoHandler
            if "call_action" not in handler.__dict__:
                raise MotoIncompatibleError(_incompatible("DynamoHandler.call_action is gone"))
            _patch(
                _DYNAMODB_RESPONSES, "DynamoHandler.call_action", _serialized(handler.__dict__["call_action"])
            )
            models = importlib.import_module(_DYNAMODB_MODELS)
            backend = models.DynamoDBBackend
            if "transact_write_items" not in backend.__dict__ or not hasattr(models, "copy"):
                raise MotoIncompatibleError(_incompatible("DynamoDBBackend.transact_write_items moved"))
            _patch(_DYNAMODB_MODELS, "copy", _TableBackupFreeCopy())
            table = importlib.import_module(_DYNAMODB_TABLE).Table
            if "query" not in table.__dict__ or "all_items" not in table.__dict__:
                raise MotoIncompatibleError(_incompatible("Table.query / Table.all_items moved"))
            if list(inspect.signature(table.__dict__["query"]).parameters)[1:9] != [
                "hash_key",
                "range_comparison",
                "range_objs",
                "limit",
                "exclusive_start_key",
                "scan_index_forward",
                "projection_expressions",
                "index_name",
            ]:
                raise MotoIncompatibleError(_incompatible("Table.query's parameters changed"))
            _patch(_DYNAMODB_TABLE, "Table.query", _query_one_partition(table.__dict__["query"]))
            _patch(_DYNAMODB_TABLE, "Table.all_items", _all_items_of_partition(table.__dict__["all_items"]))
            _patch(
                _DYNAMODB_MODELS,
                "DynamoDBBackend.transact_write_items",
                _transact_with_item_backup(backend.__dict__["transact_write_items"]),
            )
            task_lambda = importlib.import_module(_STATE_TASK_LAMBDA).StateTaskLambda
            service_lambda = importlib.import_module(_SERVICE_LAMBDA).StateTaskServiceLambda
            if "_from_error" not in task_lambda.__dict__ or not hasattr(
                service_lambda, "_error_cause_from_client_error"
            ):
                raise MotoIncompatibleError(_incompatible("StateTaskLambda._from_error moved"))
            from_error = _lambda_error_names(task_lambda._from_error)
            _patch(_STATE_TASK_LAMBDA, "StateTaskLambda._from_error", from_error)
            invoke_function = _optional_target(_LAMBDA_EVAL_UTILS, "_invoke_lambda_function")
            if invoke_function is not None:
                direct = _make_direct_lambda_invoke(invoke_function)
                _patch(_LAMBDA_EVAL_UTILS, "_invoke_lambda_function", direct)
            else:
                log.warning("moto changed: Step Functions calls Lambda through its HTTP layer (slower tasks)")
            client_for = _optional_target(_LAMBDA_EVAL_UTILS, "boto_client_for")
            if client_for is not None:
                _patch(_LAMBDA_EVAL_UTILS, "boto_client_for", _make_cached_client_for(client_for))
            else:
                log.warning("moto changed: Step Functions Lambda client not cached (slower tasks)")
            communication = importlib.import_module(_SFN_EXECUTION).BaseExecutionWorkerCommunication
            if "terminated" not in communication.__dict__:
                raise MotoIncompatibleError(_incompatible("ExecutionWorkerCommunication.terminated moved"))
            _patch(
                _SFN_EXECUTION,
                "BaseExecutionWorkerCommunication.terminated",
                _announce_termination(communication.__dict__["terminated"]),
            )
            worker = importlib.import_module(_DISTRIBUTED_WORKER).DistributedItemProcessorWorker
            if "_eval_pool" not in worker.__dict__:
                raise MotoIncompatibleError(_incompatible("DistributedItemProcessorWorker._eval_pool moved"))
            _patch(_DISTRIBUTED_WORKER, "DistributedItemProcessorWorker._eval_pool", _eval_pool_iteratively)
            _install_distributed_map()
            branch = importlib.import_module(_SFN_BRANCH_WORKER).BranchWorker
            for name in ("_thread_routine", "start"):
                if name not in branch.__dict__:
                    raise MotoIncompatibleError(_incompatible(f"BranchWorker.{name} moved"))
            if "_branch_worker_comm" not in inspect.getsource(branch) or not hasattr(
                importlib.import_module(_SFN_BRANCH_WORKER), "TMP_THREADS"
            ):
                raise MotoIncompatibleError(_incompatible("BranchWorker's fields moved"))
            _patch(
                _SFN_BRANCH_WORKER,
                "BranchWorker._thread_routine",
                _quiet_branch_routine(branch.__dict__["_thread_routine"]),
            )
            _patch(_SFN_BRANCH_WORKER, "BranchWorker.start", _short_branch_start)
            environment = importlib.import_module(_SFN_ENVIRONMENT).Environment
            set_error = environment.__dict__.get("set_error")
            if set_error is None or "_program_state" not in inspect.getsource(environment):
                raise MotoIncompatibleError(_incompatible("Environment.set_error / _program_state moved"))
            _patch(_SFN_ENVIRONMENT, "Environment.set_error", _keep_stopped(set_error))
            update_parser = importlib.import_module(_DYNAMODB_EXPRESSIONS).UpdateExpressionParser
            _patch(
                _DYNAMODB_EXPRESSIONS,
                "UpdateExpressionParser.make",
                staticmethod(functools.lru_cache(maxsize=1024)(update_parser.make)),
            )
            condition_parser = importlib.import_module(_DYNAMODB_COMPARISONS).ConditionExpressionParser
            _patch(
                _DYNAMODB_COMPARISONS,
                "ConditionExpressionParser.parse",
                _parse_condition_once(condition_parser.__dict__["parse"]),
            )
            result_class = importlib.import_module(_DYNAMODB_RESPONSES).DynamoResult
            _patch(
                _DYNAMODB_RESPONSES,
                "DynamoResult.execute_result",
                _dynamodb_result_as_json(result_class.execute_result),
            )
            live_threads = _LiveThreads()
            for module_name in _SFN_THREAD_LISTS:
                if isinstance(_optional_target(module_name, "TMP_THREADS"), list):
                    _patch(module_name, "TMP_THREADS", live_threads)
            for module_name in _JSONPATH_USERS:
                parse = _optional_target(module_name, "parse")
                if parse is not None:  # parsed expressions are immutable: safe to share
                    _patch(module_name, "parse", functools.lru_cache(maxsize=4096)(parse))
            s3_event = _optional_target(_S3_NOTIFICATIONS, "_get_s3_event")
            if s3_event is not None:
                _patch(_S3_NOTIFICATIONS, "_get_s3_event", _make_s3_event(s3_event))
            else:
                log.warning("moto changed: S3 notification events keep moto's shape")
            s3_invoke = _optional_target(_S3_NOTIFICATIONS, "_invoke_awslambda")
            if s3_invoke is not None:
                _patch(_S3_NOTIFICATIONS, "_invoke_awslambda", _make_s3_lambda_invoke(s3_invoke))
            else:
                log.warning("moto changed: S3 notifications invoke Lambda once, without retries")
            generate_private_key = _optional_target(_KMS_MODELS, "generate_private_key")
            if generate_private_key is not None:
                _patch(_KMS_MODELS, "generate_private_key", _symmetric_keys_share_rsa(generate_private_key))
        except BaseException:
            _install_count -= 1
            _restore()
            raise
        sfn_logger = logging.getLogger(_SFN_LOGGER)
        _sfn_logger_level = sfn_logger.level
        sfn_logger.setLevel(logging.CRITICAL)


def uninstall() -> None:
    global _install_count, _sfn_logger_level
    with _install_lock:
        if _install_count == 0:
            return
        _install_count -= 1
        if _install_count:
            return
        _restore()
        if _sfn_logger_level is not None:
            logging.getLogger(_SFN_LOGGER).setLevel(_sfn_logger_level)
            _sfn_logger_level = None


def _restore() -> None:
    for (module_name, attribute), original in reversed(list(_originals.items())):
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        if original is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _originals.clear()
    with _client_lock:
        _client_cache.clear()


def is_installed() -> bool:
    return _install_count > 0

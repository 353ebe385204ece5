"""Step Functions' distributed Map: what moto 5.2's interpreter lacks for statemachine/batch.asl.json."""

from __future__ import annotations

import importlib
import inspect
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relayflow.local.shims.base import MotoIncompatibleError, _incompatible, log, patch_required

_DISTRIBUTED_WORKER = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor"
    ".distributed_item_processor_worker"
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
    patch_required(_RESULT_WRITER, "ResultWriter._eval_body", lambda _: _result_writer_eval_body)
    patch_required(
        _ASL_PARSER, "AmazonStateLanguageParser.parse", lambda parse: staticmethod(_make_parse(parse))
    )
    patch_required(
        _DISTRIBUTED_COMPONENT, "DistributedIterationComponent._map_run", lambda _: _distributed_map_run
    )
    patch_required(
        _DISTRIBUTED_WORKER, "DistributedItemProcessorWorker._eval_job", lambda _: _distributed_eval_job
    )


def install() -> None:
    """Distributed Map: the worker's loop, then what moto's interpreter lacks (see above)."""
    patch_required(
        _DISTRIBUTED_WORKER, "DistributedItemProcessorWorker._eval_pool", lambda _: _eval_pool_iteratively
    )
    _install_distributed_map()

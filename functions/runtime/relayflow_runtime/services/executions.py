"""The API's executions: start (once per Idempotency-Key), read, list, cancel, re-run, retry a
batch's failed items, delete.

A start writes the execution ``pending`` with its plan snapshot and starts the template's machine
for its mode; the machines' actions take it from there (services/run_machine.py, services/batch.py).
Status changes are services/transitions.py's, for the API's cancel as for everything else that ends
a run; where a run's records and objects are is services/run_records.py, and how an execution
reads in an answer services/execution_view.py.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any, TypedDict

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from relayflow_runtime.adapters.idempotency import idempotency_store
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain.clock import new_id, now_iso, parse_iso
from relayflow_runtime.domain.disposition import clean_filename
from relayflow_runtime.domain.encoded import decode_base64
from relayflow_runtime.domain.engine import Plan
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.domain.limits import MAX_INPUT_FILE_BYTES, MAX_SINGLE_INPUT_CHARS
from relayflow_runtime.domain.status import ACTIVE, CLOSE_ON_CANCEL, NodeStatus, allowed_from
from relayflow_runtime.errors import Conflict, InvalidInput, NotFound, referenced
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import (
    Execution,
    ExecutionProgress,
    ExecutionTrigger,
    InputFile,
)
from relayflow_runtime.services import admission, authoring, batch, deps, metrics, notify, retention
from relayflow_runtime.services.downloads import URL_SECONDS, Download, presigned_urls_enabled
from relayflow_runtime.services.execution_view import to_execution
from relayflow_runtime.services.plan import build_plan
from relayflow_runtime.services.run_records import (
    execution_prefix,
    get_run_record,
    load_plan,
    machine_arn,
    plan_key,
)
from relayflow_runtime.services.transitions import transition
from relayflow_runtime.services.values import pack, unpack
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)


# ---- starting --------------------------------------------------------------------------------------
def _decode_file(file: api.FileInput) -> bytes:
    return decode_base64(
        file.content_base64,
        field="file.content_base64",
        code="invalid_file",
        max_bytes=MAX_INPUT_FILE_BYTES,
        too_large=f"file inputs through the API are limited to {MAX_INPUT_FILE_BYTES // (1024 * 1024)} MiB; "
        "upload larger files to the bucket's inputs/ prefix instead.",
        too_large_code="file_too_large",
    )


def resolve_version(
    tenant: str, workflow_id: str, version_id: str | None, env: deps.Deps | None = None
) -> str:
    """The version a run uses: the one asked for, else the workflow's active version."""
    workflow = authoring.get_workflow(tenant, workflow_id, env)
    version_id = version_id or workflow.active_version_id
    if not version_id:
        raise Conflict(
            "this workflow has no active version; create a version or pass version_id.",
            code="no_active_version",
        )
    return version_id


def start_execution(
    tenant: str, workflow_id: str, body: api.Execute, *, env: deps.Deps | None = None
) -> Execution:
    """Start a run of the workflow (its active version, or ``body.version_id``). A batch's
    submission checks still read the dataset through the configured stores (services/batch.py)."""
    env = deps.given(env)
    version_id = resolve_version(tenant, workflow_id, body.version_id, env)
    authoring.check_callback_url(body.callback_url)
    if body.input_mode == "single":
        if (body.single_input is None) == (body.file is None):
            raise InvalidInput(
                "single mode needs exactly one of single_input (text) or file.", code="invalid_input_mode"
            )
        if body.batch_config is not None:
            raise InvalidInput("batch_config is only for input_mode 'batch'.", code="invalid_input_mode")
        if body.single_input is not None and len(body.single_input) > MAX_SINGLE_INPUT_CHARS:
            raise InvalidInput(
                f"single_input is limited to {MAX_SINGLE_INPUT_CHARS} characters.", code="input_too_large"
            )
    with referenced("version_id") if body.version_id else contextlib.nullcontext():
        plan = build_plan(
            tenant, workflow_id, version_id, mode=body.input_mode, run_timeout=body.timeout, env=env
        )
    file_data = _decode_file(body.file) if body.file else None
    execution_id = new_id()
    batch_start = batch.submission(tenant, body) if body.input_mode == "batch" else None
    return _launch(
        tenant,
        workflow_id,
        plan,
        execution_id=execution_id,
        single_input=body.single_input,
        file=(body.file.filename, body.file.content_type, file_data)
        if body.file and file_data is not None
        else None,
        batch_start=batch_start,
        origin=RunOrigin(callback_url=body.callback_url) if body.callback_url else None,
        env=env,
    )


#: Longest file name kept in an input file's S3 key, in UTF-8 bytes (its tail: the extension stays),
#: so that the key stays far below S3's 1,024 bytes whatever the name; the name itself is kept whole.
MAX_KEY_FILENAME_BYTES = 200


def input_key(tenant: str, execution_id: str, filename: str) -> str:
    """Where a run's input file is kept: its name without control characters or separators."""
    name = clean_filename(filename, "input").encode()
    tail = name[-MAX_KEY_FILENAME_BYTES:].decode("utf-8", "ignore").lstrip() or "input"
    return f"{execution_prefix(tenant, execution_id)}input/{tail}"


def start_from_object(
    tenant: str,
    workflow_id: str,
    version_id: str | None,
    *,
    execution_id: str,
    source_key: str,
    filename: str,
    content_type: str,
    size: int,
    trigger: ExecutionTrigger,
) -> Execution:
    """Start a single run whose file input is an object already in the bucket (an S3 upload).

    The object is copied inside S3 into the execution's own prefix (its bytes never pass through
    the function), so the run keeps its input whatever later happens to the uploaded object. The
    execution id is the caller's: a second start with the same id returns the first execution.
    """
    with contextlib.suppress(NotFound):
        return to_execution(tenant, deps.stores().executions.get_record(tenant, execution_id))
    version_id = resolve_version(tenant, workflow_id, version_id)
    plan = build_plan(tenant, workflow_id, version_id, mode="single", run_timeout=None)
    input_file = InputFile(
        key=input_key(tenant, execution_id, filename),
        filename=filename,
        content_type=content_type,
        size=size,
    )
    deps.blobs().copy(source_key, input_file.key)
    try:
        return _launch(
            tenant,
            workflow_id,
            plan,
            execution_id=execution_id,
            file_key=input_file,
            origin=RunOrigin(trigger=trigger),
        )
    except ConditionFailed:  # a concurrent start with this id wrote the record first
        return to_execution(tenant, deps.stores().executions.get_record(tenant, execution_id))


IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: Printable ASCII without spaces, 1 to 255 characters (a UUID is a good key).
IDEMPOTENCY_KEY_PATTERN = rf"^[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"


def start_execution_once(
    tenant: str,
    workflow_id: str,
    body: api.Execute,
    idempotency_key: str,
    *,
    lambda_context: Any = None,
) -> tuple[Execution, bool]:
    """start_execution at most once per (tenant, workflow, Idempotency-Key) within 24 hours.

    Returns (execution, replayed). The same key with the same request (compared after validation,
    so key order, whitespace and spelled-out defaults do not matter) returns the execution the
    first request started; with a different request it is a 409 ``idempotency_key_reused``. A
    request that failed (4xx/5xx) leaves no record: the key may be used again.
    """
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, idempotency_key):
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters, "
            "no spaces (a UUID is a good key).",
            code="invalid_idempotency_key",
        )
    config = IdempotencyConfig(
        event_key_jmespath="[tenant, workflow_id, key]",
        payload_validation_jmespath="body",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
    )
    if lambda_context is not None:
        # A request that dies mid-way (timeout) frees its key when the invocation would have ended.
        config.register_lambda_context(lambda_context)
    started: list[Execution] = []

    @idempotent_function(
        data_keyword_argument="request",
        persistence_store=idempotency_store(get_settings().idempotency_table),
        config=config,
        key_prefix="relayflow.execute_workflow",
    )
    def start_once(request: dict[str, Any]) -> dict[str, Any]:
        started.append(start_execution(tenant, workflow_id, body))
        return {"execution_id": started[0].id}

    request = {
        "tenant": tenant,
        "workflow_id": workflow_id,
        "key": idempotency_key,
        "body": body.model_dump(mode="json"),
    }
    try:
        outcome = start_once(request=request)
    except IdempotencyValidationError as exc:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body; use a new key for a "
            "new request.",
            code="idempotency_key_reused",
        ) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry in a moment.",
            code="idempotency_request_in_progress",
        ) from exc
    if started:
        return started[0], False
    try:
        return get_execution(tenant, workflow_id, outcome["execution_id"]), True
    except NotFound as exc:
        raise Conflict(
            "this Idempotency-Key started an execution that has since been deleted; use a new key.",
            code="idempotency_key_reused",
        ) from exc


class RunOrigin(TypedDict, total=False):
    """Where a run comes from, as its record keeps it: its own webhook URL (a start that named
    one), the S3 upload that started it, the run it re-runs or whose failed items it retries."""

    callback_url: str
    trigger: ExecutionTrigger
    rerun_of: str
    retry_of: str


def _launch(
    tenant: str,
    workflow_id: str,
    plan: Plan,
    *,
    execution_id: str,
    single_input: str | None = None,
    file: tuple[str, str, bytes] | None = None,
    file_key: InputFile | None = None,
    batch_start: batch.BatchStart | None = None,
    origin: RunOrigin | None = None,
    env: deps.Deps | None = None,
) -> Execution:
    """Write the execution (pending) and its plan snapshot, then start the template's machine for
    its mode, named by the execution id (the one call to Step Functions a start makes): a single
    run in its turn (services/admission.py), a batch at once (its budget waits in the machine)."""
    env = deps.given(env)
    prefix = execution_prefix(tenant, execution_id)
    state_machine_arn = machine_arn(plan.mode)

    input_file: InputFile | None = file_key
    if file is not None:
        filename, content_type, data = file
        input_file = InputFile(
            key=input_key(tenant, execution_id, filename),
            filename=filename,
            content_type=content_type,
            size=len(data),
        )
        env.blobs.put_bytes(input_file.key, data, content_type)
    env.blobs.put_json(plan_key(tenant, execution_id), plan.model_dump(mode="json"))

    number = env.workflows.next_execution_number(tenant, workflow_id)
    now = env.now()
    execution = Execution(
        id=execution_id,
        workflow_id=workflow_id,
        version_id=plan.version_id,
        number=number,
        status="pending",
        input_mode=plan.mode,
        single_input=single_input,
        input_file=input_file,
        batch_config=batch_start.config if batch_start else None,
        timeout=plan.run_timeout,
        created_at=now,
        progress=ExecutionProgress(
            total_nodes=len(plan.nodes),
            current_node_idx=0,
            current_node_id=plan.nodes[0].id if plan.nodes else None,
            total_items=batch_start.total_items if batch_start else None,
        ),
        **(origin or RunOrigin()),
    )
    # A long text input lives in S3 (an item holds at most 400 KB); the record keeps a reference.
    packed_input = (
        pack(single_input, f"{prefix}input.json", blobs=env.blobs) if single_input is not None else None
    )
    # The record is the execution as stored (domain/execution_record.py): its fields, the input
    # packed, and what only the item holds.
    shown = execution.model_dump(mode="json", exclude={"node_executions", "results", "usage"})
    stored = ExecutionRecord.model_validate(
        {
            **shown,
            "single_input": packed_input,
            "state_machine_arn": state_machine_arn,
            # Every other item of the run carries this TTL from the start (services/retention.py).
            "children_expire_at": retention.children_expire_at(now),
        }
    )
    env.executions.put_record(tenant, stored)
    metrics.count(metrics.RUNS_STARTED, Mode=plan.mode)
    if plan.mode == "single":
        for node in plan.nodes:
            env.executions.put_node_record_if_absent(
                tenant,
                execution_id,
                f"N#{node.id}",
                {
                    "node_id": node.id,
                    "name": node.name,
                    "idx": node.idx,
                    "status": "pending",
                    "attempts": 0,
                    "expires_at": stored.children_expire_at,
                },
            )

    notify.status_changed(tenant, stored, env)

    if plan.mode == "batch":  # a batch waits for its share of the batch budget instead
        admission.start(tenant, stored, can_wait=False, env=env)
    elif admission.launch(tenant, stored, env) is None:  # it waits for its turn (services/admission.py)
        return execution.model_copy(update={"waiting_reason": admission.waiting_reason()})
    return execution


def rerun_execution(tenant: str, workflow_id: str, execution_id: str) -> Execution:
    """A new execution with the same input, running the same snapshot of the version."""
    old = get_run_record(tenant, workflow_id, execution_id)
    plan = load_plan(tenant, execution_id)
    new_execution_id = new_id()
    file_key = None
    if old.input_file:
        source = old.input_file
        file_key = source.model_copy(
            update={
                "key": f"{execution_prefix(tenant, new_execution_id)}input/{source.key.rsplit('/', 1)[-1]}"
            }
        )
        deps.blobs().copy(source.key, file_key.key)
    batch_start = batch.rerun_submission(old) if plan.mode == "batch" else None
    return _launch(
        tenant,
        workflow_id,
        plan,
        execution_id=new_execution_id,
        single_input=unpack(old.single_input),
        file_key=file_key,
        batch_start=batch_start,
        origin=RunOrigin(rerun_of=execution_id),
    )


def retry_failed_items(
    tenant: str,
    workflow_id: str,
    execution_id: str,
    *,
    version_id: str | None = None,
    parallelism: int | None = None,
) -> Execution:
    """A new batch run over the items of a finished batch run that did not complete (failed, or
    never ran): with the same snapshot of the version by default, or with ``version_id`` (e.g. a
    fixed one). Their list is written in the background (the batch machine's prepare_batch)."""
    old = get_run_record(tenant, workflow_id, execution_id)
    if version_id is None:
        plan = load_plan(tenant, execution_id)
    else:
        version_id = resolve_version(tenant, workflow_id, version_id)
        with referenced("version_id"):
            plan = build_plan(tenant, workflow_id, version_id, mode="batch", run_timeout=old.timeout)
    new_execution_id = new_id()
    batch_start = batch.retry_submission(tenant, old, parallelism)
    _claim_retry(tenant, old, new_execution_id)
    try:
        return _launch(
            tenant,
            workflow_id,
            plan,
            execution_id=new_execution_id,
            batch_start=batch_start,
            origin=RunOrigin(retry_of=execution_id),
        )
    except BaseException:
        deps.stores().executions.release_retry(tenant, execution_id, new_execution_id)
        raise


#: A retry claimed this long ago whose run does not exist was abandoned (its start failed midway).
RETRY_CLAIM_SECONDS = 300


def _retry_active(execution_id: str, retry_id: str) -> Conflict:
    return Conflict(
        f"execution '{retry_id}' is already retrying this batch's failed items; follow it, or retry "
        "again once it has finished.",
        code="retry_in_progress",
        details={"execution_id": retry_id, "retry_of": execution_id},
    )


def _claim_retry(tenant: str, old: ExecutionRecord, retry_id: str) -> None:
    """One retry run of a batch's failed items at a time: a second request while one is pending or
    running is 409 ``retry_in_progress`` naming it (``details.execution_id``); concurrent requests
    race on a conditional write of the batch run's record, and one wins."""
    store = deps.stores().executions
    seen = old.retry_claim
    if seen:
        try:
            current: ExecutionRecord | None = store.get_record(tenant, seen)
        except NotFound:
            current = None
        if current is not None and current.status in ACTIVE:
            raise _retry_active(old.id, seen)
        claimed_at = parse_iso(old.retry_claimed_at or "1970-01-01T00:00:00Z")
        if current is None and (datetime.now(UTC) - claimed_at).total_seconds() < RETRY_CLAIM_SECONDS:
            raise _retry_active(old.id, seen)  # being started right now
    try:
        store.claim_retry(tenant, old.id, retry_id, seen, now_iso())
    except ConditionFailed:
        winner = store.get_record(tenant, old.id).retry_claim
        raise _retry_active(old.id, str(winner)) from None


# ---- reading ---------------------------------------------------------------------------------------
def get_execution(tenant: str, workflow_id: str, execution_id: str) -> Execution:
    return to_execution(tenant, get_run_record(tenant, workflow_id, execution_id))


def list_executions(
    tenant: str,
    workflow_id: str,
    *,
    limit: int = 50,
    next_token: str | None = None,
    status: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    version_id: str | None = None,
) -> tuple[list[Execution], str | None]:
    """Newest first, one page; created_after / created_before bound the creation time (inclusive),
    ``version_id`` keeps the runs of that version."""
    after = time_bound("created_after", created_after)
    before = time_bound("created_before", created_before)
    if after and before and after > before:
        raise InvalidInput("created_after is later than created_before.", code="invalid_time_range")
    authoring.get_workflow(tenant, workflow_id)
    records, token = deps.stores().executions.list_executions(
        tenant,
        workflow_id,
        limit=limit,
        next_token=next_token,
        status=status,
        created_after=after,
        created_before=before,
        version_id=version_id,
    )
    return [to_execution(tenant, r, with_nodes=False) for r in records], token


#: An RFC 3339 date-time (what the document's ``format: date-time`` means): a date, ``T``, a time
#: with optional fraction, and ``Z`` or an offset. A time without a zone is ambiguous: refused.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$", re.ASCII)


def time_bound(name: str, value: str | None) -> str | None:
    """An RFC 3339 time in the stored form of created_at (UTC, milliseconds, Z)."""
    if value is None:
        return None
    refused = InvalidInput(
        f"{name} is not an RFC 3339 time with a zone (e.g. 2025-01-31T12:00:00Z): {value[:60]!r}.",
        code="invalid_time",
    )
    if not RFC3339.match(value):
        raise refused
    text = value.upper().replace("Z", "+00:00")
    date, _, rest = text.partition("T")
    clock, fraction = rest[:8], ""
    if rest[8:9] == ".":
        digits = rest[9:].split("+")[0].split("-")[0]
        fraction = "." + (digits + "000000")[:6]
    try:
        moment = parse_iso(f"{date}T{clock}{fraction}{text[-6:]}")
    except ValueError:
        raise refused from None
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # an offset past the ends of the calendar: before or after every run
        moment = (datetime.min if moment.year < 2 else datetime.max).replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_input_file(tenant: str, workflow_id: str, execution_id: str) -> tuple[InputFile, bytes]:
    input_file = get_run_record(tenant, workflow_id, execution_id).input_file
    if input_file is None:
        raise NotFound("this execution was not started with a file input.", code="no_input_file")
    return input_file, deps.blobs().get_bytes(input_file.key)


def input_download(tenant: str, workflow_id: str, execution_id: str) -> Download:
    """The original input file: its bytes, or a presigned URL when it is larger than an API answer
    carries (see services/downloads.py)."""
    input_file = get_run_record(tenant, workflow_id, execution_id).input_file
    if input_file is None:
        raise NotFound("this execution was not started with a file input.", code="no_input_file")
    filename = clean_filename(input_file.filename, "input")
    if presigned_urls_enabled() and input_file.size > get_settings().max_inline_download_bytes:
        return Download(
            url=deps.blobs().presigned_get(input_file.key, URL_SECONDS, filename), filename=filename
        )
    data = deps.blobs().get_bytes(input_file.key)
    return Download(body=data, media_type=input_file.content_type, filename=filename)


def delete_execution(tenant: str, workflow_id: str, execution_id: str) -> bool:
    """Delete a finished execution. A single run's records go at once; a batch run's grow with its
    items, so it is hidden at once and deleted on the jobs machine: True then (in the background)."""
    record = get_run_record(tenant, workflow_id, execution_id)
    if record.status in ACTIVE:
        raise Conflict(
            "this execution is still running; cancel it before deleting it.", code="execution_active"
        )
    if record.input_mode == "batch":
        batch.delete_in_background(tenant, record)
        return True
    deps.blobs().delete_prefix(execution_prefix(tenant, execution_id))
    deps.stores().executions.delete_execution(tenant, execution_id)
    return False


# ---- transitions -----------------------------------------------------------------------------------
def cancel_execution(
    tenant: str, workflow_id: str, execution_id: str, *, env: deps.Deps | None = None
) -> Execution:
    env = deps.given(env)
    record = get_run_record(tenant, workflow_id, execution_id, env)
    if record.status == "cancelled":
        return to_execution(tenant, record, env=env)
    now = env.now()
    updated = transition(
        tenant,
        record,
        allowed_from("cancelled"),
        "cancelled",
        {"completed_at": now, "error": "cancelled by request"},
        env=env,
    )
    if updated is None:
        record = get_run_record(tenant, workflow_id, execution_id, env)
        if record.status == "cancelled":
            return to_execution(tenant, record, env=env)
        raise Conflict(
            f"execution '{execution_id}' already finished ({record.status}); only pending or running "
            "executions can be cancelled.",
            code="execution_finished",
        )
    if record.sfn_execution_arn:
        try:
            env.machines.stop(record.sfn_execution_arn, error="Cancelled", cause="cancelled by request")
        except Exception:
            # The cancel is already recorded and is the truth: every remaining task of the run finds
            # it cancelled and stops (conditional writes), so a failed stop only costs those tasks.
            logger.exception(
                "could not stop the state machine execution", extra={"execution_id": execution_id}
            )
    env.executions.close_open_nodes(tenant, execution_id, CLOSE_ON_CANCEL, "cancelled by request", now)
    _fail_open_gates(tenant, execution_id, env)
    return to_execution(tenant, updated, env=env)


def _fail_open_gates(tenant: str, execution_id: str, env: deps.Deps) -> None:
    """Fail the tasks of nodes still parked on their gates. StopExecution alone ends them on AWS;
    moto's interpreter never ends a run parked on a task token otherwise."""
    for record in env.executions.node_records(tenant, execution_id):
        token = record.get("token")
        if (
            token
            and record.get("status") in (NodeStatus.PENDING, NodeStatus.CANCELLED)
            and not record.get("attempts")
        ):
            try:
                env.machines.fail_task(token, error="Cancelled", cause="cancelled by request")
            except Exception:
                logger.exception("could not fail a parked gate", extra={"execution_id": execution_id})

"""What a million batch items cost on AWS, counted from the calls the local stack makes, and the AWS
calls per single-run node.

Real runs go through the template's machines on moto while :class:`Meter` watches every request a
Lambda handler of the template makes, and every call a machine makes itself through a service
integration (the run machine's node gate; botocore's stubber sees each one), and bills it the way AWS
does (:data:`PRICES`, us-east-1 list prices, printed with the results):

* **DynamoDB** write units per item written: 1 WRU per KB of the larger of the item before and after
  (rounded up per item; a failed condition costs the same), 2 per KB inside a transaction (a
  ConditionCheck included), and one more write per global secondary index the write changes: the
  index entry put, deleted, or rewritten when a projected attribute changed (an index that projects
  ALL is rewritten by any change of an item in it; KEYS_ONLY only when its keys change). Read units
  per 4 KB read (rounded up per item for GetItem and BatchGetItem, per request for Query and Scan),
  halved when eventually consistent, doubled in a transaction. Sizes are DynamoDB's (moto's
  ``Item.size``: names plus values), read from moto's own table around each request.
* **Lambda** requests, and GB-seconds at the function's memory (arm64) for a duration modelled from
  the work, not from this machine's clock (shared and slower than Lambda, it would make the figure
  noise): a child batch runs its items at once, so it lasts one item, ``nodes x (model seconds +
  NODE_OVERHEAD_S)`` plus ``RECORD_OVERHEAD_S``; any other invocation ``OTHER_INVOCATION_S``.
* **Step Functions**: Standard transitions of the parent (its history's ``*StateEntered``), one
  Express request per child batch and its GB-seconds (64 MB, per 100 ms).
* **S3** PUT-class (PUT, COPY, POST, LIST) and GET-class requests; **EventBridge** events (one per
  64 KB); **SQS** requests.
* **CloudWatch Logs**: the bytes the handlers log at the template's LOG_LEVEL (counted as they are
  emitted, each line plus CloudWatch's 26 bytes of event overhead) and Lambda's START/END/REPORT
  lines (``PLATFORM_LOG_BYTES`` an invocation).
* **X-Ray**: a trace per execution of a traced machine (each child batch, the parent) at the
  template's sampling rate (parameter ``TraceSamplingRate``; before it existed, X-Ray's default
  rule, 5 %), $5 per million traces recorded.
* **Reading the results back once**: the whole run paged through the results API, its requests
  billed the same way (plus API Gateway's HTTP API requests).
* **Storage**: what the run leaves in DynamoDB (each item plus 100 bytes, each index entry its
  projected size plus 100 bytes) and in S3 under the run's prefix, for ``RetentionDays``.

Per item = (a batch of ``ITEMS`` - a batch of ``SMALL_BATCH``) / the difference, so what a batch
does once (prepare, reserve, complete, the parent's states) is left out, as it is from a million.
The outcomes are realistic in size and entropy: each node's prompt is ``Case.prompt_bytes`` of
pseudo-words from the item and the builtin ``uppercase`` model answers with the same text in
capitals (no compressor matches one to the other); the 2 s case uses ``sleep``, whose output
repeats its prompt.

Per node (single runs) = (10-node chain - 2-node chain) / 8, so the run's fixed cost and its root's
are left out; the same for a diamond (A → B, A → C, B → D, C → D: (4-node run - the run's fixed
cost and its root) / 3, that base being a 2-node chain less a chain's node), with its parents'
outputs carried to the children they release and, side by side, without (every child queries its
run's node records: what carrying saves in calls and costs in write units). A 1-node run is no
base: its root has no children, so it keeps the gate a root with children goes without. Each of
those has one root, so what a root does differently (a root with children runs with no gate call, in a Map of
its own: one transition a run) is in the whole runs printed beside them: one node (a root without
children, which keeps its gate), a chain of 10, and two roots with their child.
"before" (per node) is the engine this one replaced (commit 2d0b64f): quoted, not re-run.
"""

from __future__ import annotations

import collections
import json
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relayflow_runtime.domain import costs

#: Counted on the replaced engine (commit 2d0b64f), per single-run node.
BEFORE_NODE = {"calls": 5.0, "invocations": 1.0, "transitions": 1.0}


@dataclass(frozen=True)
class Price:
    usd: float
    per: float
    unit: str


# us-east-1 list prices (USD), on-demand, first tier: the runtime's one price table
# (domain/costs.py), which a batch's estimate reads too
PRICES: dict[str, Price] = {
    "lambda_request": Price(costs.LAMBDA_REQUEST * 1e6, 1e6, "Lambda requests"),
    "lambda_gb_s": Price(costs.LAMBDA_GB_SECOND * 1e6, 1e6, "Lambda GB-seconds (arm64)"),
    "standard_transition": Price(costs.STANDARD_TRANSITION * 1000, 1000, "Standard state transitions"),
    "express_request": Price(costs.EXPRESS_REQUEST * 1e6, 1e6, "Express requests"),
    "express_gb_s": Price(costs.EXPRESS_GB_SECOND * 1e6, 1e6, "Express GB-seconds"),
    "wru": Price(costs.DYNAMODB_WRU * 1e6, 1e6, "DynamoDB write request units"),
    "rru": Price(costs.DYNAMODB_RRU * 1e6, 1e6, "DynamoDB read request units"),
    "s3_put": Price(costs.S3_PUT * 1e6, 1e6, "S3 PUT, COPY, POST, LIST requests"),
    "s3_get": Price(costs.S3_GET * 1e6, 1e6, "S3 GET and other requests"),
    "events": Price(costs.EVENTS * 1e6, 1e6, "EventBridge custom events (64 KB each)"),
    "sqs": Price(costs.SQS_REQUEST * 1e6, 1e6, "SQS requests"),
    "log_gb": Price(costs.LOG_GB, 1, "CloudWatch Logs GB ingested"),
    "trace": Price(costs.XRAY_TRACE * 1e6, 1e6, "X-Ray traces recorded"),
    "http_api": Price(costs.HTTP_API_REQUEST * 1e6, 1e6, "API Gateway HTTP API requests"),
    "dynamodb_gb_month": Price(costs.DYNAMODB_GB_MONTH, 1, "DynamoDB storage GB-month (Standard)"),
    "s3_gb_month": Price(costs.S3_GB_MONTH, 1, "S3 Standard storage GB-month"),
}

#: The targets of issue 20, per million items (and per month kept).
TARGETS = {"7.6 KB outcomes": 2.00, "1 KB outcomes": 1.00, "2 s model calls": 8.00, "storage": 0.50}

NODE_RUNNER = "relayflow_runtime.handlers.node_runner.lambda_handler"
AWS_SDK_TASK = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk"
)
#: The scope of the calls a machine makes itself (aws-sdk service integrations).
INTEGRATIONS = "StateMachineIntegrations"
NODE_RUNNER_GB = 0.5  # the node runner's 512 MB
EXPRESS_GB = costs.EXPRESS_GB
NODE_OVERHEAD_S = 0.05  # relayflow's own work per node (template, a call or two at AWS latency)
RECORD_OVERHEAD_S = 0.05  # a child recording its items
OTHER_INVOCATION_S = 0.10
PLATFORM_LOG_BYTES = 350  # START, END and REPORT (with its X-Ray line) of one invocation
LOG_EVENT_OVERHEAD = 26
DEFAULT_TRACE_RATE = 0.05  # X-Ray's default rule past its 1 a second reservoir

ITEMS = 200
SLOW_ITEMS = 100
SMALL_BATCH = 20
PARALLELISM = 40  # 20 items a child (domain/batch.py), 2 children at once
NODES = 3

_S3_PUT_CLASS = {
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "ListObjects",
    "ListObjectsV2",
    "ListMultipartUploads",
    "ListParts",
    "PostObject",
}
_S3_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}
_DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


# ---- DynamoDB as it bills --------------------------------------------------------------------------
def _kb(size: int) -> int:
    return max(1, math.ceil(size / 1024))


@dataclass
class _Image:
    """What billing needs of one item at one moment: its size and, per index, its entry."""

    size: int
    entries: dict[str, tuple[str, int, str] | None]  # index -> (keys, projected size, projection)


class _Tables:
    """Reads moto's own tables (under the local stack's DynamoDB lock) to size what a request
    writes and reads."""

    @staticmethod
    def table(region: str, name: str) -> Any:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        # looked up each time: starting a mock replaces the backends
        return dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(name)

    @staticmethod
    def key_of(table: Any, attributes: dict[str, Any]) -> tuple[Any, Any]:
        from moto.dynamodb.models.dynamo_type import DynamoType

        hash_key = DynamoType(attributes[table.hash_key_attr])
        range_key = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr else None
        return hash_key, range_key

    @staticmethod
    def item(table: Any, key: tuple[Any, Any]) -> Any:
        hash_key, range_key = key
        try:
            return table.items[hash_key][range_key] if range_key is not None else table.items[hash_key]
        except KeyError:
            return None

    @staticmethod
    def image(table: Any, item: Any) -> _Image | None:
        if item is None:
            return None
        entries: dict[str, tuple[str, int, str] | None] = {}
        for index in table.global_indexes:
            if not all(name in item.attrs for name in index.schema_key_attrs):
                entries[index.name] = None
                continue
            projected = index.project(item)
            keys = json.dumps([item.attrs[n].to_json() for n in index.schema_key_attrs], default=str)
            body = json.dumps(projected.to_json(), sort_keys=True, default=str)
            entries[index.name] = (keys, projected.size(), body)
        return _Image(item.size(), entries)


def _index_writes(before: _Image | None, after: _Image | None, names: list[str]) -> int:
    """Write units of a table write on its global secondary indexes."""
    units = 0
    for name in names:
        old = before.entries.get(name) if before else None
        new = after.entries.get(name) if after else None
        if old and new and old[0] == new[0]:
            units += _kb(max(old[1], new[1])) if old[2] != new[2] else 0
        else:
            units += (_kb(old[1]) if old else 0) + (_kb(new[1]) if new else 0)
    return units


def _item_size_of_wire(item: dict[str, Any]) -> int:
    from moto.dynamodb.models.dynamo_type import Item

    return int(Item(None, None, item).size()) if item else 0


# ---- the meter -------------------------------------------------------------------------------------
class Meter:
    """Counts what every template handler does on AWS while it runs, billed as AWS bills it."""

    def __init__(self) -> None:
        self.tally: collections.Counter[str] = collections.Counter()
        self._scope = threading.local()
        self._lock = threading.Lock()
        self._tables: _Tables | None = None
        self._running = 0

    # -- scopes
    def current(self) -> str | None:
        return getattr(self._scope, "name", None)

    def add(self, key: str, amount: float = 1) -> None:
        with self._lock:
            self.tally[key] += amount  # type: ignore[assignment]

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until no handler runs (what a finished run still does, e.g. its end's follow-up,
        belongs to it, not to whatever is measured next)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._running == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("handlers still running")

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.tally)

    def reset(self) -> None:
        with self._lock:
            self.tally.clear()

    def install(self) -> None:
        import importlib
        import logging

        import moto.core.botocore_stubber as stubber

        from relayflow.local import cfn, moto_shim, provision

        self._tables = _Tables()
        original = stubber.BotocoreStubber.__call__
        meter = self

        def counting(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
            if meter.current() is None:
                return original(self, event_name, request, **kwargs)
            service, _, operation = event_name.split(".", 1)[1].partition(".")
            return meter.request(
                service, operation, request, lambda: original(self, event_name, request, **kwargs)
            )

        stubber.BotocoreStubber.__call__ = counting  # type: ignore[method-assign]

        emit = logging.StreamHandler.emit

        def counted_emit(self: logging.StreamHandler[Any], record: logging.LogRecord) -> None:
            if meter.current() is None:
                emit(self, record)
                return
            try:
                line = self.format(record)
            except Exception:  # a record the handler could not format is not logged either
                return
            meter.add(f"{meter.current()}:log_bytes", len(line.encode()) + 1 + LOG_EVENT_OVERHEAD)

        logging.StreamHandler.emit = counted_emit  # type: ignore[method-assign]

        template = cfn.load_template(provision.default_template_path())
        for logical_id, resource in template["Resources"].items():
            handler = (resource.get("Properties") or {}).get("Handler")
            if resource.get("Type") != "AWS::Serverless::Function" or not isinstance(handler, str):
                continue
            module_name, _, attribute = handler.rpartition(".")
            real = getattr(importlib.import_module(module_name), attribute)
            moto_shim.register(handler, self._wrap(logical_id, handler, real))

        # The machines' own service integrations (the run machine's node gate: a DynamoDB write
        # with a task token) are AWS calls of the run too, billed in their own scope.
        service = importlib.import_module(AWS_SDK_TASK).StateTaskServiceAwsSdk
        integration = service._eval_service_task

        def counted_integration(task: Any, **kwargs: Any) -> Any:
            outer = meter.current()
            meter._scope.name = INTEGRATIONS
            try:
                return integration(task, **kwargs)
            finally:
                meter._scope.name = outer

        service._eval_service_task = counted_integration

    def _wrap(self, logical_id: str, handler: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(event: Any, context: Any) -> Any:
            outer = self.current()
            self._scope.name = logical_id
            self.add(f"{logical_id}:invocations")
            if handler == NODE_RUNNER and isinstance(event, dict):
                self.add(f"{logical_id}:action:{event.get('action', 'node')}")
            with self._lock:
                self._running += 1
            try:
                return real(event, context)
            finally:
                self._scope.name = outer
                with self._lock:
                    self._running -= 1

        return counted

    # -- one request
    def request(self, service: str, operation: str, request: Any, call: Callable[[], Any]) -> Any:
        scope = self.current()
        self.add(f"{scope}:calls")
        self.add(f"{scope}:op:{service}.{operation}")
        if service == "dynamodb":
            return self._dynamodb(scope, operation, request, call)
        if service == "s3":
            if operation in _S3_PUT_CLASS:
                self.add(f"{scope}:s3_put")
                self.add(
                    f"{scope}:s3_put_bytes",
                    len(request.body or b"") if isinstance(request.body, bytes) else 0,
                )
            elif operation not in _S3_FREE:
                self.add(f"{scope}:s3_get")
        elif service in ("eventbridge", "events") and operation == "PutEvents":
            entries = json.loads(request.body or b"{}").get("Entries", [])
            self.add(f"{scope}:events", sum(max(1, math.ceil(len(json.dumps(e)) / 65536)) for e in entries))
        elif service == "sqs":
            self.add(f"{scope}:sqs")
        return call()

    def _dynamodb(self, scope: str | None, operation: str, request: Any, call: Callable[[], Any]) -> Any:
        from relayflow.local.moto_shim import _dynamodb_lock

        assert self._tables is not None
        body = json.loads(request.body or b"{}")
        region = request.url.split("dynamodb.", 1)[1].split(".", 1)[0]
        with _dynamodb_lock:
            if operation in _DYNAMODB_WRITES:
                targets = list(self._write_targets(operation, body, region))
                before = [self._tables.image(t, self._tables.item(t, k)) for t, k, _ in targets]
                response = call()
                for (table, key, transactional), old in zip(targets, before, strict=True):
                    new = self._tables.image(table, self._tables.item(table, key))
                    units = _kb(max(old.size if old else 0, new.size if new else 0))
                    if transactional:
                        self.add(f"{scope}:wru_tx", 2 * units)
                    else:
                        self.add(f"{scope}:wru", units)
                    names = [i.name for i in table.global_indexes]
                    self.add(f"{scope}:wru_index", _index_writes(old, new, names))
                return response
            response = call()
            self._reads(scope, operation, body, region, response)
            return response

    def _write_targets(
        self, operation: str, body: dict[str, Any], region: str
    ) -> Iterator[tuple[Any, Any, bool]]:
        assert self._tables is not None
        tables = self._tables
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            table = tables.table(region, body["TableName"])
            yield table, tables.key_of(table, body.get("Item") or body["Key"]), False
        elif operation == "BatchWriteItem":
            for name, requests in body["RequestItems"].items():
                table = tables.table(region, name)
                for one in requests:
                    attributes = (one.get("PutRequest") or {}).get("Item") or one["DeleteRequest"]["Key"]
                    yield table, tables.key_of(table, attributes), False
        else:  # TransactWriteItems: every action, a ConditionCheck too, is a transactional write
            for action in body["TransactItems"]:
                (detail,) = action.values()
                table = tables.table(region, detail["TableName"])
                yield table, tables.key_of(table, detail.get("Item") or detail["Key"]), True

    def _reads(
        self, scope: str | None, operation: str, body: dict[str, Any], region: str, response: Any
    ) -> None:
        assert self._tables is not None
        tables = self._tables
        if operation == "GetItem":
            table = tables.table(region, body["TableName"])
            item = tables.item(table, tables.key_of(table, body["Key"]))
            rate = 1.0 if body.get("ConsistentRead") else 0.5
            self.add(f"{scope}:rru", rate * max(1, math.ceil((item.size() if item else 0) / 4096)))
        elif operation in ("BatchGetItem", "TransactGetItems"):
            if operation == "BatchGetItem":
                asks = [
                    (name, key, 1.0 if spec.get("ConsistentRead") else 0.5)
                    for name, spec in body["RequestItems"].items()
                    for key in spec["Keys"]
                ]
            else:
                asks = [(a["Get"]["TableName"], a["Get"]["Key"], 2.0) for a in body["TransactItems"]]
            for name, key, rate in asks:
                table = tables.table(region, name)
                item = tables.item(table, tables.key_of(table, key))
                self.add(f"{scope}:rru", rate * max(1, math.ceil((item.size() if item else 0) / 4096)))
        elif operation in ("Query", "Scan") and response is not None and response.status_code == 200:
            items = json.loads(response.content).get("Items", [])
            table = tables.table(region, body["TableName"])
            size = 0
            for wire in items:
                if body.get("IndexName") or "ProjectionExpression" not in body:
                    size += _item_size_of_wire(wire)
                else:  # a projection of a base-table read is billed on the whole item
                    item = tables.item(table, tables.key_of(table, wire))
                    size += item.size() if item else _item_size_of_wire(wire)
            rate = 1.0 if body.get("ConsistentRead") else 0.5
            self.add(f"{scope}:rru", rate * max(1, math.ceil(size / 4096)))


# ---- what a run costs --------------------------------------------------------------------------------
def _sum(snapshot: dict[str, float], metric: str, scopes: tuple[str, ...] | None = None) -> float:
    total = 0.0
    for key, value in snapshot.items():
        scope, _, name = key.partition(":")
        if name == metric and (scopes is None or scope in scopes):
            total += value
    return total


def _usd(name: str, amount: float) -> float:
    price = PRICES[name]
    return amount * price.usd / price.per


def _template_tracing() -> tuple[bool, float]:
    """Whether the template traces its machines and functions, and at what rate."""
    from relayflow.local import cfn, provision

    template = cfn.load_template(provision.default_template_path())
    parameter = (template.get("Parameters") or {}).get("TraceSamplingRate")
    if parameter is not None:
        rate = float(parameter.get("Default", 0))
        return rate > 0, rate
    tracing = (template.get("Globals") or {}).get("Function", {}).get("Tracing")
    return tracing == "Active", DEFAULT_TRACE_RATE


def _retention_days() -> int:
    from relayflow.local import cfn, provision

    template = cfn.load_template(provision.default_template_path())
    return int(template["Parameters"]["RetentionDays"]["Default"])


@dataclass
class Case:
    label: str
    prompt_bytes: int
    model: dict[str, Any]
    model_seconds: float
    items: int


CASES = (
    Case("7.6 KB outcomes", 1270, {"model": "uppercase"}, 0.0, ITEMS),
    Case("1 KB outcomes", 165, {"model": "uppercase"}, 0.0, ITEMS),
    Case("2 s model calls", 1270, {"model": "sleep", "seconds": 2}, 2.0, SLOW_ITEMS),
)


def _words(rng: random.Random, vocabulary: list[str], size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(vocabulary)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def _dataset_lines(case: Case, items: int) -> str:
    rng = random.Random(20)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    lines = []
    for i in range(items):
        item = {"id": f"item-{i}", "text": f"item number {i}"}
        for n in range(NODES):
            item[f"p{n}"] = _words(rng, vocabulary, case.prompt_bytes)
        lines.append(json.dumps(item))
    return "\n".join(lines)


def _transitions(sfn: Any, execution_id: str) -> tuple[int, bool]:
    """The parent's state transitions, and whether its children were Express executions."""
    total, express = 0, True
    for machine in sfn.list_state_machines()["stateMachines"]:
        for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]:
            if execution["name"] != execution_id:
                continue
            history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
            for event in history["events"]:
                if event["type"].endswith("StateEntered"):
                    total += 1
                    express = express and event["stateEnteredEventDetails"]["name"] != "StandardItems"
    return total, express


def _wait_machine_ended(sfn: Any, execution_id: str, timeout: float = 60.0) -> None:
    """Wait until the run's machine execution has ended (its last task may follow the status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [
            execution["status"]
            for machine in sfn.list_state_machines()["stateMachines"]
            for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]
            if execution["name"] == execution_id
        ]
        if statuses and "RUNNING" not in statuses:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the machine of {execution_id} is still running")


def _storage_bytes(execution_id: str) -> tuple[int, int]:
    """What the run keeps: DynamoDB bytes as billed (items and index entries, 100 bytes each of
    overhead) and S3 bytes under the run's prefix."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.s3.models import s3_backends

    marker = f"#X#{execution_id}"
    dynamodb = 0
    for backend in dynamodb_backends[DEFAULT_ACCOUNT_ID].values():
        for table in backend.tables.values():
            partitions = list(table.items.values())
            stored = [i for p in partitions for i in (p.values() if isinstance(p, dict) else [p])]
            for item in stored:
                pk = item.attrs[table.hash_key_attr].value
                if not (pk.endswith(marker) or f"{marker}#" in pk):
                    continue
                dynamodb += item.size() + 100
                for index in table.global_indexes:
                    if all(name in item.attrs for name in index.schema_key_attrs):
                        dynamodb += index.project(item).size() + 100
    s3 = 0
    for bucket in s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets.values():
        for key in list(bucket.keys.values()):
            name = getattr(key, "name", "")
            if f"/{execution_id}/" in name:
                s3 += int(getattr(key, "size", 0) or 0)
    return dynamodb, s3


#: What serves the client: reading results back is theirs.
API_SCOPES = ("ApiFunction", "ApiKeyAuthorizer")
#: What runs a batch's items. The other functions act once a run (the reconciler, webhooks, the
#: sweeper) or for the client (the API while it polls), at times that would make the difference of
#: two batches noise.
BATCH_SCOPE = "NodeRunnerFunction"


def _workflow(client: Any, case: Case) -> str:
    """The case's workflow: three nodes, each prompted with one of the item's texts."""
    model = client.create_model(name=f"bench-{case.label}", provider="builtin", config=case.model)
    workflow = client.create_workflow(name=f"calls {case.label}")
    # 20 s nodes, 2 retries: a worst-case item (3 x (20 x 3 + 1 + 2) = 189 s) fits an Express child
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"max_retries": 2, "node_timeout": 20, "retry_delay_seconds": 1}
    )
    for n in range(NODES):
        client.create_workflow_node(
            version_id=version.id,
            name=f"n{n}",
            entity_id=model.id,
            config={"input_template": f"{{{{item.p{n}}}}}"},
        )
    return workflow.id


def _dataset(client: Any, case: Case, items: int) -> tuple[str, str]:
    dataset = client.create_dataset(name=f"calls {case.label} {items}")
    dataset_version = client.create_dataset_version(dataset.id)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "items.jsonl"
        path.write_text(_dataset_lines(case, items))
        client.upload_dataset_items(dataset.id, dataset_version.id, path=path, poll_interval=0.2, timeout=300)
    return dataset.id, dataset_version.id


def _batch(client: Any, sfn: Any, meter: Meter, case: Case, workflow_id: str, items: int) -> dict[str, float]:
    """Runs a batch of ``items`` items and reads its results back once; returns what it took, in
    all (not per item)."""
    from relayflow.client import MAX_RESULTS_PAGE

    dataset_id, dataset_version_id = _dataset(client, case, items)
    meter.reset()
    execution = client.execute_workflow(
        workflow_id=workflow_id,
        input_mode="batch",
        batch_config={
            "dataset_id": dataset_id,
            "dataset_version_id": dataset_version_id,
            "input_field": "text",
            "parallelism": PARALLELISM,
        },
    )
    done = client.wait_for_execution(workflow_id, execution.id, poll_interval=0.5, timeout=600)
    assert done.status == "completed", done.error
    _wait_machine_ended(sfn, execution.id)
    meter.settle()
    run = {k: v for k, v in meter.snapshot().items() if k.partition(":")[0] == BATCH_SCOPE}
    transitions, express = _transitions(sfn, execution.id)
    assert express, f"{case.label}: the children were not Express executions"

    meter.reset()  # read every result back once, through the API
    token: str | None = None
    pages = 0
    while True:
        page = client.get_execution_results(
            workflow_id, execution.id, limit=MAX_RESULTS_PAGE, next_token=token
        )
        pages += 1
        assert all(result.status == "completed" for result in page)
        token = page.next_token
        if not token:
            break
    meter.settle()
    read = {k: v for k, v in meter.snapshot().items() if k.partition(":")[0] in API_SCOPES}
    dynamodb_bytes, s3_bytes = _storage_bytes(execution.id)
    children = _sum(run, "action:run_items")
    invocations = _sum(run, "invocations")
    child_seconds = NODES * (case.model_seconds + NODE_OVERHEAD_S) + RECORD_OVERHEAD_S
    totals = {
        "calls": _sum(run, "calls"),
        "lambda invocations": invocations,
        "child batches (Express)": children,
        "lambda GB-s": (children * child_seconds + (invocations - children) * OTHER_INVOCATION_S)
        * NODE_RUNNER_GB,
        "express GB-s": children * math.ceil(child_seconds * 10) / 10 * EXPRESS_GB,
        "parent transitions": float(transitions),
        "dynamodb WRU (standard)": _sum(run, "wru"),
        "dynamodb WRU (transactional)": _sum(run, "wru_tx"),
        "dynamodb WRU (indexes)": _sum(run, "wru_index"),
        "dynamodb RRU": _sum(run, "rru"),
        "s3 PUT-class": _sum(run, "s3_put"),
        "s3 GET-class": _sum(run, "s3_get"),
        "events": _sum(run, "events"),
        "sqs requests": _sum(run, "sqs"),
        "log bytes": _sum(run, "log_bytes") + invocations * PLATFORM_LOG_BYTES,
        "traced executions": children + 1,
        "read back: RRU": _sum(read, "rru"),
        "read back: S3 GET-class": _sum(read, "s3_get"),
        "read back: S3 PUT-class": _sum(read, "s3_put"),
        "read back: AWS requests": _sum(read, "calls"),
        "read back: API requests": float(pages),
        "read back: lambda invocations": _sum(read, "invocations"),
        "read back: log bytes": _sum(read, "log_bytes") + pages * PLATFORM_LOG_BYTES,
        "stored DynamoDB KB": dynamodb_bytes / 1024,
        "stored S3 KB": s3_bytes / 1024,
    }
    for key, value in run.items():
        name = key.partition(":")[2]
        if name.startswith("action:"):
            totals[f"node-runner invocations: {name.partition(':')[2]}"] = value
    return totals


def _per_item(client: Any, sfn: Any, meter: Meter, case: Case) -> dict[str, float]:
    """A case's counts per item: (a batch of ``case.items`` - a batch of ``SMALL_BATCH``) / the
    difference, so what a batch does once (prepare, reserve, complete, the parent's states) is left
    out, as it is from a real million."""
    workflow_id = _workflow(client, case)
    small = _batch(client, sfn, meter, case, workflow_id, SMALL_BATCH)
    big = _batch(client, sfn, meter, case, workflow_id, case.items)
    span = case.items - SMALL_BATCH
    per = {k: (big.get(k, 0.0) - small.get(k, 0.0)) / span for k in {**small, **big}}
    return {"prompts and outputs KB": NODES * 2 * case.prompt_bytes / 1024, **dict(sorted(per.items()))}


def cost_breakdown(item: dict[str, float], trace_rate: float) -> dict[str, float]:
    """USD per million items, by what AWS bills."""
    m = 1e6
    wru = (
        item["dynamodb WRU (standard)"]
        + item["dynamodb WRU (transactional)"]
        + item["dynamodb WRU (indexes)"]
    )
    api_requests = item["read back: API requests"]
    api_invocations = item["read back: lambda invocations"]  # the API's and its authorizer's
    return {
        "lambda": _usd("lambda_request", (item["lambda invocations"] + api_invocations) * m)
        + _usd(
            "lambda_gb_s", (item["lambda GB-s"] + api_invocations * OTHER_INVOCATION_S * NODE_RUNNER_GB) * m
        ),
        "step functions": _usd("standard_transition", item["parent transitions"] * m)
        + _usd("express_request", item["child batches (Express)"] * m)
        + _usd("express_gb_s", item["express GB-s"] * m),
        "dynamodb writes": _usd("wru", wru * m),
        "dynamodb reads": _usd("rru", (item["dynamodb RRU"] + item["read back: RRU"]) * m),
        "s3 requests": _usd("s3_put", (item["s3 PUT-class"] + item["read back: S3 PUT-class"]) * m)
        + _usd("s3_get", (item["s3 GET-class"] + item["read back: S3 GET-class"]) * m),
        "events and queues": _usd("events", item["events"] * m) + _usd("sqs", item["sqs requests"] * m),
        "logs": _usd("log_gb", (item["log bytes"] + item["read back: log bytes"]) * m / 2**30),
        "traces": _usd("trace", item["traced executions"] * trace_rate * m),
        "api gateway": _usd("http_api", api_requests * m),
    }


def storage_per_month(item: dict[str, float], retention_days: int) -> float:
    """USD to keep a million items' records for RetentionDays (a month's price per 30 days)."""
    months = retention_days / 30
    dynamodb_gb = item["stored DynamoDB KB"] * 1024 * 1e6 / 2**30
    s3_gb = item["stored S3 KB"] * 1024 * 1e6 / 2**30
    return months * (_usd("dynamodb_gb_month", dynamodb_gb) + _usd("s3_gb_month", s3_gb))


# ---- single runs ---------------------------------------------------------------------------------------
def _counted_run(
    client: Any,
    sfn: Any,
    meter: Meter,
    model_id: str,
    name: str,
    nodes: int,
    edges: list[tuple[int, int]] | None = None,
    text: str = "count me",
) -> dict[str, float]:
    """One run of a workflow of ``nodes`` echo-like nodes (a chain, or ``edges`` between them by
    index), after a warm-up run: what the node runner and the machine's own integrations did."""
    workflow = client.create_workflow(name=name)
    version = client.create_workflow_version(workflow_id=workflow.id)
    ids = [
        client.create_workflow_node(version_id=version.id, name=f"n{i}", entity_id=model_id).id
        for i in range(nodes)
    ]
    for begin, end in edges or []:
        client.create_workflow_edge(version_id=version.id, begin_node_id=ids[begin], end_node_id=ids[end])
    warm = client.execute_workflow(workflow_id=workflow.id, single_input="warm up")
    client.wait_for_execution(workflow.id, warm.id, poll_interval=0.2, timeout=120)
    _wait_machine_ended(sfn, warm.id)
    meter.settle()
    meter.reset()
    execution = client.execute_workflow(workflow_id=workflow.id, single_input=text)
    done = client.wait_for_execution(workflow.id, execution.id, poll_interval=0.5, timeout=120)
    assert done.status == "completed", done.error
    _wait_machine_ended(sfn, execution.id)
    meter.settle()
    snapshot = meter.snapshot()
    # the runner's calls and the machine's own (the node gate's DynamoDB write)
    runner = ("NodeRunnerFunction", INTEGRATIONS)
    return {
        "calls": _sum(snapshot, "calls", runner),
        "invocations": _sum(snapshot, "invocations", ("NodeRunnerFunction",)),
        "transitions": float(_transitions(sfn, execution.id)[0]),
        "write units": _sum(snapshot, "wru", runner)
        + _sum(snapshot, "wru_tx", runner)
        + _sum(snapshot, "wru_index", runner),
        "index write units": _sum(snapshot, "wru_index", runner),
    }


#: An input whose outputs (the uppercase model answers it in capitals) are ≈1.5 KB: inline, as an
#: LLM's answer of a few hundred words is.
LONG_TEXT = " ".join(f"word{i % 97}" for i in range(250))

#: A → B, A → C, B → D, C → D: a fan-out and a fan-in (D released by the later of B and C).
DIAMOND = [(0, 1), (0, 2), (1, 3), (2, 3)]


def _single(client: Any, sfn: Any, meter: Meter) -> dict[str, dict[str, float]]:
    """Per node of a single run, the run's fixed cost and its root's left out: a chain of 10 less a
    chain of 2 (/ 8), and a diamond (/ 3) less a run of its root alone, with its parents' outputs
    carried to their children and without (the runner's carry limit set to 0 for that run: every
    child queries its run's records). A root with children runs with no gate, a lone node keeps
    its gate (docs/engine.md), so a 1-node run is not a chain's base: the base is a chain of 2
    less a node with a parent (the chain's per node; with 1.5 KB outputs, a chain of 3 less one of 2)."""
    from relayflow_runtime.services import run_machine

    model = client.create_model(name="upper", provider="builtin", config={"model": "uppercase"})
    one = _counted_run(client, sfn, meter, model.id, "calls-1", 1)
    two = _counted_run(client, sfn, meter, model.id, "calls-2", 2)
    chain = _counted_run(client, sfn, meter, model.id, "calls-10", 10)
    per_node = {k: (chain[k] - two[k]) / 8 for k in two}
    shapes = {
        "chain": per_node,
        "whole run of one node (a root without children: gated)": one,
        "whole run of a chain of 10 (one root)": chain,
    }
    limit = run_machine.CARRY_LIMIT_BYTES
    for label, text in (("", "count me"), (", 1.5 KB outputs", LONG_TEXT)):
        if not label:
            base = {k: two[k] - per_node[k] for k in two}  # the fixed cost and a root with a child
        else:
            two_long = _counted_run(client, sfn, meter, model.id, "calls-2-long", 2, text=text)
            three_long = _counted_run(client, sfn, meter, model.id, "calls-3-long", 3, text=text)
            base = {k: 2 * two_long[k] - three_long[k] for k in two_long}
        for carried in (True, False):
            run_machine.CARRY_LIMIT_BYTES = limit if carried else 0
            try:
                counted = _counted_run(client, sfn, meter, model.id, "calls-diamond", 4, DIAMOND, text)
            finally:
                run_machine.CARRY_LIMIT_BYTES = limit
            name = f"diamond{label}" + ("" if carried else ", nothing carried")
            shapes[name] = {k: (counted[k] - base[k]) / 3 for k in base}
    # two roots and a fan-in (A, B -> C): both roots run with no gate call (the roots' Map), C waits
    # at its gate
    shapes["whole run of two roots and their child"] = _counted_run(
        client, sfn, meter, model.id, "calls-two-roots", 3, [(0, 2), (1, 2)]
    )
    return shapes


def run() -> list[tuple[str, float | int, str]]:
    import logging

    import boto3

    from relayflow.demo import local_api

    meter = Meter()
    meter.install()
    traced, trace_rate = _template_tracing()
    retention_days = _retention_days()
    with local_api() as client:
        # Count what AWS would ingest: the template's LOG_LEVEL (the demo quiets its own loggers).
        for name in ("relayflow", "service_undefined"):
            logging.getLogger(name).setLevel(logging.INFO)
        sfn = boto3.client("stepfunctions")  # the local stack's moto, as the handlers see it
        shapes = _single(client, sfn, meter)
        node = shapes["chain"]
        items = {case.label: _per_item(client, sfn, meter, case) for case in CASES}

    rows: list[tuple[str, float | int, str]] = [
        (f"price: {p.unit}", p.usd, f"USD per {p.per:,.0f}" if p.per != 1 else "USD") for p in PRICES.values()
    ]
    rows.append(("tracing on / sampling rate (template)", trace_rate if traced else 0.0, "of traces"))
    rows += [
        ("single run, per node: AWS calls (before)", BEFORE_NODE["calls"], "calls"),
        ("single run, per node: AWS calls (now)", node["calls"], "calls"),
        ("single run, per node: Lambda invocations (before)", BEFORE_NODE["invocations"], "calls"),
        ("single run, per node: Lambda invocations (now)", node["invocations"], "calls"),
        ("single run, per node: state transitions (before)", BEFORE_NODE["transitions"], "transitions"),
        ("single run, per node: state transitions (now)", node["transitions"], "transitions"),
        ("single run, per node: DynamoDB write units", node["write units"], "WRU"),
        ("single run, per node: of them on indexes", node["index write units"], "WRU"),
    ]
    for shape, counted in shapes.items():
        if shape == "chain":
            continue
        if shape.startswith("whole run"):
            # a run's own calls and transitions, its roots' included (a root makes no gate call)
            rows += [
                (f"single run, {shape}: AWS calls", counted["calls"], "calls"),
                (f"single run, {shape}: Lambda invocations", counted["invocations"], "calls"),
                (f"single run, {shape}: state transitions", counted["transitions"], "transitions"),
            ]
            continue
        rows += [
            (f"single run, per node of a {shape}: AWS calls", counted["calls"], "calls"),
            (f"single run, per node of a {shape}: Lambda invocations", counted["invocations"], "calls"),
            (f"single run, per node of a {shape}: DynamoDB write units", counted["write units"], "WRU"),
        ]
    for label, item in items.items():
        rows += [(f"{label}, per item: {k}", v, "") for k, v in item.items()]
        costs = cost_breakdown(item, trace_rate if traced else 0.0)
        rows += [(f"{label}, per million items: {k}", v, "USD") for k, v in costs.items()]
        total = sum(costs.values())
        verdict = "pass" if total <= TARGETS[label] else "FAIL"
        rows.append(
            (f"{label}: COST PER MILLION ITEMS (target <= {TARGETS[label]:.2f}: {verdict})", total, "USD")
        )
    storage = storage_per_month(items["7.6 KB outcomes"], retention_days)
    verdict = "pass" if storage <= TARGETS["storage"] else "FAIL"
    rows.append(
        (
            f"storage of a million 7.6 KB items kept RetentionDays={retention_days} "
            f"(target <= {TARGETS['storage']:.2f}/month: {verdict})",
            storage,
            "USD",
        )
    )
    return rows

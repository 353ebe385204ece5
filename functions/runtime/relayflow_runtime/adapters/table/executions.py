"""Executions and the node records of single runs.

Status writes are conditional on the moves of domain/status.py: an execution's status only moves
forward, and a node records its outcome in one transaction with a check of its execution's
status, so the two always agree. A batch run's item outcomes and counters share the partition's
prefix (adapters/batch_store.py); its webhook delivery attempts the partition itself
(adapters/table/webhooks.py).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from boto3.dynamodb.types import TypeSerializer

from relayflow_runtime.adapters.codec import to_dynamo
from relayflow_runtime.adapters.table.base import BaseStore, ConditionFailed, strip_keys, update_expression
from relayflow_runtime.adapters.table.keys import (
    execution_key,
    node_record_key,
    sweep_keys,
    sweep_shard,
    tenant_pk,
)
from relayflow_runtime.adapters.transactions import TransactionCancelled, transact_write
from relayflow_runtime.domain.execution_record import (
    NODE_RECORD,
    NODE_RECORDS,
    ExecutionRecord,
    ExecutionUpdate,
    NodeRecord,
    NodeUpdate,
    stored_fields,
)
from relayflow_runtime.domain.status import NODE_OPEN, TERMINAL, ExecutionStatus, NodeStatus

_SER = TypeSerializer()

#: The sort key of a run's listing entry: the one item of the run the listing indexes (gsi1: the
#: workflow's runs, gsi2: by status) hold. It carries their keys and nothing that changes while the
#: run runs, so the writes of a running run (its progress, its nodes, its usage) never reach an
#: index, and the workflow's index partitions see a run's creation and its status moves only.
LISTING_SK = "XL"
#: A node record's attribute that keeps one parent's packed output for it (mark_parent_done).
CARRIED_PREFIX = "carried#"
#: What tells a listing entry from the execution item of a run recorded before entries existed.
LISTING_MARK = "listing_entry"


def _wire(values: Mapping[str, object]) -> dict[str, Any]:
    return {k: _SER.serialize(to_dynamo(v)) for k, v in values.items()}


class ExecutionEnded(Exception):
    """A node's write found its execution no longer in the status it needs (cancelled, ended)."""


class NodeAlreadyEnded(Exception):
    """A node's write found its record no longer open for it: the node has ended (a repeated task
    recorded it already) or another attempt holds it. ``record`` is the record as it now is."""

    def __init__(self, record: NodeRecord | None) -> None:
        self.record: NodeRecord = record or {}
        status, attempts = self.record.get("status", "missing"), self.record.get("attempts")
        super().__init__(f"the node record is {status} at attempt {attempts}")


#: A node record an attempt may still start or record on (``NODE_OPEN``): the condition's values.
_NODE_OPEN_VALUES = {f":open{i}": status.value for i, status in enumerate(sorted(NODE_OPEN))}
_NODE_IS_OPEN = f"#st IN ({', '.join(_NODE_OPEN_VALUES)})"


class ExecutionStore(BaseStore):
    """Executions and their node records."""

    # ---- executions ------------------------------------------------------------------------------
    @staticmethod
    def _status_index(tenant: str, workflow_id: str, status: str) -> str:
        return f"T#{tenant}#WF#{workflow_id}#XS#{status}"

    def _listing_key(self, tenant: str, execution_id: str) -> dict[str, str]:
        return {"pk": tenant_pk(tenant, "X", execution_id), "sk": LISTING_SK}

    def put_execution(self, tenant: str, execution: Mapping[str, Any]) -> None:
        """The execution item and its listing entry, together (ConditionFailed if it exists): the
        item's attributes as given. Services write :meth:`put_record`; this is its wire, which tests
        also use to write items the way earlier versions wrote them."""
        sort = f"{execution['created_at']}#{execution['id']}"
        item = {
            **execution,
            **execution_key(tenant, execution["id"]),
            "tenant": tenant,
            "kind": "execution",
            **sweep_keys(
                tenant,
                execution["id"],
                execution["created_at"],
                "SETTLE" if execution["status"] in TERMINAL else "ACTIVE",
            ),
        }
        entry = {
            **self._listing_key(tenant, execution["id"]),
            "tenant": tenant,
            "kind": "execution_listing",
            "id": execution["id"],
            # a listing by version filters on it (runs recorded before carry it on their own item)
            "version_id": execution.get("version_id"),
            LISTING_MARK: True,
            "gsi1pk": f"T#{tenant}#WF#{execution['workflow_id']}#XS",
            "gsi1sk": sort,
            "gsi2pk": self._status_index(tenant, execution["workflow_id"], execution["status"]),
            "gsi2sk": sort,
        }
        absent = {"ConditionExpression": "attribute_not_exists(pk)"}
        try:
            transact_write(
                [
                    {"Put": {"TableName": self.table_name, "Item": _wire(item), **absent}},
                    {"Put": {"TableName": self.table_name, "Item": _wire(entry), **absent}},
                ]
            )
        except TransactionCancelled as exc:
            if exc.only_conditions:
                raise ConditionFailed(str(exc)) from exc
            raise

    def put_record(self, tenant: str, record: ExecutionRecord) -> None:
        """Write a new execution item from its record (domain/execution_record.py)."""
        self.put_execution(tenant, record.item())

    def get_record(self, tenant: str, execution_id: str) -> ExecutionRecord:
        """The execution item, read as its record (the only read of it: services never see the
        item as stored)."""
        item = self._get(tenant_pk(tenant, "X", execution_id), "X", "execution", execution_id)
        return ExecutionRecord.model_validate(item)

    def list_executions(
        self,
        tenant: str,
        workflow_id: str,
        *,
        limit: int,
        next_token: str | None,
        status: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        version_id: str | None = None,
    ) -> tuple[list[ExecutionRecord], str | None]:
        """A page of the workflow's runs, newest first, read as their records."""
        if status:
            partition, index = Key("gsi2pk").eq(self._status_index(tenant, workflow_id, status)), "gsi2"
            sort = Key("gsi2sk")
        else:
            partition, index = Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#XS"), "gsi1"
            sort = Key("gsi1sk")
        condition = partition
        if created_after and created_before:
            condition = partition & sort.between(created_after, created_before + "~")
        elif created_after:
            condition = partition & sort.gte(created_after)
        elif created_before:
            condition = partition & sort.lte(created_before + "~")
        entries, token = self._query_page(
            key_condition=condition,
            index=index,
            limit=limit,
            next_token=next_token,
            forward=False,
            filter_expression=Attr("version_id").eq(version_id) if version_id else None,
        )
        return self._listed_records(tenant, entries), token

    def _listed_records(self, tenant: str, entries: list[dict[str, Any]]) -> list[ExecutionRecord]:
        """The executions a page of listing entries names, in the page's order: one BatchGetItem
        per 100 entries. A run recorded before listing entries existed is its own entry (its item
        carries the index keys, projected whole); a run deleted since the index was read is left
        out."""
        wanted = [e["id"] for e in entries if e.get(LISTING_MARK)]
        found = {
            record["id"]: record
            for record in self._get_many([execution_key(tenant, ident) for ident in wanted])
        }
        records = []
        for entry in entries:
            item = found.get(entry["id"]) if entry.get(LISTING_MARK) else entry
            if item is None:
                continue
            record = ExecutionRecord.model_validate(item)
            # a run being deleted is hidden even if its entry outlived hide_execution's second write
            if not record.deleting:
                records.append(record)
        return records

    def transition_execution(
        self,
        tenant: str,
        execution: ExecutionRecord,
        *,
        from_statuses: Iterable[str],
        to_status: str,
        fields: ExecutionUpdate | None = None,
    ) -> ExecutionRecord:
        """Move an execution's status forward; raises ConditionFailed if it is not in from_statuses.
        A terminal status moves the run from the sweep index's ACTIVE partition to SETTLE.

        One transaction with the run's listing entry, whose status key (and, at the end, its
        expiry) follows the run's: a status listing never shows a run under a status it has left.
        Returns the execution as it now is."""
        allowed = list(from_statuses)
        set_fields = {**stored_fields(fields or {}), "status": to_status}
        if to_status in TERMINAL:  # sweep_sk (created#tenant#id) stays as put_execution wrote it
            set_fields["sweep_pk"] = f"SETTLE#{sweep_shard(execution.id)}"
        status_key = self._status_index(tenant, execution.workflow_id, to_status)
        entry_fields: dict[str, object] = {"gsi2pk": status_key}
        if "expires_at" in set_fields:
            entry_fields["expires_at"] = set_fields["expires_at"]
        allowed_values = {f":from{i}": status for i, status in enumerate(allowed)}
        key = execution_key(tenant, execution.id)
        try:
            transact_write(
                [
                    self._transaction_update(
                        key,
                        set_fields,
                        condition=f"#from IN ({', '.join(allowed_values)})",
                        names={"#from": "status"},
                        values=allowed_values,
                        # An earlier status's event the bus refused (adapters/sweep.py) is superseded.
                        remove=("unpublished_event",),
                    ),
                    self._transaction_update(
                        self._listing_key(tenant, execution.id),
                        entry_fields,
                        condition="attribute_exists(pk)",
                    ),
                ]
            )
        except TransactionCancelled as exc:
            if exc.failed_condition(0):
                raise ConditionFailed(str(exc)) from exc
            if not exc.failed_condition(1):
                raise
            # A run recorded before listing entries existed: its own item carries the index keys.
            return ExecutionRecord.model_validate(
                self._update(
                    key,
                    {**set_fields, "gsi2pk": status_key},
                    condition=Attr("status").is_in(allowed),
                    remove=("unpublished_event",),
                )
            )
        # The item as this move left it: as it now is, unless another writer moved the run on
        # between the transaction and the read (a cancel just after ``pending -> running``) or
        # deleted it; then the item as this move found it, with what it wrote. Its caller
        # announces and follows up the status it wrote, never the other writer's fields.
        item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
        if item and item.get("status") == to_status:
            return ExecutionRecord.model_validate(strip_keys(item))
        left = {**execution.item(), **set_fields}
        left.pop("unpublished_event", None)  # the move removed it
        return ExecutionRecord.model_validate(left)

    def _transaction_update(
        self,
        key: dict[str, str],
        fields: Mapping[str, object],
        *,
        condition: str,
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
        remove: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A transaction's Update: ``SET`` each of ``fields``, ``REMOVE`` each of ``remove``."""
        expression, field_names, field_values = update_expression(fields, remove=remove)
        names = {**(names or {}), **field_names}
        values = {**(values or {}), **field_values}
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _wire(key),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if values:
            update["ExpressionAttributeValues"] = _wire(values)
        return {"Update": update}

    def update_execution(
        self, tenant: str, execution_id: str, fields: ExecutionUpdate, *, only_if_status: Iterable[str] = ()
    ) -> None:
        """Set ``fields`` on the execution item (only while its status is one of ``only_if_status``,
        when given; ConditionFailed otherwise, or when the item is gone)."""
        allowed = list(only_if_status)
        condition = Attr("status").is_in(allowed) if allowed else None
        self._update(
            execution_key(tenant, execution_id),
            stored_fields(fields),
            condition=condition,
            return_values="NONE",
        )

    def add_compacted_segment(self, tenant: str, execution_id: str, block: int) -> None:
        """Note that segment ``block`` of a batch run is written whole (services/outcomes.py): pages
        read it from then on. ConditionFailed when the run is gone or being deleted."""
        self._update(
            execution_key(tenant, execution_id),
            {},
            add={"compacted_segments": {block}},
            condition=Attr("pk").exists() & Attr("deleting").not_exists(),
            return_values="NONE",
        )

    def claim_retry(self, tenant: str, execution_id: str, retry_id: str, seen: str | None, now: str) -> None:
        """Record ``retry_id`` as the run retrying this one's failed items, if the claim is still the
        one read (``seen``; None: none yet); ConditionFailed when another request claimed it first."""
        claim = Attr("retry_claim").not_exists() if seen is None else Attr("retry_claim").eq(seen)
        # on the run's own item only: an update whose item was deleted meanwhile would create one
        condition = Attr("pk").exists() & claim
        self._update(
            execution_key(tenant, execution_id),
            {"retry_claim": retry_id, "retry_claimed_at": now},
            condition=condition,
            return_values="NONE",
        )

    def release_retry(self, tenant: str, execution_id: str, retry_id: str) -> None:
        """Undo :meth:`claim_retry` (the retry run could not be started); a no-op if claimed since."""
        with contextlib.suppress(ConditionFailed):
            self._update(
                execution_key(tenant, execution_id),
                {},
                remove=("retry_claim", "retry_claimed_at"),
                condition=Attr("retry_claim").eq(retry_id),
                return_values="NONE",
            )

    def hide_execution(self, tenant: str, execution_id: str) -> None:
        """Mark an execution ``deleting`` and take it out of the listings (its index keys go), before
        a background job deletes what it holds."""
        self._update(
            execution_key(tenant, execution_id),
            {"deleting": True},
            remove=("gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"),  # a run recorded before listing entries
        )
        self._write("delete_item", Key=self._listing_key(tenant, execution_id))

    def delete_execution(self, tenant: str, execution_id: str) -> None:
        """Every item of the run, the execution item last: an interrupted delete can be repeated."""
        key = execution_key(tenant, execution_id)
        items = self._query_all(Key("pk").eq(key["pk"]))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items if i["sk"] != key["sk"])
        self.table.delete_item(Key=key)

    # ---- node records ----------------------------------------------------------------------------
    def _status_check(self, tenant: str, execution_id: str, statuses: Iterable[str]) -> dict[str, Any]:
        """A transaction's ConditionCheck that the execution is in one of ``statuses``."""
        values = {f":x{i}": _SER.serialize(status) for i, status in enumerate(statuses)}
        return {
            "ConditionCheck": {
                "TableName": self.table_name,
                "Key": _wire(execution_key(tenant, execution_id)),
                "ConditionExpression": f"#st IN ({', '.join(values)})",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": values,
            }
        }

    def _node_update(
        self,
        tenant: str,
        execution_id: str,
        record_sk: str,
        fields: NodeUpdate,
        *,
        condition: str,
        sets: tuple[str, ...] = (),
        names: dict[str, str],
        values: dict[str, Any],
        removes: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A transaction's Update of a node record: ``SET`` the ``sets`` and each of ``fields``,
        ``REMOVE`` the attributes ``removes``."""
        names, values, assignments = dict(names), dict(values), list(sets)
        for i, (field, value) in enumerate(fields.items()):
            names[f"#f{i}"] = field
            values[f":f{i}"] = value
            assignments.append(f"#f{i} = :f{i}")
        removed = []
        for i, attribute in enumerate(removes):
            names[f"#r{i}"] = attribute
            removed.append(f"#r{i}")
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _wire(node_record_key(tenant, execution_id, record_sk)),
                "UpdateExpression": "SET "
                + ", ".join(assignments)
                + (" REMOVE " + ", ".join(removed) if removed else ""),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": _wire(values),
            }
        }

    def _write_node(
        self, tenant: str, execution_id: str, record_sk: str, items: list[dict[str, Any]]
    ) -> None:
        """Run a node's transaction (item 0: the execution's ConditionCheck, item 1: the node
        record's update) and say which condition failed, read from the cancellation's reasons."""
        try:
            transact_write(items)
        except TransactionCancelled as exc:
            if exc.failed_condition(0):
                raise ExecutionEnded("the execution is no longer running") from exc
            if exc.failed_condition(1):
                key = node_record_key(tenant, execution_id, record_sk)
                item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
                found = NODE_RECORD.validate_python(strip_keys(item)) if item else None
                raise NodeAlreadyEnded(found) from exc
            raise

    def begin_node_attempt(
        self,
        tenant: str,
        execution_id: str,
        node_id: str,
        idx: int,
        attempt: int,
        fields: NodeUpdate,
        now: str,
        carried_from: Iterable[str] = (),
    ) -> None:
        """Mark a node of a single run running for its ``attempt``-th attempt (1-based: the number
        is the state machine's, so a repeated task sets the same one), in one transaction with a
        check that the run is running. Raises :class:`ExecutionEnded` when the run is no longer
        running, :class:`NodeAlreadyEnded` when the node record has ended (or a later attempt holds
        it), ``StoreContended`` when contention outlasts the retries (adapters/transactions.py).
        ``carried_from``: the parents whose outputs mark_parent_done kept on the record, removed
        now (read by the parent that released the node: the record's later writes and its storage
        no longer pay for them).

        Nothing is written on the execution item (a ConditionCheck only): the run's progress is
        read from its node records (``idx``, ``attempts``; domain/status.progress_node), so a node's
        start costs no write of the one item every node of the run would otherwise update."""
        sk = f"N#{node_id}"
        update = self._node_update(
            tenant,
            execution_id,
            sk,
            {**fields, "idx": idx},
            sets=("#st = :running", "#att = :att", "#sa = if_not_exists(#sa, :now)", "#as = :now"),
            # open, and never back to an earlier attempt (a late, superseded task)
            condition=f"(attribute_not_exists(#st) OR {_NODE_IS_OPEN}) "
            "AND (attribute_not_exists(#att) OR #att <= :att)",
            names={"#st": "status", "#att": "attempts", "#sa": "started_at", "#as": "attempt_started_at"},
            values={":running": NodeStatus.RUNNING.value, **_NODE_OPEN_VALUES, ":att": attempt, ":now": now},
            removes=[f"{CARRIED_PREFIX}{parent}" for parent in carried_from],
        )
        check = self._status_check(tenant, execution_id, (ExecutionStatus.RUNNING.value,))
        self._write_node(tenant, execution_id, sk, [check, update])

    def finish_node(
        self,
        tenant: str,
        execution_id: str,
        record_sk: str,
        fields: NodeUpdate,
        *,
        attempt: int | None = None,
        execution_statuses: Iterable[str] = (ExecutionStatus.RUNNING.value,),
    ) -> None:
        """Write a node's outcome, only while the execution is in one of ``execution_statuses`` and
        the node record is open (and at ``attempt``, when given).

        One transaction: a ConditionCheck of the execution's status and the node record's update,
        so a node can never be recorded completed after its run was cancelled or ended. Nothing is
        counted on the execution item (its usage is the sum of its node records' ``usage``), so
        finishing siblings only read it. Raises :class:`ExecutionEnded` (the run's condition
        failed), :class:`NodeAlreadyEnded` with the record as it is (the node's condition failed:
        a repeated task recorded it already, or another attempt holds it), ``StoreContended``
        (conflicts outlasted the retries) or ``TransactionCancelled`` (any other reason)."""
        names: dict[str, str] = {"#st": "status"}
        values: dict[str, Any] = dict(_NODE_OPEN_VALUES)
        condition = f"attribute_exists(pk) AND {_NODE_IS_OPEN}"
        if attempt is not None:
            names["#att"] = "attempts"
            values[":att"] = attempt
            condition += " AND #att = :att"
        update = self._node_update(
            tenant, execution_id, record_sk, fields, condition=condition, names=names, values=values
        )
        check = self._status_check(tenant, execution_id, execution_statuses)
        self._write_node(tenant, execution_id, record_sk, [check, update])

    def note_attempt_error(
        self,
        tenant: str,
        execution_id: str,
        record_sk: str,
        attempt: int,
        error: str,
        prompt: Any = None,
        *,
        started_at: str | None = None,
        failed_at: str | None = None,
    ) -> None:
        """Record a failed attempt's error (and the prompt it sent, so a failed node shows it), and
        when it started and failed (``attempt_times``)."""
        key = node_record_key(tenant, execution_id, record_sk)
        expression = (
            "SET attempt_errors = list_append(if_not_exists(attempt_errors, :e), :one), #err = :msg, "
            "attempt_times = list_append(if_not_exists(attempt_times, :e), :time)"
        )
        values: dict[str, Any] = {
            ":e": [],
            ":one": [f"attempt {attempt}: {error}"],
            ":msg": error,
            ":time": [{"attempt": attempt, "started_at": started_at, "failed_at": failed_at}],
        }
        if prompt is not None:
            expression += ", prompt = :prompt"
            values[":prompt"] = prompt
        # Lost to a later attempt or the node's end: that writer's record stands. Anything else
        # (contention past the retries, a refused value) leaves as an error.
        with contextlib.suppress(ConditionFailed):
            self._write(
                "update_item",
                Key=key,
                UpdateExpression=expression,
                ConditionExpression=Attr("attempts").eq(attempt)
                & Attr("status").eq(NodeStatus.RUNNING.value),
                ExpressionAttributeNames={"#err": "error"},
                ExpressionAttributeValues=to_dynamo(values),
            )

    def put_node_record_if_absent(
        self, tenant: str, execution_id: str, record_sk: str, fields: NodeUpdate
    ) -> None:
        with contextlib.suppress(ConditionFailed):
            self._put(
                {**fields, **node_record_key(tenant, execution_id, record_sk), "tenant": tenant},
                must_not_exist=True,
            )

    def close_open_nodes(
        self, tenant: str, execution_id: str, outcome: Mapping[str, NodeStatus], reason: str, now: str
    ) -> None:
        """Give every unfinished node record a terminal status: ``outcome`` maps each open status to
        one (domain/status.py: NODES_ON_CANCEL, NODES_ON_TIMEOUT, NODES_ON_FAILURE)."""
        condition = Key("pk").eq(tenant_pk(tenant, "X", execution_id)) & Key("sk").begins_with("N#")
        for record in self._query_all(condition):
            status = outcome.get(record.get("status", ""))
            if not status:
                continue
            fields: NodeUpdate = {"status": status.value, "completed_at": now}
            if not record.get("error") or status == NodeStatus.TIMED_OUT:
                fields["error"] = reason
            try:
                self._update(
                    {"pk": record["pk"], "sk": record["sk"]},
                    fields,
                    condition=Attr("status").eq(record["status"]),
                )
            except ConditionFailed:
                continue

    def gate_key(self, tenant: str, execution_id: str, node_id: str) -> dict[str, str]:
        """The key of the node record the run machine's gate (AwaitParents) writes its task token
        on, while the node's parents are not all done (statemachine/run.asl.json)."""
        return node_record_key(tenant, execution_id, f"N#{node_id}")

    def register_gate(self, tenant: str, execution_id: str, node_id: str, token: str) -> NodeRecord:
        """Store the task token of a node parked on the previous definition's gate (a runner task:
        services/run_machine.previous_gate); returns the record as it now is."""
        response = self._write(
            "update_item",
            Key=node_record_key(tenant, execution_id, f"N#{node_id}"),
            UpdateExpression="SET #tk = :tk",
            ExpressionAttributeNames={"#tk": "token"},
            ExpressionAttributeValues={":tk": token},
            ReturnValues="ALL_NEW",
        )
        return NODE_RECORD.validate_python(strip_keys(response["Attributes"]))

    def mark_parent_done(
        self, tenant: str, execution_id: str, node_id: str, parent_id: str, carried: Any = None
    ) -> NodeRecord:
        """Add ``parent_id`` to the node's set of finished parents (adding it twice counts once);
        returns the record as it now is. The gate's token write (AwaitParents) is conditional on
        fewer parents being done, so of the two writes on this record the later one decides: a
        token found here was stored while a parent was missing, and this update's caller releases it
        when its parent was the last; a gate finding every parent done stores nothing and runs.

        ``carried`` (a parent of a node with several): the parent's packed output, written on the
        record in the same update (attribute ``carried#<parent id>``; writing it twice writes the
        same), so the parent that releases the node finds every parent's in the record returned,
        gathered under ``carried`` (parent id -> value)."""
        names = {"#dp": "done_parents"}
        values: dict[str, Any] = {":p": {parent_id}}
        expression = "ADD #dp :p"
        if carried is not None:
            names["#c"] = f"{CARRIED_PREFIX}{parent_id}"
            values[":c"] = to_dynamo(carried)
            expression += " SET #c = :c"
        response = self._write(
            "update_item",
            Key=node_record_key(tenant, execution_id, f"N#{node_id}"),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        record = strip_keys(response["Attributes"])
        record["carried"] = {
            key.removeprefix(CARRIED_PREFIX): record.pop(key)
            for key in [k for k in record if k.startswith(CARRIED_PREFIX)]
        }
        return NODE_RECORD.validate_python(record)

    def node_records(self, tenant: str, execution_id: str) -> list[NodeRecord]:
        """The run's node records (validated: domain/execution_record.NodeRecord), in key order."""
        condition = Key("pk").eq(tenant_pk(tenant, "X", execution_id)) & Key("sk").begins_with("N#")
        return NODE_RECORDS.validate_python([strip_keys(i) for i in self._query_all(condition)])

"""The one DynamoDB table of relayflow. Only this module talks to DynamoDB.

Key layout (every key starts with the tenant, so one tenant can never address another's items):

    T#t#WF#wf       WF              workflow            gsi1: T#t#WFS / created#id
    T#t#V#v         V               version             gsi1: T#t#WF#wf#VS / number
    T#t#V#v         N#node          node of the version
    T#t#V#v         E#edge          edge of the version
    T#t#M#m         M               model               gsi1: T#t#MS / created#id
    T#t#X#x         X               execution           gsi1: T#t#WF#wf#XS / created#id
                                                        gsi2: T#t#WF#wf#XS#status / created#id
                                                        sweep: ACTIVE#n | SETTLE#n / created#t#id
    T#t#X#x         N#node          node record of a single run
    KEY#k           KEY             API key (by key id)  gsi1: T#t#KEYS / created#id
    T#t#X#x         D#time#d#n      webhook delivery attempt n   gsi1: T#t#WF#wf#DS / time#d#n
    T#t#WF#wf       WHSECRET        webhook signing secret of the workflow (never in API answers)
    T#t#UP#digest   UP              an S3 upload the trigger has seen (dedup marker, expires_at)
    T#t#D#d         D               dataset             gsi1: T#t#DS / created#id
    T#t#D#d         V#v             dataset version (its items are an S3 object, see services/batch.py)
    T#t#D#d         U#u             dataset file upload in progress (expires_at)
    T#t#X#x#Rnn     R#item          outcome of one item of a batch run, with its nodes' records
                                    (nn: a hash of the item id; see adapters/batch_store.py)
    T#t#X#x#Cnn     C               one of 16 shards of a batch run's progress counters
    T#t#M#m         RL#window       a model's rate-limit window (adapters/rate_windows.py, expires_at)
    BUDGET#batch_parallelism BUDGET the account-wide budget of batch parallelism (adapters/budget.py)

The API-key item is the one key not led by the tenant: the authorizer learns the tenant from it. It
holds only the SHA-256 of the key (see services/apikeys.py); the authorizer reads it with one GetItem.
The budget item is the other: it is the deployment's, not a tenant's.

The ``sweep`` index is sparse: only executions that need watching are in it (adapters/sweep.py).
``ACTIVE#<shard>`` holds every pending or running run; a terminal status change moves the run to
``SETTLE#<shard>`` until what follows a run's end (its budget released, its last status event
published) is done, and then it leaves the index. Nothing else ever has ``sweep_pk``.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.codec import decode_cursor, encode_cursor, from_dynamo, to_dynamo
from relayflow_runtime.errors import InvalidNextToken, NotFound

_KEY_FIELDS = (
    "pk",
    "sk",
    "gsi1pk",
    "gsi1sk",
    "gsi2pk",
    "gsi2sk",
    "sweep_pk",
    "sweep_sk",
    "tenant",
    "kind",
    "expires_at",
)
#: Shards of the sweep index's partitions (a run's shard is a hash of its id).
SWEEP_SHARDS = 8
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class ConditionFailed(Exception):
    """A conditional write lost (another writer got there first)."""


def _pk(tenant: str, kind: str, ident: str) -> str:
    return f"T#{tenant}#{kind}#{ident}"


def sweep_shard(execution_id: str) -> int:
    return zlib.crc32(execution_id.encode()) % SWEEP_SHARDS


def sweep_keys(tenant: str, execution: dict[str, Any], partition: str) -> dict[str, str]:
    """The sweep index's keys of an execution: partition ``ACTIVE`` or ``SETTLE``."""
    return {
        "sweep_pk": f"{partition}#{sweep_shard(execution['id'])}",
        "sweep_sk": f"{execution['created_at']}#{tenant}#{execution['id']}",
    }


def strip_keys(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in from_dynamo(item).items() if k not in _KEY_FIELDS}


def _partition(condition: Any) -> tuple[str, Any] | None:
    """The (name, value) of the partition key a query's key condition names, if it names one."""
    operator = getattr(condition, "expression_operator", None)
    values = getattr(condition, "_values", ())
    if operator == "=" and values and hasattr(values[0], "name"):
        return values[0].name, values[1]
    if operator == "AND":
        return next((found for part in values if (found := _partition(part))), None)
    return None


def _check_cursor(start: dict[str, Any], key_condition: Any, index: str | None) -> None:
    """A cursor is the last key of a page of this very query: the table's key (and the index's,
    ``gsiN`` keyed by ``gsiNpk``/``gsiNsk``), in the partition the query reads."""
    expected = {"pk", "sk"} | ({f"{index}pk", f"{index}sk"} if index else set())
    partition = _partition(key_condition)
    if set(start) != expected or (partition is not None and start.get(partition[0]) != partition[1]):
        raise InvalidNextToken()


class TableStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @property
    def table(self) -> Any:
        return aws.dynamodb_table(self.table_name)

    # ---- generic ------------------------------------------------------------------------------
    def _get(self, pk: str, sk: str, what: str, ident: str) -> dict[str, Any]:
        item = self.table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")
        if not item:
            raise NotFound(f"{what} '{ident}' does not exist.", code=f"{what.replace(' ', '_')}_not_found")
        return strip_keys(item)

    def _put(self, item: dict[str, Any], *, must_not_exist: bool = False) -> None:
        kwargs: dict[str, Any] = {"Item": to_dynamo(item)}
        if must_not_exist:
            kwargs["ConditionExpression"] = Attr("pk").not_exists()
        try:
            self.table.put_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc)) from exc
            raise

    def _update(
        self,
        key: dict[str, str],
        set_fields: dict[str, Any],
        *,
        condition: Any = None,
        remove: Iterable[str] = (),
        add: dict[str, int] | None = None,
        return_values: str = "ALL_NEW",
    ) -> dict[str, Any]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, adds = [], []
        for i, (field, value) in enumerate(set_fields.items()):
            names[f"#s{i}"] = field
            values[f":s{i}"] = to_dynamo(value)
            sets.append(f"#s{i} = :s{i}")
        for i, (field, amount) in enumerate((add or {}).items()):
            names[f"#a{i}"] = field
            values[f":a{i}"] = amount
            adds.append(f"#a{i} :a{i}")
        removes = []
        for i, field in enumerate(remove):
            names[f"#r{i}"] = field
            removes.append(f"#r{i}")
        expression = ""
        if sets:
            expression += "SET " + ", ".join(sets)
        if adds:
            expression += " ADD " + ", ".join(adds)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
            "ReturnValues": return_values,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        kwargs["ConditionExpression"] = Attr("pk").exists() if condition is None else condition
        try:
            response = self.table.update_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc)) from exc
            raise
        return strip_keys(response.get("Attributes", {}))

    def _query_page(
        self,
        *,
        key_condition: Any,
        index: str | None = None,
        limit: int = 50,
        next_token: str | None = None,
        forward: bool = True,
        filter_expression: Any = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"KeyConditionExpression": key_condition, "ScanIndexForward": forward}
        if index:
            kwargs["IndexName"] = index
        if filter_expression is not None:
            kwargs["FilterExpression"] = filter_expression
        start = decode_cursor(next_token)
        if start is not None:
            _check_cursor(start, key_condition, index)
        items: list[dict[str, Any]] = []
        # A filter can return short pages: keep reading until the page is full or the index ends.
        while True:
            kwargs["Limit"] = limit - len(items)
            if start:
                kwargs["ExclusiveStartKey"] = start
            try:
                response = self.table.query(**kwargs)
            except ClientError as exc:
                if start and exc.response["Error"]["Code"] == "ValidationException":
                    raise InvalidNextToken() from exc
                raise
            items.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start or len(items) >= limit:
                break
        return [strip_keys(i) for i in items], encode_cursor(start)

    def _query_all(
        self, key_condition: Any, index: str | None = None, *, fields: Iterable[str] = ()
    ) -> Iterator[dict[str, Any]]:
        """Every item the key condition matches (only ``fields`` of each, when given)."""
        kwargs: dict[str, Any] = {"KeyConditionExpression": key_condition}
        if fields:
            names = {f"#p{i}": field for i, field in enumerate(fields)}
            kwargs["ProjectionExpression"] = ", ".join(names)
            kwargs["ExpressionAttributeNames"] = names
        if index:
            kwargs["IndexName"] = index
        else:
            kwargs["ConsistentRead"] = True
        while True:
            response = self.table.query(**kwargs)
            for item in response.get("Items", []):
                yield from_dynamo(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _delete_keys(self, keys: Iterable[dict[str, str]]) -> None:
        with self.table.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)

    # ---- top-level entities: one item each, listed newest first through gsi1 ----------------------
    def _put_listed(self, tenant: str, kind: str, code: str, entity: dict[str, Any], listing: str) -> None:
        self._put(
            {
                **entity,
                "pk": _pk(tenant, code, entity["id"]),
                "sk": code,
                "tenant": tenant,
                "kind": kind,
                "gsi1pk": f"T#{tenant}#{listing}",
                "gsi1sk": f"{entity['created_at']}#{entity['id']}",
            },
            must_not_exist=True,
        )

    def _list_listed(
        self, tenant: str, listing: str, limit: int, next_token: str | None, *, newest_first: bool = True
    ) -> tuple[list[dict[str, Any]], str | None]:
        return self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#{listing}"),
            index="gsi1",
            limit=limit,
            next_token=next_token,
            forward=not newest_first,
        )

    # ---- workflows -------------------------------------------------------------------------------
    def put_workflow(self, tenant: str, workflow: dict[str, Any]) -> None:
        self._put_listed(tenant, "workflow", "WF", workflow, "WFS")

    def get_workflow(self, tenant: str, workflow_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "WF", workflow_id), "WF", "workflow", workflow_id)

    def list_workflows(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return self._list_listed(tenant, "WFS", limit, next_token)

    def update_workflow(
        self, tenant: str, workflow_id: str, fields: dict[str, Any], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        try:
            return self._update({"pk": _pk(tenant, "WF", workflow_id), "sk": "WF"}, fields, remove=remove)
        except ConditionFailed as exc:
            raise NotFound(f"workflow '{workflow_id}' does not exist.", code="workflow_not_found") from exc

    def next_execution_number(self, tenant: str, workflow_id: str) -> int:
        attrs = self._update(
            {"pk": _pk(tenant, "WF", workflow_id), "sk": "WF"}, {}, add={"execution_count": 1}
        )
        return int(attrs["execution_count"])

    def next_version_number(self, tenant: str, workflow_id: str) -> int:
        attrs = self._update({"pk": _pk(tenant, "WF", workflow_id), "sk": "WF"}, {}, add={"version_count": 1})
        return int(attrs["version_count"])

    def delete_workflow(self, tenant: str, workflow_id: str) -> None:
        keys = [{"pk": _pk(tenant, "WF", workflow_id), "sk": "WF"}]
        for version in self._query_all(Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#VS"), "gsi1"):
            keys.extend(
                {"pk": i["pk"], "sk": i["sk"]}
                for i in self._query_all(Key("pk").eq(_pk(tenant, "V", version["id"])))
            )
        self._delete_keys(keys)

    # ---- versions, nodes, edges ------------------------------------------------------------------
    def put_version(self, tenant: str, version: dict[str, Any]) -> None:
        self._put(
            {
                **version,
                "pk": _pk(tenant, "V", version["id"]),
                "sk": "V",
                "tenant": tenant,
                "kind": "version",
                "gsi1pk": f"T#{tenant}#WF#{version['workflow_id']}#VS",
                "gsi1sk": f"{version['number']:08d}",
            },
            must_not_exist=True,
        )

    def get_version(self, tenant: str, version_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "V", version_id), "V", "version", version_id)

    def list_versions(self, tenant: str, workflow_id: str) -> list[dict[str, Any]]:
        items = self._query_all(Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#VS"), "gsi1")
        return [strip_keys(i) for i in items]

    def update_version(self, tenant: str, version_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._update({"pk": _pk(tenant, "V", version_id), "sk": "V"}, fields)
        except ConditionFailed as exc:
            raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found") from exc

    def delete_version(self, tenant: str, version_id: str) -> None:
        items = self._query_all(Key("pk").eq(_pk(tenant, "V", version_id)))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items)

    def version_graph(self, tenant: str, version_id: str) -> tuple[dict[str, Any], list[dict], list[dict]]:
        """The version with its nodes (in creation order) and edges, in one query."""
        version: dict[str, Any] | None = None
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for item in self._query_all(Key("pk").eq(_pk(tenant, "V", version_id))):
            if item["sk"] == "V":
                version = strip_keys(item)
            elif item["sk"].startswith("N#"):
                nodes.append(strip_keys(item))
            elif item["sk"].startswith("E#"):
                edges.append(strip_keys(item))
        if version is None:
            raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found")
        nodes.sort(key=lambda n: (n["position"], n["created_at"]))
        edges.sort(key=lambda e: e["created_at"])
        return version, nodes, edges

    def put_child(self, tenant: str, version_id: str, prefix: str, child: dict[str, Any]) -> None:
        self._put(
            {
                **child,
                "pk": _pk(tenant, "V", version_id),
                "sk": f"{prefix}#{child['id']}",
                "tenant": tenant,
                "kind": "node" if prefix == "N" else "edge",
            },
            must_not_exist=True,
        )

    def get_child(self, tenant: str, version_id: str, prefix: str, child_id: str) -> dict[str, Any]:
        what = "node" if prefix == "N" else "edge"
        return self._get(_pk(tenant, "V", version_id), f"{prefix}#{child_id}", what, child_id)

    def update_child(
        self, tenant: str, version_id: str, prefix: str, child_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            return self._update({"pk": _pk(tenant, "V", version_id), "sk": f"{prefix}#{child_id}"}, fields)
        except ConditionFailed as exc:
            what = "node" if prefix == "N" else "edge"
            raise NotFound(f"{what} '{child_id}' does not exist.", code=f"{what}_not_found") from exc

    def delete_children(self, tenant: str, version_id: str, sks: Iterable[str]) -> None:
        self._delete_keys({"pk": _pk(tenant, "V", version_id), "sk": sk} for sk in sks)

    # ---- models ----------------------------------------------------------------------------------
    def put_model(self, tenant: str, model: dict[str, Any]) -> None:
        self._put_listed(tenant, "model", "M", model, "MS")

    def get_model(self, tenant: str, model_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "M", model_id), "M", "model", model_id)

    def list_models(self, tenant: str, limit: int, next_token: str | None) -> tuple[list[dict], str | None]:
        return self._list_listed(tenant, "MS", limit, next_token, newest_first=False)

    def delete_model(self, tenant: str, model_id: str) -> None:
        self.table.delete_item(Key={"pk": _pk(tenant, "M", model_id), "sk": "M"})

    # ---- executions ------------------------------------------------------------------------------
    @staticmethod
    def execution_key(tenant: str, execution_id: str) -> dict[str, str]:
        return {"pk": _pk(tenant, "X", execution_id), "sk": "X"}

    @staticmethod
    def _status_index(tenant: str, workflow_id: str, status: str) -> str:
        return f"T#{tenant}#WF#{workflow_id}#XS#{status}"

    def put_execution(self, tenant: str, execution: dict[str, Any]) -> None:
        sort = f"{execution['created_at']}#{execution['id']}"
        self._put(
            {
                **execution,
                **self.execution_key(tenant, execution["id"]),
                "tenant": tenant,
                "kind": "execution",
                "gsi1pk": f"T#{tenant}#WF#{execution['workflow_id']}#XS",
                "gsi1sk": sort,
                "gsi2pk": self._status_index(tenant, execution["workflow_id"], execution["status"]),
                "gsi2sk": sort,
                **sweep_keys(tenant, execution, "SETTLE" if execution["status"] in _TERMINAL else "ACTIVE"),
            },
            must_not_exist=True,
        )

    def get_execution(self, tenant: str, execution_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "X", execution_id), "X", "execution", execution_id)

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
    ) -> tuple[list[dict[str, Any]], str | None]:
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
        return self._query_page(
            key_condition=condition, index=index, limit=limit, next_token=next_token, forward=False
        )

    def transition_execution(
        self,
        tenant: str,
        execution: dict[str, Any],
        *,
        from_statuses: Iterable[str],
        to_status: str,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Move an execution's status forward; raises ConditionFailed if it is not in from_statuses.
        A terminal status moves the run from the sweep index's ACTIVE partition to SETTLE."""
        allowed = list(from_statuses)
        set_fields = {
            **(fields or {}),
            "status": to_status,
            "gsi2pk": self._status_index(tenant, execution["workflow_id"], to_status),
        }
        if to_status in _TERMINAL:  # sweep_sk (created#tenant#id) stays as put_execution wrote it
            set_fields["sweep_pk"] = f"SETTLE#{sweep_shard(execution['id'])}"
        return self._update(
            self.execution_key(tenant, execution["id"]),
            set_fields,
            condition=Attr("status").is_in(allowed),
            # An earlier status's event the bus refused (adapters/sweep.py) is superseded by this one.
            remove=("unpublished_event",),
        )

    def update_execution(
        self, tenant: str, execution_id: str, fields: dict[str, Any], *, only_if_status: Iterable[str] = ()
    ) -> dict[str, Any]:
        allowed = list(only_if_status)
        condition = Attr("status").is_in(allowed) if allowed else None
        return self._update(self.execution_key(tenant, execution_id), fields, condition=condition)

    def hide_execution(self, tenant: str, execution_id: str) -> None:
        """Mark an execution ``deleting`` and take it out of the listings (its index keys go), before
        a background job deletes what it holds."""
        self._update(
            self.execution_key(tenant, execution_id),
            {"deleting": True},
            remove=("gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"),
        )

    def delete_execution(self, tenant: str, execution_id: str) -> None:
        """Every item of the run, the execution item last: an interrupted delete can be repeated."""
        key = self.execution_key(tenant, execution_id)
        items = self._query_all(Key("pk").eq(key["pk"]))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items if i["sk"] != key["sk"])
        self.table.delete_item(Key=key)

    # ---- node records ----------------------------------------------------------------------------
    @staticmethod
    def node_record_key(tenant: str, execution_id: str, record_sk: str) -> dict[str, str]:
        """record_sk: ``N#<node>`` for a single run, ``I#<item>#N#<node>`` for an item of a batch."""
        return {"pk": _pk(tenant, "X", execution_id), "sk": record_sk}

    def begin_node_attempt(
        self,
        tenant: str,
        execution_id: str,
        node_id: str,
        idx: int,
        attempt: int,
        fields: dict[str, Any],
        now: str,
    ) -> None:
        """Mark a node of a single run running for its ``attempt``-th attempt (1-based: the number
        is the state machine's, so a repeated task sets the same one) and point the run's progress
        at it — one transaction while the run is running and progress has not passed this node
        (parallel branches start in any order: progress never goes back). Raises ConditionFailed
        when the run is no longer running or the node already ended."""
        ser = TypeSerializer()
        node_names = {"#st": "status", "#att": "attempts", "#sa": "started_at", "#as": "attempt_started_at"}
        node_values: dict[str, Any] = {
            ":running": "running",
            ":pending": "pending",
            ":att": attempt,
            ":now": now,
        }
        sets = ["#st = :running", "#att = :att", "#sa = if_not_exists(#sa, :now)", "#as = :now"]
        for i, (field, value) in enumerate(fields.items()):
            node_names[f"#f{i}"] = field
            node_values[f":f{i}"] = value
            sets.append(f"#f{i} = :f{i}")
        node_update = {
            "TableName": self.table_name,
            "Key": {
                k: ser.serialize(v)
                for k, v in self.node_record_key(tenant, execution_id, f"N#{node_id}").items()
            },
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "attribute_not_exists(#st) OR #st IN (:pending, :running)",
            "ExpressionAttributeNames": node_names,
            "ExpressionAttributeValues": {k: ser.serialize(to_dynamo(v)) for k, v in node_values.items()},
        }
        progress = {
            "TableName": self.table_name,
            "Key": {k: ser.serialize(v) for k, v in self.execution_key(tenant, execution_id).items()},
            "UpdateExpression": "SET #cn = :cn",
            "ConditionExpression": "#st = :running AND (attribute_not_exists(#cn) OR #cn.#idx < :idx)",
            "ExpressionAttributeNames": {"#st": "status", "#cn": "current_node", "#idx": "idx"},
            "ExpressionAttributeValues": {
                ":running": ser.serialize("running"),
                ":cn": ser.serialize({"idx": idx, "id": node_id}),
                ":idx": ser.serialize(idx),
            },
        }
        client = aws.client("dynamodb")
        try:
            client.transact_write_items(TransactItems=[{"Update": node_update}, {"Update": progress}])
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise ConditionFailed(str(exc)) from exc
        # Progress already points further on (a later branch started first), or the run ended.
        if self.get_execution(tenant, execution_id).get("status") != "running":
            raise ConditionFailed("the execution is no longer running")
        try:
            client.update_item(**node_update)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc)) from exc
            raise

    def finish_node(
        self,
        tenant: str,
        execution_id: str,
        record_sk: str,
        fields: dict[str, Any],
        *,
        attempt: int | None = None,
        execution_statuses: Iterable[str] = ("running",),
        execution_add: dict[str, int] | None = None,
    ) -> None:
        """Write a node's outcome, only while the execution is in one of execution_statuses.

        One transaction updates the execution item (its condition, and counters such as token usage)
        and the node record, so a node can never be recorded completed after its execution was
        cancelled or failed: the two records always agree.
        """
        ser = TypeSerializer()

        def wire(d: dict[str, Any]) -> dict[str, Any]:
            return {k: ser.serialize(to_dynamo(v)) for k, v in d.items()}

        names: dict[str, str] = {"#st": "status"}
        values: dict[str, Any] = {":pending": "pending", ":running": "running"}
        sets = []
        for i, (field, value) in enumerate(fields.items()):
            names[f"#f{i}"] = field
            values[f":f{i}"] = value
            sets.append(f"#f{i} = :f{i}")
        node_condition = "attribute_exists(pk) AND #st IN (:pending, :running)"
        if attempt is not None:
            names["#att"] = "attempts"
            values[":att"] = attempt
            node_condition += " AND #att = :att"

        x_names = {"#st": "status"}
        x_values: dict[str, Any] = {f":x{i}": s for i, s in enumerate(execution_statuses)}
        x_condition = f"#st IN ({', '.join(x_values)})"
        execution_part: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": wire(self.execution_key(tenant, execution_id)),
            "ConditionExpression": x_condition,
            "ExpressionAttributeNames": x_names,
        }
        if execution_add:
            adds = []
            for i, (field, amount) in enumerate(execution_add.items()):
                x_names[f"#u{i}"] = field
                x_values[f":u{i}"] = amount
                adds.append(f"#u{i} :u{i}")
            execution_part["UpdateExpression"] = "ADD " + ", ".join(adds)
            first = {"Update": {**execution_part, "ExpressionAttributeValues": wire(x_values)}}
        else:
            first = {"ConditionCheck": {**execution_part, "ExpressionAttributeValues": wire(x_values)}}
        try:
            aws.client("dynamodb").transact_write_items(
                TransactItems=[
                    first,
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": wire(self.node_record_key(tenant, execution_id, record_sk)),
                            "UpdateExpression": "SET " + ", ".join(sets),
                            "ConditionExpression": node_condition,
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": wire(values),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                raise ConditionFailed(str(exc)) from exc
            raise

    def note_attempt_error(
        self, tenant: str, execution_id: str, record_sk: str, attempt: int, error: str, prompt: Any = None
    ) -> None:
        """Record a failed attempt's error (and the prompt it sent, so a failed node shows it)."""
        key = self.node_record_key(tenant, execution_id, record_sk)
        expression = "SET attempt_errors = list_append(if_not_exists(attempt_errors, :e), :one), #err = :msg"
        values: dict[str, Any] = {":e": [], ":one": [f"attempt {attempt}: {error}"], ":msg": error}
        if prompt is not None:
            expression += ", prompt = :prompt"
            values[":prompt"] = to_dynamo(prompt)
        try:
            self.table.update_item(
                Key=key,
                UpdateExpression=expression,
                ConditionExpression=Attr("attempts").eq(attempt) & Attr("status").eq("running"),
                ExpressionAttributeNames={"#err": "error"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def put_node_record_if_absent(
        self, tenant: str, execution_id: str, record_sk: str, fields: dict[str, Any]
    ) -> None:
        with contextlib.suppress(ConditionFailed):
            self._put(
                {**fields, **self.node_record_key(tenant, execution_id, record_sk), "tenant": tenant},
                must_not_exist=True,
            )

    def close_open_nodes(
        self, tenant: str, execution_id: str, outcome: dict[str, str], reason: str, now: str
    ) -> None:
        """Give every unfinished node record a terminal status: outcome maps pending/running to one."""
        condition = Key("pk").eq(_pk(tenant, "X", execution_id)) & Key("sk").begins_with("N#")
        for record in self._query_all(condition):
            status = outcome.get(record.get("status", ""))
            if not status:
                continue
            fields: dict[str, Any] = {"status": status, "completed_at": now}
            if not record.get("error") or status == "timed_out":
                fields["error"] = reason
            try:
                self._update(
                    {"pk": record["pk"], "sk": record["sk"]},
                    fields,
                    condition=Attr("status").eq(record["status"]),
                )
            except ConditionFailed:
                continue

    def register_gate(self, tenant: str, execution_id: str, node_id: str, token: str) -> dict[str, Any]:
        """Store the task token of a node parked on its gate; returns the record as it now is."""
        response = self.table.update_item(
            Key=self.node_record_key(tenant, execution_id, f"N#{node_id}"),
            UpdateExpression="SET #tk = :tk",
            ExpressionAttributeNames={"#tk": "token"},
            ExpressionAttributeValues={":tk": token},
            ReturnValues="ALL_NEW",
        )
        return strip_keys(response["Attributes"])

    def mark_parent_done(
        self, tenant: str, execution_id: str, node_id: str, parent_id: str
    ) -> dict[str, Any]:
        """Add ``parent_id`` to the node's set of finished parents (adding it twice counts once);
        returns the record as it now is."""
        response = self.table.update_item(
            Key=self.node_record_key(tenant, execution_id, f"N#{node_id}"),
            UpdateExpression="ADD #dp :p",
            ExpressionAttributeNames={"#dp": "done_parents"},
            ExpressionAttributeValues={":p": {parent_id}},
            ReturnValues="ALL_NEW",
        )
        return strip_keys(response["Attributes"])

    def node_records(self, tenant: str, execution_id: str) -> list[dict[str, Any]]:
        condition = Key("pk").eq(_pk(tenant, "X", execution_id)) & Key("sk").begins_with("N#")
        return [strip_keys(i) for i in self._query_all(condition)]

    # ---- API keys (the authorizer's one GetItem; see services/apikeys.py) ---------------------------
    @staticmethod
    def _api_key_key(key_id: str) -> dict[str, str]:
        return {"pk": f"KEY#{key_id}", "sk": "KEY"}

    def put_api_key(self, tenant: str, api_key: dict[str, Any], *, ttl_epoch: int | None = None) -> None:
        fields = dict(api_key)
        # "expires_at" is the table's TTL attribute (epoch seconds); the key's own expiry is kept apart.
        if fields.get("expires_at"):
            fields["valid_until"] = fields.pop("expires_at")
        item: dict[str, Any] = {
            **fields,
            **self._api_key_key(api_key["id"]),
            "tenant": tenant,
            "kind": "api_key",
            "gsi1pk": f"T#{tenant}#KEYS",
            "gsi1sk": f"{api_key['created_at']}#{api_key['id']}",
        }
        if ttl_epoch is not None:
            item["expires_at"] = ttl_epoch  # DynamoDB TTL: expired keys are removed some time later
        self._put(item, must_not_exist=True)

    def find_api_key(self, key_id: str) -> tuple[str, dict[str, Any]] | None:
        """The owning tenant and the record of a key id, or None (one strongly consistent GetItem)."""
        item = self.table.get_item(Key=self._api_key_key(key_id), ConsistentRead=True).get("Item")
        if not item or item.get("kind") != "api_key":
            return None
        return str(item["tenant"]), self._api_key_record(item)

    @staticmethod
    def _api_key_record(item: dict[str, Any]) -> dict[str, Any]:
        record = strip_keys(item)
        if "valid_until" in record:
            record["expires_at"] = record.pop("valid_until")
        return record

    def get_api_key(self, tenant: str, key_id: str) -> dict[str, Any]:
        found = self.find_api_key(key_id)
        if found is None or found[0] != tenant:
            raise NotFound(f"API key '{key_id}' does not exist.", code="api_key_not_found")
        return found[1]

    def list_api_keys(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        records, token = self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#KEYS"),
            index="gsi1",
            limit=limit,
            next_token=next_token,
            forward=False,
        )
        return [self._api_key_record(r) for r in records], token

    def all_api_keys(self, tenant: str) -> list[dict[str, Any]]:
        items = self._query_all(Key("gsi1pk").eq(f"T#{tenant}#KEYS"), "gsi1")
        return [self._api_key_record(i) for i in items]

    def revoke_api_key(self, tenant: str, key_id: str, now: str) -> dict[str, Any]:
        """Mark the key revoked (once; a second revoke keeps the first time)."""
        try:
            item = self._update(
                self._api_key_key(key_id),
                {"revoked_at": now},
                condition=Attr("tenant").eq(tenant) & Attr("revoked_at").not_exists(),
            )
            return self._api_key_record(item)
        except ConditionFailed:
            return self.get_api_key(tenant, key_id)

    # ---- events and triggers: S3 upload markers, webhook secrets, webhook deliveries -----------
    @staticmethod
    def _upload_key(tenant: str, digest: str) -> dict[str, str]:
        return {"pk": _pk(tenant, "UP", digest), "sk": "UP"}

    def claim_upload(self, tenant: str, digest: str, fields: dict[str, Any], now_epoch: int) -> bool:
        """Record an upload as seen; False if a live marker (one not past expires_at) exists."""
        item = {**fields, **self._upload_key(tenant, digest), "tenant": tenant, "kind": "upload"}
        try:
            self.table.put_item(
                Item=to_dynamo(item),
                # TTL deletes late (up to days): an expired marker still present counts as absent.
                ConditionExpression=Attr("pk").not_exists() | Attr("expires_at").lt(now_epoch),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get_upload(self, tenant: str, digest: str) -> dict[str, Any] | None:
        key = self._upload_key(tenant, digest)
        item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
        return strip_keys(item) if item else None

    def update_upload(
        self, tenant: str, digest: str, fields: dict[str, Any], *, expect: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Update a marker; with expect, only while those attributes hold those values."""
        condition: Any = Attr("pk").exists()
        for name, value in (expect or {}).items():
            condition = condition & Attr(name).eq(value)
        return self._update(self._upload_key(tenant, digest), fields, condition=condition)

    @staticmethod
    def _webhook_secret_key(tenant: str, workflow_id: str) -> dict[str, str]:
        return {"pk": _pk(tenant, "WF", workflow_id), "sk": "WHSECRET"}

    def put_webhook_secret(self, tenant: str, workflow_id: str, fields: dict[str, Any]) -> None:
        item = {**fields, **self._webhook_secret_key(tenant, workflow_id), "tenant": tenant}
        self.table.put_item(Item=to_dynamo({**item, "kind": "webhook_secret"}))

    def get_webhook_secret(self, tenant: str, workflow_id: str) -> dict[str, Any] | None:
        key = self._webhook_secret_key(tenant, workflow_id)
        item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
        return strip_keys(item) if item else None

    def delete_webhook_secret(self, tenant: str, workflow_id: str) -> None:
        self.table.delete_item(Key=self._webhook_secret_key(tenant, workflow_id))

    def put_delivery_attempt(
        self, tenant: str, attempt: dict[str, Any], *, expires_at: int | None = None
    ) -> None:
        """One webhook delivery attempt, kept with its execution (deleted with it, or by TTL)."""
        sort = f"{attempt['attempted_at']}#{attempt['delivery_id']}#{attempt.get('round', 0):03d}"
        sort += f"#{attempt['attempt']:02d}"
        item = {
            **attempt,
            "pk": _pk(tenant, "X", attempt["execution_id"]),
            "sk": f"D#{sort}",
            "tenant": tenant,
            "kind": "delivery_attempt",
            "gsi1pk": f"T#{tenant}#WF#{attempt['workflow_id']}#DS",
            "gsi1sk": sort,
        }
        if expires_at is not None:
            item["expires_at"] = expires_at
        self._put(item)

    def next_webhook_round(self, tenant: str, execution_id: str) -> int:
        """Number a re-send of the execution's webhook (1, 2, ...)."""
        attrs = self._update(self.execution_key(tenant, execution_id), {}, add={"webhook_rounds": 1})
        return int(attrs["webhook_rounds"])

    def list_delivery_attempts(
        self,
        tenant: str,
        *,
        workflow_id: str,
        execution_id: str | None,
        limit: int,
        next_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first: of one execution, or of every execution of the workflow."""
        if execution_id:
            condition = Key("pk").eq(_pk(tenant, "X", execution_id)) & Key("sk").begins_with("D#")
            return self._query_page(
                key_condition=condition, limit=limit, next_token=next_token, forward=False
            )
        return self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#DS"),
            index="gsi1",
            limit=limit,
            next_token=next_token,
            forward=False,
        )

    # ---- datasets, dataset versions, dataset uploads (see services/dataset_service.py) ---------------
    @staticmethod
    def _dataset_key(tenant: str, dataset_id: str, sk: str = "D") -> dict[str, str]:
        return {"pk": _pk(tenant, "D", dataset_id), "sk": sk}

    def put_dataset(self, tenant: str, dataset: dict[str, Any]) -> None:
        self._put_listed(tenant, "dataset", "D", dataset, "DS")

    def get_dataset(self, tenant: str, dataset_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "D", dataset_id), "D", "dataset", dataset_id)

    def list_datasets(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return self._list_listed(tenant, "DS", limit, next_token)

    def next_dataset_version_number(self, tenant: str, dataset_id: str, now: str) -> int:
        try:
            attrs = self._update(
                self._dataset_key(tenant, dataset_id), {"updated_at": now}, add={"version_count": 1}
            )
        except ConditionFailed as exc:
            raise NotFound(f"dataset '{dataset_id}' does not exist.", code="dataset_not_found") from exc
        return int(attrs["version_count"])

    def delete_dataset(self, tenant: str, dataset_id: str) -> None:
        items = self._query_all(Key("pk").eq(_pk(tenant, "D", dataset_id)))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items)

    def put_dataset_version(self, tenant: str, version: dict[str, Any]) -> None:
        self._put(
            {
                **version,
                **self._dataset_key(tenant, version["dataset_id"], f"V#{version['id']}"),
                "tenant": tenant,
                "kind": "dataset_version",
            },
            must_not_exist=True,
        )

    def get_dataset_version(self, tenant: str, dataset_id: str, version_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "D", dataset_id), f"V#{version_id}", "dataset version", version_id)

    def list_dataset_versions(self, tenant: str, dataset_id: str) -> list[dict[str, Any]]:
        condition = Key("pk").eq(_pk(tenant, "D", dataset_id)) & Key("sk").begins_with("V#")
        return [strip_keys(i) for i in self._query_all(condition)]

    def update_dataset_version(
        self,
        tenant: str,
        dataset_id: str,
        version_id: str,
        fields: dict[str, Any],
        *,
        only_if_status: Iterable[str] = (),
        or_processing_since_before: str | None = None,
    ) -> dict[str, Any]:
        """Raises ConditionFailed when the version is not in one of only_if_status (nor, when
        or_processing_since_before is given, ``processing`` since before that time)."""
        allowed = list(only_if_status)
        condition = Attr("pk").exists() & Attr("status").is_in(allowed) if allowed else None
        if condition is not None and or_processing_since_before:
            stale = Attr("status").eq("processing") & Attr("updated_at").lt(or_processing_since_before)
            condition = Attr("pk").exists() & (Attr("status").is_in(allowed) | stale)
        key = self._dataset_key(tenant, dataset_id, f"V#{version_id}")
        return self._update(key, fields, condition=condition)

    def delete_dataset_version(self, tenant: str, dataset_id: str, version_id: str) -> None:
        self.table.delete_item(Key=self._dataset_key(tenant, dataset_id, f"V#{version_id}"))

    def put_dataset_upload(self, tenant: str, upload: dict[str, Any], expires_epoch: int) -> None:
        self._put(
            {
                **upload,
                **self._dataset_key(tenant, upload["dataset_id"], f"U#{upload['id']}"),
                "tenant": tenant,
                "kind": "dataset_upload",
                "expires_at": expires_epoch,
            },
            must_not_exist=True,
        )

    def get_dataset_upload(self, tenant: str, dataset_id: str, upload_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "D", dataset_id), f"U#{upload_id}", "upload", upload_id)

    def add_upload_part(self, tenant: str, dataset_id: str, upload_id: str, part: int, size: int) -> None:
        """Remember that part n arrived (its size, by part number); a part sent again replaces it."""
        self.table.update_item(
            Key=self._dataset_key(tenant, dataset_id, f"U#{upload_id}"),
            UpdateExpression="SET parts.#n = :size",
            ConditionExpression=Attr("pk").exists(),
            ExpressionAttributeNames={"#n": f"{part:05d}"},
            ExpressionAttributeValues={":size": size},
        )

    def delete_dataset_upload(self, tenant: str, dataset_id: str, upload_id: str) -> None:
        self.table.delete_item(Key=self._dataset_key(tenant, dataset_id, f"U#{upload_id}"))

"""The one DynamoDB table of relayflow. Only this module talks to DynamoDB.

Key layout (every key starts with the tenant, so one tenant can never address another's items):

    T#t#WF#wf       WF              workflow            gsi1: T#t#WFS / created#id
    T#t#V#v         V               version             gsi1: T#t#WF#wf#VS / number
    T#t#V#v         N#node          node of the version
    T#t#V#v         E#edge          edge of the version
    T#t#M#m         M               model               gsi1: T#t#MS / created#id
    T#t#X#x         X               execution           gsi1: T#t#WF#wf#XS / created#id
                                                        gsi2: T#t#WF#wf#XS#status / created#id
    T#t#X#x         N#node          node record of a single run
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from relayflow import aws
from relayflow.errors import NotFound
from relayflow.stores.codec import decode_cursor, encode_cursor, from_dynamo, to_dynamo

_KEY_FIELDS = ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "tenant", "kind", "expires_at")


class ConditionFailed(Exception):
    """A conditional write lost (another writer got there first)."""


def _pk(tenant: str, kind: str, ident: str) -> str:
    return f"T#{tenant}#{kind}#{ident}"


def strip_keys(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in from_dynamo(item).items() if k not in _KEY_FIELDS}


class TableStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.table = aws.resource("dynamodb").Table(table_name)

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
        items: list[dict[str, Any]] = []
        # A filter can return short pages: keep reading until the page is full or the index ends.
        while True:
            kwargs["Limit"] = limit - len(items)
            if start:
                kwargs["ExclusiveStartKey"] = start
            response = self.table.query(**kwargs)
            items.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start or len(items) >= limit:
                break
        return [strip_keys(i) for i in items], encode_cursor(start)

    def _query_all(self, key_condition: Any, index: str | None = None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"KeyConditionExpression": key_condition}
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

    # ---- workflows -------------------------------------------------------------------------------
    def put_workflow(self, tenant: str, workflow: dict[str, Any]) -> None:
        self._put(
            {
                **workflow,
                "pk": _pk(tenant, "WF", workflow["id"]),
                "sk": "WF",
                "tenant": tenant,
                "kind": "workflow",
                "gsi1pk": f"T#{tenant}#WFS",
                "gsi1sk": f"{workflow['created_at']}#{workflow['id']}",
            },
            must_not_exist=True,
        )

    def get_workflow(self, tenant: str, workflow_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "WF", workflow_id), "WF", "workflow", workflow_id)

    def list_workflows(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#WFS"),
            index="gsi1",
            limit=limit,
            next_token=next_token,
            forward=False,
        )

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
        self._put(
            {
                **model,
                "pk": _pk(tenant, "M", model["id"]),
                "sk": "M",
                "tenant": tenant,
                "kind": "model",
                "gsi1pk": f"T#{tenant}#MS",
                "gsi1sk": f"{model['created_at']}#{model['id']}",
            },
            must_not_exist=True,
        )

    def get_model(self, tenant: str, model_id: str) -> dict[str, Any]:
        return self._get(_pk(tenant, "M", model_id), "M", "model", model_id)

    def list_models(self, tenant: str, limit: int, next_token: str | None) -> tuple[list[dict], str | None]:
        return self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#MS"), index="gsi1", limit=limit, next_token=next_token
        )

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
        """Move an execution's status forward; raises ConditionFailed if it is not in from_statuses."""
        allowed = list(from_statuses)
        set_fields = {
            **(fields or {}),
            "status": to_status,
            "gsi2pk": self._status_index(tenant, execution["workflow_id"], to_status),
        }
        return self._update(
            self.execution_key(tenant, execution["id"]),
            set_fields,
            condition=Attr("status").is_in(allowed),
        )

    def update_execution(
        self, tenant: str, execution_id: str, fields: dict[str, Any], *, only_if_status: Iterable[str] = ()
    ) -> dict[str, Any]:
        allowed = list(only_if_status)
        condition = Attr("status").is_in(allowed) if allowed else None
        return self._update(self.execution_key(tenant, execution_id), fields, condition=condition)

    def delete_execution(self, tenant: str, execution_id: str) -> None:
        items = self._query_all(Key("pk").eq(_pk(tenant, "X", execution_id)))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items)

    # ---- node records ----------------------------------------------------------------------------
    @staticmethod
    def node_record_key(tenant: str, execution_id: str, record_sk: str) -> dict[str, str]:
        """record_sk: ``N#<node>`` for a single run, ``I#<item>#N#<node>`` for an item of a batch."""
        return {"pk": _pk(tenant, "X", execution_id), "sk": record_sk}

    def start_node_attempt(
        self, tenant: str, execution_id: str, record_sk: str, fields: dict[str, Any], now: str
    ) -> dict[str, Any]:
        """Count one more attempt of a node (the record is created on the first); returns the record."""
        names = {"#st": "status", "#att": "attempts", "#sa": "started_at", "#as": "attempt_started_at"}
        values: dict[str, Any] = {":running": "running", ":pending": "pending", ":one": 1, ":now": now}
        sets = ["#st = :running", "#sa = if_not_exists(#sa, :now)", "#as = :now"]
        for i, (field, value) in enumerate(fields.items()):
            names[f"#f{i}"] = field
            values[f":f{i}"] = to_dynamo(value)
            sets.append(f"#f{i} = :f{i}")
        try:
            response = self.table.update_item(
                Key=self.node_record_key(tenant, execution_id, record_sk),
                UpdateExpression="SET " + ", ".join(sets) + " ADD #att :one",
                ConditionExpression="attribute_not_exists(#st) OR #st IN (:pending, :running)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc)) from exc
            raise
        return strip_keys(response["Attributes"])

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
        from boto3.dynamodb.types import TypeSerializer

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
        self, tenant: str, execution_id: str, record_sk: str, attempt: int, error: str
    ) -> None:
        key = self.node_record_key(tenant, execution_id, record_sk)
        try:
            self.table.update_item(
                Key=key,
                UpdateExpression="SET attempt_errors = list_append(if_not_exists(attempt_errors, :e), :one), "
                "#err = :msg",
                ConditionExpression=Attr("attempts").eq(attempt) & Attr("status").eq("running"),
                ExpressionAttributeNames={"#err": "error"},
                ExpressionAttributeValues={":e": [], ":one": [f"attempt {attempt}: {error}"], ":msg": error},
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

    def node_records(self, tenant: str, execution_id: str) -> list[dict[str, Any]]:
        condition = Key("pk").eq(_pk(tenant, "X", execution_id)) & Key("sk").begins_with("N#")
        return [strip_keys(i) for i in self._query_all(condition)]


@lru_cache(maxsize=4)
def get_table_store(table_name: str) -> TableStore:
    return TableStore(table_name)

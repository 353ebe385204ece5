"""DynamoDB: requests serialized (atomic as on AWS), a Query reading one partition, update and
condition expressions parsed once, item operations answered with `json.dumps`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

from relayflow.local.shims.base import patch_required

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


_DYNAMODB_EXPRESSIONS = "moto.dynamodb.parsing.expressions"
_DYNAMODB_COMPARISONS = "moto.dynamodb.comparisons"


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


#: Table.query's parameters after ``self``, as ``_query_one_partition`` passes them on.
_QUERY_PARAMETERS = [
    "hash_key",
    "range_comparison",
    "range_objs",
    "limit",
    "exclusive_start_key",
    "scan_index_forward",
    "projection_expressions",
    "index_name",
]


def install() -> None:
    """DynamoDB: one request at a time, partition-only queries, parsed expressions kept, JSON answers."""
    patch_required(_DYNAMODB_RESPONSES, "DynamoHandler.call_action", _serialized)
    patch_required(_DYNAMODB_MODELS, "copy", lambda _: _TableBackupFreeCopy())
    patch_required(
        _DYNAMODB_TABLE,
        "Table.query",
        _query_one_partition,
        check=lambda query: list(inspect.signature(query).parameters)[1:9] == _QUERY_PARAMETERS,
        problem="Table.query moved or its parameters changed",
    )
    patch_required(_DYNAMODB_TABLE, "Table.all_items", _all_items_of_partition)
    patch_required(_DYNAMODB_MODELS, "DynamoDBBackend.transact_write_items", _transact_with_item_backup)
    patch_required(
        _DYNAMODB_EXPRESSIONS,
        "UpdateExpressionParser.make",
        lambda make: staticmethod(functools.lru_cache(maxsize=1024)(make)),
    )
    patch_required(_DYNAMODB_COMPARISONS, "ConditionExpressionParser.parse", _parse_condition_once)
    # DynamoResult inherits execute_result: the patch gives it its own, restored by deleting it.
    patch_required(_DYNAMODB_RESPONSES, "DynamoResult.execute_result", _dynamodb_result_as_json, own=False)

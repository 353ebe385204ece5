"""Items read from the table as stored, for tests that check what a write left on an item (an
attribute's absence, a field no record declares). Services read the typed records
(domain/execution_record.py, domain/records.py); the stores offer no raw read."""

from __future__ import annotations

from typing import Any

from relayflow_runtime.adapters.table.base import strip_keys
from relayflow_runtime.adapters.table.keys import execution_key
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import deps


def execution_item(tenant: str, execution_id: str) -> dict[str, Any]:
    """The execution item's attributes as stored (without its keys); NotFound when it is gone."""
    table = deps.stores().executions.table
    item = table.get_item(Key=execution_key(tenant, execution_id), ConsistentRead=True).get("Item")
    if not item:
        raise NotFound(f"execution '{execution_id}' does not exist.", code="execution_not_found")
    return strip_keys(item)

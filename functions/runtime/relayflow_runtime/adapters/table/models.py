"""Models: one item each, listed oldest first.

A model's rate-limit windows share its partition (adapters/rate_windows.py).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from typing import Any

from relayflow_runtime.adapters.table.base import BaseStore
from relayflow_runtime.adapters.table.keys import tenant_pk


class ModelStore(BaseStore):
    """Models."""

    def put_model(self, tenant: str, model: dict[str, Any]) -> None:
        self._put_listed(tenant, "model", "M", model, "MS")

    def get_model(self, tenant: str, model_id: str) -> dict[str, Any]:
        return self._get(tenant_pk(tenant, "M", model_id), "M", "model", model_id)

    def list_models(self, tenant: str, limit: int, next_token: str | None) -> tuple[list[dict], str | None]:
        return self._list_listed(tenant, "MS", limit, next_token, newest_first=False)

    def delete_model(self, tenant: str, model_id: str) -> None:
        self.table.delete_item(Key={"pk": tenant_pk(tenant, "M", model_id), "sk": "M"})

"""Models: one item each, listed oldest first.

A model's rate-limit windows share its partition (adapters/rate_windows.py).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from relayflow_runtime.adapters.table.base import BaseStore
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.domain.records import ModelRecord


class ModelStore(BaseStore):
    """Models."""

    def put_model(self, tenant: str, model: ModelRecord) -> None:
        self._put_listed(tenant, "model", "M", model.item(), "MS")

    def get_model(self, tenant: str, model_id: str) -> ModelRecord:
        return ModelRecord.model_validate(self._get(tenant_pk(tenant, "M", model_id), "M", "model", model_id))

    def list_models(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[ModelRecord], str | None]:
        items, token = self._list_listed(tenant, "MS", limit, next_token, newest_first=False)
        return [ModelRecord.model_validate(i) for i in items], token

    def delete_model(self, tenant: str, model_id: str) -> None:
        self.table.delete_item(Key={"pk": tenant_pk(tenant, "M", model_id), "sk": "M"})

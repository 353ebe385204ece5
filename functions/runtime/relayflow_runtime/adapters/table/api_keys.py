"""API keys: the authorizer's one GetItem (see services/apikeys.py).

The one key not led by the tenant: the authorizer learns the tenant from it. It holds only the
SHA-256 of the key. ``expires_at`` is the table's TTL attribute (epoch seconds): the key's own
expiry is stored as ``valid_until`` and answered as ``expires_at`` (domain/records.ApiKeyRecord).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from boto3.dynamodb.conditions import Attr, Key

from relayflow_runtime.adapters.table.base import BaseStore, ConditionFailed, strip_keys
from relayflow_runtime.domain.records import ApiKeyRecord
from relayflow_runtime.errors import NotFound


class ApiKeyStore(BaseStore):
    """API keys, by key id."""

    @staticmethod
    def _api_key_key(key_id: str) -> dict[str, str]:
        return {"pk": f"KEY#{key_id}", "sk": "KEY"}

    def put_api_key(self, tenant: str, api_key: ApiKeyRecord, *, ttl_epoch: int | None = None) -> None:
        item: dict[str, object] = {
            **api_key.item(),
            **self._api_key_key(api_key.id),
            "tenant": tenant,
            "kind": "api_key",
            "gsi1pk": f"T#{tenant}#KEYS",
            "gsi1sk": f"{api_key.created_at}#{api_key.id}",
        }
        if ttl_epoch is not None:
            item["expires_at"] = ttl_epoch  # DynamoDB TTL: expired keys are removed some time later
        self._put(item, must_not_exist=True)

    def find_api_key(self, key_id: str) -> tuple[str, ApiKeyRecord] | None:
        """The owning tenant and the record of a key id, or None (one strongly consistent GetItem)."""
        item = self.table.get_item(Key=self._api_key_key(key_id), ConsistentRead=True).get("Item")
        if not item or item.get("kind") != "api_key":
            return None
        return str(item["tenant"]), ApiKeyRecord.model_validate(strip_keys(item))

    def get_api_key(self, tenant: str, key_id: str) -> ApiKeyRecord:
        found = self.find_api_key(key_id)
        if found is None or found[0] != tenant:
            raise NotFound(f"API key '{key_id}' does not exist.", code="api_key_not_found")
        return found[1]

    def list_api_keys(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[ApiKeyRecord], str | None]:
        records, token = self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#KEYS"),
            index="gsi1",
            limit=limit,
            next_token=next_token,
            forward=False,
        )
        return [ApiKeyRecord.model_validate(r) for r in records], token

    def all_api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        items = self._query_all(Key("gsi1pk").eq(f"T#{tenant}#KEYS"), "gsi1")
        return [ApiKeyRecord.model_validate(strip_keys(i)) for i in items]

    def revoke_api_key(self, tenant: str, key_id: str, now: str) -> ApiKeyRecord:
        """Mark the key revoked (once; a second revoke keeps the first time)."""
        try:
            item = self._update(
                self._api_key_key(key_id),
                {"revoked_at": now},
                condition=Attr("tenant").eq(tenant) & Attr("revoked_at").not_exists(),
            )
            return ApiKeyRecord.model_validate(item)
        except ConditionFailed:
            return self.get_api_key(tenant, key_id)

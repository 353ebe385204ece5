"""The S3 trigger's markers of the uploads it has seen (services/uploads.py).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from relayflow_runtime.adapters.codec import to_dynamo
from relayflow_runtime.adapters.table.base import BaseStore, strip_keys
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.domain.records import UploadMarker, UploadUpdate


class UploadStore(BaseStore):
    """Upload markers: claimed once, updated under the claim."""

    @staticmethod
    def _upload_key(tenant: str, digest: str) -> dict[str, str]:
        return {"pk": tenant_pk(tenant, "UP", digest), "sk": "UP"}

    def claim_upload(
        self, tenant: str, digest: str, marker: UploadMarker, *, now_epoch: int, expires_epoch: int
    ) -> bool:
        """Record an upload as seen until ``expires_epoch`` (the item's TTL); False if a live marker
        (one not past its expires_at) exists."""
        item = {
            **marker.item(),
            **self._upload_key(tenant, digest),
            "tenant": tenant,
            "kind": "upload",
            "expires_at": expires_epoch,
        }
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

    def get_upload(self, tenant: str, digest: str) -> UploadMarker | None:
        key = self._upload_key(tenant, digest)
        item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
        return UploadMarker.model_validate(strip_keys(item)) if item else None

    def update_upload(
        self, tenant: str, digest: str, fields: UploadUpdate, *, expect: UploadUpdate | None = None
    ) -> None:
        """Update a marker; with expect, only while those attributes hold those values."""
        condition: Any = Attr("pk").exists()
        for name, value in (expect or {}).items():
            condition = condition & Attr(name).eq(value)
        self._update(self._upload_key(tenant, digest), fields, condition=condition, return_values="NONE")

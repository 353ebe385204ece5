"""Datasets, their versions and their file uploads (see services/dataset_service.py).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from boto3.dynamodb.conditions import Attr, Key

from relayflow_runtime.adapters.table.base import BaseStore, ConditionFailed, strip_keys
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.domain.records import (
    DatasetRecord,
    DatasetUploadRecord,
    DatasetVersionRecord,
    DatasetVersionUpdate,
)
from relayflow_runtime.errors import NotFound


class DatasetStore(BaseStore):
    """Datasets, versions and uploads: one partition per dataset."""

    @staticmethod
    def _dataset_key(tenant: str, dataset_id: str, sk: str = "D") -> dict[str, str]:
        return {"pk": tenant_pk(tenant, "D", dataset_id), "sk": sk}

    def put_dataset(self, tenant: str, dataset: DatasetRecord) -> None:
        self._put_listed(tenant, "dataset", "D", dataset.item(), "DS")

    def get_dataset(self, tenant: str, dataset_id: str) -> DatasetRecord:
        item = self._get(tenant_pk(tenant, "D", dataset_id), "D", "dataset", dataset_id)
        return DatasetRecord.model_validate(item)

    def list_datasets(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[DatasetRecord], str | None]:
        items, token = self._list_listed(tenant, "DS", limit, next_token)
        return [DatasetRecord.model_validate(i) for i in items], token

    def next_dataset_version_number(self, tenant: str, dataset_id: str, now: str) -> int:
        try:
            attrs = self._update(
                self._dataset_key(tenant, dataset_id), {"updated_at": now}, add={"version_count": 1}
            )
        except ConditionFailed as exc:
            raise NotFound(f"dataset '{dataset_id}' does not exist.", code="dataset_not_found") from exc
        return int(attrs["version_count"])

    def delete_dataset(self, tenant: str, dataset_id: str) -> None:
        items = self._query_all(Key("pk").eq(tenant_pk(tenant, "D", dataset_id)))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items)

    def put_dataset_version(self, tenant: str, version: DatasetVersionRecord) -> None:
        self._put(
            {
                **version.item(),
                **self._dataset_key(tenant, version.dataset_id, f"V#{version.id}"),
                "tenant": tenant,
                "kind": "dataset_version",
            },
            must_not_exist=True,
        )

    def get_dataset_version(self, tenant: str, dataset_id: str, version_id: str) -> DatasetVersionRecord:
        item = self._get(tenant_pk(tenant, "D", dataset_id), f"V#{version_id}", "dataset version", version_id)
        return DatasetVersionRecord.model_validate(item)

    def list_dataset_versions(self, tenant: str, dataset_id: str) -> list[DatasetVersionRecord]:
        condition = Key("pk").eq(tenant_pk(tenant, "D", dataset_id)) & Key("sk").begins_with("V#")
        return [DatasetVersionRecord.model_validate(strip_keys(i)) for i in self._query_all(condition)]

    def update_dataset_version(
        self,
        tenant: str,
        dataset_id: str,
        version_id: str,
        fields: DatasetVersionUpdate,
        *,
        only_if_status: Iterable[str] = (),
        or_processing_since_before: str | None = None,
    ) -> DatasetVersionRecord:
        """Raises ConditionFailed when the version is not in one of only_if_status (nor, when
        or_processing_since_before is given, ``processing`` since before that time)."""
        allowed = list(only_if_status)
        condition = Attr("pk").exists() & Attr("status").is_in(allowed) if allowed else None
        if condition is not None and or_processing_since_before:
            stale = Attr("status").eq("processing") & Attr("updated_at").lt(or_processing_since_before)
            condition = Attr("pk").exists() & (Attr("status").is_in(allowed) | stale)
        key = self._dataset_key(tenant, dataset_id, f"V#{version_id}")
        return DatasetVersionRecord.model_validate(self._update(key, fields, condition=condition))

    def delete_dataset_version(self, tenant: str, dataset_id: str, version_id: str) -> None:
        self.table.delete_item(Key=self._dataset_key(tenant, dataset_id, f"V#{version_id}"))

    def put_dataset_upload(self, tenant: str, upload: DatasetUploadRecord, expires_epoch: int) -> None:
        self._put(
            {
                **upload.item(),
                **self._dataset_key(tenant, upload.dataset_id, f"U#{upload.id}"),
                "tenant": tenant,
                "kind": "dataset_upload",
                "expires_at": expires_epoch,
            },
            must_not_exist=True,
        )

    def get_dataset_upload(self, tenant: str, dataset_id: str, upload_id: str) -> DatasetUploadRecord:
        item = self._get(tenant_pk(tenant, "D", dataset_id), f"U#{upload_id}", "upload", upload_id)
        return DatasetUploadRecord.model_validate(item)

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

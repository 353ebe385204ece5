"""Workflows, their versions, and the versions' nodes and edges.

The workflow item also numbers its versions and its executions (``version_count``,
``execution_count``).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from boto3.dynamodb.conditions import Key

from relayflow_runtime.adapters.table.base import BaseStore, ConditionFailed, strip_keys
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.errors import NotFound


def _workflow_key(tenant: str, workflow_id: str) -> dict[str, str]:
    return {"pk": tenant_pk(tenant, "WF", workflow_id), "sk": "WF"}


class WorkflowStore(BaseStore):
    """Workflows, versions, nodes and edges."""

    # ---- workflows -------------------------------------------------------------------------------
    def put_workflow(self, tenant: str, workflow: dict[str, Any]) -> None:
        self._put_listed(tenant, "workflow", "WF", workflow, "WFS")

    def get_workflow(self, tenant: str, workflow_id: str) -> dict[str, Any]:
        return self._get(tenant_pk(tenant, "WF", workflow_id), "WF", "workflow", workflow_id)

    def list_workflows(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return self._list_listed(tenant, "WFS", limit, next_token)

    def update_workflow(
        self, tenant: str, workflow_id: str, fields: dict[str, Any], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        try:
            return self._update(_workflow_key(tenant, workflow_id), fields, remove=remove)
        except ConditionFailed as exc:
            raise NotFound(f"workflow '{workflow_id}' does not exist.", code="workflow_not_found") from exc

    def next_execution_number(self, tenant: str, workflow_id: str) -> int:
        attrs = self._update(_workflow_key(tenant, workflow_id), {}, add={"execution_count": 1})
        return int(attrs["execution_count"])

    def next_version_number(self, tenant: str, workflow_id: str) -> int:
        attrs = self._update(_workflow_key(tenant, workflow_id), {}, add={"version_count": 1})
        return int(attrs["version_count"])

    def delete_workflow(self, tenant: str, workflow_id: str) -> None:
        keys = [_workflow_key(tenant, workflow_id)]
        for version in self._query_all(Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#VS"), "gsi1"):
            keys.extend(
                {"pk": i["pk"], "sk": i["sk"]}
                for i in self._query_all(Key("pk").eq(tenant_pk(tenant, "V", version["id"])))
            )
        self._delete_keys(keys)

    # ---- versions, nodes, edges ------------------------------------------------------------------
    def put_version(self, tenant: str, version: dict[str, Any]) -> None:
        self._put(
            {
                **version,
                "pk": tenant_pk(tenant, "V", version["id"]),
                "sk": "V",
                "tenant": tenant,
                "kind": "version",
                "gsi1pk": f"T#{tenant}#WF#{version['workflow_id']}#VS",
                "gsi1sk": f"{version['number']:08d}",
            },
            must_not_exist=True,
        )

    def get_version(self, tenant: str, version_id: str) -> dict[str, Any]:
        return self._get(tenant_pk(tenant, "V", version_id), "V", "version", version_id)

    def list_versions(self, tenant: str, workflow_id: str) -> list[dict[str, Any]]:
        items = self._query_all(Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#VS"), "gsi1")
        return [strip_keys(i) for i in items]

    def update_version(self, tenant: str, version_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._update({"pk": tenant_pk(tenant, "V", version_id), "sk": "V"}, fields)
        except ConditionFailed as exc:
            raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found") from exc

    def delete_version(self, tenant: str, version_id: str) -> None:
        items = self._query_all(Key("pk").eq(tenant_pk(tenant, "V", version_id)))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items)

    def version_graph(self, tenant: str, version_id: str) -> tuple[dict[str, Any], list[dict], list[dict]]:
        """The version with its nodes (in creation order) and edges, in one query."""
        version: dict[str, Any] | None = None
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for item in self._query_all(Key("pk").eq(tenant_pk(tenant, "V", version_id))):
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
                "pk": tenant_pk(tenant, "V", version_id),
                "sk": f"{prefix}#{child['id']}",
                "tenant": tenant,
                "kind": "node" if prefix == "N" else "edge",
            },
            must_not_exist=True,
        )

    def get_child(self, tenant: str, version_id: str, prefix: str, child_id: str) -> dict[str, Any]:
        what = "node" if prefix == "N" else "edge"
        return self._get(tenant_pk(tenant, "V", version_id), f"{prefix}#{child_id}", what, child_id)

    def update_child(
        self, tenant: str, version_id: str, prefix: str, child_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            return self._update(
                {"pk": tenant_pk(tenant, "V", version_id), "sk": f"{prefix}#{child_id}"}, fields
            )
        except ConditionFailed as exc:
            what = "node" if prefix == "N" else "edge"
            raise NotFound(f"{what} '{child_id}' does not exist.", code=f"{what}_not_found") from exc

    def delete_children(self, tenant: str, version_id: str, sks: Iterable[str]) -> None:
        self._delete_keys({"pk": tenant_pk(tenant, "V", version_id), "sk": sk} for sk in sks)

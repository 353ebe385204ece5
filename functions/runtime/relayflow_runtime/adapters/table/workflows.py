"""Workflows, their versions, and the versions' nodes and edges.

The workflow item also numbers its versions and its executions (``version_count``,
``execution_count``). What crosses into the services is the typed records of domain/records.py.

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from boto3.dynamodb.conditions import Key

from relayflow_runtime.adapters.table.base import BaseStore, ConditionFailed, strip_keys
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.domain.records import (
    EdgeRecord,
    GraphNodeRecord,
    GraphNodeUpdate,
    VersionGraph,
    VersionRecord,
    VersionUpdate,
    WorkflowRecord,
    WorkflowUpdate,
)
from relayflow_runtime.errors import NotFound


def _workflow_key(tenant: str, workflow_id: str) -> dict[str, str]:
    return {"pk": tenant_pk(tenant, "WF", workflow_id), "sk": "WF"}


class WorkflowStore(BaseStore):
    """Workflows, versions, nodes and edges."""

    # ---- workflows -------------------------------------------------------------------------------
    def put_workflow(self, tenant: str, workflow: WorkflowRecord) -> None:
        self._put_listed(tenant, "workflow", "WF", workflow.item(), "WFS")

    def get_workflow(self, tenant: str, workflow_id: str) -> WorkflowRecord:
        item = self._get(tenant_pk(tenant, "WF", workflow_id), "WF", "workflow", workflow_id)
        return WorkflowRecord.model_validate(item)

    def list_workflows(
        self, tenant: str, limit: int, next_token: str | None
    ) -> tuple[list[WorkflowRecord], str | None]:
        items, token = self._list_listed(tenant, "WFS", limit, next_token)
        return [WorkflowRecord.model_validate(i) for i in items], token

    def update_workflow(self, tenant: str, workflow_id: str, fields: WorkflowUpdate) -> WorkflowRecord:
        try:
            return WorkflowRecord.model_validate(self._update(_workflow_key(tenant, workflow_id), fields))
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
    def put_version(self, tenant: str, version: VersionRecord) -> None:
        self._put(
            {
                **version.item(),
                "pk": tenant_pk(tenant, "V", version.id),
                "sk": "V",
                "tenant": tenant,
                "kind": "version",
                "gsi1pk": f"T#{tenant}#WF#{version.workflow_id}#VS",
                "gsi1sk": f"{version.number:08d}",
            },
            must_not_exist=True,
        )

    def get_version(self, tenant: str, version_id: str) -> VersionRecord:
        return VersionRecord.model_validate(
            self._get(tenant_pk(tenant, "V", version_id), "V", "version", version_id)
        )

    def list_versions(self, tenant: str, workflow_id: str) -> list[VersionRecord]:
        items = self._query_all(Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#VS"), "gsi1")
        return [VersionRecord.model_validate(strip_keys(i)) for i in items]

    def update_version(self, tenant: str, version_id: str, fields: VersionUpdate) -> VersionRecord:
        try:
            item = self._update({"pk": tenant_pk(tenant, "V", version_id), "sk": "V"}, fields)
        except ConditionFailed as exc:
            raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found") from exc
        return VersionRecord.model_validate(item)

    def delete_version(self, tenant: str, version_id: str) -> None:
        items = self._query_all(Key("pk").eq(tenant_pk(tenant, "V", version_id)))
        self._delete_keys({"pk": i["pk"], "sk": i["sk"]} for i in items)

    def version_graph(self, tenant: str, version_id: str) -> VersionGraph:
        """The version with its nodes (in creation order) and edges, in one query."""
        version: VersionRecord | None = None
        nodes: list[GraphNodeRecord] = []
        edges: list[EdgeRecord] = []
        for item in self._query_all(Key("pk").eq(tenant_pk(tenant, "V", version_id))):
            if item["sk"] == "V":
                version = VersionRecord.model_validate(strip_keys(item))
            elif item["sk"].startswith("N#"):
                nodes.append(GraphNodeRecord.model_validate(strip_keys(item)))
            elif item["sk"].startswith("E#"):
                edges.append(EdgeRecord.model_validate(strip_keys(item)))
        if version is None:
            raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found")
        nodes.sort(key=lambda n: (n.position, n.created_at))
        edges.sort(key=lambda e: e.created_at)
        return version, nodes, edges

    def _put_child(self, tenant: str, version_id: str, sk: str, kind: str, child: dict[str, object]) -> None:
        self._put(
            {**child, "pk": tenant_pk(tenant, "V", version_id), "sk": sk, "tenant": tenant, "kind": kind},
            must_not_exist=True,
        )

    def put_node(self, tenant: str, node: GraphNodeRecord) -> None:
        self._put_child(tenant, node.version_id, f"N#{node.id}", "node", node.item())

    def put_edge(self, tenant: str, edge: EdgeRecord) -> None:
        self._put_child(tenant, edge.version_id, f"E#{edge.id}", "edge", edge.item())

    def get_node(self, tenant: str, version_id: str, node_id: str) -> GraphNodeRecord:
        item = self._get(tenant_pk(tenant, "V", version_id), f"N#{node_id}", "node", node_id)
        return GraphNodeRecord.model_validate(item)

    def get_edge(self, tenant: str, version_id: str, edge_id: str) -> EdgeRecord:
        item = self._get(tenant_pk(tenant, "V", version_id), f"E#{edge_id}", "edge", edge_id)
        return EdgeRecord.model_validate(item)

    def update_node(
        self, tenant: str, version_id: str, node_id: str, fields: GraphNodeUpdate
    ) -> GraphNodeRecord:
        try:
            item = self._update({"pk": tenant_pk(tenant, "V", version_id), "sk": f"N#{node_id}"}, fields)
        except ConditionFailed as exc:
            raise NotFound(f"node '{node_id}' does not exist.", code="node_not_found") from exc
        return GraphNodeRecord.model_validate(item)

    def delete_children(self, tenant: str, version_id: str, sks: Iterable[str]) -> None:
        self._delete_keys({"pk": tenant_pk(tenant, "V", version_id), "sk": sk} for sk in sks)

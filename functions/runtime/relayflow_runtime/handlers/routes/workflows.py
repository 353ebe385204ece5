"""Workflows, versions, nodes and edges."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from relayflow_runtime.handlers.context import current_tenant, page
from relayflow_runtime.schemas import api
from relayflow_runtime.services import authoring, plan

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post("/workflows", tags=["workflows"], status_code=201)
def create_workflow(body: api.CreateWorkflow) -> tuple[dict[str, Any], int]:
    return authoring.create_workflow(_tenant(), body).model_dump(mode="json"), 201


@router.get("/workflows", tags=["workflows"])
def list_workflows(
    limit: Annotated[int, Query(ge=1, le=200)] = 50, next_token: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    return page(*authoring.list_workflows(_tenant(), limit, next_token))


@router.get("/workflows/<workflow_id>", tags=["workflows"])
def get_workflow(workflow_id: str) -> dict[str, Any]:
    return authoring.get_workflow(_tenant(), workflow_id).model_dump(mode="json")


@router.patch("/workflows/<workflow_id>", tags=["workflows"])
def update_workflow(workflow_id: str, body: api.UpdateWorkflow) -> dict[str, Any]:
    return authoring.update_workflow(_tenant(), workflow_id, body).model_dump(mode="json")


@router.delete("/workflows/<workflow_id>", tags=["workflows"])
def delete_workflow(workflow_id: str) -> tuple[dict[str, Any], int]:
    authoring.delete_workflow(_tenant(), workflow_id)
    return {"deleted": workflow_id}, 200


@router.post("/workflows/<workflow_id>/versions", tags=["versions"], status_code=201)
def create_version(workflow_id: str, body: api.CreateVersion) -> tuple[dict[str, Any], int]:
    return authoring.create_version(_tenant(), workflow_id, body).model_dump(mode="json"), 201


@router.get("/workflows/<workflow_id>/versions", tags=["versions"])
def list_versions(workflow_id: str) -> dict[str, Any]:
    return page(authoring.list_versions(_tenant(), workflow_id), None)


@router.get("/workflows/<workflow_id>/versions/<version_id>", tags=["versions"])
def get_version(workflow_id: str, version_id: str) -> dict[str, Any]:
    return authoring.get_version(_tenant(), version_id, workflow_id=workflow_id).model_dump(mode="json")


@router.patch("/workflows/<workflow_id>/versions/<version_id>", tags=["versions"])
def update_version(workflow_id: str, version_id: str, body: api.UpdateVersion) -> dict[str, Any]:
    return authoring.update_version(_tenant(), workflow_id, version_id, body).model_dump(mode="json")


@router.delete("/workflows/<workflow_id>/versions/<version_id>", tags=["versions"])
def delete_version(workflow_id: str, version_id: str) -> dict[str, Any]:
    authoring.delete_version(_tenant(), workflow_id, version_id)
    return {"deleted": version_id}


@router.post("/workflows/<workflow_id>/versions/<version_id>/validate", tags=["versions"])
def validate_version(
    workflow_id: str,
    version_id: str,
    input_mode: Annotated[
        Literal["single", "batch"],
        Query(description="Check templates as for this kind of run ('item' exists only in batch runs)."),
    ] = "single",
) -> dict[str, Any]:
    problems = plan.validate_version(_tenant(), workflow_id, version_id, batch=input_mode == "batch")
    return {"valid": not problems, "problems": [p.model_dump() for p in problems]}


@router.post("/versions/<version_id>/nodes", tags=["nodes"], status_code=201)
def create_node(version_id: str, body: api.CreateNode) -> tuple[dict[str, Any], int]:
    return authoring.create_node(_tenant(), version_id, body).model_dump(mode="json"), 201


@router.get("/versions/<version_id>/nodes", tags=["nodes"])
def list_nodes(version_id: str) -> dict[str, Any]:
    return page(authoring.list_nodes(_tenant(), version_id), None)


@router.get("/versions/<version_id>/nodes/<node_id>", tags=["nodes"])
def get_node(version_id: str, node_id: str) -> dict[str, Any]:
    return authoring.get_node(_tenant(), version_id, node_id).model_dump(mode="json")


@router.patch("/versions/<version_id>/nodes/<node_id>", tags=["nodes"])
def update_node(version_id: str, node_id: str, body: api.UpdateNode) -> dict[str, Any]:
    return authoring.update_node(_tenant(), version_id, node_id, body).model_dump(mode="json")


@router.delete("/versions/<version_id>/nodes/<node_id>", tags=["nodes"])
def delete_node(version_id: str, node_id: str) -> dict[str, Any]:
    authoring.delete_node(_tenant(), version_id, node_id)
    return {"deleted": node_id}


@router.post("/versions/<version_id>/edges", tags=["edges"], status_code=201)
def create_edge(version_id: str, body: api.CreateEdge) -> tuple[dict[str, Any], int]:
    return authoring.create_edge(_tenant(), version_id, body).model_dump(mode="json"), 201


@router.get("/versions/<version_id>/edges", tags=["edges"])
def list_edges(version_id: str) -> dict[str, Any]:
    return page(authoring.list_edges(_tenant(), version_id), None)


@router.delete("/versions/<version_id>/edges/<edge_id>", tags=["edges"])
def delete_edge(version_id: str, edge_id: str) -> dict[str, Any]:
    authoring.delete_edge(_tenant(), version_id, edge_id)
    return {"deleted": edge_id}

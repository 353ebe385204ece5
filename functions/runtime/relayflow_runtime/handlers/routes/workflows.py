"""Workflows, versions, nodes and edges."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from relayflow_runtime.errors import referenced
from relayflow_runtime.handlers.context import Limit, NextToken, current_tenant
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import Workflow, WorkflowEdge, WorkflowNode, WorkflowVersion
from relayflow_runtime.schemas.responses import (
    Deleted,
    ValidationReport,
    WorkflowEdgePage,
    WorkflowNodePage,
    WorkflowPage,
    WorkflowVersionPage,
)
from relayflow_runtime.services import authoring, plan

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


# ---- workflows ----------------------------------------------------------------------------------------
@router.post(
    "/workflows",
    operation_id="createWorkflow",
    summary="Create a workflow",
    description="A workflow is a versioned graph of model nodes; create a version next.",
    tags=["workflows"],
    status_code=201,
    response_description="The workflow",
)
def create_workflow(body: api.CreateWorkflow) -> Workflow:
    return authoring.create_workflow(_tenant(), body)


@router.get(
    "/workflows",
    operation_id="getWorkflows",
    summary="List workflows",
    description="Newest first, a page at a time.",
    tags=["workflows"],
    response_description="A page of workflows",
)
def list_workflows(limit: Limit = 50, next_token: NextToken = None) -> WorkflowPage:
    items, token = authoring.list_workflows(_tenant(), limit, next_token)
    return WorkflowPage(items=items, next_token=token)


@router.get(
    "/workflows/<workflow_id>",
    operation_id="getWorkflow",
    summary="Get a workflow",
    tags=["workflows"],
    response_description="The workflow",
)
def get_workflow(workflow_id: str) -> Workflow:
    return authoring.get_workflow(_tenant(), workflow_id)


@router.patch(
    "/workflows/<workflow_id>",
    operation_id="updateWorkflow",
    summary="Update a workflow",
    description="Change its name, description, active version or callback URL: omit a field to keep "
    "it; `callback_url: null` removes the callback URL.",
    tags=["workflows"],
    response_description="The workflow, updated",
)
def update_workflow(workflow_id: str, body: api.UpdateWorkflow) -> Workflow:
    return authoring.update_workflow(_tenant(), workflow_id, body)


@router.delete(
    "/workflows/<workflow_id>",
    operation_id="deleteWorkflow",
    summary="Delete a workflow",
    description="With its versions, nodes, edges and webhook secret.",
    tags=["workflows"],
    response_description="The id of the deleted workflow",
)
def delete_workflow(workflow_id: str) -> Deleted:
    authoring.delete_workflow(_tenant(), workflow_id)
    return Deleted(deleted=workflow_id)


# ---- versions -----------------------------------------------------------------------------------------
@router.post(
    "/workflows/<workflow_id>/versions",
    operation_id="createWorkflowVersion",
    summary="Create a version",
    description="A version holds the nodes and edges, and the retry policy and default node timeout "
    "(`config`). The first version of a workflow becomes its active version.",
    tags=["versions"],
    status_code=201,
    response_description="The version",
)
def create_version(workflow_id: str, body: api.CreateVersion) -> WorkflowVersion:
    return authoring.create_version(_tenant(), workflow_id, body)


@router.get(
    "/workflows/<workflow_id>/versions",
    operation_id="getWorkflowVersions",
    summary="List a workflow's versions",
    description="Every version, in one page (`next_token` is always null).",
    tags=["versions"],
    response_description="The versions",
)
def list_versions(workflow_id: str) -> WorkflowVersionPage:
    return WorkflowVersionPage(items=authoring.list_versions(_tenant(), workflow_id))


@router.get(
    "/workflows/<workflow_id>/versions/<version_id>",
    operation_id="getWorkflowVersion",
    summary="Get a version",
    tags=["versions"],
    response_description="The version",
)
def get_version(workflow_id: str, version_id: str) -> WorkflowVersion:
    return authoring.get_version(_tenant(), version_id, workflow_id=workflow_id)


UPDATE_VERSION_EXAMPLES = {
    "retries": {
        "summary": "Retry policy (reference docs: Retry Logic)",
        "description": "Default: 3 retries with exponential backoff; configurable per version.",
        "value": {"config": {"max_retries": 5, "retry_delay_seconds": 10}},
    }
}


@router.patch(
    "/workflows/<workflow_id>/versions/<version_id>",
    operation_id="updateWorkflowVersion",
    summary="Update a version",
    description="Rename it, or change its `config`: the fields given replace the current ones, the "
    "others are kept. The execution engine retries a failed node `max_retries` times with capped "
    "exponential backoff from `retry_delay_seconds` (full jitter).",
    tags=["versions"],
    response_description="The version, updated",
)
def update_version(
    workflow_id: str,
    version_id: str,
    body: Annotated[api.UpdateVersion, Body(openapi_examples=UPDATE_VERSION_EXAMPLES)],
) -> WorkflowVersion:
    return authoring.update_version(_tenant(), workflow_id, version_id, body)


@router.delete(
    "/workflows/<workflow_id>/versions/<version_id>",
    operation_id="deleteWorkflowVersion",
    summary="Delete a version",
    description="Not the active version (409 `active_version`): make another version active first.",
    tags=["versions"],
    response_description="The id of the deleted version",
)
def delete_version(workflow_id: str, version_id: str) -> Deleted:
    authoring.delete_version(_tenant(), workflow_id, version_id)
    return Deleted(deleted=version_id)


@router.post(
    "/workflows/<workflow_id>/versions/<version_id>/validate",
    operation_id="validateWorkflowVersion",
    summary="Check a version before running it",
    description="Every problem at once (graph, templates, models), saving nothing. A batch "
    "checked with a `dataset_id` and `dataset_version_id` (which make it a batch's) also renders each "
    f"template on the version's first {plan.FIELD_SAMPLE_ITEMS} items: `warnings` names the items "
    "that lack a field a template uses (the node would fail on them).",
    tags=["versions"],
    response_description="The problems found",
)
def validate_version(
    workflow_id: str,
    version_id: str,
    input_mode: Annotated[
        Literal["single", "batch"],
        Query(description="Check templates as for this kind of run ('item' exists only in batch runs)."),
    ] = "single",
    dataset_id: Annotated[
        str | None, Query(max_length=64, description="Batch: the dataset whose items to check against.")
    ] = None,
    dataset_version_id: Annotated[
        str | None, Query(max_length=64, description="Batch: that dataset's version (with dataset_id).")
    ] = None,
) -> ValidationReport:
    # A dataset to check against makes it a batch's validation.
    batch = input_mode == "batch" or dataset_id is not None or dataset_version_id is not None
    problems = plan.validate_version(_tenant(), workflow_id, version_id, batch=batch)
    with referenced("dataset_version_id"):
        warnings = plan.dataset_warnings(_tenant(), workflow_id, version_id, dataset_id, dataset_version_id)
    return ValidationReport(valid=not problems, problems=problems, warnings=warnings)


# ---- nodes --------------------------------------------------------------------------------------------
CREATE_NODE_EXAMPLES = {
    "timeout": {
        "summary": "Node-level timeout (reference docs: Node-Level Timeout)",
        "value": {
            "name": "Slow Model",
            "entity_type": "model",
            "entity_id": "model-id",
            "config": {"input_template": "{{input}}", "timeout": 120},
        },
    },
    "continue": {
        "summary": "Continue on failure (reference docs: Continue on Failure)",
        "value": {
            "name": "Optional Enhancement",
            "entity_type": "model",
            "entity_id": "model-id",
            "config": {"input_template": "{{input}}", "on_failure": "continue"},
        },
    },
    "json": {
        "summary": "A node whose output is JSON (its parsed value in parsed_output)",
        "value": {
            "name": "Sentiment",
            "entity_id": "model-id",
            "config": {"input_template": "{{input}}", "output_format": "json"},
        },
    },
}


@router.post(
    "/versions/<version_id>/nodes",
    operation_id="createWorkflowNode",
    summary="Add a node to a version",
    description="A node sends its `input_template`, rendered (Mustache: `{{input}}`, `{{nodes.NAME}}`, "
    "`{{item.FIELD}}` in batch runs), to a model. `timeout` is the node's own limit in seconds; "
    '`on_failure: "continue"` lets the run go on when the node fails; `output_format: "json"` '
    "parses the model's answer into `parsed_output` (the `output` stays the text).",
    tags=["nodes"],
    status_code=201,
    response_description="The node",
)
def create_node(
    version_id: str, body: Annotated[api.CreateNode, Body(openapi_examples=CREATE_NODE_EXAMPLES)]
) -> WorkflowNode:
    return authoring.create_node(_tenant(), version_id, body)


@router.get(
    "/versions/<version_id>/nodes",
    operation_id="getWorkflowNodes",
    summary="List a version's nodes",
    description="In creation order, in one page (`next_token` is always null).",
    tags=["nodes"],
    response_description="The nodes",
)
def list_nodes(version_id: str) -> WorkflowNodePage:
    return WorkflowNodePage(items=authoring.list_nodes(_tenant(), version_id))


@router.get(
    "/versions/<version_id>/nodes/<node_id>",
    operation_id="getWorkflowNode",
    summary="Get a node",
    tags=["nodes"],
    response_description="The node",
)
def get_node(version_id: str, node_id: str) -> WorkflowNode:
    return authoring.get_node(_tenant(), version_id, node_id)


@router.patch(
    "/versions/<version_id>/nodes/<node_id>",
    operation_id="updateWorkflowNode",
    summary="Update a node",
    description="Omit a field to keep it; the `config` fields given replace the current ones.",
    tags=["nodes"],
    response_description="The node, updated",
)
def update_node(version_id: str, node_id: str, body: api.UpdateNode) -> WorkflowNode:
    return authoring.update_node(_tenant(), version_id, node_id, body)


@router.delete(
    "/versions/<version_id>/nodes/<node_id>",
    operation_id="deleteWorkflowNode",
    summary="Delete a node",
    description="With its edges.",
    tags=["nodes"],
    response_description="The id of the deleted node",
)
def delete_node(version_id: str, node_id: str) -> Deleted:
    authoring.delete_node(_tenant(), version_id, node_id)
    return Deleted(deleted=node_id)


# ---- edges --------------------------------------------------------------------------------------------
@router.post(
    "/versions/<version_id>/edges",
    operation_id="createWorkflowEdge",
    summary="Connect two nodes",
    description="`end_node_id` runs after `begin_node_id` and reads its output. Without edges, nodes "
    "run in creation order, each reading the previous one's output.",
    tags=["edges"],
    status_code=201,
    response_description="The edge",
)
def create_edge(version_id: str, body: api.CreateEdge) -> WorkflowEdge:
    return authoring.create_edge(_tenant(), version_id, body)


@router.get(
    "/versions/<version_id>/edges",
    operation_id="getWorkflowEdges",
    summary="List a version's edges",
    description="In one page (`next_token` is always null).",
    tags=["edges"],
    response_description="The edges",
)
def list_edges(version_id: str) -> WorkflowEdgePage:
    return WorkflowEdgePage(items=authoring.list_edges(_tenant(), version_id))


@router.delete(
    "/versions/<version_id>/edges/<edge_id>",
    operation_id="deleteWorkflowEdge",
    summary="Delete an edge",
    tags=["edges"],
    response_description="The id of the deleted edge",
)
def delete_edge(version_id: str, edge_id: str) -> Deleted:
    authoring.delete_edge(_tenant(), version_id, edge_id)
    return Deleted(deleted=edge_id)

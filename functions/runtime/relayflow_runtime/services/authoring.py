"""Workflows, versions, nodes, edges and models: the authoring side of the API."""

from __future__ import annotations

from typing import Any, cast

from pydantic import ValidationError

from relayflow_runtime.domain.clock import new_id, now_iso
from relayflow_runtime.domain.graph import validate_graph, with_names
from relayflow_runtime.domain.limits import MAX_MODEL_CONFIG_BYTES, MAX_NODES_PER_VERSION
from relayflow_runtime.domain.records import (
    EdgeRecord,
    GraphNodeRecord,
    GraphNodeUpdate,
    ModelRecord,
    VersionGraph,
    VersionRecord,
    VersionUpdate,
    WorkflowRecord,
    WorkflowUpdate,
)
from relayflow_runtime.domain.templating import TemplateError, parse_template
from relayflow_runtime.domain.urls import callback_url_problem
from relayflow_runtime.errors import Conflict, InvalidInput, NotFound, referenced
from relayflow_runtime.providers import PROVIDERS, validate_model_config
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import (
    Model,
    NodeConfig,
    VersionConfig,
    Workflow,
    WorkflowEdge,
    WorkflowNode,
    WorkflowVersion,
)
from relayflow_runtime.services import deps
from relayflow_runtime.settings import get_settings


# ---- workflows -------------------------------------------------------------------------------------
def check_callback_url(url: str | None) -> None:
    """400 ``invalid_callback_url`` for a URL webhooks may not go to (domain/urls.py: http(s) only,
    no credentials, a valid host and port, no loopback/private/link-local/reserved address unless the
    deployment allows private addresses, WEBHOOK_ALLOW_PRIVATE_ADDRESSES)."""
    if url is None:
        return
    problem = callback_url_problem(url, allow_private=get_settings().webhook_allow_private_addresses)
    if problem:
        raise InvalidInput(problem, code="invalid_callback_url")


def create_workflow(tenant: str, body: api.CreateWorkflow) -> Workflow:
    check_callback_url(body.callback_url)
    now = now_iso()
    workflow = WorkflowRecord(id=new_id(), created_at=now, updated_at=now, **body.model_dump())
    deps.stores().workflows.put_workflow(tenant, workflow)
    return workflow.to_api()


def get_workflow(tenant: str, workflow_id: str, env: deps.Deps | None = None) -> Workflow:
    return deps.given(env).workflows.get_workflow(tenant, workflow_id).to_api()


def list_workflows(tenant: str, limit: int, next_token: str | None) -> tuple[list[Workflow], str | None]:
    records, token = deps.stores().workflows.list_workflows(tenant, limit, next_token)
    return [r.to_api() for r in records], token


def update_workflow(tenant: str, workflow_id: str, body: api.UpdateWorkflow) -> Workflow:
    get_workflow(tenant, workflow_id)
    # Every field the request set (tests/unit/test_records_cover_the_api.py: each is a key of
    # WorkflowUpdate), checked where it needs more than its model.
    fields = cast(WorkflowUpdate, body.model_dump(exclude_unset=True))
    if "callback_url" in fields:
        check_callback_url(body.callback_url)
    if "active_version_id" in fields and body.active_version_id:
        with referenced("active_version_id"):
            version = get_version(tenant, body.active_version_id)
            if version.workflow_id != workflow_id:
                raise NotFound(
                    f"version '{version.id}' is not a version of this workflow.",
                    code="version_of_other_workflow",
                )
    fields["updated_at"] = now_iso()
    return deps.stores().workflows.update_workflow(tenant, workflow_id, fields).to_api()


def delete_workflow(tenant: str, workflow_id: str) -> None:
    """The workflow, its versions with their nodes and edges, and its webhook signing secret."""
    get_workflow(tenant, workflow_id)
    # The secret first: a deletion cut short leaves a workflow that signs nothing and can be deleted
    # again, never a secret no route can reach (the workflow gone, DELETE answers 404).
    deps.stores().webhooks.delete_webhook_secret(tenant, workflow_id)
    deps.stores().workflows.delete_workflow(tenant, workflow_id)


# ---- versions --------------------------------------------------------------------------------------
def create_version(tenant: str, workflow_id: str, body: api.CreateVersion) -> WorkflowVersion:
    workflow = get_workflow(tenant, workflow_id)
    source: VersionGraph | None = None
    if body.copy_from_version_id:
        with referenced("copy_from_version_id"):
            source = _graph(tenant, body.copy_from_version_id, workflow_id, None)
    number = deps.stores().workflows.next_version_number(tenant, workflow_id)
    now = now_iso()
    config = body.config or (source[0].config if source else VersionConfig())
    version = VersionRecord(
        id=new_id(),
        workflow_id=workflow_id,
        number=number,
        name=body.name or f"v{number}",
        config=config,
        created_at=now,
        updated_at=now,
    )
    deps.stores().workflows.put_version(tenant, version)
    if source:
        _copy_graph(tenant, version, source[1], source[2])
    if not workflow.active_version_id:
        deps.stores().workflows.update_workflow(
            tenant, workflow_id, {"active_version_id": version.id, "updated_at": now}
        )
    return version.to_api()


def _copy_graph(
    tenant: str, version: VersionRecord, nodes: list[GraphNodeRecord], edges: list[EdgeRecord]
) -> None:
    new_ids = {n.id: new_id() for n in nodes}
    now = now_iso()
    for node in nodes:
        copy = node.model_copy(
            update={"id": new_ids[node.id], "version_id": version.id, "created_at": now, "updated_at": now}
        )
        deps.stores().workflows.put_node(tenant, copy)
    for edge in edges:
        copy_edge = edge.model_copy(
            update={
                "id": new_id(),
                "version_id": version.id,
                "begin_node_id": new_ids[edge.begin_node_id],
                "end_node_id": new_ids[edge.end_node_id],
                "created_at": now,
            }
        )
        deps.stores().workflows.put_edge(tenant, copy_edge)


def get_version(tenant: str, version_id: str, *, workflow_id: str | None = None) -> WorkflowVersion:
    version = deps.stores().workflows.get_version(tenant, version_id).to_api()
    if workflow_id and version.workflow_id != workflow_id:
        raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found")
    return version


def list_versions(tenant: str, workflow_id: str) -> list[WorkflowVersion]:
    get_workflow(tenant, workflow_id)
    return [v.to_api() for v in deps.stores().workflows.list_versions(tenant, workflow_id)]


def update_version(
    tenant: str, workflow_id: str, version_id: str, body: api.UpdateVersion
) -> WorkflowVersion:
    version = get_version(tenant, version_id, workflow_id=workflow_id)
    fields = VersionUpdate(updated_at=now_iso())
    if body.name is not None:
        fields["name"] = body.name
    if body.config is not None:
        merged = {**version.config.model_dump(), **body.config.model_dump(exclude_unset=True)}
        fields["config"] = _validated(VersionConfig, merged, "config").model_dump(mode="json")
    return deps.stores().workflows.update_version(tenant, version_id, fields).to_api()


def delete_version(tenant: str, workflow_id: str, version_id: str) -> None:
    get_version(tenant, version_id, workflow_id=workflow_id)
    workflow = get_workflow(tenant, workflow_id)
    if workflow.active_version_id == version_id:
        raise Conflict(
            "this is the workflow's active version; make another version active before deleting it.",
            code="active_version",
        )
    deps.stores().workflows.delete_version(tenant, version_id)


def _graph(tenant: str, version_id: str, workflow_id: str | None, env: deps.Deps | None) -> VersionGraph:
    """The version's records with its nodes and edges (404 for another workflow's version)."""
    graph = deps.given(env).workflows.version_graph(tenant, version_id)
    if workflow_id and graph[0].workflow_id != workflow_id:
        raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found")
    return graph


def version_graph(
    tenant: str, version_id: str, *, workflow_id: str | None = None, env: deps.Deps | None = None
) -> tuple[WorkflowVersion, list[WorkflowNode], list[WorkflowEdge]]:
    version, nodes, edges = _graph(tenant, version_id, workflow_id, env)
    return version.to_api(), [n.to_api() for n in nodes], [e.to_api() for e in edges]


# ---- nodes -----------------------------------------------------------------------------------------
def _validated(model: Any, value: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{what}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid {what}: {problems}", code=f"invalid_{what}") from exc


def _check_template(template: str) -> None:
    try:
        parse_template(template)
    except TemplateError as exc:
        raise InvalidInput(f"config.input_template: {exc}", code=exc.code) from exc


def create_node(tenant: str, version_id: str, body: api.CreateNode) -> WorkflowNode:
    version, nodes, _ = version_graph(tenant, version_id)
    with referenced("entity_id"):
        get_model(tenant, body.entity_id)
    _check_template(body.config.input_template)
    if len(nodes) >= MAX_NODES_PER_VERSION:
        raise Conflict(f"a version holds at most {MAX_NODES_PER_VERSION} nodes.", code="too_many_nodes")
    if any(n.name == body.name for n in nodes):
        raise Conflict(
            f"a node named '{body.name}' already exists in this version.", code="duplicate_node_name"
        )
    now = now_iso()
    node = GraphNodeRecord(
        id=new_id(),
        workflow_id=version.workflow_id,
        version_id=version_id,
        name=body.name,
        entity_type=body.entity_type,
        entity_id=body.entity_id,
        config=body.config,
        position=max((n.position for n in nodes), default=-1) + 1,
        created_at=now,
        updated_at=now,
    )
    deps.stores().workflows.put_node(tenant, node)
    return node.to_api()


def get_node(tenant: str, version_id: str, node_id: str) -> WorkflowNode:
    get_version(tenant, version_id)
    return deps.stores().workflows.get_node(tenant, version_id, node_id).to_api()


def list_nodes(tenant: str, version_id: str) -> list[WorkflowNode]:
    return version_graph(tenant, version_id)[1]


def update_node(tenant: str, version_id: str, node_id: str, body: api.UpdateNode) -> WorkflowNode:
    node = get_node(tenant, version_id, node_id)
    fields = GraphNodeUpdate(updated_at=now_iso())
    if body.name is not None and body.name != node.name:
        if any(n.name == body.name for n in list_nodes(tenant, version_id)):
            raise Conflict(
                f"a node named '{body.name}' already exists in this version.", code="duplicate_node_name"
            )
        fields["name"] = body.name
    if body.entity_id is not None:
        with referenced("entity_id"):
            get_model(tenant, body.entity_id)
        fields["entity_id"] = body.entity_id
    if body.config is not None:
        changes = body.config.model_dump(exclude_unset=True)
        merged = _validated(NodeConfig, {**node.config.model_dump(), **changes}, "config")
        _check_template(merged.input_template)
        fields["config"] = merged.model_dump(mode="json")
    return deps.stores().workflows.update_node(tenant, version_id, node_id, fields).to_api()


def delete_node(tenant: str, version_id: str, node_id: str) -> None:
    _, nodes, edges = version_graph(tenant, version_id)
    if not any(n.id == node_id for n in nodes):
        raise NotFound(f"node '{node_id}' does not exist.", code="node_not_found")
    touching = [f"E#{e.id}" for e in edges if node_id in (e.begin_node_id, e.end_node_id)]
    deps.stores().workflows.delete_children(tenant, version_id, [f"N#{node_id}", *touching])


# ---- edges -----------------------------------------------------------------------------------------
def create_edge(tenant: str, version_id: str, body: api.CreateEdge) -> WorkflowEdge:
    version, nodes, edges = version_graph(tenant, version_id)
    pairs = [(e.begin_node_id, e.end_node_id) for e in edges]
    candidate = (body.begin_node_id, body.end_node_id)
    if candidate in pairs:
        raise Conflict("this edge already exists.", code="duplicate_edge")
    problems = [
        p
        for p in validate_graph([n.id for n in nodes], [*pairs, candidate])
        if p.code in ("self_loop", "dangling_edge", "cycle")
    ]
    if problems:
        # A node that does not exist, a loop or a cycle: the edge conflicts with the graph.
        names = {n.id: n.name for n in nodes}
        messages = [with_names(p.message, names) for p in problems]
        raise Conflict(
            "; ".join(messages),
            code=problems[0].code,
            details=[
                {"code": p.code, "message": message, "node_id": p.node_id, "node_ids": list(p.node_ids)}
                for p, message in zip(problems, messages, strict=True)
            ],
        )
    edge = EdgeRecord(
        id=new_id(),
        workflow_id=version.workflow_id,
        version_id=version_id,
        begin_node_id=body.begin_node_id,
        end_node_id=body.end_node_id,
        created_at=now_iso(),
    )
    deps.stores().workflows.put_edge(tenant, edge)
    return edge.to_api()


def list_edges(tenant: str, version_id: str) -> list[WorkflowEdge]:
    return version_graph(tenant, version_id)[2]


def delete_edge(tenant: str, version_id: str, edge_id: str) -> None:
    deps.stores().workflows.get_edge(tenant, version_id, edge_id)
    deps.stores().workflows.delete_children(tenant, version_id, [f"E#{edge_id}"])


# ---- models ----------------------------------------------------------------------------------------
def create_model(tenant: str, body: api.CreateModel) -> Model:
    if body.provider not in PROVIDERS:
        raise InvalidInput(
            f"provider '{body.provider}' is not one of: {', '.join(PROVIDERS)}.", code="unknown_provider"
        )
    config = whole_numbers(body.config)
    problems = validate_model_config(body.provider, config)
    if problems:
        raise InvalidInput("invalid model config: " + "; ".join(problems), code="invalid_model_config")
    model = Model(id=new_id(), created_at=now_iso(), **{**body.model_dump(), "config": config})
    # The config is stored as its JSON text (domain/records.ModelRecord), which the limit measures.
    record = ModelRecord.of(model)
    if len(str(record.config).encode()) > MAX_MODEL_CONFIG_BYTES:
        raise InvalidInput(
            f"a model's config is at most {MAX_MODEL_CONFIG_BYTES} bytes of JSON (limit model_config).",
            code="model_config_too_large",
        )
    deps.stores().models.put_model(tenant, record)
    return model


def whole_numbers(value: Any) -> Any:
    """JSON has one number type: ``2.0`` is the integer 2 (as the document's ``integer`` says)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value


def get_model(tenant: str, model_id: str, env: deps.Deps | None = None) -> Model:
    return deps.given(env).models.get_model(tenant, model_id).to_api()


def list_models(tenant: str, limit: int, next_token: str | None) -> tuple[list[Model], str | None]:
    records, token = deps.stores().models.list_models(tenant, limit, next_token)
    return [r.to_api() for r in records], token


def delete_model(tenant: str, model_id: str) -> None:
    get_model(tenant, model_id)
    deps.stores().models.delete_model(tenant, model_id)

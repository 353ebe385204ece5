"""From a workflow version to an execution plan: the snapshot an execution runs with.

The plan (domain/engine.Plan) is what the state machines interpret and what the execution keeps, so
editing the version afterwards never changes the meaning of a run that already happened.
"""

from __future__ import annotations

from typing import Literal

from relayflow_runtime.domain.engine import ModelRef, NodeSpec, Plan
from relayflow_runtime.domain.graph import (
    BLOCKING_CODES,
    ancestors,
    parents,
    topological_order,
    validate_graph,
    with_names,
)
from relayflow_runtime.domain.limits import MAX_NODES_PER_VERSION
from relayflow_runtime.domain.templating import TemplateError, render, unavailable_variables
from relayflow_runtime.errors import Conflict, NotFound
from relayflow_runtime.schemas.entities import (
    Model,
    WorkflowEdge,
    WorkflowNode,
    WorkflowVersion,
)
from relayflow_runtime.schemas.responses import Problem
from relayflow_runtime.services import authoring, dataset_service, deps, retention


def _variable_problem(node: WorkflowNode, variable: str, names: set[str]) -> str:
    parts = variable.split(".")
    if parts[0] == "nodes" and len(parts) > 1 and parts[1] in names:
        why = f"node '{parts[1]}' is not upstream of '{node.name}' (connect it with edges)"
    elif parts[0] == "nodes" and len(parts) > 1:
        why = f"no node of this version is named '{parts[1]}'"
    elif parts[0] == "item":
        why = "'item' exists only in batch runs"
    else:
        why = f"'{parts[0]}' is not a template variable (use input, nodes.NAME or item.FIELD)"
    return f"node '{node.name}' uses {{{{{variable}}}}}, which nothing provides: {why}."


def _problems(
    tenant: str,
    version: WorkflowVersion,
    nodes: list[WorkflowNode],
    edges: list[WorkflowEdge],
    batch: bool,
    env: deps.Deps | None = None,
) -> tuple[list[Problem], dict[str, Model]]:
    ids = [n.id for n in nodes]
    names = {n.id: n.name for n in nodes}
    pairs = [(e.begin_node_id, e.end_node_id) for e in edges]
    problems = [
        Problem(
            code=p.code, message=with_names(p.message, names), node_id=p.node_id, node_ids=list(p.node_ids)
        )
        for p in validate_graph(ids, pairs)
    ]
    if len(nodes) > MAX_NODES_PER_VERSION:  # a version made before the cap was lowered
        problems.append(
            Problem(
                code="too_many_nodes",
                message=f"the version has {len(nodes)} nodes; a version runs at most {MAX_NODES_PER_VERSION} "
                "(delete nodes, or split the workflow).",
                node_ids=[],
            )
        )
    models: dict[str, Model] = {}
    for node in nodes:
        if node.entity_id in models:
            continue
        try:
            models[node.entity_id] = authoring.get_model(tenant, node.entity_id, env)
        except NotFound:
            problems.append(
                Problem(
                    code="unknown_model",
                    message=f"node '{node.name}' uses model '{node.entity_id}', which does not exist.",
                    node_id=node.id,
                    node_ids=[node.id],
                )
            )
    if any(p.code in BLOCKING_CODES for p in problems):
        return problems, models  # no order, so no upstream nodes to check the templates against
    upstream = ancestors(ids, pairs)
    for node in nodes:
        try:
            missing = unavailable_variables(
                node.config.input_template, [names[a] for a in upstream[node.id]], batch
            )
        except TemplateError as exc:
            problems.append(
                Problem(
                    code=exc.code, message=f"node '{node.name}': {exc}", node_id=node.id, node_ids=[node.id]
                )
            )
            continue
        for variable in sorted(missing):
            problems.append(
                Problem(
                    code="unknown_template_variable",
                    message=_variable_problem(node, variable, set(names.values())),
                    node_id=node.id,
                    node_ids=[node.id],
                )
            )
    return problems, models


def validate_version(tenant: str, workflow_id: str, version_id: str, batch: bool = False) -> list[Problem]:
    version, nodes, edges = authoring.version_graph(tenant, version_id, workflow_id=workflow_id)
    return _problems(tenant, version, nodes, edges, batch)[0]


#: Items of a dataset version a batch validation reads for the fields its templates use.
FIELD_SAMPLE_ITEMS = 50


class _AnyNode(dict[str, str]):
    """``nodes`` for rendering a template against an item alone: every node's output is empty."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> str:
        return ""


def dataset_warnings(
    tenant: str, workflow_id: str, version_id: str, dataset_id: str | None, dataset_version_id: str | None
) -> list[Problem]:
    """A batch validation's warnings about the dataset version it names (none without one)."""
    if dataset_id and dataset_version_id:
        return item_field_warnings(tenant, workflow_id, version_id, dataset_id, dataset_version_id)
    if dataset_id or dataset_version_id:
        given, missing = (
            ("dataset_id", "dataset_version_id") if dataset_id else ("dataset_version_id", "dataset_id")
        )
        return [
            Problem(
                code="dataset_incomplete",
                message=f"{given} without {missing}: no items were checked (give both).",
            )
        ]
    return []


def item_field_warnings(
    tenant: str, workflow_id: str, version_id: str, dataset_id: str, dataset_version_id: str
) -> list[Problem]:
    """A batch over this dataset version: for each node whose template needs an item field that
    some of the version's first FIELD_SAMPLE_ITEMS items lack (the node fails on them:
    ``unknown_variable``), a warning naming the field and those items. Each template is rendered
    against each sampled item, so only what fails at run time is warned about (a section over a
    missing field renders nothing, and is fine)."""
    _, nodes, _ = authoring.version_graph(tenant, version_id, workflow_id=workflow_id)
    items, _ = dataset_service.list_items(tenant, dataset_id, dataset_version_id, FIELD_SAMPLE_ITEMS, None)
    warnings: list[Problem] = []
    for node in nodes:
        lacking: dict[str, list[str]] = {}
        for item in items:
            try:
                render(node.config.input_template, {"input": "", "nodes": _AnyNode(), "item": item.data})
            except TemplateError as exc:
                if exc.code == "unknown_variable" and (exc.variable or "").startswith("item."):
                    lacking.setdefault(str(exc.variable), []).append(item.id)
        for variable, ids in sorted(lacking.items()):
            shown = ", ".join(repr(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
            warnings.append(
                Problem(
                    code="item_field_missing",
                    message=f"node '{node.name}' uses {{{{{variable}}}}}, which {len(ids)} of the first "
                    f"{len(items)} items of dataset version '{dataset_version_id}' lack ({shown}): the node "
                    "fails on them (unknown_variable).",
                    node_id=node.id,
                    node_ids=[node.id],
                )
            )
    return warnings


def build_plan(
    tenant: str,
    workflow_id: str,
    version_id: str,
    *,
    mode: Literal["single", "batch"],
    run_timeout: int | None,
    env: deps.Deps | None = None,
) -> Plan:
    """The validated snapshot of a version, as the state machines and the node runner read it.
    ``run_timeout``: the start's ``timeout``; one longer than a run may take here
    (services/retention.py) is refused."""
    retention.check_timeout(run_timeout)
    env = deps.given(env)
    version, nodes, edges = authoring.version_graph(tenant, version_id, workflow_id=workflow_id, env=env)
    problems, models = _problems(tenant, version, nodes, edges, mode == "batch", env)
    if problems:
        raise Conflict(
            f"version '{version_id}' cannot run: " + " ".join(p.message for p in problems),
            code="invalid_workflow_version",
            details=[p.model_dump() for p in problems],
        )
    ids = [n.id for n in nodes]
    pairs = [(e.begin_node_id, e.end_node_id) for e in edges]
    order = topological_order(ids, pairs)
    by_id = {n.id: n for n in nodes}
    parent_map = (
        parents(ids, pairs)
        if pairs
        else {node_id: ([order[i - 1]] if i else []) for i, node_id in enumerate(order)}
    )
    upstream = ancestors(ids, pairs) if pairs else {node_id: order[:i] for i, node_id in enumerate(order)}
    specs = []
    for idx, node_id in enumerate(order):
        node = by_id[node_id]
        model = models[node.entity_id]
        specs.append(
            NodeSpec(
                id=node.id,
                name=node.name,
                idx=idx,
                template=node.config.input_template,
                node_timeout=node.config.timeout or version.config.node_timeout,
                on_failure=node.config.on_failure,
                output_format=node.config.output_format,
                parents=parent_map[node_id],
                upstream={by_id[a].name: a for a in upstream[node_id]},
                model=ModelRef(id=model.id, provider=model.provider, config=model.config),
            )
        )
    return Plan(
        workflow_id=workflow_id,
        version_id=version_id,
        mode=mode,
        run_timeout=run_timeout,
        config=version.config.model_dump(mode="json"),
        nodes=specs,
    )

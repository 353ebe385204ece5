"""Response bodies of the HTTP API that are not entities: pages, deletions, reports.

Each route declares one of these (or an entity) as its return type, so the OpenAPI document names
the schema of every success answer and the resolver validates what the route returns.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from relayflow_runtime.schemas.entities import (
    ApiKey,
    BatchItemResult,
    Dataset,
    DatasetItem,
    DatasetVersion,
    DeliveryAttempt,
    Entity,
    Execution,
    Model,
    NodeExecution,
    Workflow,
    WorkflowEdge,
    WorkflowNode,
    WorkflowVersion,
)

#: What the document says of every ``next_token``, in a request and in a page.
CURSOR_DESCRIPTION = (
    "Opaque cursor: the `next_token` of the previous page of this same listing (same path and "
    "filters), passed back unchanged. It is not meant to be read or built; a value this listing "
    "did not return is refused with 400 `invalid_next_token`. Omit it for the first page."
)


class Page(Entity):
    """One page of a listing; ``next_token`` is null on the last page."""

    next_token: str | None = Field(
        None,
        description="Cursor of the next page (pass it back as `next_token`); null on the last page.",
    )


class WorkflowPage(Page):
    items: list[Workflow]


class WorkflowVersionPage(Page):
    items: list[WorkflowVersion]


class WorkflowNodePage(Page):
    items: list[WorkflowNode]


class WorkflowEdgePage(Page):
    items: list[WorkflowEdge]


class ModelPage(Page):
    items: list[Model]


class ExecutionPage(Page):
    items: list[Execution]


class BatchItemResultPage(Page):
    items: list[BatchItemResult]


class DeliveryAttemptPage(Page):
    items: list[DeliveryAttempt]


class DatasetPage(Page):
    items: list[Dataset]


class DatasetVersionPage(Page):
    items: list[DatasetVersion]


class DatasetItemPage(Page):
    items: list[DatasetItem]


class ApiKeyPage(Page):
    items: list[ApiKey]


class Deleted(Entity):
    """The id of what was deleted."""

    deleted: str


class Health(Entity):
    status: Literal["ok"] = "ok"
    version: str


class Problem(Entity):
    """One thing that keeps a version from running. ``node_id``: the node it is about (for a cycle,
    its earliest-created node); ``node_ids``: every node involved (a cycle's nodes, an edge's ends)."""

    code: str
    message: str
    node_id: str | None = None
    node_ids: list[str] = Field(default_factory=list)


class ValidationReport(Entity):
    """Every problem of a version at once; ``valid`` when there is none."""

    valid: bool
    problems: list[Problem]


class UploadPartReceipt(Entity):
    """A part of an upload, received: its number and decoded size in bytes."""

    part: int
    size: int


class BatchItemDetail(BatchItemResult):
    """One item of a batch run: its result and the record of every node of its chain."""

    node_executions: dict[str, NodeExecution] = Field(default_factory=dict)


class Deleting(Entity):
    """A batch run being deleted: gone for every reader at once, its records and objects (which
    grow with its items) deleted in the background."""

    deleted: str
    status: Literal["deleting"] = "deleting"


class DownloadLink(Entity):
    """A download larger than one answer carries: GET ``url`` (a presigned S3 URL, without the API
    key) before ``expires_in`` seconds pass. The same URL is in the ``Location`` header."""

    url: str
    expires_in: int


class DownloadPreparing(Entity):
    """A large download being written to S3: ask again after ``retry_after`` seconds."""

    status: Literal["preparing"] = "preparing"
    retry_after: int

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


#: Why a page of batch results holds fewer than ``limit`` items though more follow.
PageStoppedBy = Literal["seconds", "size", "scan"]


class BatchItemResultPage(Page):
    items: list[BatchItemResult]
    stopped_by: PageStoppedBy | None = Field(
        None,
        description="Why the page holds fewer than `limit` items though `next_token` reads on from "
        "where it stopped, so that it answers within the API's time and size: `seconds` (20 s of "
        "reading), `size` (its values reached what one page reads or answers), `scan` (a `status` "
        "filter read 1,000 items of the list); null when the page is full or the last. A page "
        "always holds an item or moves its cursor on.",
    )


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
    """Every problem of a version at once; ``valid`` when there is none. ``warnings``: what would
    not keep it from running but would fail some runs (a batch validated with a dataset version:
    sampled items that lack a field a template uses)."""

    valid: bool
    problems: list[Problem]
    warnings: list[Problem] = Field(default_factory=list)


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


class NodeEstimate(Entity):
    """One node's share of a batch's estimate. ``output_tokens_from``: ``dry_run`` when the model's
    answer was computed (the builtin models), ``prompt_length`` when it is assumed as long as the
    prompt (at most the config's ``max_tokens``): other providers answer only when called."""

    node_id: str
    name: str
    provider: str
    model_calls: int
    input_tokens: int
    output_tokens: int
    model_cost: float | None = Field(None, description="Dollars; null when the model has no price.")
    output_tokens_from: Literal["dry_run", "prompt_length"]


class ExecutionEstimate(Entity):
    """What a batch would do before it starts: the items its filter keeps, the model calls and
    tokens from its templates rendered on a sample of them, what the models cost where their price
    is known, what AWS charges (list prices, us-east-1; the models not included), and how long it
    takes at its parallelism. Every figure is for first attempts (no retries)."""

    workflow_id: str
    version_id: str
    dataset_id: str
    dataset_version_id: str
    parallelism: int
    items: int = Field(description="Items the filter keeps (all of them without a filter).")
    items_exact: bool = Field(
        description="false when the estimate stopped reading before the version's last item (see "
        "`read_stopped_by`): the items read are a sample, and `items` is the kept share of them "
        "times the version's item count."
    )
    items_read: int = Field(description="Items the filter was run over.")
    read_stopped_by: Literal["items", "bytes", "seconds"] | None = Field(
        None,
        description="Why the estimate stopped reading before the version's last item, so that it "
        "answers within the API's time: `items` (20,000 read), `bytes` (64 MiB read: the item list "
        "and the items stored apart) or `seconds` (10 s of reading); null when every item was read.",
    )
    sample_size: int = Field(description="Kept items the templates were rendered on.")
    sample_failures: int = Field(description="Sampled items that would fail (a node's error, a template).")
    model_calls: int
    input_tokens: int
    output_tokens: int
    model_cost: float | None = Field(
        description="Dollars for the model calls; null when a called model's price is not known "
        "(a builtin model without a price costs nothing)."
    )
    aws_cost: float = Field(description="Dollars AWS charges for the run (Step Functions, Lambda, DynamoDB).")
    duration_seconds: float = Field(description="Time from start to end at the given parallelism.")
    nodes: list[NodeEstimate]

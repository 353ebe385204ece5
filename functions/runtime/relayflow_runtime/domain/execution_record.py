"""The execution item as the store keeps it: every field its writers put on it, declared once.

The API's ``Execution`` (schemas/entities.py) is what a caller sees; this is what the table holds,
which is more: the engine's bookkeeping (which machine runs it, the Map's settings, the budget it
holds, the node it is at), packed values (a long input or output is an S3 reference), usage
counters, and the marks of the sweeper, admission and deletion. services/execution_view.py maps it
to the API's shape field by field, so a stored field never leaks into an answer by accident.

Who writes what: the start (services/executions.py: the API's fields, ``state_machine_arn``,
``children_expire_at``), admission (``sfn_execution_arn``, ``waiting_reason``,
``admission_queued_at``), the machines' actions (``started_at``, ``overdue_at``, ``current_node``,
``batch``, ``item_index``, ``large_items``, ``progress``, ``results``, usage), the budget
(``budget_reserved`` …), the sweep index (``unpublished_event``), a retry of failed items
(``retry_claim``), a delete (``deleting``), a batch run's result exports (``exports``), a webhook
re-send (``webhook_rounds``). Items written before a field was dropped (``node_order``)
read the same: unknown fields are ignored.

What a write may set is declared too: :class:`ExecutionUpdate` (the fields an update or a status
move sets on the item) and, for the node records of a single run, :class:`NodeRecord` (a record
as read, validated by :data:`NODE_RECORDS` at the store) and :class:`NodeUpdate` (what a node's
writes set). They are TypedDicts, so the records stay the plain mappings the table holds (the
stored shape is unchanged) while mypy checks every key a reader or a writer names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, with_config
from typing_extensions import TypedDict

from relayflow_runtime.domain.batch import BatchSettings
from relayflow_runtime.domain.status import CurrentNodeItem
from relayflow_runtime.schemas.entities import (
    BatchConfig,
    ExecutionProgress,
    ExecutionStatus,
    ExecutionTrigger,
    InputFile,
)
from relayflow_runtime.schemas.events import StatusEvent

#: The usage counters a run keeps on its item (a single run once ended, a batch run at its end).
USAGE_FIELDS = ("input_tokens", "output_tokens", "estimated_cost_nanos")


class _Stored(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CurrentNode(_Stored):
    """The furthest node a single run has started (moved by the runner, never back)."""

    idx: int
    id: str


class ItemIndex(_Stored):
    """The index of a batch run's item list: how many buckets (services/item_lists.py), and
    whether its entries carry their ordinal ``n`` (then the run's outcomes are per-child objects
    and pointer records: services/outcomes.py; lists written before keep per-item records)."""

    buckets: int
    ordinals: bool = False
    #: The bytes of the list's largest entry line (children are sized to fit the ItemBatcher's
    #: byte limit: domain/batch.py); None for lists written before it was kept.
    largest_entry: int | None = None


class ResultExportItem(TypedDict, total=False):
    """A batch run's export of its results in one format, as its item keeps it (services/
    batch_results.py starts one, services/results_export.py marks it ready)."""

    status: Literal["preparing", "ready"]
    #: when it was started (preparing) or written (ready)
    since: str
    #: how many times it was started (a stale one is started again)
    attempt: int
    #: the file's bytes, once ready
    size: int


class ExecutionRecord(_Stored):
    # ---- what the API shows (schemas/entities.Execution), as stored
    id: str
    workflow_id: str
    version_id: str
    number: int = 0
    status: ExecutionStatus = "pending"
    input_mode: Literal["single", "batch"] = "single"
    #: The text input, or ``{"$s3": key}`` when it was too long for the item (services/values.py).
    single_input: str | dict[str, str] | None = None
    input_file: InputFile | None = None
    batch_config: BatchConfig | None = None
    timeout: int | None = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    progress: ExecutionProgress = ExecutionProgress()
    error: str | None = None
    rerun_of: str | None = None
    retry_of: str | None = None
    callback_url: str | None = None
    trigger: ExecutionTrigger | None = None
    waiting_reason: str | None = None
    #: A single run's final output (packed text) and, for a JSON node, its parsed value (packed).
    results: Any = None
    results_parsed: Any = None
    # ---- usage: summed from the node records once a single run ended, from the counters at a
    # batch's end (absent while neither happened)
    input_tokens: int | None = None
    output_tokens: int | None = None
    estimated_cost_nanos: int | None = None
    usage_summed: bool = False
    #: An ended single run's nodes by how they ended (services/transitions.ended_run_sums).
    node_counts: dict[str, int] | None = None
    #: A batch run's outcomes compacted into segments (services/outcomes.py compact_job).
    outcome_segments: dict[str, int] | None = None
    #: Segments compacted while the run ran, each once all its ordinals were recorded (a number set).
    compacted_segments: list[int] | None = None
    # ---- the engine
    state_machine_arn: str | None = None
    sfn_execution_arn: str | None = None
    #: Every other item of the run carries this TTL from its start (services/retention.py).
    children_expire_at: int | None = None
    overdue_at: str | None = None
    current_node: CurrentNode | None = None
    # ---- a batch run: the Map's settings, its list's index and large items, the budget it holds
    batch: BatchSettings | None = None
    item_index: ItemIndex | None = None
    large_items: int | None = None
    budget_reserved: int | None = None
    budget_reserved_at: str | None = None
    budget_released_at: str | None = None
    #: a batch run's result exports by format
    exports: dict[str, ResultExportItem] | None = None
    #: how many times its webhook was re-sent by request (adapters/table/webhooks.py numbers them)
    webhook_rounds: int | None = None
    # ---- admission, a retry of failed items, deletion, a status event the bus refused
    admission_queued_at: str | None = None
    retry_claim: str | None = None
    retry_claimed_at: str | None = None
    deleting: bool = False
    unpublished_event: StatusEvent | None = None

    def item(self) -> dict[str, Any]:
        """The item's attributes (the store adds its keys): fields never set are left out, so a
        condition on an attribute's absence (``budget_reserved``, ``current_node`` …) holds."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)

    def updated(self, fields: ExecutionUpdate) -> ExecutionRecord:
        """The record with ``fields`` set, as an update writes them on its item."""
        return ExecutionRecord.model_validate({**self.item(), **stored_fields(fields)})

    def usage_counters(self) -> dict[str, int]:
        """The usage counters the item keeps (none until the run summed or counted them)."""
        return {name: value for name in USAGE_FIELDS if (value := getattr(self, name)) is not None}


class SweptRun(_Stored):
    """A run as the sweep index (adapters/sweep.py) projects it: what the sweeper decides on
    without reading the run's item (the index's NonKeyAttributes in template.yaml)."""

    id: str
    tenant: str
    workflow_id: str | None = None
    status: ExecutionStatus
    input_mode: Literal["single", "batch"] = "single"
    created_at: str | None = None
    completed_at: str | None = None
    sfn_execution_arn: str | None = None
    state_machine_arn: str | None = None
    budget_reserved: int | None = None
    unpublished_event: StatusEvent | None = None
    overdue_at: str | None = None


class ExecutionUpdate(TypedDict, total=False):
    """What an update or a status move (adapters/table/executions.py) sets on an execution item.
    Values are the stored shapes; a model (``progress``, ``batch``, ``item_index``) is written as
    its JSON without its unset (None) fields, as the record writes it."""

    started_at: str
    completed_at: str
    overdue_at: str
    error: str | None
    #: packed values (services/values.py): text, a JSON value, or ``{"$s3": key}``
    results: Any
    results_parsed: Any
    input_tokens: int
    output_tokens: int
    estimated_cost_nanos: int
    usage_summed: bool
    node_counts: dict[str, int]
    current_node: CurrentNodeItem
    progress: ExecutionProgress
    outcome_segments: dict[str, int]
    sfn_execution_arn: str
    waiting_reason: str
    admission_queued_at: str
    batch: BatchSettings
    item_index: ItemIndex
    large_items: int
    #: a batch run's result exports by format
    exports: dict[str, ResultExportItem]
    #: the item's TTL, set by a terminal move (services/retention.py)
    expires_at: int


class AttemptTimeItem(TypedDict, total=False):
    """When a failed attempt started and failed (schemas/entities.AttemptTime, as stored)."""

    attempt: int
    started_at: str | None
    failed_at: str | None


def stored_fields(fields: ExecutionUpdate | NodeUpdate) -> dict[str, object]:
    """The values an update writes: a model (``progress``, ``batch``, ``item_index``) as its JSON
    without its unset fields, as :meth:`ExecutionRecord.item` writes it; the rest as given."""
    return {
        name: value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else value
        for name, value in fields.items()
    }


def usage_update(usage: Mapping[str, int]) -> ExecutionUpdate:
    """The usage counters of ``usage`` (domain/costs.sum_usage, a batch's counters) as the fields an
    update sets: only the counters it has (an unpriced run has no cost, not a cost of 0)."""
    fields = ExecutionUpdate()
    if "input_tokens" in usage:
        fields["input_tokens"] = usage["input_tokens"]
    if "output_tokens" in usage:
        fields["output_tokens"] = usage["output_tokens"]
    if "estimated_cost_nanos" in usage:
        fields["estimated_cost_nanos"] = usage["estimated_cost_nanos"]
    return fields


class NodeUpdate(TypedDict, total=False):
    """What a node's writes set on its record (the store sets ``status``/``attempts`` itself where a
    condition names them). Values are the stored shapes (packed values as services/values.py packs
    them); ``expires_at`` is the record's TTL, the run's ``children_expire_at`` (a key attribute:
    never read back)."""

    node_id: str
    #: the node's name and index in plan order (``id`` repeats ``node_id``: a begun attempt's copy)
    name: str
    idx: int
    id: str
    status: str
    attempts: int
    #: packed values (services/values.py)
    output: Any
    parsed_output: Any
    prompt: Any
    duration_ms: int | float
    completed_at: str
    usage: dict[str, int]
    error: str | None
    expires_at: int | None


@with_config(ConfigDict(extra="allow"))
class NodeRecord(NodeUpdate, total=False):
    """A node record of a single run (sort key ``N#<node id>``) as read. Written at the run's start
    (``pending``, services/executions.py), by each attempt (services/run_machine.py), by the gate
    (``token``: statemachine/run.asl.json's AwaitParents) and its parents (``done_parents``), and
    closed by the run's end (``close_open_nodes``). Fields added later are absent on older records;
    fields this does not name are kept as read."""

    started_at: str
    attempt_started_at: str
    attempt_errors: list[str]
    attempt_times: list[AttemptTimeItem]
    #: the task token of the node's gate, while it waits for its parents
    token: str
    #: the parents that have ended (a string set in the table, read as a sorted list)
    done_parents: list[str]
    #: the packed outputs its parents left on it for carrying, by parent (``carried#<parent id>``
    #: attributes, gathered by mark_parent_done)
    carried: dict[str, Any]


#: Validate node records as the store reads them (extra fields kept).
NODE_RECORDS: TypeAdapter[list[NodeRecord]] = TypeAdapter(list[NodeRecord])
NODE_RECORD: TypeAdapter[NodeRecord] = TypeAdapter(NodeRecord)

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
(``retry_claim``), a delete (``deleting``). Items written before a field was dropped (``node_order``)
read the same: unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from relayflow_runtime.domain.batch import BatchSettings
from relayflow_runtime.schemas.entities import (
    BatchConfig,
    ExecutionProgress,
    ExecutionStatus,
    ExecutionTrigger,
    InputFile,
)

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
    # ---- admission, a retry of failed items, deletion, a status event the bus refused
    admission_queued_at: str | None = None
    retry_claim: str | None = None
    retry_claimed_at: str | None = None
    deleting: bool = False
    unpublished_event: dict[str, Any] | None = None

    def item(self) -> dict[str, Any]:
        """The item's attributes (the store adds its keys): fields never set are left out, so a
        condition on an attribute's absence (``budget_reserved``, ``current_node`` …) holds."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)

    def usage_counters(self) -> dict[str, int]:
        """The usage counters the item keeps (none until the run summed or counted them)."""
        return {name: value for name in USAGE_FIELDS if (value := getattr(self, name)) is not None}

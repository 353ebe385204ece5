"""Where a run's records and objects are, and how the engine reads them.

The API's use cases (services/executions.py), the machines' actions (run_machine, batch,
batch_items), the batch results and the follow-up of a run's end all read runs the same way; this
module is the one they share, so none of them imports another for a key, a plan or a read.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from relayflow_runtime.domain.costs import nanos_to_dollars
from relayflow_runtime.domain.engine import Plan
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import deps
from relayflow_runtime.settings import get_settings


def machine_arn(mode: str) -> str:
    """The template's state machine that runs executions of this input mode."""
    settings = get_settings()
    return settings.batch_machine_arn if mode == "batch" else settings.run_machine_arn


def execution_prefix(tenant: str, execution_id: str) -> str:
    """Every object of a run lies under here. The top-level ``executions/`` is what the bucket's
    lifecycle rule matches (a rule's prefix cannot skip a tenant segment); see services/retention.py."""
    return f"executions/{tenant}/{execution_id}/"


def plan_key(tenant: str, execution_id: str) -> str:
    """The execution's plan snapshot: what the state machines interpret (see domain/engine.py)."""
    return f"{execution_prefix(tenant, execution_id)}plan.json"


def read_plan(tenant: str, execution_id: str, blobs: deps.Blobs) -> Plan:
    """The execution's plan snapshot, read from ``blobs``."""
    return Plan.model_validate(blobs.get_json(plan_key(tenant, execution_id)))


@lru_cache(maxsize=256)
def load_plan(tenant: str, execution_id: str) -> Plan:
    """The execution's plan snapshot (S3), read once per warm container (a plan never changes)."""
    return read_plan(tenant, execution_id, deps.blobs())


def get_run_record(
    tenant: str, workflow_id: str, execution_id: str, env: deps.Deps | None = None
) -> ExecutionRecord:
    """The stored execution of this workflow, as its record (domain/execution_record.py); 404 for
    another workflow's, or one being deleted."""
    record = deps.given(env).executions.get_record(tenant, execution_id)
    _check_shown(workflow_id, execution_id, record.workflow_id, record.deleting)
    return record


def _check_shown(workflow_id: str, execution_id: str, its_workflow: str, deleting: bool) -> None:
    # A batch run being deleted (on the jobs machine) is already gone for every reader.
    if its_workflow != workflow_id or deleting:
        raise NotFound(f"execution '{execution_id}' does not exist.", code="execution_not_found")


def usage_of(counters: dict[str, Any]) -> dict[str, Any]:
    """The API's usage from stored counters (the cost is kept in nano-dollars, see providers)."""
    return {
        "input_tokens": int(counters.get("input_tokens") or 0),
        "output_tokens": int(counters.get("output_tokens") or 0),
        "estimated_cost": nanos_to_dollars(counters.get("estimated_cost_nanos")),
    }

"""Every store of the one DynamoDB table, built once per table name (once per warm container).

A service asks for the store of the entity it works on (``stores().executions``,
``stores().batches``), through services/deps.py, which names the configured table; nothing else
builds a store. settings.reset_caches forgets them (the local stack and the tests set the
environment after import).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from relayflow_runtime.adapters.batch_store import BatchStore
from relayflow_runtime.adapters.budget import BudgetStore
from relayflow_runtime.adapters.rate_windows import RateWindowStore
from relayflow_runtime.adapters.sweep import SweepIndex
from relayflow_runtime.adapters.table import (
    ApiKeyStore,
    DatasetStore,
    ExecutionStore,
    ModelStore,
    UploadStore,
    WebhookStore,
    WorkflowStore,
)


@dataclass(frozen=True)
class Stores:
    #: Workflows, their versions, nodes and edges.
    workflows: WorkflowStore
    models: ModelStore
    #: Executions and the node records of single runs.
    executions: ExecutionStore
    api_keys: ApiKeyStore
    #: The S3 trigger's markers of the uploads it has seen.
    uploads: UploadStore
    #: Webhook signing secrets and delivery attempts.
    webhooks: WebhookStore
    #: Datasets, their versions and their file uploads.
    datasets: DatasetStore
    #: A batch run's item outcomes and progress counters.
    batches: BatchStore
    #: The account-wide budget of batch parallelism.
    budget: BudgetStore
    #: Per-model rate-limit windows.
    rate_windows: RateWindowStore
    #: The sparse index of runs the sweeper watches.
    sweep: SweepIndex


@lru_cache(maxsize=4)
def stores_for(table_name: str) -> Stores:
    return Stores(
        workflows=WorkflowStore(table_name),
        models=ModelStore(table_name),
        executions=ExecutionStore(table_name),
        api_keys=ApiKeyStore(table_name),
        uploads=UploadStore(table_name),
        webhooks=WebhookStore(table_name),
        datasets=DatasetStore(table_name),
        batches=BatchStore(table_name),
        budget=BudgetStore(table_name),
        rate_windows=RateWindowStore(table_name),
        sweep=SweepIndex(table_name),
    )

"""Runtime settings, read once per warm container from the environment the template sets."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel


class Settings(BaseModel):
    table_name: str
    bucket_name: str
    # The template's state machines (statemachine/): every run starts on one of these.
    run_machine_arn: str = ""
    batch_machine_arn: str = ""
    jobs_machine_arn: str = ""
    stack_name: str = "relayflow"
    event_bus_name: str = ""
    idempotency_table: str = ""
    # Prompts and outputs longer than this (JSON bytes) are kept in S3, their records keep a
    # reference: a node record, or a batch item's outcome holding all its nodes, stays far below
    # DynamoDB's 400 KB and costs few write units. Nothing large ever travels between states.
    inline_output_limit: int = 4 * 1024
    # Stack parameter RetentionDays: how long a run's records and objects are kept (services/retention.py).
    retention_days: int = 30
    # Stack parameter BatchParallelismBudget: batch items running at once, all batches together.
    batch_parallelism_budget: int = 200
    # The queue webhook deliveries (first attempts, retries, re-sends) go through.
    webhook_queue_url: str = ""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ
    return Settings(
        table_name=env.get("RELAYFLOW_TABLE", "relayflow"),
        bucket_name=env.get("RELAYFLOW_BUCKET", "relayflow"),
        run_machine_arn=env.get("RUN_MACHINE_ARN", ""),
        batch_machine_arn=env.get("BATCH_MACHINE_ARN", ""),
        jobs_machine_arn=env.get("JOBS_MACHINE_ARN", ""),
        stack_name=env.get("RELAYFLOW_STACK", "relayflow"),
        event_bus_name=env.get("EVENT_BUS_NAME", ""),
        idempotency_table=env.get("IDEMPOTENCY_TABLE", ""),
        inline_output_limit=int(env.get("INLINE_OUTPUT_LIMIT", 4 * 1024)),
        retention_days=int(env.get("RETENTION_DAYS", 30)),
        batch_parallelism_budget=int(env.get("BATCH_PARALLELISM_BUDGET", 200)),
        webhook_queue_url=env.get("WEBHOOK_QUEUE_URL", ""),
    )


def reset_caches() -> None:
    """Forget settings and AWS clients (the local stack calls this after it sets the environment)."""
    from relayflow_runtime.adapters import aws, table

    get_settings.cache_clear()
    aws.session.cache_clear()
    aws.client.cache_clear()
    aws.clear_resources()
    table.get_table_store.cache_clear()

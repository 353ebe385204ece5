"""Runtime settings, read once per warm container from the environment the template sets.

Each field is read from the environment variable of its name in capitals (``retention_days`` from
``RETENTION_DAYS``), unless its ``validation_alias`` names another; a value that does not parse
(``RETENTION_DAYS=abc``) fails the function's start with a validation error naming the variable.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings

from relayflow_runtime.adapters import aws, stores
from relayflow_runtime.domain.limits import MAX_RESULTS_DOWNLOAD_BYTES


class Settings(BaseSettings):
    table_name: str = Field("relayflow", validation_alias="RELAYFLOW_TABLE")
    bucket_name: str = Field("relayflow", validation_alias="RELAYFLOW_BUCKET")
    # The template's state machines (statemachine/): every run starts on one of these.
    run_machine_arn: str = ""
    batch_machine_arn: str = ""
    jobs_machine_arn: str = ""
    stack_name: str = Field("relayflow", validation_alias="RELAYFLOW_STACK")
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
    # Stack parameter WebhookAllowPrivateAddresses: callback URLs may name loopback and private
    # addresses (off on AWS; the local stack's tests deliver to 127.0.0.1). domain/urls.py.
    webhook_allow_private_addresses: bool = False
    # Stack parameter SingleRunStartsPerSecond: single runs started at most this often (a second's
    # window); the others wait, pending, in the admission queue (services/admission.py).
    single_run_starts_per_second: int = 10
    admission_queue_url: str = ""
    # A results download (or input file) larger than this is answered with a presigned URL where
    # one can be offered (a Lambda answer carries at most 6 MB).
    max_inline_download_bytes: int = MAX_RESULTS_DOWNLOAD_BYTES


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_caches() -> None:
    """Forget settings, AWS clients and stores (the local stack calls this after it sets the
    environment)."""
    get_settings.cache_clear()
    aws.session.cache_clear()
    aws.client.cache_clear()
    aws.clear_resources()
    stores.stores_for.cache_clear()

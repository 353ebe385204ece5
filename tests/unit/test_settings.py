"""Runtime settings: the environment variables the template sets, their defaults, and bad values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from relayflow_runtime.settings import get_settings

# Each variable the template (or the local stack) sets, the field it fills, a value and what it reads as.
VARIABLES = [
    ("RELAYFLOW_TABLE", "table_name", "t-1", "t-1"),
    ("RELAYFLOW_BUCKET", "bucket_name", "b-1", "b-1"),
    ("RUN_MACHINE_ARN", "run_machine_arn", "arn:run", "arn:run"),
    ("BATCH_MACHINE_ARN", "batch_machine_arn", "arn:batch", "arn:batch"),
    ("JOBS_MACHINE_ARN", "jobs_machine_arn", "arn:jobs", "arn:jobs"),
    ("RELAYFLOW_STACK", "stack_name", "prod", "prod"),
    ("EVENT_BUS_NAME", "event_bus_name", "bus", "bus"),
    ("IDEMPOTENCY_TABLE", "idempotency_table", "idem", "idem"),
    ("INLINE_OUTPUT_LIMIT", "inline_output_limit", "4096", 4096),
    ("RETENTION_DAYS", "retention_days", "7", 7),
    ("BATCH_PARALLELISM_BUDGET", "batch_parallelism_budget", "50", 50),
    ("WEBHOOK_QUEUE_URL", "webhook_queue_url", "https://sqs/q", "https://sqs/q"),
    ("MAX_INLINE_DOWNLOAD_BYTES", "max_inline_download_bytes", "1024", 1024),
    ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "webhook_allow_private_addresses", "true", True),
    ("SINGLE_RUN_STARTS_PER_SECOND", "single_run_starts_per_second", "3", 3),
    ("ADMISSION_QUEUE_URL", "admission_queue_url", "https://sqs/a", "https://sqs/a"),
]

DEFAULTS = {
    "table_name": "relayflow",
    "bucket_name": "relayflow",
    "run_machine_arn": "",
    "batch_machine_arn": "",
    "jobs_machine_arn": "",
    "stack_name": "relayflow",
    "event_bus_name": "",
    "idempotency_table": "",
    "inline_output_limit": 4 * 1024,
    "retention_days": 30,
    "batch_parallelism_budget": 200,
    "webhook_queue_url": "",
    "single_run_starts_per_second": 10,
    "admission_queue_url": "",
    "max_inline_download_bytes": 5 * 1024 * 1024,
    "webhook_allow_private_addresses": False,
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No relayflow variable set, and no settings cached before or after."""
    for name, field, _, _ in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(field.upper(), raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults_without_any_variable(clean_env: pytest.MonkeyPatch) -> None:
    # Given an environment without relayflow's variables
    # When the settings are read
    # Then every field has its documented default (and every field is covered here)
    assert get_settings().model_dump() == DEFAULTS


@pytest.mark.parametrize(("variable", "field", "value", "expected"), VARIABLES, ids=[v[0] for v in VARIABLES])
def test_each_variable_fills_its_field(
    clean_env: pytest.MonkeyPatch, variable: str, field: str, value: str, expected: object
) -> None:
    # Given one variable set as the template sets it
    clean_env.setenv(variable, value)
    # When the settings are read
    settings = get_settings()
    # Then its field holds the value (numbers parsed) and the others keep their defaults
    assert getattr(settings, field) == expected
    assert settings.model_dump() == {**DEFAULTS, field: expected}


def test_settings_are_read_once_per_container(clean_env: pytest.MonkeyPatch) -> None:
    # Given settings already read
    first = get_settings()
    clean_env.setenv("RELAYFLOW_TABLE", "changed")
    # Then a later change of the environment is not seen until the caches are reset
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().table_name == "changed"


def test_a_field_name_is_not_a_variable_when_the_template_uses_another(clean_env: pytest.MonkeyPatch) -> None:
    # Given variables spelled like the field names of the three RELAYFLOW_* settings
    clean_env.setenv("TABLE_NAME", "not-this")
    clean_env.setenv("BUCKET_NAME", "not-this")
    clean_env.setenv("STACK_NAME", "not-this")
    # Then they are not read: only the template's names count
    settings = get_settings()
    assert (settings.table_name, settings.bucket_name, settings.stack_name) == ("relayflow",) * 3


def test_a_number_that_does_not_parse_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    # Given a numeric setting with a non-number
    clean_env.setenv("RETENTION_DAYS", "thirty")
    # When the settings are read
    # Then the start fails with a validation error naming it
    with pytest.raises(ValidationError, match="retention_days"):
        get_settings()

"""A model call may take as long as a node may; every other AWS call is answered in milliseconds, so
its connection is given up (and the call retried on a fresh one) after seconds, never 15 minutes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relayflow_runtime.adapters import aws


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clients built now, in a region, and forgotten after (the suite's others build their own)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    forget = (aws.session.cache_clear, aws.client.cache_clear, aws.clear_resources)
    for clear in forget:
        clear()
    yield
    for clear in forget:
        clear()


@pytest.mark.parametrize("service", ["bedrock-runtime", "sagemaker-runtime", "lambda"])
def test_a_model_call_may_read_for_as_long_as_a_node_may_run(service: str) -> None:
    config = aws.client(service).meta.config
    assert config.read_timeout == 900


@pytest.mark.parametrize("service", ["dynamodb", "s3", "stepfunctions", "events", "sqs"])
def test_a_data_call_gives_up_a_silent_connection_well_inside_the_apis_30_seconds(service: str) -> None:
    config = aws.client(service).meta.config
    assert config.read_timeout == aws.DATA_READ_TIMEOUT_SECONDS <= 10


def test_resources_and_tables_read_with_the_data_timeout() -> None:
    for lent in (aws.resource("s3"), aws.dynamodb_table("t")):
        with lent._lender.lend() as built:
            assert built.meta.client.meta.config.read_timeout == aws.DATA_READ_TIMEOUT_SECONDS

"""Powertools' idempotency records in the IdempotencyTable of the template (key "id", TTL "expiration")."""

from __future__ import annotations

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from relayflow_runtime.adapters import aws


def idempotency_store(table_name: str) -> DynamoDBPersistenceLayer:
    """A persistence layer on the shared DynamoDB client. Built per use: it is a thin object, and a
    layer remembers the first IdempotencyConfig it served, so one layer must not serve two configs."""
    if not table_name:
        raise RuntimeError("IDEMPOTENCY_TABLE is not set: the template gives it to every function")
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=aws.client("dynamodb"))

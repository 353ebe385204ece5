"""The sweep index: a sparse GSI of the executions that still need watching (see adapters/table/).

    sweep_pk = ACTIVE#<shard>    every pending or running run        (put_execution)
    sweep_pk = SETTLE#<shard>    a finished run whose follow-up is not done yet (transition_execution)
    sweep_sk = <created_at>#<tenant>#<execution id>

A run leaves the index (``leave``) once it is finished, holds no budget and has no status event
waiting to be published. The sweeper reads the index a shard at a time, oldest first; nothing here
ever scans the table. Only the attributes the sweeper needs are projected (SWEEP_PROJECTION, the
same list as the index's NonKeyAttributes in template.yaml), so the frequent updates of a running
run's other attributes (progress, usage) cost no index write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.codec import from_dynamo, to_dynamo
from relayflow_runtime.adapters.table.keys import SWEEP_SHARDS, execution_key
from relayflow_runtime.domain.status import TERMINAL

INDEX = "sweep"
SWEEP_PROJECTION = (
    "id",
    "tenant",
    "workflow_id",
    "status",
    "input_mode",
    "created_at",
    "completed_at",
    "sfn_execution_arn",
    "state_machine_arn",
    "budget_reserved",
    "unpublished_event",
)


class SweepIndex:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @property
    def table(self) -> Any:
        return aws.dynamodb_table(self.table_name)

    def runs(
        self, partition: str, *, created_before: str | None = None, limit: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Runs in ``partition`` (ACTIVE or SETTLE), every shard, oldest first within a shard, at most
        ``limit`` per shard; only those created before ``created_before`` when given. Each has the
        projected attributes (tenant included)."""
        for shard in range(SWEEP_SHARDS):
            condition = Key("sweep_pk").eq(f"{partition}#{shard}")
            if created_before:
                condition = condition & Key("sweep_sk").lt(created_before)
            kwargs: dict[str, Any] = {"IndexName": INDEX, "KeyConditionExpression": condition}
            left = limit
            while left > 0:
                kwargs["Limit"] = left
                response = self.table.query(**kwargs)
                for item in response.get("Items", []):
                    left -= 1
                    yield {k: v for k, v in from_dynamo(item).items() if k in SWEEP_PROJECTION}
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def leave(self, tenant: str, execution_id: str) -> bool:
        """Take a finished run out of the index, unless it still holds budget or an unpublished
        event; False when it stays."""
        try:
            self.table.update_item(
                Key=execution_key(tenant, execution_id),
                UpdateExpression="REMOVE sweep_pk, sweep_sk",
                ConditionExpression=Attr("status").is_in(sorted(status.value for status in TERMINAL))
                & Attr("budget_reserved").not_exists()
                & Attr("unpublished_event").not_exists(),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def keep_unpublished(self, tenant: str, execution_id: str, status: str, detail: dict[str, Any]) -> bool:
        """Keep a status event the bus refused on its run, while the run is still in that status
        (a newer status's event supersedes it); False when the run moved on or is gone."""
        try:
            self.table.update_item(
                Key=execution_key(tenant, execution_id),
                UpdateExpression="SET unpublished_event = :detail",
                ConditionExpression=Attr("status").eq(status),
                ExpressionAttributeValues={":detail": to_dynamo(detail)},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def forget_unpublished(self, tenant: str, execution_id: str, event_time: str) -> None:
        """Drop the kept event once it is published (only that one: compared by its time)."""
        try:
            self.table.update_item(
                Key=execution_key(tenant, execution_id),
                UpdateExpression="REMOVE unpublished_event",
                ConditionExpression=Attr("unpublished_event.time").eq(event_time),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

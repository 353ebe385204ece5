"""The sweep index: a sparse GSI of the executions that still need watching (see adapters/table/).

    sweep_pk = ACTIVE#<shard>    every pending or running run        (put_execution)
    sweep_pk = SETTLE#<shard>    a finished run whose follow-up is not done yet (transition_execution)
    sweep_sk = <created_at>#<tenant>#<execution id>

A run leaves the index (``leave``) once it is finished, holds no budget and has no status event
waiting to be published. The sweeper reads the index a shard at a time, oldest first, a page per
pass from where its previous pass stopped (its cursor, one item: ``SWEEP#cursor`` / ``SWEEP``, the
last sort key read in each shard), so every run is examined over successive passes however many
there are; nothing here ever scans the table. Only the attributes the sweeper needs are projected
(SWEEP_PROJECTION, the same list as the index's NonKeyAttributes in template.yaml), so the frequent
updates of a running run's other attributes (progress, usage) cost no index write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.codec import from_dynamo, to_dynamo
from relayflow_runtime.adapters.table.keys import SWEEP_SHARDS, execution_key
from relayflow_runtime.domain.execution_record import SweptRun
from relayflow_runtime.domain.status import TERMINAL
from relayflow_runtime.schemas.events import StatusEvent

INDEX = "sweep"
CURSOR_KEY = {"pk": "SWEEP#cursor", "sk": "SWEEP"}
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
    "overdue_at",
)


class SweepIndex:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @property
    def table(self) -> Any:
        return aws.dynamodb_table(self.table_name)

    def runs(
        self, partition: str, *, created_before: str | None = None, limit: int = 100
    ) -> Iterator[SweptRun]:
        """Runs in ``partition`` (ACTIVE or SETTLE), every shard, oldest first within a shard, at most
        ``limit`` per shard; only those created before ``created_before`` when given. Each has the
        projected attributes (tenant included)."""
        for shard in range(SWEEP_SHARDS):
            yield from self.page(partition, shard, created_before=created_before, limit=limit)[0]

    def page(
        self,
        partition: str,
        shard: int,
        *,
        created_before: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[SweptRun], str | None]:
        """At most ``limit`` runs of one shard, oldest first, after the sort key ``after`` (when
        given) and created before ``created_before``; and the last sort key read when the page is
        full (more may follow: where the next page starts), else None."""
        if created_before and after and after >= created_before:
            return [], None  # nothing after the cursor is old enough yet: start again from the oldest
        condition = Key("sweep_pk").eq(f"{partition}#{shard}")
        if created_before and after:
            condition = condition & Key("sweep_sk").between(after, created_before)
        elif created_before:
            condition = condition & Key("sweep_sk").lt(created_before)
        elif after:
            condition = condition & Key("sweep_sk").gt(after)
        kwargs: dict[str, Any] = {"IndexName": INDEX, "KeyConditionExpression": condition}
        runs: list[SweptRun] = []
        last: str | None = None
        while len(runs) < limit:
            kwargs["Limit"] = limit - len(runs)
            response = self.table.query(**kwargs)
            for item in response.get("Items", []):
                if item["sweep_sk"] == after or (created_before and item["sweep_sk"] >= created_before):
                    continue  # BETWEEN includes both ends
                last = str(item["sweep_sk"])
                projected = {k: v for k, v in from_dynamo(item).items() if k in SWEEP_PROJECTION}
                runs.append(SweptRun.model_validate(projected))
            if "LastEvaluatedKey" not in response:
                return runs, None
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return runs, last

    def cursor(self, partition: str) -> dict[int, str]:
        """Where the sweeper's next pass starts in each shard of ``partition`` (absent: the start)."""
        item = self.table.get_item(Key=CURSOR_KEY, ConsistentRead=True).get("Item") or {}
        saved = item.get(partition) or {}
        return {int(shard): str(sk) for shard, sk in saved.items()}

    def save_cursor(self, partition: str, cursor: dict[int, str]) -> None:
        self.table.update_item(
            Key=CURSOR_KEY,
            UpdateExpression="SET #p = :cursor",
            ExpressionAttributeNames={"#p": partition},
            ExpressionAttributeValues={":cursor": {str(shard): sk for shard, sk in cursor.items()}},
        )

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

    def keep_unpublished(self, tenant: str, execution_id: str, status: str, detail: StatusEvent) -> bool:
        """Keep a status event the bus refused on its run, while the run is still in that status
        (a newer status's event supersedes it); False when the run moved on or is gone."""
        try:
            self.table.update_item(
                Key=execution_key(tenant, execution_id),
                UpdateExpression="SET unpublished_event = :detail",
                ConditionExpression=Attr("status").eq(status),
                ExpressionAttributeValues={":detail": to_dynamo(detail.model_dump(mode="json"))},
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

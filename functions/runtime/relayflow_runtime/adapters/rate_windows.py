"""Per-model rate-limit windows: one counter item per model and window, beside the model's item.

    T#t#M#m                 RL#<window start, epoch seconds>     requests, tokens, expires_at (TTL)
    ADMISSION#single_runs   RL#<window start>                    the same, for starts of single runs

Taking a slot is one conditional ``ADD``: it succeeds only while the window's sums stay within the
limits, so concurrent callers (any number of Lambda instances) can never take more than the limit
between them. Not sharded: every call of one model in one window updates the same item, which
DynamoDB serves at up to ~1,000 writes a second, i.e. far above any model's own requests-per-minute
quota; a shard per caller would split the limit and let it be exceeded or wasted.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws

#: The deployment's window of single-run starts (services/admission.py): not a tenant's.
ADMISSION_PARTITION = "ADMISSION#single_runs"


def _key(tenant: str, model_id: str, window_start: int, partition: str | None = None) -> dict[str, Any]:
    pk = partition or f"T#{tenant}#M#{model_id}"
    return {"pk": {"S": pk}, "sk": {"S": f"RL#{window_start:012d}"}}


class RateWindowStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    def try_take(
        self,
        tenant: str,
        model_id: str,
        window_start: int,
        *,
        max_requests: int | None,
        max_tokens: int | None,
        tokens: int,
        expires_at: int,
        partition: str | None = None,
    ) -> bool:
        """Count one request of ``tokens`` in the window if both limits still allow it; False if not.

        A request larger than the whole token limit is let through only into an empty window.
        ``partition``: a window that is not a model's (ADMISSION_PARTITION), instead of tenant/model.
        """
        conditions: list[str] = []
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":tokens": {"N": str(max(0, tokens))},
            ":expires": {"N": str(expires_at)},
            ":kind": {"S": "rate_window"},
        }
        if max_requests is not None:
            conditions.append("(attribute_not_exists(requests) OR requests < :max_requests)")
            values[":max_requests"] = {"N": str(max_requests)}
        if max_tokens is not None:
            conditions.append("(attribute_not_exists(tokens) OR tokens <= :room)")
            values[":room"] = {"N": str(max(0, max_tokens - max(0, tokens)))}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _key(tenant, model_id, window_start, partition),
            "UpdateExpression": "ADD requests :one, tokens :tokens SET expires_at = :expires, kind = :kind",
            "ExpressionAttributeValues": values,
        }
        if conditions:
            kwargs["ConditionExpression"] = " AND ".join(conditions)
        try:
            aws.client("dynamodb").update_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def add_tokens(self, tenant: str, model_id: str, window_start: int, tokens: int) -> None:
        """Correct the window's token sum once a call reports what it really used (may be < 0)."""
        if not tokens:
            return
        try:
            aws.client("dynamodb").update_item(
                TableName=self.table_name,
                Key=_key(tenant, model_id, window_start),
                UpdateExpression="ADD tokens :tokens",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":tokens": {"N": str(tokens)}},
            )
        except ClientError as exc:  # the window is gone (expired): nothing left to correct
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def usage(self, tenant: str, model_id: str, window_start: int) -> tuple[int, int]:
        """(requests, tokens) counted in the window so far."""
        item = (
            aws.client("dynamodb")
            .get_item(
                TableName=self.table_name, Key=_key(tenant, model_id, window_start), ConsistentRead=True
            )
            .get("Item")
            or {}
        )
        return int(item.get("requests", {}).get("N", "0")), int(item.get("tokens", {}).get("N", "0"))

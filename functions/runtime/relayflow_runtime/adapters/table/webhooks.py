"""Webhooks: each workflow's signing secret, and the delivery attempts of each execution.

Attempts live in their execution's partition (deleted with it, or by TTL); the execution item
numbers the re-sends (``webhook_rounds``).

Keys: the layout in adapters/table/__init__.py.
"""

from __future__ import annotations

from boto3.dynamodb.conditions import Key

from relayflow_runtime.adapters.codec import to_dynamo
from relayflow_runtime.adapters.table.base import BaseStore, strip_keys
from relayflow_runtime.adapters.table.keys import execution_key, tenant_pk
from relayflow_runtime.schemas.entities import DeliveryAttempt, WebhookSecret


class WebhookStore(BaseStore):
    """Signing secrets and delivery attempts."""

    @staticmethod
    def _webhook_secret_key(tenant: str, workflow_id: str) -> dict[str, str]:
        return {"pk": tenant_pk(tenant, "WF", workflow_id), "sk": "WHSECRET"}

    def put_webhook_secret(self, tenant: str, secret: WebhookSecret) -> None:
        """The workflow's signing secret (its item keeps ``secret`` and ``created_at``; the workflow
        is its key)."""
        item = {
            "secret": secret.secret,
            "created_at": secret.created_at,
            **self._webhook_secret_key(tenant, secret.workflow_id),
            "tenant": tenant,
        }
        self.table.put_item(Item=to_dynamo({**item, "kind": "webhook_secret"}))

    def get_webhook_secret(self, tenant: str, workflow_id: str) -> WebhookSecret | None:
        key = self._webhook_secret_key(tenant, workflow_id)
        item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
        if not item:
            return None
        return WebhookSecret.model_validate({**strip_keys(item), "workflow_id": workflow_id})

    def delete_webhook_secret(self, tenant: str, workflow_id: str) -> None:
        self.table.delete_item(Key=self._webhook_secret_key(tenant, workflow_id))

    def put_delivery_attempt(
        self, tenant: str, attempt: DeliveryAttempt, *, expires_at: int | None = None
    ) -> None:
        """One webhook delivery attempt, kept with its execution (deleted with it, or by TTL)."""
        sort = f"{attempt.attempted_at}#{attempt.delivery_id}#{attempt.round:03d}#{attempt.attempt:02d}"
        item: dict[str, object] = {
            **attempt.model_dump(mode="json"),
            "pk": tenant_pk(tenant, "X", attempt.execution_id),
            "sk": f"D#{sort}",
            "tenant": tenant,
            "kind": "delivery_attempt",
            "gsi1pk": f"T#{tenant}#WF#{attempt.workflow_id}#DS",
            "gsi1sk": sort,
        }
        if expires_at is not None:
            item["expires_at"] = expires_at
        self._put(item)

    def next_webhook_round(self, tenant: str, execution_id: str) -> int:
        """Number a re-send of the execution's webhook (1, 2, ...)."""
        attrs = self._update(execution_key(tenant, execution_id), {}, add={"webhook_rounds": 1})
        return int(attrs["webhook_rounds"])

    def list_delivery_attempts(
        self,
        tenant: str,
        *,
        workflow_id: str,
        execution_id: str | None,
        limit: int,
        next_token: str | None,
    ) -> tuple[list[DeliveryAttempt], str | None]:
        """Newest first: of one execution, or of every execution of the workflow."""
        if execution_id:
            condition = Key("pk").eq(tenant_pk(tenant, "X", execution_id)) & Key("sk").begins_with("D#")
            items, token = self._query_page(
                key_condition=condition, limit=limit, next_token=next_token, forward=False
            )
        else:
            items, token = self._query_page(
                key_condition=Key("gsi1pk").eq(f"T#{tenant}#WF#{workflow_id}#DS"),
                index="gsi1",
                limit=limit,
                next_token=next_token,
                forward=False,
            )
        return [DeliveryAttempt.model_validate(item) for item in items], token

"""Webhooks: a run's terminal status POSTed to its callback URL, signed, retried, recorded.

* **Where to**: the execution's own ``callback_url`` (execute body), else the workflow's.
* **What**: JSON ``{"id", "type": "execution.<status>", "schema_version", "created_at", "data"}``,
  ``data`` being the execution (results included for a single run when small).
* **Signed**: ``X-Relayflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
  with the workflow's secret (``whsec_...``), created or rotated by POST
  /workflows/{id}/webhook-secret and shown only in that answer. Relayflow needs the secret itself
  to sign, so it is kept (not a hash) in its own table item: encrypted at rest by the table's SSE,
  never part of any API answer. Each attempt is signed afresh: a receiver may refuse old ``t``.
* **Retried through a queue**: any answer other than 2xx, or none within the timeout, is tried again
  after ``retry_base_seconds * 2**(n-1)`` (capped at ``retry_max_seconds``, at most 15 minutes),
  ``max_attempts`` in all. The wait is the webhook queue's: a failed attempt queues the next one
  with that delay (SQS DelaySeconds), so no Lambda sleeps between attempts. The
  ``X-Relayflow-Delivery`` id is the same on every attempt, so a receiver can drop repeats.
* **Recorded**: every attempt is an item with its execution, listed newest first.
* **Re-sent on request**: POST .../executions/{id}/deliveries queues the finished run's webhook
  again (a new ``round``, attempts from 1, the same delivery id).
* **Rejected uploads too**: an ``Upload Rejected`` event (services/uploads.py) whose key names a
  workflow with a callback URL is POSTed to it as ``upload.rejected``, ``data`` the reason object
  (the ``.reason.json`` beside the key): signed, pinned and retried the same way. It has no
  execution, so its attempts are logged and counted (metrics) but not in a delivery history.

The rules on the relayflow bus put every terminal status change, and every rejected upload that
names a workflow, on the webhook queue (template: WebhookQueue); the sender function
(handlers/webhook_sender.py) makes one attempt per message. A slow or dead receiver never holds up
or fails a run; a message the sender keeps failing on (a crash, not a refused webhook) ends in the
queue's dead-letter queue, which is alarmed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from pydantic import BaseModel, Field

from relayflow_runtime.adapters.idempotency import idempotency_store
from relayflow_runtime.adapters.queue import MessageQueue
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.domain.status import TERMINAL
from relayflow_runtime.domain.urls import CallbackUrl, is_public_address, not_public, parse_callback_url
from relayflow_runtime.errors import Conflict, InvalidInput, NotFound
from relayflow_runtime.schemas.entities import (
    DeliveryAttempt,
    ExecutionResults,
    WebhookResend,
    WebhookSecret,
)
from relayflow_runtime.services import authoring, deps, execution_view, metrics, retention, run_records
from relayflow_runtime.services.notify import UPLOAD_REJECTED
from relayflow_runtime.services.values import unpack
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

SCHEMA_VERSION = "1"
SIGNATURE_HEADER = "X-Relayflow-Signature"
DELIVERY_HEADER = "X-Relayflow-Delivery"
EVENT_HEADER = "X-Relayflow-Event"
SECRET_PREFIX = "whsec_"
USER_AGENT = "relayflow-webhooks/1"
MAX_INLINE_RESULTS_BYTES = 64 * 1024
SIGNATURE_TOLERANCE_SECONDS = 300
_DELIVERY_NAMESPACE = uuid.UUID("5d0c8a0e-6a55-4f0e-9a5e-2f3f7c1f6b1d")


class WebhookConfig(BaseModel):
    """Retry schedule and timeout, from the sender function's environment (WEBHOOK_*)."""

    max_attempts: int = Field(8, ge=1, le=20)
    retry_base_seconds: float = Field(10.0, ge=0, le=900)
    retry_max_seconds: float = Field(900.0, ge=0, le=900)
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @classmethod
    def from_env(cls) -> WebhookConfig:
        names = {
            "max_attempts": "WEBHOOK_MAX_ATTEMPTS",
            "retry_base_seconds": "WEBHOOK_RETRY_BASE_SECONDS",
            "retry_max_seconds": "WEBHOOK_RETRY_MAX_SECONDS",
            "timeout_seconds": "WEBHOOK_TIMEOUT_SECONDS",
        }
        return cls.model_validate(
            {field: os.environ[env] for field, env in names.items() if env in os.environ}
        )

    def delay_after(self, attempt: int) -> float:
        return float(min(self.retry_base_seconds * 2 ** (attempt - 1), self.retry_max_seconds))


# ---- secrets and signatures ------------------------------------------------------------------------
def rotate_secret(tenant: str, workflow_id: str) -> WebhookSecret:
    """A new signing secret for the workflow's webhooks (the previous one stops at once)."""
    authoring.get_workflow(tenant, workflow_id)
    secret = WebhookSecret(
        workflow_id=workflow_id, secret=SECRET_PREFIX + secrets.token_urlsafe(32), created_at=now_iso()
    )
    deps.stores().webhooks.put_webhook_secret(tenant, secret)
    return secret


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Relayflow-Signature header value for body sent at timestamp."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does (the README shows the same few lines): recompute, compare, check age."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    fresh = abs((time.time() if now is None else now) - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, fields.get("v1", ""))


# ---- what is sent ----------------------------------------------------------------------------------
def delivery_id_for(tenant: str, execution_id: str, status: str) -> str:
    """One delivery per execution and terminal status: the same id however often it is attempted."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{tenant}/{execution_id}/{status}"))


def build_payload(tenant: str, record: ExecutionRecord, delivery_id: str) -> dict[str, Any]:
    execution = execution_view.to_execution(
        tenant, record.model_copy(update={"results": None, "results_parsed": None}), with_nodes=False
    )
    data = execution.model_dump(
        mode="json", exclude={"node_executions", "results", "single_input", "batch_config", "callback_url"}
    )
    if execution.input_mode == "single" and record.results is not None:
        results = ExecutionResults.of_single_run(unpack(record.results), unpack(record.results_parsed))
        if results is not None and len(results.model_dump_json().encode()) <= MAX_INLINE_RESULTS_BYTES:
            data["results"] = results.model_dump(mode="json")  # the shape GET execution answers
        else:
            data["results"], data["results_truncated"] = None, True
    return {
        "id": delivery_id,
        "type": f"execution.{execution.status}",
        "schema_version": SCHEMA_VERSION,
        # The same on every attempt and re-send: the body is the same event each time.
        "created_at": record.completed_at or now_iso(),
        "data": data,
    }


# ---- delivering ------------------------------------------------------------------------------------
#: What an attempt that got no HTTP answer records: the same words whatever the reason (refused,
#: reset, timed out, no such name, TLS), so the delivery history is no probe of the sender's network.
UNREACHABLE = "could not deliver: no HTTP answer from the receiver"


class DeliveryRefused(Exception):
    """The callback URL, or an address its host resolves to, is not one webhooks may go to: the
    attempt fails for good (no retry) with this message."""


Sender = Callable[[CallbackUrl, bytes, dict[str, str], float], int]


def vetted_address(target: CallbackUrl, *, allow_private: bool) -> str:
    """The address to connect to: the URL's own IP literal, else its host resolved, every address
    it resolves to checked (a name that also resolves to a private address is refused, however
    DNS answers next: the connection goes to the address checked here). Raises DeliveryRefused,
    or OSError when the name does not resolve."""
    if target.address is not None:
        return str(target.address)
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise OSError(f"{target.host} resolves to no address")
    if not allow_private and not all(is_public_address(a) for a in addresses):
        raise DeliveryRefused(not_public(target.host))
    return str(addresses[0])


def http_post(target: CallbackUrl, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST to the vetted address of the callback URL's host (the Host header, TLS server name and
    certificate check stay the URL's host) and return the status code; redirects are not followed
    (a 3xx is a failed attempt), proxies from the environment are not used."""
    address = vetted_address(target, allow_private=get_settings().webhook_allow_private_addresses)
    try:
        url = httpx.URL(target.url)
        pinned = url.copy_with(host=address)
    except httpx.InvalidURL as exc:
        raise DeliveryRefused(f"callback_url is not a valid URL ({exc}).") from None
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        headers = {**headers, "Host": url.netloc.decode("ascii")}
        return client.post(pinned, content=body, headers=headers, extensions=extensions).status_code


def callback_url_of(tenant: str, record: ExecutionRecord) -> str | None:
    if record.callback_url:
        return record.callback_url
    try:
        return authoring.get_workflow(tenant, record.workflow_id).callback_url
    except NotFound:
        return None


class DeliveryTask(BaseModel):
    """One attempt to make: a message of the webhook queue.

    ``round`` 0 is the delivery the run's end started; each re-send by request is a new round whose
    attempts count from 1 again (same delivery id: it is the same event).
    """

    tenant: str
    execution_id: str
    status: str
    round: int = Field(0, ge=0)
    attempt: int = Field(1, ge=1)

    @classmethod
    def from_message(cls, body: dict[str, Any]) -> DeliveryTask | None:
        """A queue message: the bus's ``Execution Status Change`` event (the first attempt of round
        0), or a task this module queued (a retry, a re-send). None: not a delivery."""
        if body.get("kind") == TASK_KIND:
            return cls.model_validate({k: v for k, v in body.items() if k != "kind"})
        detail = body.get("detail") or {}
        if body.get("detail-type") and all(detail.get(k) for k in ("tenant", "execution_id", "status")):
            return cls(tenant=detail["tenant"], execution_id=detail["execution_id"], status=detail["status"])
        return None

    @property
    def correlation_id(self) -> str:
        return self.execution_id

    def message(self) -> dict[str, Any]:
        return {"kind": TASK_KIND, **self.model_dump()}


TASK_KIND = "relayflow.webhook"
REJECTION_KIND = "relayflow.webhook.upload_rejected"
UPLOAD_REJECTED_TYPE = "upload.rejected"
#: The event's own fields, not the reason's: left out of the webhook's ``data``.
_EVENT_FIELDS = ("schema_version", "time")


class RejectionTask(BaseModel):
    """One attempt of a rejected upload's webhook: a message of the webhook queue. The bus's
    ``Upload Rejected`` event carries the whole reason, and so does each retry's message (a
    rejection has no record to read again)."""

    tenant: str
    workflow_id: str
    reason: dict[str, Any]
    attempt: int = Field(1, ge=1)

    @property
    def delivery_id(self) -> str:
        """One delivery per rejected object (bucket, key, content): the same on every attempt."""
        r = self.reason
        return str(
            uuid.uuid5(
                _DELIVERY_NAMESPACE, f"{self.tenant}/upload/{r.get('bucket')}/{r.get('key')}/{r.get('etag')}"
            )
        )

    @property
    def correlation_id(self) -> str:
        return self.delivery_id

    def message(self) -> dict[str, Any]:
        return {"kind": REJECTION_KIND, **self.model_dump()}


def task_from_message(body: dict[str, Any]) -> DeliveryTask | RejectionTask | None:
    """A queue message: a run's delivery (:meth:`DeliveryTask.from_message`), or a rejected
    upload's: the bus's ``Upload Rejected`` event naming a tenant and a workflow (the first
    attempt), or a retry this module queued. None: not a delivery."""
    if body.get("kind") == REJECTION_KIND:
        return RejectionTask.model_validate({k: v for k, v in body.items() if k != "kind"})
    detail = body.get("detail") or {}
    if body.get("detail-type") == UPLOAD_REJECTED:
        if not (detail.get("tenant") and detail.get("workflow_id")):
            return None
        return RejectionTask(tenant=detail["tenant"], workflow_id=detail["workflow_id"], reason=dict(detail))
    return DeliveryTask.from_message(body)


def queue() -> MessageQueue:
    url = get_settings().webhook_queue_url
    if not url:
        raise RuntimeError("WEBHOOK_QUEUE_URL is not set: the webhook queue is part of the stack")
    return MessageQueue(url)


def deliver_attempt(
    task: DeliveryTask, *, config: WebhookConfig | None = None, send: Sender = http_post
) -> DeliveryAttempt | None:
    """Make one attempt of a delivery and record it; when it failed and attempts are left, queue the
    next one, delayed by the backoff (the queue waits, not a Lambda). None: nothing to send (no
    URL, or the run is gone or not finished)."""
    config = config or WebhookConfig.from_env()
    stores = deps.stores()
    try:
        record = stores.executions.get_record(task.tenant, task.execution_id)
    except NotFound:
        logger.info("no webhook: the execution no longer exists", extra={"execution_id": task.execution_id})
        return None
    if record.status not in TERMINAL:
        return None
    url = callback_url_of(task.tenant, record)
    if not url:
        return None
    status = record.status
    delivery_id = delivery_id_for(task.tenant, task.execution_id, status)
    event_type = f"execution.{status}"
    base = {
        "delivery_id": delivery_id,
        "execution_id": task.execution_id,
        "workflow_id": record.workflow_id,
        "event_type": event_type,
        "url": url,
        "round": task.round,
    }
    expires = _expiry_of(record)
    target, secret, problem = _signed_target(
        task.tenant,
        record.workflow_id,
        url,
        f": POST /workflows/{record.workflow_id}/webhook-secret creates one",
    )
    if target is None or secret is None:
        attempt = DeliveryAttempt(
            **base, attempt=task.attempt, outcome="failed", final=True, error=problem, attempted_at=now_iso()
        )
        stores.webhooks.put_delivery_attempt(task.tenant, attempt, expires_at=expires)
        metrics.count(metrics.WEBHOOK_DELIVERIES_FAILED)
        logger.warning("webhook not sent", extra={"execution_id": task.execution_id, "problem": problem})
        return attempt
    body = json.dumps(build_payload(task.tenant, record, delivery_id), separators=(",", ":")).encode()
    sent = _send(delivery_id, event_type, task.attempt, target, body, secret, config, send)
    attempt = DeliveryAttempt(**base, **sent)
    stores.webhooks.put_delivery_attempt(task.tenant, attempt, expires_at=expires)
    _follow_up(task, attempt.outcome, attempt.final, config)
    log = logger.info if attempt.outcome == "delivered" else logger.warning
    log(
        f"webhook attempt {attempt.outcome}",
        extra={
            "execution_id": task.execution_id,
            "delivery_id": delivery_id,
            "round": task.round,
            "attempt": task.attempt,
            "final": attempt.final,
        },
    )
    return attempt


def deliver_rejection(
    task: RejectionTask, *, config: WebhookConfig | None = None, send: Sender = http_post
) -> dict[str, Any] | None:
    """Make one attempt of a rejected upload's webhook, to the callback URL of the workflow its key
    names; when it failed and attempts are left, queue the next one, delayed by the backoff. The
    attempt's fields (as a DeliveryAttempt's), or None: nothing to send (no such workflow, or no
    callback URL). Logged and counted, not recorded: a rejection has no execution to list it under."""
    config = config or WebhookConfig.from_env()
    try:
        url = authoring.get_workflow(task.tenant, task.workflow_id).callback_url
    except NotFound:
        return None
    if not url:
        return None
    delivery_id = task.delivery_id
    where = {"workflow_id": task.workflow_id, "key": task.reason.get("key"), "delivery_id": delivery_id}
    target, secret, problem = _signed_target(task.tenant, task.workflow_id, url)
    if target is None or secret is None:
        metrics.count(metrics.WEBHOOK_DELIVERIES_FAILED)
        logger.warning("rejected upload's webhook not sent", extra={**where, "problem": problem})
        return {"attempt": task.attempt, "outcome": "failed", "final": True, "error": problem}
    data = {k: v for k, v in task.reason.items() if k not in _EVENT_FIELDS}
    payload = {
        "id": delivery_id,
        "type": UPLOAD_REJECTED_TYPE,
        "schema_version": SCHEMA_VERSION,
        "created_at": data.get("rejected_at") or now_iso(),
        "data": data,
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    attempt = _send(delivery_id, UPLOAD_REJECTED_TYPE, task.attempt, target, body, secret, config, send)
    _follow_up(task, attempt["outcome"], attempt["final"], config)
    log = logger.info if attempt["outcome"] == "delivered" else logger.warning
    log(f"rejected upload's webhook attempt {attempt['outcome']}", extra={**where, **attempt})
    return attempt


def _signed_target(
    tenant: str, workflow_id: str, url: str, hint: str = ""
) -> tuple[CallbackUrl | None, str | None, str | None]:
    """(the URL to POST to, the workflow's secret to sign with, None), or (None, None, why not):
    a URL that may not be called, or no secret (``hint`` says how to make one)."""
    target, problem = parse_callback_url(url, allow_private=get_settings().webhook_allow_private_addresses)
    if problem or target is None:  # (no secret is read for a URL that may not be called)
        return None, None, problem
    kept = deps.stores().webhooks.get_webhook_secret(tenant, workflow_id)
    if not (kept and kept.secret):
        return None, None, "the workflow has no webhook secret to sign with" + hint
    return target, str(kept.secret), None


def _follow_up(task: DeliveryTask | RejectionTask, outcome: str, final: bool, config: WebhookConfig) -> None:
    """After an attempt: the next one queued, delayed by the backoff, while attempts are left;
    else the delivery counted as delivered or failed."""
    if not final:
        queue().send(
            task.model_copy(update={"attempt": task.attempt + 1}).message(),
            delay_seconds=int(config.delay_after(task.attempt)),
        )
    elif outcome == "delivered":
        metrics.count(metrics.WEBHOOK_DELIVERIES_DELIVERED)
    else:
        metrics.count(metrics.WEBHOOK_DELIVERIES_FAILED)


def _expiry_of(record: ExecutionRecord) -> int | None:
    """Delivery attempts go with their run (services/retention.py)."""
    if record.children_expire_at:
        return record.children_expire_at
    return retention.children_expire_at(record.created_at) if record.created_at else None


def _send(
    delivery_id: str,
    event_type: str,
    number: int,
    target: CallbackUrl,
    body: bytes,
    secret: str,
    config: WebhookConfig,
    send: Sender,
) -> dict[str, Any]:
    """One signed POST of body: the fields of its DeliveryAttempt (outcome, final, when next)."""
    attempted_at = datetime.now(UTC)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, int(attempted_at.timestamp()), body),
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event_type,
    }
    started = time.monotonic()
    response_status: int | None = None
    error: str | None = None
    refused = False
    try:
        response_status = send(target, body, headers, config.timeout_seconds)
        if not 200 <= response_status < 300:
            error = f"the receiver answered {response_status}"
    except DeliveryRefused as exc:
        error, refused = str(exc), True
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError):
        # No network detail: refused, reset, timed out and unresolvable read the same.
        error = UNREACHABLE
    delivered = error is None
    final = delivered or refused or number >= config.max_attempts
    next_at = None
    if not final:
        next_at = _iso(attempted_at + timedelta(seconds=int(config.delay_after(number))))
    return {
        "attempt": number,
        "outcome": "delivered" if delivered else "failed",
        "final": final,
        "response_status": response_status,
        "error": error,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "attempted_at": _iso(attempted_at),
        "next_attempt_at": next_at,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deliver_once(task: DeliveryTask | RejectionTask, *, lambda_context: Any = None) -> dict[str, Any]:
    """deliver_attempt() (or deliver_rejection()), at most once per attempt of a round: EventBridge
    may put the same event on the queue twice, and SQS may hand a message out twice (Powertools
    idempotency). An attempt that raised (e.g. its retry could not be queued) leaves no trace and
    is made again."""
    if isinstance(task, RejectionTask):
        key, prefix = "[tenant, delivery_id, attempt]", REJECTION_KIND
        event = {"tenant": task.tenant, "delivery_id": task.delivery_id, "attempt": task.attempt}
    else:
        key, prefix = "[tenant, execution_id, status, round, attempt]", TASK_KIND
        event = task.model_dump()
    config = IdempotencyConfig(
        event_key_jmespath=key, raise_on_no_idempotency_key=True, expires_after_seconds=24 * 3600
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)

    @idempotent_function(
        data_keyword_argument="event",
        persistence_store=idempotency_store(get_settings().idempotency_table),
        config=config,
        key_prefix=prefix,
    )
    def deliver_event(event: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] | None
        if isinstance(task, RejectionTask):
            delivery_id: str | None = task.delivery_id
            made = deliver_rejection(task)
        else:
            attempt = deliver_attempt(task)
            delivery_id = attempt.delivery_id if attempt else None
            made = attempt.model_dump() if attempt else None
        return {
            "delivery_id": delivery_id,
            "outcome": made["outcome"] if made else "nothing_to_send",
            "attempt": task.attempt,
            "final": made["final"] if made else True,
        }

    return deliver_event(event=event)


def resend(tenant: str, workflow_id: str, execution_id: str) -> WebhookResend:
    """Queue the finished execution's webhook again (a new round of attempts, the same delivery id
    and payload shape), e.g. after the receiver was fixed. The round's attempts appear in the
    delivery history like the first ones."""
    record = run_records.get_run_record(tenant, workflow_id, execution_id)
    if record.status not in TERMINAL:
        raise Conflict(
            "this execution has not finished; its webhook is sent when it does.", code="execution_active"
        )
    url = callback_url_of(tenant, record)
    if not url:
        raise Conflict(
            "neither this execution nor its workflow has a callback_url to send the webhook to; set the "
            "workflow's callback_url (PATCH /workflows/{id}) and re-send.",
            code="no_callback_url",
        )
    round_number = deps.stores().webhooks.next_webhook_round(tenant, execution_id)
    task = DeliveryTask(tenant=tenant, execution_id=execution_id, status=record.status, round=round_number)
    queue().send(task.message())
    return WebhookResend(
        delivery_id=delivery_id_for(tenant, execution_id, record.status),
        execution_id=execution_id,
        workflow_id=workflow_id,
        event_type=f"execution.{record.status}",
        url=url,
        round=round_number,
        queued_at=now_iso(),
    )


# ---- listing ---------------------------------------------------------------------------------------
def list_deliveries(
    tenant: str,
    workflow_id: str,
    execution_id: str | None = None,
    *,
    limit: int = 50,
    next_token: str | None = None,
) -> tuple[list[DeliveryAttempt], str | None]:
    """Delivery attempts, newest first: of one execution, or of every execution of the workflow."""
    authoring.get_workflow(tenant, workflow_id)
    if execution_id:
        run_records.get_run_record(tenant, workflow_id, execution_id)
    if not 1 <= limit <= 200:
        raise InvalidInput("limit must be between 1 and 200.", code="invalid_limit")
    return deps.stores().webhooks.list_delivery_attempts(
        tenant, workflow_id=workflow_id, execution_id=execution_id, limit=limit, next_token=next_token
    )

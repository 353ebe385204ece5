"""The Python client of relayflow's HTTP API.

from relayflow import Client
client = Client()                      # RELAYFLOW_URL and RELAYFLOW_API_KEY from the environment
workflow = client.create_workflow(name="Docs")
execution = client.execute_workflow(workflow_id=workflow.id, input_mode="single", single_input="hi")
execution = client.wait_for_execution(workflow_id=workflow.id, execution_id=execution.id)
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
import re
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field

from relayflow_runtime.schemas.dataset_api import MAX_INLINE_ITEMS, MAX_RESULTS_PAGE, format_rows, result_row
from relayflow_runtime.schemas.entities import (
    ApiKey,
    BatchItemResult,
    CreatedApiKey,
    Dataset,
    DatasetItem,
    DatasetVersion,
    DeliveryAttempt,
    Model,
    WebhookResend,
    WebhookSecret,
    Workflow,
    WorkflowEdge,
    WorkflowNode,
    WorkflowVersion,
)
from relayflow_runtime.schemas.entities import (
    Execution as _Execution,
)
from relayflow_runtime.schemas.responses import ExecutionEstimate

T = TypeVar("T", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8765"
# Larger item lists than this go through an upload (a request body is at most 6 MB).
INLINE_ITEMS_BYTES = 4 * 1024 * 1024
# A file sent to a presigned upload URL is read and sent this many bytes at a time.
UPLOAD_READ_BYTES = 1024 * 1024


#: Where a key comes from, said with every refused one (the CLI and the client say the same).
KEY_SOURCES = (
    "`relayflow serve` prints its key at start (and keeps it in its data directory's api-key file, "
    "~/.relayflow/api-key by default); on AWS, `relayflow create-api-key` makes the first one"
)
#: What a person can do about an answer, by status and code (appended to the API's message).
HINTS: dict[tuple[int, str], str] = {
    (401, "unauthorized"): "send an API key: api_key= (CLI: --api-key) or RELAYFLOW_API_KEY; " + KEY_SOURCES,
    (403, "forbidden"): "the API key was refused (unknown, revoked or expired); " + KEY_SOURCES,
    (404, "workflow_not_found"): "`relayflow workflows` (client.get_workflows()) lists the workflows",
    (404, "execution_not_found"): "`relayflow list WORKFLOW` (client.get_workflow_executions()) lists "
    "a workflow's executions",
}
#: The codes of API Gateway's own answers, which carry only a message ({"message": "Forbidden"}).
GATEWAY_CODES = {401: "unauthorized", 403: "forbidden"}
#: A workflow or execution id as the API makes them; anything else names a workflow or a number.
ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
EXECUTION_NUMBER = re.compile(r"^#?(\d{1,12})$")


class RelayflowError(Exception):
    """Every error of the API the client raises: :class:`ApiError` (it answered with an error) and
    :class:`ApiUnreachable` (it could not be reached). ``hint``: what a person can do about it."""

    hint: str = ""


class ApiError(RelayflowError):
    """The API answered with an error: ``status``, machine-readable ``code``, readable ``message``,
    and ``hint`` (what to do, for a refused key or an id that names nothing; else empty)."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, hint: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = HINTS.get((status, code), "") if hint is None else hint
        super().__init__(f"{status} {code}: {message}" + (f" ({self.hint})" if self.hint else ""))


class ApiUnreachable(RelayflowError, httpx.TransportError):
    """The API could not be reached at ``url`` (connection refused, a timeout, a name that does not
    resolve); the transport's own exception is ``__cause__``."""

    def __init__(self, url: str, cause: Exception) -> None:
        self.url = url
        self.hint = "is `relayflow serve` running, or is base_url (CLI: --url) / RELAYFLOW_URL right?"
        super().__init__(
            f"cannot reach the relayflow API at {url} ({type(cause).__name__}: {cause}); {self.hint}"
        )


class Execution(_Execution):
    """An execution as the client sees it: its results and node records are plain dicts, as the
    reference documentation reads them (``results.get("items", [])``, ``node["output"]``).

    ``results`` of a finished single run: ``{"output": <text>, "parsed_output": <value of a JSON
    node>, ...}``; of a batch run: ``{"items": [...], "next_token", "total_items"}``. A node's
    ``output`` is the text its model produced, ``parsed_output`` the parsed value of a JSON node."""

    node_executions: dict[str, dict[str, Any]] = Field(default_factory=dict)  # type: ignore[assignment]
    results: dict[str, Any] | None = None  # type: ignore[assignment]


class Page(list[T]):
    """A list of results with the cursor of the next page (None on the last page). ``stopped_by``
    (results pages): why a page holds fewer than ``limit`` items though more follow (``seconds``:
    its time ran out; ``size``: its answer filled up; ``scan``: a filtered page read its windows)."""

    next_token: str | None = None
    stopped_by: str | None = None


class Client:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("RELAYFLOW_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("RELAYFLOW_API_KEY")
        headers = {"x-api-key": key} if key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=clean, headers=headers)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, exc) from exc
        if response.status_code >= 400:
            fallback = GATEWAY_CODES.get(response.status_code, "error")
            try:
                body = response.json()
            except ValueError:
                raise ApiError(response.status_code, fallback, response.text) from None
            if not isinstance(body, dict):
                raise ApiError(response.status_code, fallback, response.text)
            raise ApiError(
                response.status_code,
                body.get("code", fallback),
                body.get("message", ""),
                body.get("details"),
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _page(self, model: type[T], body: dict[str, Any]) -> Page[T]:
        page: Page[T] = Page(model.model_validate(i) for i in body["items"])
        page.next_token = body.get("next_token")
        page.stopped_by = body.get("stopped_by")
        return page

    # ---- workflows ---------------------------------------------------------------------------------
    def create_workflow(self, name: str, description: str = "", callback_url: str | None = None) -> Workflow:
        body = {"name": name, "description": description}
        if callback_url:
            body["callback_url"] = callback_url
        return Workflow.model_validate(self._json("POST", "/workflows", json=body))

    def get_workflows(self, limit: int = 50, next_token: str | None = None) -> Page[Workflow]:
        body = self._json("GET", "/workflows", params={"limit": limit, "next_token": next_token})
        return self._page(Workflow, body)

    def workflow_id_of(self, workflow: str) -> str:
        """A workflow's id from its id or its name (``"Docs"``): what every command of the CLI takes.
        A name no workflow has is a 404 that names the workflows there are; a name two workflows
        share is a 409 that names their ids."""
        if ID_PATTERN.match(workflow):
            return workflow
        workflows: list[Workflow] = []
        token: str | None = None
        while True:
            page = self.get_workflows(limit=200, next_token=token)
            workflows.extend(page)
            token = page.next_token
            if not token:
                break
        named = [w for w in workflows if w.name == workflow]
        if len(named) == 1:
            return named[0].id
        if named:
            ids = ", ".join(w.id for w in named)
            raise ApiError(
                409,
                "ambiguous_workflow_name",
                f"{len(named)} workflows are named {workflow!r}: {ids}; give the id.",
            )
        shown = ", ".join(f"{w.name!r} ({w.id})" for w in workflows[:10])
        more = f" and {len(workflows) - 10} more" if len(workflows) > 10 else ""
        raise ApiError(
            404,
            "workflow_not_found",
            f"no workflow has the id or the name {workflow!r}; "
            + (f"the workflows: {shown}{more}." if workflows else "there are no workflows yet."),
        )

    def execution_id_of(self, workflow_id: str, execution: str) -> str:
        """An execution's id from its id or its number in its workflow (``"#3"`` or ``"3"``, as the
        CLI prints it). A number no execution has is a 404 that says which numbers there are."""
        number = EXECUTION_NUMBER.match(execution)
        if number is None:
            return execution
        wanted, latest = int(number.group(1)), None
        token: str | None = None
        while True:  # newest first: numbers go down page by page
            page = self.get_workflow_executions(workflow_id, limit=200, next_token=token)
            for x in page:
                latest = x.number if latest is None else latest
                if x.number == wanted:
                    return x.id
            token = page.next_token
            if not token or (page and page[-1].number < wanted):
                break
        raise ApiError(
            404,
            "execution_not_found",
            f"workflow {workflow_id} has no execution #{wanted}; "
            + (f"its executions are #1 to #{latest}." if latest else "it has no executions yet."),
        )

    def get_workflow(self, workflow_id: str) -> Workflow:
        return Workflow.model_validate(self._json("GET", f"/workflows/{workflow_id}"))

    def update_workflow(self, workflow_id: str, **fields: Any) -> Workflow:
        return Workflow.model_validate(self._json("PATCH", f"/workflows/{workflow_id}", json=fields))

    def delete_workflow(self, workflow_id: str) -> None:
        self._request("DELETE", f"/workflows/{workflow_id}")

    # ---- versions ----------------------------------------------------------------------------------
    def create_workflow_version(
        self,
        workflow_id: str,
        name: str = "",
        config: dict[str, Any] | None = None,
        copy_from_version_id: str | None = None,
    ) -> WorkflowVersion:
        body: dict[str, Any] = {"name": name}
        if config is not None:
            body["config"] = config
        if copy_from_version_id:
            body["copy_from_version_id"] = copy_from_version_id
        return WorkflowVersion.model_validate(
            self._json("POST", f"/workflows/{workflow_id}/versions", json=body)
        )

    def get_workflow_versions(self, workflow_id: str) -> Page[WorkflowVersion]:
        return self._page(WorkflowVersion, self._json("GET", f"/workflows/{workflow_id}/versions"))

    def get_workflow_version(self, workflow_id: str, version_id: str) -> WorkflowVersion:
        return WorkflowVersion.model_validate(
            self._json("GET", f"/workflows/{workflow_id}/versions/{version_id}")
        )

    def update_workflow_version(
        self, workflow_id: str, version_id: str, config: dict[str, Any] | None = None, name: str | None = None
    ) -> WorkflowVersion:
        body: dict[str, Any] = {}
        if config is not None:
            body["config"] = config
        if name is not None:
            body["name"] = name
        path = f"/workflows/{workflow_id}/versions/{version_id}"
        return WorkflowVersion.model_validate(self._json("PATCH", path, json=body))

    def delete_workflow_version(self, workflow_id: str, version_id: str) -> None:
        self._request("DELETE", f"/workflows/{workflow_id}/versions/{version_id}")

    def validate_workflow_version(
        self,
        workflow_id: str,
        version_id: str,
        input_mode: str = "single",
        dataset_id: str | None = None,
        dataset_version_id: str | None = None,
    ) -> dict[str, Any]:
        """Every problem at once, saving nothing:
        ``{"valid": bool, "problems": [{code, message, node_id, node_ids}], "warnings": [...]}``;
        a batch checked against a dataset version warns of items lacking a field a template uses."""
        params = {
            "input_mode": input_mode,
            "dataset_id": dataset_id,
            "dataset_version_id": dataset_version_id,
        }
        return self._json("POST", f"/workflows/{workflow_id}/versions/{version_id}/validate", params=params)

    # ---- nodes and edges ---------------------------------------------------------------------------
    def create_workflow_node(
        self,
        version_id: str,
        name: str,
        entity_id: str,
        entity_type: str = "model",
        config: dict[str, Any] | None = None,
    ) -> WorkflowNode:
        body = {"name": name, "entity_type": entity_type, "entity_id": entity_id, "config": config or {}}
        return WorkflowNode.model_validate(self._json("POST", f"/versions/{version_id}/nodes", json=body))

    def get_workflow_nodes(self, version_id: str) -> Page[WorkflowNode]:
        return self._page(WorkflowNode, self._json("GET", f"/versions/{version_id}/nodes"))

    def get_workflow_node(self, version_id: str, node_id: str) -> WorkflowNode:
        return WorkflowNode.model_validate(self._json("GET", f"/versions/{version_id}/nodes/{node_id}"))

    def update_workflow_node(self, version_id: str, node_id: str, **fields: Any) -> WorkflowNode:
        path = f"/versions/{version_id}/nodes/{node_id}"
        return WorkflowNode.model_validate(self._json("PATCH", path, json=fields))

    def delete_workflow_node(self, version_id: str, node_id: str) -> None:
        self._request("DELETE", f"/versions/{version_id}/nodes/{node_id}")

    def create_workflow_edge(self, version_id: str, begin_node_id: str, end_node_id: str) -> WorkflowEdge:
        body = {"begin_node_id": begin_node_id, "end_node_id": end_node_id}
        return WorkflowEdge.model_validate(self._json("POST", f"/versions/{version_id}/edges", json=body))

    def get_workflow_edges(self, version_id: str) -> Page[WorkflowEdge]:
        return self._page(WorkflowEdge, self._json("GET", f"/versions/{version_id}/edges"))

    def delete_workflow_edge(self, version_id: str, edge_id: str) -> None:
        self._request("DELETE", f"/versions/{version_id}/edges/{edge_id}")

    # ---- API keys ----------------------------------------------------------------------------------
    def create_api_key(
        self, name: str = "", scopes: list[str] | None = None, expires_in_days: int | None = None
    ) -> CreatedApiKey:
        """A new key of this key's tenant; ``.key`` is the only copy of the secret (it is not stored)."""
        body: dict[str, Any] = {"name": name}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return CreatedApiKey.model_validate(self._json("POST", "/api-keys", json=body))

    def get_api_keys(self, limit: int = 50, next_token: str | None = None) -> Page[ApiKey]:
        body = self._json("GET", "/api-keys", params={"limit": limit, "next_token": next_token})
        return self._page(ApiKey, body)

    def get_api_key(self, key_id: str) -> ApiKey:
        return ApiKey.model_validate(self._json("GET", f"/api-keys/{key_id}"))

    def revoke_api_key(self, key_id: str) -> ApiKey:
        return ApiKey.model_validate(self._json("POST", f"/api-keys/{key_id}/revoke"))

    # ---- models ------------------------------------------------------------------------------------
    def create_model(self, name: str, provider: str, config: dict[str, Any] | None = None) -> Model:
        body = {"name": name, "provider": provider, "config": config or {}}
        return Model.model_validate(self._json("POST", "/models", json=body))

    def get_models(self, limit: int = 50, next_token: str | None = None) -> Page[Model]:
        return self._page(
            Model, self._json("GET", "/models", params={"limit": limit, "next_token": next_token})
        )

    def get_model(self, model_id: str) -> Model:
        return Model.model_validate(self._json("GET", f"/models/{model_id}"))

    def delete_model(self, model_id: str) -> None:
        self._request("DELETE", f"/models/{model_id}")

    # ---- executions --------------------------------------------------------------------------------
    def execute_workflow(
        self,
        workflow_id: str,
        input_mode: str = "single",
        single_input: str | None = None,
        item: str | os.PathLike[str] | None = None,
        version_id: str | None = None,
        timeout: int | None = None,
        batch_config: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> Execution:
        """Start a run and return at once (status ``pending``); ``item`` is a path to a file input."""
        body: dict[str, Any] = {"input_mode": input_mode}
        if single_input is not None:
            body["single_input"] = single_input
        if item is not None:
            path = Path(item)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            body["file"] = {
                "filename": path.name,
                "content_type": content_type,
                "content_base64": base64.b64encode(path.read_bytes()).decode(),
            }
        for key, value in (
            ("version_id", version_id),
            ("timeout", timeout),
            ("batch_config", batch_config),
            ("callback_url", callback_url),
        ):
            if value is not None:
                body[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        path_ = f"/workflows/{workflow_id}/executions"
        return Execution.model_validate(self._json("POST", path_, json=body, headers=headers))

    def estimate_workflow_execution(
        self,
        workflow_id: str,
        batch_config: dict[str, Any],
        version_id: str | None = None,
        timeout: int | None = None,
        sample_size: int | None = None,
    ) -> ExecutionEstimate:
        """What a batch would do before it starts (``execute_workflow(..., input_mode="batch",
        batch_config=...)`` takes the same arguments): the items its filter keeps, model calls,
        tokens, the models' and AWS's cost, and its duration at its parallelism. Starts nothing."""
        body: dict[str, Any] = {"input_mode": "batch", "batch_config": batch_config}
        for key, value in (("version_id", version_id), ("timeout", timeout), ("sample_size", sample_size)):
            if value is not None:
                body[key] = value
        return ExecutionEstimate.model_validate(
            self._json("POST", f"/workflows/{workflow_id}/estimate", json=body)
        )

    def get_workflow_execution(self, workflow_id: str, execution_id: str) -> Execution:
        return Execution.model_validate(
            self._json("GET", f"/workflows/{workflow_id}/executions/{execution_id}")
        )

    def get_workflow_executions(
        self,
        workflow_id: str,
        limit: int = 50,
        status: str | None = None,
        next_token: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        version_id: str | None = None,
    ) -> Page[Execution]:
        """Newest first (only ``version_id``'s runs when given); iterate the result, and pass
        ``.next_token`` back for the next page."""
        params = {
            "limit": limit,
            "status": status,
            "next_token": next_token,
            "created_after": created_after,
            "created_before": created_before,
            "version_id": version_id,
        }
        return self._page(Execution, self._json("GET", f"/workflows/{workflow_id}/executions", params=params))

    def cancel_workflow_execution(self, workflow_id: str, execution_id: str) -> Execution:
        path = f"/workflows/{workflow_id}/executions/{execution_id}/cancel"
        return Execution.model_validate(self._json("POST", path))

    def rerun_workflow_execution(self, workflow_id: str, execution_id: str) -> Execution:
        path = f"/workflows/{workflow_id}/executions/{execution_id}/rerun"
        return Execution.model_validate(self._json("POST", path))

    def delete_workflow_execution(self, workflow_id: str, execution_id: str) -> None:
        self._request("DELETE", f"/workflows/{workflow_id}/executions/{execution_id}")

    def download_execution_input(
        self, workflow_id: str, execution_id: str, output_path: str | os.PathLike[str]
    ) -> Path:
        target = Path(output_path)
        self._fetch_file(f"/workflows/{workflow_id}/executions/{execution_id}/input", target)
        return target

    def _fetch_file(
        self, path: str, target: Path, params: dict[str, Any] | None = None, timeout: float | None = 3600
    ) -> None:
        """GET a file into ``target``: the answer's body, or — a file larger than an API answer —
        the presigned URL of a ``303`` answer (fetched without the API key, streamed), after
        waiting out ``202`` answers (the file is being prepared) as their Retry-After says."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            response = self._request("GET", path, params=params)
            if response.status_code != 202:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{path} was still being prepared after {timeout} s")
            time.sleep(float(response.headers.get("retry-after") or 2))
        if response.status_code != 303:
            target.write_bytes(response.content)
            return
        # Built apart from the client's default headers: the URL is S3's only credential, and the
        # API key must not travel to S3 (nor into its request logs).
        request = httpx.Request(
            "GET", response.headers["location"], extensions={"timeout": httpx.Timeout(None).as_dict()}
        )
        download = self._http.send(request, stream=True)
        try:
            if download.status_code >= 300:
                message = download.read()[:500].decode(errors="replace")
                raise ApiError(download.status_code, "download_failed", message)
            with target.open("wb") as out:
                for chunk in download.iter_bytes():
                    out.write(chunk)
        finally:
            download.close()

    def wait_for_execution(
        self,
        workflow_id: str,
        execution_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[Execution], None] | None = None,
    ) -> Execution:
        """Poll until the run is completed, failed or cancelled (TimeoutError after ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            execution = self.get_workflow_execution(workflow_id, execution_id)
            if on_update:
                on_update(execution)
            if execution.status in ("completed", "failed", "cancelled"):
                return execution
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} is still {execution.status} after {timeout}s")
            time.sleep(poll_interval)

    # ---- webhooks (docs/events-and-triggers.md) ----------------------------------------------------
    def rotate_webhook_secret(self, workflow_id: str) -> WebhookSecret:
        """A new secret that signs the workflow's webhooks (the old one stops at once); shown only here."""
        return WebhookSecret.model_validate(self._json("POST", f"/workflows/{workflow_id}/webhook-secret"))

    def get_webhook_deliveries(
        self,
        workflow_id: str,
        execution_id: str | None = None,
        limit: int = 50,
        next_token: str | None = None,
    ) -> Page[DeliveryAttempt]:
        """Webhook delivery attempts, newest first: of one execution, or of the whole workflow."""
        path = f"/workflows/{workflow_id}" + (f"/executions/{execution_id}" if execution_id else "")
        params = {"limit": limit, "next_token": next_token}
        return self._page(DeliveryAttempt, self._json("GET", f"{path}/deliveries", params=params))

    def resend_webhook(self, workflow_id: str, execution_id: str) -> WebhookResend:
        """Send a finished execution's webhook again: a new round of attempts (the same delivery id),
        recorded in its deliveries. 409 while the execution runs, or without a callback URL."""
        path = f"/workflows/{workflow_id}/executions/{execution_id}/deliveries"
        return WebhookResend.model_validate(self._json("POST", path))

    # ---- datasets and batch results (docs/batch.md) ------------------------------------------------
    def create_dataset(self, name: str, description: str = "") -> Dataset:
        return Dataset.model_validate(
            self._json("POST", "/datasets", json={"name": name, "description": description})
        )

    def get_datasets(self, limit: int = 50, next_token: str | None = None) -> Page[Dataset]:
        body = self._json("GET", "/datasets", params={"limit": limit, "next_token": next_token})
        return self._page(Dataset, body)

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._json("GET", f"/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/datasets/{dataset_id}")

    def create_dataset_version(self, dataset_id: str, name: str = "") -> DatasetVersion:
        return DatasetVersion.model_validate(
            self._json("POST", f"/datasets/{dataset_id}/versions", json={"name": name})
        )

    def get_dataset_versions(self, dataset_id: str) -> Page[DatasetVersion]:
        return self._page(DatasetVersion, self._json("GET", f"/datasets/{dataset_id}/versions"))

    def get_dataset_version(self, dataset_id: str, version_id: str) -> DatasetVersion:
        return DatasetVersion.model_validate(
            self._json("GET", f"/datasets/{dataset_id}/versions/{version_id}")
        )

    def delete_dataset_version(self, dataset_id: str, version_id: str) -> None:
        self._request("DELETE", f"/datasets/{dataset_id}/versions/{version_id}")

    def upload_dataset_items(
        self,
        dataset_id: str,
        version_id: str,
        path: str | os.PathLike[str] | None = None,
        items: list[dict[str, Any]] | None = None,
        *,
        wait: bool = True,
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> DatasetVersion:
        """Give a dataset version its items, all at once: ``path`` (a .jsonl, .ndjson, .csv or .json
        file) or ``items`` (a list of objects). A file goes to S3 directly when the API offers an
        upload URL (on AWS), else in parts through the API; a large one is ingested in the
        background and, with ``wait``, polled until ready. A refused file raises ApiError (400,
        ``details={"line", "reason"}``) and the version keeps nothing."""
        if (path is None) == (items is None):
            raise ValueError("pass exactly one of path= or items=")
        base = f"/datasets/{dataset_id}/versions/{version_id}"
        if items is not None:
            payload = json.dumps({"items": items}).encode()
            if len(items) <= MAX_INLINE_ITEMS and len(payload) <= INLINE_ITEMS_BYTES:
                return DatasetVersion.model_validate(
                    self._json("POST", f"{base}/items", json={"items": items})
                )
            data = b"".join(json.dumps(item).encode() + b"\n" for item in items)
            return self._upload(
                base, "items.jsonl", len(data), lambda: io.BytesIO(data), wait, poll_interval, timeout
            )
        file = Path(path)  # type: ignore[arg-type]
        return self._upload(
            base, file.name, file.stat().st_size, lambda: file.open("rb"), wait, poll_interval, timeout
        )

    def _upload(
        self,
        base: str,
        filename: str,
        size: int,
        opener: Callable[[], Any],
        wait: bool,
        poll_interval: float,
        timeout: float | None,
    ) -> DatasetVersion:
        upload = self._json("POST", f"{base}/uploads", json={"filename": filename, "size": size})
        commit: dict[str, Any] = {}
        with opener() as stream:
            if upload.get("upload_url"):
                # Sent as read, 1 MiB at a time (a dataset file may be 512 MiB); with the length
                # given, httpx does not chunk the body, which a presigned S3 PUT would refuse.
                # Built apart from the client's default headers: the signed URL is S3's only
                # credential, and the API key must not travel to S3 (nor into its request logs).
                request = httpx.Request(
                    "PUT",
                    upload["upload_url"],
                    content=iter(partial(stream.read, UPLOAD_READ_BYTES), b""),
                    headers={"content-type": "application/octet-stream", "content-length": str(size)},
                    extensions={"timeout": httpx.Timeout(None).as_dict()},
                )
                response = self._http.send(request)
                if response.status_code >= 300:
                    raise ApiError(response.status_code, "upload_failed", response.text[:500])
            else:
                parts = 0
                while chunk := stream.read(int(upload["part_size"])):
                    parts += 1
                    self._request(
                        "PUT",
                        f"{base}/uploads/{upload['id']}/parts/{parts}",
                        json={"content_base64": base64.b64encode(chunk).decode()},
                    )
                commit["parts"] = max(parts, 1)
                if parts == 0:
                    self._request(
                        "PUT", f"{base}/uploads/{upload['id']}/parts/1", json={"content_base64": ""}
                    )
        version = DatasetVersion.model_validate(
            self._json("POST", f"{base}/uploads/{upload['id']}/commit", json=commit)
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while wait and version.status == "processing":
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"dataset version {version.id} is still processing after {timeout}s")
            time.sleep(poll_interval)
            version = DatasetVersion.model_validate(self._json("GET", base))
        if version.status == "failed":
            raise ApiError(
                400,
                version.error_code or "malformed_file",
                version.error or "the file was refused",
                {"line": version.error_line, "reason": version.error},
            )
        return version

    def get_dataset_items(
        self, dataset_id: str, version_id: str, limit: int = 100, next_token: str | None = None
    ) -> Page[DatasetItem]:
        """A page of the version's items in file order; pass ``.next_token`` back for the next."""
        path = f"/datasets/{dataset_id}/versions/{version_id}/items"
        return self._page(
            DatasetItem, self._json("GET", path, params={"limit": limit, "next_token": next_token})
        )

    def get_dataset_item_count(self, dataset_id: str, version_id: str) -> int:
        return self.get_dataset_version(dataset_id, version_id).item_count

    def get_execution_results(
        self,
        workflow_id: str,
        execution_id: str,
        limit: int = 100,
        next_token: str | None = None,
        status: str | None = None,
    ) -> Page[BatchItemResult]:
        """A page of a batch run's items (``{source_item_id, status, input, output, error}``), in
        the order of the dataset; every item appears exactly once across the pages. With
        ``status`` (``"failed"``), only those items: a page can then be short, even empty, with a
        ``next_token`` to read on; ``.stopped_by`` says why a page ended short."""
        path = f"/workflows/{workflow_id}/executions/{execution_id}/results"
        params = {"limit": limit, "next_token": next_token, "status": status}
        return self._page(BatchItemResult, self._json("GET", path, params=params))

    def download_execution_results(
        self,
        workflow_id: str,
        execution_id: str,
        output_path: str | os.PathLike[str],
        format: str = "jsonl",
        page_size: int = MAX_RESULTS_PAGE,
    ) -> Path:
        """Every item result of a batch run into one JSONL or CSV file (any size): one download
        (a presigned URL when large), or, where the API offers no URL (the local stack), page by
        page through the results API."""
        target = Path(output_path)
        path = f"/workflows/{workflow_id}/executions/{execution_id}/results"
        try:
            self._fetch_file(path, target, params={"format": format})
            return target
        except ApiError as exc:
            if exc.code != "results_too_large":
                raise

        def rows() -> Iterator[dict[str, Any]]:
            token: str | None = None
            while True:
                page = self.get_execution_results(
                    workflow_id, execution_id, limit=page_size, next_token=token
                )
                yield from (result_row(r) for r in page)
                token = page.next_token
                if not token:
                    return

        with target.open("wb") as out:
            for chunk in format_rows(rows(), format):
                out.write(chunk)
        return target

    def get_execution_item(self, workflow_id: str, execution_id: str, item_id: str) -> dict[str, Any]:
        """One item of a batch run: its result and ``node_executions`` (every node of its chain)."""
        path = f"/workflows/{workflow_id}/executions/{execution_id}/items/{quote(item_id, safe='')}"
        result: dict[str, Any] = self._json("GET", path)
        return result

    def retry_failed_items(
        self,
        workflow_id: str,
        execution_id: str,
        version_id: str | None = None,
        parallelism: int | None = None,
    ) -> Execution:
        """A new batch run over only the items of this (finished) batch run that failed."""
        body = {k: v for k, v in (("version_id", version_id), ("parallelism", parallelism)) if v is not None}
        path = f"/workflows/{workflow_id}/executions/{execution_id}/retry-failed"
        return Execution.model_validate(self._json("POST", path, json=body))

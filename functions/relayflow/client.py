"""The Python client of relayflow's HTTP API.

from relayflow import Client
client = Client()                      # RELAYFLOW_URL and RELAYFLOW_API_KEY from the environment
workflow = client.create_workflow(name="Docs")
execution = client.execute_workflow(workflow_id=workflow.id, input_mode="single", single_input="hi")
execution = client.wait_for_execution(workflow_id=workflow.id, execution_id=execution.id)
"""

from __future__ import annotations

import base64
import mimetypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field

from relayflow.models.entities import (
    Execution as _Execution,
)
from relayflow.models.entities import (
    Model,
    Workflow,
    WorkflowEdge,
    WorkflowNode,
    WorkflowVersion,
)

T = TypeVar("T", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8765"


class ApiError(Exception):
    """The API answered with an error: ``status``, machine-readable ``code``, readable ``message``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Execution(_Execution):
    """An execution as the client sees it: node results are plain dicts, as in the reference docs."""

    node_executions: dict[str, dict[str, Any]] = Field(default_factory=dict)  # type: ignore[assignment]


class Page(list[T]):
    """A list of results with the cursor of the next page (None on the last page)."""

    next_token: str | None = None


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
        response = self._http.request(method, path, json=json, params=clean, headers=headers)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ApiError(
                    response.status_code,
                    body.get("code", "error"),
                    body.get("message", ""),
                    body.get("details"),
                )
            except ValueError:
                raise ApiError(response.status_code, "error", response.text) from None
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _page(self, model: type[T], body: dict[str, Any]) -> Page[T]:
        page: Page[T] = Page(model.model_validate(i) for i in body["items"])
        page.next_token = body.get("next_token")
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

    def validate_workflow_version(self, workflow_id: str, version_id: str) -> dict[str, Any]:
        """Every problem at once: ``{"valid": bool, "problems": [{code, message, node_id}]}``."""
        return self._json("POST", f"/workflows/{workflow_id}/versions/{version_id}/validate")

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
    ) -> Page[Execution]:
        """Newest first; iterate the result, and pass ``.next_token`` back for the next page."""
        params = {
            "limit": limit,
            "status": status,
            "next_token": next_token,
            "created_after": created_after,
            "created_before": created_before,
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
        response = self._request("GET", f"/workflows/{workflow_id}/executions/{execution_id}/input")
        target = Path(output_path)
        target.write_bytes(response.content)
        return target

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

"""Request bodies of the HTTP API. Unknown fields are refused, not ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relayflow_runtime.schemas.entities import (
    MAX_WORKFLOW_TIMEOUT_SECONDS,
    ApiKeyScope,
    BatchConfig,
    NodeConfig,
    VersionConfig,
)

MAX_NAME_LENGTH = 200


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateWorkflow(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Field("", max_length=4000)
    callback_url: str | None = Field(None, max_length=2000)


class UpdateWorkflow(Body):
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH)
    description: str | None = Field(None, max_length=4000)
    active_version_id: str | None = None
    callback_url: str | None = Field(None, max_length=2000)

    @field_validator("name", "description", "active_version_id")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        # Omit a field to keep it; an explicit null would leave a workflow that no longer reads back.
        if value is None:
            raise ValueError("must not be null (omit the field to keep its value)")
        return value


class CreateVersion(Body):
    name: str = Field("", max_length=MAX_NAME_LENGTH)
    config: VersionConfig | None = None
    copy_from_version_id: str | None = None


class UpdateVersion(Body):
    name: str | None = Field(None, max_length=MAX_NAME_LENGTH)
    config: dict[str, Any] | None = None


class CreateNode(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    entity_type: Literal["model"] = "model"
    entity_id: str = Field(min_length=1)
    config: NodeConfig = Field(default_factory=NodeConfig)


class UpdateNode(Body):
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH)
    entity_id: str | None = None
    config: dict[str, Any] | None = None


class CreateEdge(Body):
    begin_node_id: str = Field(min_length=1)
    end_node_id: str = Field(min_length=1)


class CreateModel(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    provider: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)


class FileInput(Body):
    filename: str = Field(min_length=1, max_length=500)
    content_type: str = "application/octet-stream"
    content_base64: str


class Execute(Body):
    input_mode: Literal["single", "batch"] = "single"
    single_input: str | None = None
    file: FileInput | None = None
    version_id: str | None = None
    timeout: int | None = Field(None, ge=1, le=MAX_WORKFLOW_TIMEOUT_SECONDS)
    batch_config: BatchConfig | None = None
    callback_url: str | None = Field(None, max_length=2000)


class CreateApiKey(Body):
    name: str = Field("", max_length=MAX_NAME_LENGTH)
    # None: the scopes of the key making the request (a key never grants more than it holds).
    scopes: list[ApiKeyScope] | None = Field(None, min_length=1, max_length=3)
    expires_in_days: int | None = Field(None, ge=1, le=3650)

"""The items the stores keep beside the execution's, declared once: what the table holds, which is
more than the API shows.

domain/execution_record.py does this for the execution item; here are the others whose writers
add fields on the side: a workflow (its version and run counters), its versions, nodes and edges,
models (the config kept as JSON text), datasets (the version count), their versions (where the
items are, the first item lacking each field) and uploads (the parts received), API keys (the
key's hash, its own expiry apart from the table's TTL) and the S3 trigger's upload markers. Each
record is what crosses from a store (adapters/table/) into a service, in both directions, and
``to_api`` maps it field by field to the API's model in schemas/entities.py, so a stored field
never leaks into an answer by accident.

Conventions (those of ExecutionRecord and NodeRecord): a field added later has a default, so an
item written before it reads; a field this does not declare is kept as read (``extra="allow"``,
in ``model_extra``), never refused, and never written again (:meth:`StoredRecord.item`, what a
put writes, holds the declared fields that are set). What an update may set is a TypedDict
(``WorkflowUpdate`` …), so mypy checks every key a writer names while the update stays the plain
mapping the table writes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from typing_extensions import TypedDict

from relayflow_runtime.schemas.entities import (
    ApiKey,
    ApiKeyScope,
    Dataset,
    DatasetVersion,
    DatasetVersionStatus,
    Model,
    NodeConfig,
    VersionConfig,
    Workflow,
    WorkflowEdge,
    WorkflowNode,
    WorkflowVersion,
    timeouts_within_cap,
)


class StoredRecord(BaseModel):
    """An item as a store reads and writes it (its key attributes are the store's own)."""

    model_config = ConfigDict(extra="allow")

    def item(self) -> dict[str, Any]:
        """The item's attributes as a put writes them (the store adds its keys): the declared fields,
        without those never set, as ExecutionRecord.item writes them, so a condition on an
        attribute's absence (an API key's ``revoked_at``) holds; fields read but not declared (a
        copied node's) are not written again."""
        return self.model_dump(mode="json", exclude_none=True, exclude=set(self.model_extra or ()))


# ---- workflows ----------------------------------------------------------------------------------------
class WorkflowRecord(StoredRecord):
    """A workflow item (sort key ``WF``). Its counters are added by the store's ADDs, never by a
    put: absent (0) until the first version or run is numbered."""

    id: str
    name: str
    description: str = ""
    active_version_id: str | None = None
    callback_url: str | None = None
    created_at: str
    updated_at: str
    #: the last version number and run number given (WorkflowStore.next_*_number)
    version_count: int = 0
    execution_count: int = 0

    def to_api(self) -> Workflow:
        return Workflow(
            id=self.id,
            name=self.name,
            description=self.description,
            active_version_id=self.active_version_id,
            callback_url=self.callback_url,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class WorkflowUpdate(TypedDict, total=False):
    """What an update of a workflow sets (the fields of api.UpdateWorkflow, and the time)."""

    name: str
    description: str
    active_version_id: str
    callback_url: str | None
    updated_at: str


class VersionRecord(StoredRecord):
    """A version item (sort key ``V``). A node timeout stored before the cap was lowered reads as
    the cap (schemas/entities.py), so the version still shows and runs."""

    id: str
    workflow_id: str
    number: int
    name: str = ""
    config: VersionConfig = VersionConfig()
    created_at: str
    updated_at: str

    @field_validator("config", mode="before")
    @classmethod
    def _stored_node_timeout(cls, config: Any) -> Any:
        return timeouts_within_cap(config, "node_timeout")

    def to_api(self) -> WorkflowVersion:
        return WorkflowVersion(
            id=self.id,
            workflow_id=self.workflow_id,
            number=self.number,
            name=self.name,
            config=self.config,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class VersionUpdate(TypedDict, total=False):
    name: str
    #: VersionConfig as JSON
    config: dict[str, Any]
    updated_at: str


class GraphNodeRecord(StoredRecord):
    """A node of a version (sort key ``N#<node id>``)."""

    id: str
    workflow_id: str
    version_id: str
    name: str
    entity_type: Literal["model"] = "model"
    entity_id: str
    config: NodeConfig = NodeConfig()
    position: int
    created_at: str
    updated_at: str

    @field_validator("config", mode="before")
    @classmethod
    def _stored_timeout(cls, config: Any) -> Any:
        return timeouts_within_cap(config, "timeout")

    def to_api(self) -> WorkflowNode:
        return WorkflowNode(
            id=self.id,
            workflow_id=self.workflow_id,
            version_id=self.version_id,
            name=self.name,
            entity_type=self.entity_type,
            entity_id=self.entity_id,
            config=self.config,
            position=self.position,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class GraphNodeUpdate(TypedDict, total=False):
    name: str
    entity_id: str
    #: NodeConfig as JSON
    config: dict[str, Any]
    updated_at: str


class EdgeRecord(StoredRecord):
    """An edge of a version (sort key ``E#<edge id>``)."""

    id: str
    workflow_id: str
    version_id: str
    begin_node_id: str
    end_node_id: str
    created_at: str

    def to_api(self) -> WorkflowEdge:
        return WorkflowEdge(
            id=self.id,
            workflow_id=self.workflow_id,
            version_id=self.version_id,
            begin_node_id=self.begin_node_id,
            end_node_id=self.end_node_id,
            created_at=self.created_at,
        )


#: A version with its nodes (in creation order) and edges: WorkflowStore.version_graph.
VersionGraph = tuple[VersionRecord, list[GraphNodeRecord], list[EdgeRecord]]


# ---- models -------------------------------------------------------------------------------------------
class ModelRecord(StoredRecord):
    """A model item (sort key ``M``). The config is kept as its JSON text: any JSON value keeps (a
    DynamoDB number has a narrower range and precision than JSON's) and reads back as it was sent;
    models written before kept it as a map, and read the same."""

    id: str
    name: str
    provider: str
    config: str | dict[str, Any] = "{}"
    created_at: str

    @classmethod
    def of(cls, model: Model) -> ModelRecord:
        return cls(
            id=model.id,
            name=model.name,
            provider=model.provider,
            config=json.dumps(model.config, ensure_ascii=False, separators=(",", ":")),
            created_at=model.created_at,
        )

    def parsed_config(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.config) if isinstance(self.config, str) else self.config
        return parsed

    def to_api(self) -> Model:
        return Model(
            id=self.id,
            name=self.name,
            provider=self.provider,
            config=self.parsed_config(),
            created_at=self.created_at,
        )


# ---- API keys -----------------------------------------------------------------------------------------
class ApiKeyRecord(StoredRecord):
    """An API key item (key ``KEY#<id>``/``KEY``, the one not led by the tenant): never the key, only
    its SHA-256. The key's own expiry is kept as ``valid_until``: the item's ``expires_at`` is the
    table's TTL attribute (epoch seconds, a key attribute the store sets and never reads back)."""

    id: str
    name: str = ""
    prefix: str
    scopes: list[ApiKeyScope]
    created_at: str
    valid_until: str | None = None
    revoked_at: str | None = None
    created_by: str | None = None
    key_hash: str = ""

    def to_api(self) -> ApiKey:
        return ApiKey(
            id=self.id,
            name=self.name,
            prefix=self.prefix,
            scopes=self.scopes,
            created_at=self.created_at,
            expires_at=self.valid_until,
            revoked_at=self.revoked_at,
            created_by=self.created_by,
        )


# ---- upload markers -----------------------------------------------------------------------------------
UploadState = Literal["starting", "started", "rejected", "skipped"]


class UploadMarker(StoredRecord):
    """The S3 trigger's marker of an upload it has seen (services/uploads.py; key ``UP``): claimed
    once per object version, updated under the claim. The item's ``expires_at`` is the table's TTL
    (the end of the dedup window), a key attribute set at the claim and never read back."""

    state: UploadState
    #: the run the upload starts (kept across a claim taken over)
    execution_id: str
    #: whose claim it is; a write under the claim expects it
    claim_token: str
    #: epoch seconds until which a ``starting`` claim is another delivery's
    lease_until: int = 0
    # ---- for whoever reads the table: which object, when claimed and finished, why not started
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    version_id: str | None = None
    claimed_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None


class UploadUpdate(TypedDict, total=False):
    """What an update of a marker sets, or (``expect``) what it must still hold."""

    state: UploadState
    claim_token: str
    lease_until: int
    finished_at: str
    reason: str | None


# ---- datasets -----------------------------------------------------------------------------------------
class DatasetRecord(StoredRecord):
    """A dataset item (sort key ``D``); ``version_count`` is added by the store's ADD."""

    id: str
    name: str
    description: str = ""
    version_count: int = 0
    created_at: str
    updated_at: str

    def to_api(self) -> Dataset:
        return Dataset(
            id=self.id,
            name=self.name,
            description=self.description,
            version_count=self.version_count,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class DatasetVersionRecord(StoredRecord):
    """A dataset version item (sort key ``V#<version id>``): what the API shows, and what a batch
    submission reads without scanning the items (where the list is, the first item lacking each
    field). Versions written before a field existed read with it absent (None)."""

    id: str
    dataset_id: str
    number: int
    name: str = ""
    status: DatasetVersionStatus = "empty"
    item_count: int = 0
    fields: list[str] = []
    format: str | None = None
    source_filename: str | None = None
    size_bytes: int = 0
    error: str | None = None
    error_code: str | None = None
    error_line: int | None = None
    created_at: str
    updated_at: str
    #: the item list's S3 key (services/dataset_service.items_key when absent)
    items_key: str | None = None
    #: for each field some item lacks, the first such item's id (services/batch.py names it)
    lacking_fields: dict[str, str] | None = None

    def to_api(self) -> DatasetVersion:
        return DatasetVersion(
            id=self.id,
            dataset_id=self.dataset_id,
            number=self.number,
            name=self.name,
            status=self.status,
            item_count=self.item_count,
            fields=self.fields,
            format=self.format,
            source_filename=self.source_filename,
            size_bytes=self.size_bytes,
            error=self.error,
            error_code=self.error_code,
            error_line=self.error_line,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class DatasetVersionUpdate(TypedDict, total=False):
    """What an update of a dataset version sets (a claim, a failure, the ingest's end)."""

    status: DatasetVersionStatus
    error: str | None
    error_code: str | None
    error_line: int | None
    updated_at: str
    format: str
    source_filename: str | None
    item_count: int
    fields: list[str]
    size_bytes: int
    items_key: str
    lacking_fields: dict[str, str]


class DatasetUploadRecord(StoredRecord):
    """A dataset file upload in progress (sort key ``U#<upload id>``, removed by its TTL, the
    item's ``expires_at``): what its commit needs, and the parts received (size by part number,
    ``00001``...). The answer that started it (its URL, part size) is not kept: nothing reads it."""

    id: str
    dataset_id: str
    version_id: str
    filename: str
    format: str
    parts: dict[str, int] = {}

"""Datasets, their versions, their items, and file uploads (see docs/batch.md)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from relayflow_runtime.domain.limits import MAX_DATASET_ITEMS_PAGE
from relayflow_runtime.handlers.context import current_tenant, page
from relayflow_runtime.schemas import dataset_api
from relayflow_runtime.services import dataset_service

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post("/datasets", tags=["datasets"], status_code=201)
def create_dataset(body: dataset_api.CreateDataset) -> tuple[dict[str, Any], int]:
    return dataset_service.create_dataset(_tenant(), body).model_dump(mode="json"), 201


@router.get("/datasets", tags=["datasets"])
def list_datasets(
    limit: Annotated[int, Query(ge=1, le=200)] = 50, next_token: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    return page(*dataset_service.list_datasets(_tenant(), limit, next_token))


@router.get("/datasets/<dataset_id>", tags=["datasets"])
def get_dataset(dataset_id: str) -> dict[str, Any]:
    return dataset_service.get_dataset(_tenant(), dataset_id).model_dump(mode="json")


@router.delete("/datasets/<dataset_id>", tags=["datasets"])
def delete_dataset(dataset_id: str) -> dict[str, Any]:
    dataset_service.delete_dataset(_tenant(), dataset_id)
    return {"deleted": dataset_id}


@router.post("/datasets/<dataset_id>/versions", tags=["datasets"], status_code=201)
def create_version(dataset_id: str, body: dataset_api.CreateDatasetVersion) -> tuple[dict[str, Any], int]:
    return dataset_service.create_version(_tenant(), dataset_id, body).model_dump(mode="json"), 201


@router.get("/datasets/<dataset_id>/versions", tags=["datasets"])
def list_versions(dataset_id: str) -> dict[str, Any]:
    return page(dataset_service.list_versions(_tenant(), dataset_id), None)


@router.get("/datasets/<dataset_id>/versions/<version_id>", tags=["datasets"])
def get_version(dataset_id: str, version_id: str) -> dict[str, Any]:
    return dataset_service.get_version(_tenant(), dataset_id, version_id).model_dump(mode="json")


@router.delete("/datasets/<dataset_id>/versions/<version_id>", tags=["datasets"])
def delete_version(dataset_id: str, version_id: str) -> dict[str, Any]:
    dataset_service.delete_version(_tenant(), dataset_id, version_id)
    return {"deleted": version_id}


@router.post("/datasets/<dataset_id>/versions/<version_id>/items", tags=["datasets"])
def add_items(dataset_id: str, version_id: str, body: dataset_api.AddItems) -> dict[str, Any]:
    """A small list of items, committed whole (larger lists and files: the upload routes)."""
    return dataset_service.add_items(_tenant(), dataset_id, version_id, body).model_dump(mode="json")


@router.get("/datasets/<dataset_id>/versions/<version_id>/items", tags=["datasets"])
def list_items(
    dataset_id: str,
    version_id: str,
    limit: Annotated[int, Query(ge=1, le=MAX_DATASET_ITEMS_PAGE)] = 100,
    next_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    items, token = dataset_service.list_items(_tenant(), dataset_id, version_id, limit, next_token)
    return page(items, token)


@router.post("/datasets/<dataset_id>/versions/<version_id>/uploads", tags=["datasets"], status_code=201)
def start_upload(
    dataset_id: str, version_id: str, body: dataset_api.StartUpload
) -> tuple[dict[str, Any], int]:
    upload = dataset_service.start_upload(_tenant(), dataset_id, version_id, body)
    return upload.model_dump(mode="json"), 201


@router.put(
    "/datasets/<dataset_id>/versions/<version_id>/uploads/<upload_id>/parts/<part>", tags=["datasets"]
)
def put_part(
    dataset_id: str,
    version_id: str,
    upload_id: str,
    part: Annotated[int, Path(ge=1)],
    body: dataset_api.UploadPart,
) -> dict[str, Any]:
    return dataset_service.put_part(_tenant(), dataset_id, version_id, upload_id, part, body)


@router.post("/datasets/<dataset_id>/versions/<version_id>/uploads/<upload_id>/commit", tags=["datasets"])
def commit_upload(
    dataset_id: str, version_id: str, upload_id: str, body: dataset_api.CommitUpload
) -> tuple[dict[str, Any], int]:
    """200 with the version ``ready`` (or 400 naming the line at fault), or 202 with the version
    ``processing`` for a large file: poll the version until it is ``ready`` or ``failed``."""
    version = dataset_service.commit_upload(_tenant(), dataset_id, version_id, upload_id, body)
    return version.model_dump(mode="json"), 202 if version.status == "processing" else 200

"""Datasets, their versions, their items, and file uploads (see docs/batch.md)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from relayflow_runtime.domain.limits import MAX_DATASET_ITEMS_PAGE, MAX_UPLOAD_PARTS
from relayflow_runtime.handlers.context import Limit, NextToken, current_tenant
from relayflow_runtime.schemas import dataset_api
from relayflow_runtime.schemas.entities import Dataset, DatasetUpload, DatasetVersion
from relayflow_runtime.schemas.responses import (
    DatasetItemPage,
    DatasetPage,
    DatasetVersionPage,
    Deleted,
    UploadPartReceipt,
)
from relayflow_runtime.services import dataset_service

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post(
    "/datasets",
    operation_id="createDataset",
    summary="Create a dataset",
    description="A dataset holds versions of items; batch runs read one version.",
    tags=["datasets"],
    status_code=201,
    response_description="The dataset",
)
def create_dataset(body: dataset_api.CreateDataset) -> Dataset:
    return dataset_service.create_dataset(_tenant(), body)


@router.get(
    "/datasets",
    operation_id="getDatasets",
    summary="List datasets",
    tags=["datasets"],
    response_description="A page of datasets",
)
def list_datasets(limit: Limit = 50, next_token: NextToken = None) -> DatasetPage:
    items, token = dataset_service.list_datasets(_tenant(), limit, next_token)
    return DatasetPage(items=items, next_token=token)


@router.get(
    "/datasets/<dataset_id>",
    operation_id="getDataset",
    summary="Get a dataset",
    tags=["datasets"],
    response_description="The dataset",
)
def get_dataset(dataset_id: str) -> Dataset:
    return dataset_service.get_dataset(_tenant(), dataset_id)


@router.delete(
    "/datasets/<dataset_id>",
    operation_id="deleteDataset",
    summary="Delete a dataset",
    description="With its versions and items.",
    tags=["datasets"],
    response_description="The id of the deleted dataset",
)
def delete_dataset(dataset_id: str) -> Deleted:
    dataset_service.delete_dataset(_tenant(), dataset_id)
    return Deleted(deleted=dataset_id)


@router.post(
    "/datasets/<dataset_id>/versions",
    operation_id="createDatasetVersion",
    summary="Create a dataset version",
    description="An empty version: give it its items once, with addDatasetItems or an upload.",
    tags=["datasets"],
    status_code=201,
    response_description="The version (status empty)",
)
def create_version(dataset_id: str, body: dataset_api.CreateDatasetVersion) -> DatasetVersion:
    return dataset_service.create_version(_tenant(), dataset_id, body)


@router.get(
    "/datasets/<dataset_id>/versions",
    operation_id="getDatasetVersions",
    summary="List a dataset's versions",
    description="Every version, in one page (`next_token` is always null).",
    tags=["datasets"],
    response_description="The versions",
)
def list_versions(dataset_id: str) -> DatasetVersionPage:
    return DatasetVersionPage(items=dataset_service.list_versions(_tenant(), dataset_id))


@router.get(
    "/datasets/<dataset_id>/versions/<version_id>",
    operation_id="getDatasetVersion",
    summary="Get a dataset version",
    description="Poll a version that is `processing` until it is `ready` or `failed`.",
    tags=["datasets"],
    response_description="The version",
)
def get_version(dataset_id: str, version_id: str) -> DatasetVersion:
    return dataset_service.get_version(_tenant(), dataset_id, version_id)


@router.delete(
    "/datasets/<dataset_id>/versions/<version_id>",
    operation_id="deleteDatasetVersion",
    summary="Delete a dataset version",
    tags=["datasets"],
    response_description="The id of the deleted version",
)
def delete_version(dataset_id: str, version_id: str) -> Deleted:
    dataset_service.delete_version(_tenant(), dataset_id, version_id)
    return Deleted(deleted=version_id)


@router.post(
    "/datasets/<dataset_id>/versions/<version_id>/items",
    operation_id="addDatasetItems",
    summary="Give an empty version its items",
    description="A small list of items, committed whole (larger lists and files: the upload "
    "operations). An item's `id` field, when it has one, is its id.",
    tags=["datasets"],
    response_description="The version, ready",
)
def add_items(dataset_id: str, version_id: str, body: dataset_api.AddItems) -> DatasetVersion:
    return dataset_service.add_items(_tenant(), dataset_id, version_id, body)


@router.get(
    "/datasets/<dataset_id>/versions/<version_id>/items",
    operation_id="getDatasetItems",
    summary="List a version's items",
    description="In file order, a page at a time.",
    tags=["datasets"],
    response_description="A page of items",
)
def list_items(
    dataset_id: str,
    version_id: str,
    limit: Annotated[
        int, Query(ge=1, le=MAX_DATASET_ITEMS_PAGE, description="Most items in the page.")
    ] = 100,
    next_token: NextToken = None,
) -> DatasetItemPage:
    items, token = dataset_service.list_items(_tenant(), dataset_id, version_id, limit, next_token)
    return DatasetItemPage(items=items, next_token=token)


@router.post(
    "/datasets/<dataset_id>/versions/<version_id>/uploads",
    operation_id="startDatasetUpload",
    summary="Start uploading a dataset file",
    description="A .jsonl, .ndjson, .csv or .json file: send it to `upload_url` (a presigned S3 PUT, "
    "on AWS) or in base64 parts (putDatasetUploadPart), then commitDatasetUpload.",
    tags=["datasets"],
    status_code=201,
    response_description="Where to send the file",
)
def start_upload(dataset_id: str, version_id: str, body: dataset_api.StartUpload) -> DatasetUpload:
    return dataset_service.start_upload(_tenant(), dataset_id, version_id, body)


@router.put(
    "/datasets/<dataset_id>/versions/<version_id>/uploads/<upload_id>/parts/<part>",
    operation_id="putDatasetUploadPart",
    summary="Send one part of a dataset file",
    description="Parts are numbered from 1, each at most `part_size` bytes once decoded.",
    tags=["datasets"],
    response_description="The part, received",
)
def put_part(
    dataset_id: str,
    version_id: str,
    upload_id: str,
    part: Annotated[int, Path(ge=1, le=MAX_UPLOAD_PARTS, description="The part's number, from 1.")],
    body: dataset_api.UploadPart,
) -> UploadPartReceipt:
    receipt = dataset_service.put_part(_tenant(), dataset_id, version_id, upload_id, part, body)
    return UploadPartReceipt.model_validate(receipt)


@router.post(
    "/datasets/<dataset_id>/versions/<version_id>/uploads/<upload_id>/commit",
    operation_id="commitDatasetUpload",
    summary="Commit an uploaded dataset file",
    description="200 with the version `ready` (or 400 naming the line at fault), or 202 with the "
    "version `processing` for a large file: poll the version until it is `ready` or `failed`.",
    tags=["datasets"],
    response_description="The version, ready",
    responses={
        202: {
            "description": "The version, processing in the background",
            "content": {"application/json": {"model": DatasetVersion}},
        }
    },
)
def commit_upload(
    dataset_id: str, version_id: str, upload_id: str, body: dataset_api.CommitUpload
) -> Response[DatasetVersion]:
    version = dataset_service.commit_upload(_tenant(), dataset_id, version_id, upload_id, body)
    return Response(
        status_code=202 if version.status == "processing" else 200,
        content_type=content_types.APPLICATION_JSON,
        body=version,
    )

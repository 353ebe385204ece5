"""Every field the API takes or shows is declared on its stored record (domain/records.py): a
field added to a request or an entity without one would be dropped between the two without a
word (a record keeps undeclared fields only as read, never writes them), so this fails first. It
holds the declarations; that ``to_api`` and the services carry each field is for their own tests."""

from __future__ import annotations

from typing import Any, get_type_hints

import pytest
from pydantic import BaseModel

from relayflow_runtime.domain import records
from relayflow_runtime.schemas import api, dataset_api

#: API fields a record keeps under another name or derives, with where (by the record's to_api).
RENAMED = {"ApiKey": {"expires_at"}}  # kept as valid_until (the key's own expiry, not the TTL)
#: Request fields that steer the write instead of being stored.
STEERING = {"CreateVersion": {"copy_from_version_id"}}

#: Every record that shows itself through the API, with the entity its ``to_api`` answers (a record
#: added with a ``to_api`` is held here without a word).
SHOWN = [
    (record, get_type_hints(record.to_api)["return"])
    for record in records.StoredRecord.__subclasses__()
    if "to_api" in vars(record)
]
CREATED = [
    (records.WorkflowRecord, api.CreateWorkflow),
    (records.VersionRecord, api.CreateVersion),
    (records.GraphNodeRecord, api.CreateNode),
    (records.EdgeRecord, api.CreateEdge),
    (records.ModelRecord, api.CreateModel),
    (records.DatasetRecord, dataset_api.CreateDataset),
    (records.DatasetVersionRecord, dataset_api.CreateDatasetVersion),
]
UPDATED: list[tuple[Any, type[BaseModel]]] = [
    (records.WorkflowUpdate, api.UpdateWorkflow),
    (records.VersionUpdate, api.UpdateVersion),
    (records.GraphNodeUpdate, api.UpdateNode),
]


@pytest.mark.parametrize(("record", "entity"), SHOWN, ids=lambda c: c.__name__)
def test_every_field_an_entity_shows_is_declared_on_its_record(
    record: type[BaseModel], entity: type[BaseModel]
) -> None:
    missing = set(entity.model_fields) - set(record.model_fields) - RENAMED.get(entity.__name__, set())
    assert not missing, f"{entity.__name__} shows {sorted(missing)}, which {record.__name__} does not keep"


@pytest.mark.parametrize(("record", "request_body"), CREATED, ids=lambda c: c.__name__)
def test_every_field_a_create_request_takes_is_declared_on_its_record(
    record: type[BaseModel], request_body: type[BaseModel]
) -> None:
    taken = set(request_body.model_fields) - STEERING.get(request_body.__name__, set())
    missing = taken - set(record.model_fields)
    assert not missing, f"{request_body.__name__} takes {sorted(missing)}, not kept by {record.__name__}"


@pytest.mark.parametrize(("update", "request_body"), UPDATED, ids=lambda c: c.__name__)
def test_every_field_an_update_request_takes_is_a_key_its_update_may_set(
    update: Any, request_body: type[BaseModel]
) -> None:
    missing = set(request_body.model_fields) - set(update.__annotations__)
    assert not missing, f"{request_body.__name__} takes {sorted(missing)}, which {update.__name__} cannot set"

"""API keys of the caller's tenant: create (the key is shown once), list, read, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from relayflow_runtime.handlers.context import page, principal_of
from relayflow_runtime.schemas import api
from relayflow_runtime.services import apikeys

router = Router()


def _principal() -> apikeys.Principal:
    return principal_of(router.current_event.raw_event)


@router.post("/api-keys", tags=["api-keys"], status_code=201)
def create_api_key(body: api.CreateApiKey) -> tuple[dict[str, Any], int]:
    return apikeys.create_key_for(_principal(), body).model_dump(mode="json"), 201


@router.get("/api-keys", tags=["api-keys"])
def list_api_keys(
    limit: Annotated[int, Query(ge=1, le=200)] = 50, next_token: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    return page(*apikeys.list_keys(_principal().tenant, limit, next_token))


@router.get("/api-keys/<key_id>", tags=["api-keys"])
def get_api_key(key_id: str) -> dict[str, Any]:
    return apikeys.get_key(_principal().tenant, key_id).model_dump(mode="json")


@router.post("/api-keys/<key_id>/revoke", tags=["api-keys"])
def revoke_api_key(key_id: str) -> dict[str, Any]:
    return apikeys.revoke_key(_principal().tenant, key_id).model_dump(mode="json")

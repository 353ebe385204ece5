"""API keys of the caller's tenant: create (the key is shown once), list, read, revoke."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from relayflow_runtime.handlers.context import Limit, NextToken, principal_of
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import ApiKey, CreatedApiKey
from relayflow_runtime.schemas.responses import ApiKeyPage
from relayflow_runtime.services import apikeys

router = Router()


def _principal() -> apikeys.Principal:
    return principal_of(router.current_event.raw_event)


@router.post(
    "/api-keys",
    operation_id="createApiKey",
    summary="Create an API key",
    description="A key of the caller's tenant with some of the caller's scopes (by default all of "
    "them: a key never grants more than it holds). `key` is shown only in this answer.",
    tags=["api-keys"],
    status_code=201,
    response_description="The key, with its secret",
)
def create_api_key(body: api.CreateApiKey) -> CreatedApiKey:
    return apikeys.create_key_for(_principal(), body)


@router.get(
    "/api-keys",
    operation_id="getApiKeys",
    summary="List API keys",
    description="The tenant's keys, never their secrets.",
    tags=["api-keys"],
    response_description="A page of keys",
)
def list_api_keys(limit: Limit = 50, next_token: NextToken = None) -> ApiKeyPage:
    items, token = apikeys.list_keys(_principal().tenant, limit, next_token)
    return ApiKeyPage(items=items, next_token=token)


@router.get(
    "/api-keys/<key_id>",
    operation_id="getApiKey",
    summary="Get an API key",
    tags=["api-keys"],
    response_description="The key, without its secret",
)
def get_api_key(key_id: str) -> ApiKey:
    return apikeys.get_key(_principal().tenant, key_id)


@router.post(
    "/api-keys/<key_id>/revoke",
    operation_id="revokeApiKey",
    summary="Revoke an API key",
    description="The key stops working at once; revoking it again changes nothing.",
    tags=["api-keys"],
    response_description="The key, revoked",
)
def revoke_api_key(key_id: str) -> ApiKey:
    return apikeys.revoke_key(_principal(), key_id)

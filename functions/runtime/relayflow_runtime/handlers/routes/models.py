"""Models: the provider and configuration a node calls."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from relayflow_runtime.handlers.context import current_tenant, page
from relayflow_runtime.schemas import api
from relayflow_runtime.services import authoring

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post("/models", tags=["models"], status_code=201)
def create_model(body: api.CreateModel) -> tuple[dict[str, Any], int]:
    return authoring.create_model(_tenant(), body).model_dump(mode="json"), 201


@router.get("/models", tags=["models"])
def list_models(
    limit: Annotated[int, Query(ge=1, le=200)] = 50, next_token: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    return page(*authoring.list_models(_tenant(), limit, next_token))


@router.get("/models/<model_id>", tags=["models"])
def get_model(model_id: str) -> dict[str, Any]:
    return authoring.get_model(_tenant(), model_id).model_dump(mode="json")


@router.delete("/models/<model_id>", tags=["models"])
def delete_model(model_id: str) -> dict[str, Any]:
    authoring.delete_model(_tenant(), model_id)
    return {"deleted": model_id}

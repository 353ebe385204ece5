"""Models: the provider and configuration a node calls."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from relayflow_runtime.handlers.context import Limit, NextToken, current_tenant
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import Model
from relayflow_runtime.schemas.responses import Deleted, ModelPage
from relayflow_runtime.services import authoring

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post(
    "/models",
    operation_id="createModel",
    summary="Create a model",
    description="A provider (`builtin`, `bedrock`, `openai`, `sagemaker`, `lambda`) and its `config`; "
    "the schema of `config` depends on the provider (see CreateModel). Secrets are never inline: "
    "name a Secrets Manager secret or an SSM parameter.",
    tags=["models"],
    status_code=201,
    response_description="The model",
)
def create_model(body: api.CreateModel) -> Model:
    return authoring.create_model(_tenant(), body)


@router.get(
    "/models",
    operation_id="getModels",
    summary="List models",
    description="Oldest first, a page at a time.",
    tags=["models"],
    response_description="A page of models",
)
def list_models(limit: Limit = 50, next_token: NextToken = None) -> ModelPage:
    items, token = authoring.list_models(_tenant(), limit, next_token)
    return ModelPage(items=items, next_token=token)


@router.get(
    "/models/<model_id>",
    operation_id="getModel",
    summary="Get a model",
    tags=["models"],
    response_description="The model",
)
def get_model(model_id: str) -> Model:
    return authoring.get_model(_tenant(), model_id)


@router.delete(
    "/models/<model_id>",
    operation_id="deleteModel",
    summary="Delete a model",
    tags=["models"],
    response_description="The id of the deleted model",
)
def delete_model(model_id: str) -> Deleted:
    authoring.delete_model(_tenant(), model_id)
    return Deleted(deleted=model_id)

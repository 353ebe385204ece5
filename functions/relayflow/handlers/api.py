"""The HTTP API's Lambda: Powertools' resolver validates bodies, routes call one logic function."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow.errors import RelayflowError
from relayflow.handlers.routes import executions, models, workflows

logger = Logger()
tracer = Tracer()
metrics = Metrics()

app = APIGatewayHttpResolver(enable_validation=True)
app.include_router(workflows.router)
app.include_router(models.router)
app.include_router(executions.router)


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.exception_handler(RelayflowError)
def handle_domain_error(exc: RelayflowError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.details)


@app.exception_handler(RequestValidationError)
def handle_validation_error(exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        problems.append({"field": location, "problem": error.get("msg", error.get("type"))})
    sentence = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems)
    return error_response(400, "invalid_request", f"the request is not valid: {sentence}", problems)


@app.not_found
def handle_not_found(_: Exception) -> Response:
    return error_response(
        404, "route_not_found", f"no route {app.current_event.http_method} {app.current_event.path}."
    )


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "relayflow failed to answer; the error was logged.")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

"""The HTTP API's Lambda: Powertools' resolver validates bodies, routes call one logic function."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime import __version__
from relayflow_runtime.domain.limits import MAX_ID_LENGTH, MAX_REQUEST_BODY_BYTES
from relayflow_runtime.errors import NotFound, RelayflowError
from relayflow_runtime.handlers import openapi
from relayflow_runtime.handlers.authorizer import install_redaction
from relayflow_runtime.handlers.context import enforce_access
from relayflow_runtime.handlers.routes import (
    apikeys,
    dashboard,
    datasets,
    executions,
    models,
    webhooks,
    workflows,
)
from relayflow_runtime.schemas import json_text
from relayflow_runtime.schemas.responses import Health

logger = Logger()
tracer = Tracer()
metrics = Metrics()
install_redaction(logger)

# Most requests publish no metric; that is expected, not worth a warning per request.
warnings.filterwarnings("ignore", message="No application metrics to publish")

# The resolver validates request bodies and parameters against the routes' models (400 here), and
# what each route returns against its declared response model: a route that answers something its
# schema does not allow is relayflow's own error (500, logged), never the caller's.
# Bodies are parsed within json_text's bounds (nesting, number size, text): 400, never a 500.
app = APIGatewayHttpResolver(
    enable_validation=True, response_validation_error_http_code=500, json_body_deserializer=json_text.load
)
app.include_router(workflows.router)
app.include_router(models.router)
app.include_router(executions.router)
app.include_router(dashboard.router)
app.include_router(apikeys.router)
app.include_router(webhooks.router)
app.include_router(datasets.router)


def refuse_long_ids(app: APIGatewayHttpResolver, next_middleware: Any) -> Any:
    """No stored id is that long; refuse before a table key outgrows DynamoDB's key size."""
    for segment in app.current_event.path.split("/"):
        if len(segment) > MAX_ID_LENGTH:
            raise NotFound(
                f"no resource has a {len(segment)}-character id (the limit id_length is {MAX_ID_LENGTH})."
            )
    return next_middleware(app)


def is_json_media_type(content_type: str) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``), in any case."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def refuse_other_media_types(app: APIGatewayHttpResolver, next_middleware: Any) -> Any:
    """A route that reads a body reads JSON: a body (even an empty one) of another declared type is
    415 (a body sent without a Content-Type is read as JSON)."""
    route = app.context.get("_route")
    content_type = app.current_event.headers.get("content-type") or ""
    reads_body = route is not None and bool(route.dependant.body_params)
    if reads_body and content_type:  # an empty body too: Powertools would parse it by its type
        if not is_json_media_type(content_type):
            raise RequestUnsupportedContentType("Unsupported content type", errors=[])
        # Media types are case-insensitive; the body parser compares a lower-case prefix.
        headers = app.current_event.raw_event.get("headers") or {}
        for name in [name for name in headers if name.lower() == "content-type"]:
            headers[name] = "application/json"
    return next_middleware(app)


def enforce_access_once(app: APIGatewayHttpResolver, next_middleware: Any) -> Any:
    """The route's scope, checked once per request wherever it comes first in the stack."""
    if app.context.get("_access_checked"):
        return next_middleware(app)
    app.context["_access_checked"] = True
    return enforce_access(app, next_middleware)


def _authorize_before_validating(validation: Any) -> Any:
    """Powertools runs its request validation before any middleware of ours: wrapped so that the
    caller's scope is checked first (403 before a 400 about the body), then the body's media type
    (415), then the body (400)."""

    def admit(app: APIGatewayHttpResolver, next_middleware: Any) -> Any:
        return enforce_access_once(
            app, lambda a: refuse_other_media_types(a, lambda b: validation(b, next_middleware))
        )

    return admit


# A private attribute of the pinned Powertools: fail at import, not quietly validate before authorizing,
# if an upgrade renames it.
if not callable(getattr(app, "_request_validation_middleware", None)):
    raise RuntimeError("Powertools no longer has APIGatewayHttpResolver._request_validation_middleware")
app._request_validation_middleware = _authorize_before_validating(app._request_validation_middleware)
# Also as a global middleware: a route whose validation were turned off would still be authorized.
app.use(middlewares=[enforce_access_once, refuse_long_ids])


@app.get(
    "/health",
    operation_id="getHealth",
    summary="Is the API up?",
    tags=["meta"],
    response_description="The service's status and version",
)
def health() -> Health:
    return Health(version=__version__)


@app.get("/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_text())


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of this API (see handlers/openapi.py)."""
    return openapi.build_document(app)


def openapi_text() -> str:
    return openapi.document_text(app)


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


@app.exception_handler(RequestUnsupportedContentType)
def handle_unsupported_content_type(_: RequestUnsupportedContentType) -> Response:
    content_type = app.current_event.headers.get("content-type", "none")
    return error_response(
        415,
        "unsupported_media_type",
        f"request bodies are JSON: send Content-Type: application/json (got {content_type[:100]!r}).",
    )


def allowed_methods(path: str) -> list[str]:
    """The methods some route declares for this path (empty: no route has this path)."""
    routes = app._static_routes + app._dynamic_routes
    return sorted({route.method for route in routes if route.rule.match(path)})


@app.not_found
def handle_not_found(_: Exception) -> Response:
    method, path = app.current_event.http_method, app.current_event.path
    allowed = allowed_methods(path)
    if allowed:
        answer = error_response(
            405, "method_not_allowed", f"{path} answers {', '.join(allowed)}, not {method[:20]}."
        )
        answer.headers["Allow"] = ", ".join(allowed)
        return answer
    return error_response(404, "route_not_found", f"no route {method[:20]} {path}.")


@app.exception_handler(ResponseValidationError)
def handle_invalid_answer(exc: ResponseValidationError) -> Response:
    logger.error("a route's answer does not match its response model", extra={"errors": exc.errors()})
    return error_response(500, "internal_error", "relayflow failed to answer; the error was logged.")


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "relayflow failed to answer; the error was logged.")


def _body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode()) if isinstance(body, str) else len(body)


def _refusal(status: int, code: str, message: str) -> dict[str, Any]:
    """An error answer given before the resolver runs (payload format 2.0)."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps({"code": code, "message": message}),
        "isBase64Encoded": False,
    }


def _precheck(event: dict[str, Any]) -> dict[str, Any] | None:
    """Refusals the resolver would otherwise turn into a 500: oversized and unparseable bodies."""
    size = _body_size(event)
    if size > MAX_REQUEST_BODY_BYTES:
        return _refusal(
            413,
            "request_too_large",
            f"the request body is {size} bytes; the limit (request_body) is {MAX_REQUEST_BODY_BYTES} "
            "bytes. Upload large files to the bucket instead.",
        )
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "")
    if size and content_type.lower().startswith("multipart/") and "boundary=" not in content_type:
        return _refusal(
            415, "unsupported_media_type", "request bodies are JSON: send Content-Type: application/json."
        )
    is_json = not content_type or "json" in content_type.lower()
    if size and is_json and event.get("isBase64Encoded"):
        try:
            base64.b64decode(event.get("body") or "").decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return _refusal(400, "invalid_request", "the request body is not JSON: it is not UTF-8 text.")
    return None


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _precheck(event) or app.resolve(event, context)

"""Who is calling: the tenant and scopes the authorizer attached to the request, and what each
route requires of them.

API Gateway runs the authorizer (handlers/authorizer.py) before the API function and puts its
context into ``requestContext.authorizer.lambda``; the local stack does the same. The API function
checks again (a request without that context is refused) and checks the route's scope:

* ``read``: every GET route, and POST .../validate (it changes nothing);
* ``execute``: starting, cancelling and re-running executions (retrying a batch's failed items too,
  re-sending a finished execution's webhook);
* ``write``: every other POST, PATCH and DELETE.

Public routes (no key): the dashboard's static page, GET /health and GET /openapi.json; the
template declares the same routes with ``Auth: {Authorizer: NONE}`` (a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query

from relayflow_runtime.errors import Forbidden, Unauthorized
from relayflow_runtime.schemas.responses import CURSOR_DESCRIPTION
from relayflow_runtime.services.apikeys import TENANT_PATTERN, Principal

PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/<asset>"),
        ("GET", "/health"),
        ("ANY", "/health"),  # other methods: the function's 405, not the authorizer's 401
        ("GET", "/openapi.json"),
    }
)
EXECUTE_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/workflows/<workflow_id>/executions"),
        ("POST", "/workflows/<workflow_id>/executions/<execution_id>/cancel"),
        ("POST", "/workflows/<workflow_id>/executions/<execution_id>/rerun"),
        ("POST", "/workflows/<workflow_id>/executions/<execution_id>/retry-failed"),
        ("POST", "/workflows/<workflow_id>/executions/<execution_id>/deliveries"),
    }
)
READ_ONLY_POSTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/workflows/<workflow_id>/versions/<version_id>/validate"),
        ("POST", "/workflows/<workflow_id>/estimate"),
    }
)


def required_scope(method: str, route: str) -> str | None:
    """The scope a route needs (route as declared, e.g. ``/workflows/<workflow_id>``); None: public."""
    key = (method.upper(), route)
    if key in PUBLIC_ROUTES:
        return None
    if key in EXECUTE_ROUTES:
        return "execute"
    if key[0] in ("GET", "HEAD") or key in READ_ONLY_POSTS:
        return "read"
    return "write"


def principal_of(event: Any) -> Principal:
    """The caller the authorizer vouched for; Unauthorized when the request carries none."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    context = authorizer.get("lambda") or {}
    tenant = str(context.get("tenant") or "")
    if not TENANT_PATTERN.match(tenant):
        raise Unauthorized(
            "this route needs an API key: send it in the x-api-key header.", code="missing_api_key"
        )
    scopes = context.get("scopes") or ""
    names = scopes.split() if isinstance(scopes, str) else [str(s) for s in scopes]
    return Principal(tenant=tenant, scopes=frozenset(names), key_id=str(context.get("key_id") or ""))


def current_tenant(event: Any) -> str:
    return principal_of(event).tenant


def enforce_access(app: Any, next_middleware: Callable[[Any], Any]) -> Any:
    """Global middleware: the matched route's scope must be one the caller's key holds."""
    route = app.context.get("_route")
    if route is None or not any(route is r for r in app._static_routes + app._dynamic_routes):
        # No route matched (the resolver's stand-in route): the answer is a 404 or a 405 that names
        # no resource, and the gateway's authorizer guards every path but the public ones.
        return next_middleware(app)
    scope = required_scope(route.method, route.path)
    if scope is not None:
        principal = principal_of(app.current_event.raw_event)
        if scope not in principal.scopes:
            raise Forbidden(
                f"this API key lacks the '{scope}' scope that {route.method} {route.path} needs.",
                code="insufficient_scope",
            )
    return next_middleware(app)


# The paging parameters of every listing (the document's schema of next_token, its pattern and
# length, is set in handlers/api.py: the listings refuse a bad cursor as invalid_next_token).
Limit = Annotated[int, Query(ge=1, le=200, description="Most items in the page.")]
NextToken = Annotated[str | None, Query(description=CURSOR_DESCRIPTION)]

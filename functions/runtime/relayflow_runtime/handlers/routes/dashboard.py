"""The dashboard: one static page (HTML, JS, CSS from relayflow_runtime/static) that calls the JSON API.

The page and its assets carry no data and need no API key (a browser cannot send a header when it
navigates); every request the page makes goes to the same API with the key the user typed into it
(kept in the browser's localStorage) or received in the URL fragment from ``relayflow serve``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from relayflow_runtime.errors import NotFound

router = Router()

CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
# Nothing but this origin: no inline script, no third-party host, the page cannot be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=16)
def read_asset(name: str) -> str:
    """A file of relayflow_runtime/static (flat: no sub-folders), NotFound for anything else."""
    extension = name.rsplit(".", 1)[-1]
    if "/" in name or "\\" in name or name.startswith(".") or extension not in CONTENT_TYPES:
        raise NotFound(f"no dashboard asset '{name}'.", code="asset_not_found")
    asset = resources.files("relayflow_runtime").joinpath("static", name)
    if not asset.is_file():
        raise NotFound(f"no dashboard asset '{name}'.", code="asset_not_found")
    return asset.read_text(encoding="utf-8")


def _asset_response(name: str) -> Response[str]:
    return Response(
        status_code=200,
        content_type=CONTENT_TYPES[name.rsplit(".", 1)[-1]],
        body=read_asset(name),
        headers=SECURITY_HEADERS,
    )


@router.get("/", include_in_schema=False)
def root() -> Response[str]:
    return Response(status_code=302, headers={"Location": "dashboard"}, body="")


@router.get("/dashboard", include_in_schema=False)
def dashboard() -> Response[str]:
    return _asset_response("index.html")


@router.get("/dashboard/<asset>", include_in_schema=False)
def dashboard_asset(asset: str) -> Response[str]:
    return _asset_response(asset)

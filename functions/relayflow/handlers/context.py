"""Who is calling: the tenant the authorizer attached to the request."""

from __future__ import annotations

from typing import Any

DEFAULT_TENANT = "default"


def current_tenant(event: Any) -> str:
    authorizer = event.get("requestContext", {}).get("authorizer") or {}
    tenant = (authorizer.get("lambda") or {}).get("tenant")
    return str(tenant) if tenant else DEFAULT_TENANT


def page(items: list[Any], next_token: str | None) -> dict[str, Any]:
    return {"items": [i.model_dump(mode="json") for i in items], "next_token": next_token}

"""API keys: who may call the HTTP API, for which tenant, with which scopes.

A key looks like ``rf_<id>_<secret>``: 16 hex characters of id, then 43 characters of a 256-bit
random secret. It is shown once, when it is created; the table keeps only its SHA-256, so a copy of
the table gives no usable key. A key of that entropy needs no slow password hash: nobody can guess
a 256-bit secret, and a fast hash keeps the authorizer at one GetItem and one hash per request.

Scopes: ``read`` (GET routes), ``write`` (create, change, delete), ``execute`` (start, cancel and
re-run executions, retry a batch's failed items). A key may only create keys with scopes it holds
itself, for its own tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from relayflow_runtime.domain.clock import now_iso, parse_iso
from relayflow_runtime.domain.limits import MAX_API_KEYS_PER_TENANT
from relayflow_runtime.domain.records import ApiKeyRecord
from relayflow_runtime.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import API_KEY_SCOPES, ApiKey, CreatedApiKey
from relayflow_runtime.services import deps

KEY_PREFIX = "rf_"
_KEY_PATTERN = re.compile(r"^rf_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
#: Tenant names go into table keys and S3 keys: no separators ('#', '/') can ever reach them.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
DEFAULT_TENANT = "default"
LOCAL_KEY_NAME = "local (relayflow serve)"
#: Expired keys stay listed this long, then DynamoDB's TTL removes them.
_EXPIRED_KEPT = timedelta(days=30)


@dataclass(frozen=True)
class Principal:
    """The caller an authenticated key stands for."""

    tenant: str
    scopes: frozenset[str]
    key_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant or ""):
        raise InvalidInput(
            f"tenant {tenant!r} is not valid: 1-63 letters, digits, '_' or '-', starting with a letter "
            "or digit.",
            code="invalid_tenant",
        )
    return tenant


def check_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(scopes))  # unique, in order
    unknown = [s for s in chosen if s not in API_KEY_SCOPES]
    if unknown or not chosen:
        raise InvalidInput(
            f"scopes must be a non-empty list of {', '.join(API_KEY_SCOPES)}; got {chosen!r}.",
            code="invalid_scopes",
        )
    return [s for s in API_KEY_SCOPES if s in chosen]


def _new_key() -> tuple[str, str]:
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


# ---- creating -------------------------------------------------------------------------------------------
def _store_key(
    tenant: str,
    key_id: str,
    key: str,
    *,
    scopes: Iterable[str],
    name: str,
    expires_at: datetime | None,
    created_by: str | None,
) -> CreatedApiKey:
    record = ApiKeyRecord(
        id=key_id,
        name=name,
        prefix=f"{KEY_PREFIX}{key_id}",
        scopes=check_scopes(scopes),
        created_at=now_iso(),
        valid_until=expires_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if expires_at
        else None,
        created_by=created_by,
        key_hash=hash_key(key),
    )
    ttl = int((expires_at + _EXPIRED_KEPT).timestamp()) if expires_at else None
    deps.stores().api_keys.put_api_key(tenant, record, ttl_epoch=ttl)
    return CreatedApiKey(**record.to_api().model_dump(), key=key)


def _active(record: ApiKey, now: datetime) -> bool:
    return record.revoked_at is None and (record.expires_at is None or parse_iso(record.expires_at) > now)


def create_key(
    tenant: str,
    scopes: Iterable[str] = API_KEY_SCOPES,
    *,
    name: str = "",
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> CreatedApiKey:
    """A new key of tenant with scopes; the answer carries the whole key (never stored)."""
    check_tenant(tenant)
    now = datetime.now(UTC)
    active = [k for k in (r.to_api() for r in deps.stores().api_keys.all_api_keys(tenant)) if _active(k, now)]
    if len(active) >= MAX_API_KEYS_PER_TENANT:
        raise Conflict(
            f"tenant '{tenant}' already has {len(active)} active API keys, the limit "
            f"(api_keys_per_tenant) is {MAX_API_KEYS_PER_TENANT}; revoke one first.",
            code="too_many_api_keys",
        )
    key_id, key = _new_key()
    return _store_key(
        tenant, key_id, key, scopes=scopes, name=name, expires_at=expires_at, created_by=created_by
    )


def create_key_for(principal: Principal, body: api.CreateApiKey) -> CreatedApiKey:
    """POST /api-keys: a key of the caller's tenant, with at most the caller's scopes."""
    wanted = body.scopes if body.scopes is not None else sorted(principal.scopes)
    missing = [s for s in wanted if s not in principal.scopes]
    if missing:
        raise Forbidden(
            f"a key can only grant scopes it holds; this key lacks {', '.join(missing)}.",
            code="scope_not_held",
        )
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    return create_key(
        principal.tenant, wanted, name=body.name, expires_at=expires_at, created_by=principal.key_id
    )


def bootstrap_key(
    tenant: str = DEFAULT_TENANT,
    scopes: Iterable[str] = API_KEY_SCOPES,
    *,
    name: str = "bootstrap",
    expires_in_days: int | None = None,
) -> str:
    """The first key of a fresh deployment (``relayflow create-api-key``): returns the whole key.

    Runs with the caller's AWS credentials against the table named by ``RELAYFLOW_TABLE``.
    """
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    return create_key(tenant, scopes, name=name, expires_at=expires_at).key


def ensure_local_key(key: str | None = None, *, tenant: str = DEFAULT_TENANT) -> str:
    """The key `relayflow serve` prints: ``key`` (e.g. $RELAYFLOW_API_KEY) registered, or a new one.

    The key gets every scope. Registering the same key again is a no-op, so a user can keep one
    RELAYFLOW_API_KEY across restarts of the local stack.
    """
    key = key if key is not None else os.environ.get("RELAYFLOW_API_KEY") or None
    if key is None:
        return create_key(tenant, API_KEY_SCOPES, name=LOCAL_KEY_NAME).key
    match = _KEY_PATTERN.match(key)
    if not match:
        raise InvalidInput(
            "RELAYFLOW_API_KEY does not look like a relayflow key (rf_<16 hex>_<43 characters>); "
            "unset it to get a new key.",
            code="invalid_api_key",
        )
    check_tenant(tenant)
    found = deps.stores().api_keys.find_api_key(match.group(1))
    if found is not None:
        if found[0] != tenant or not hmac.compare_digest(found[1].key_hash, hash_key(key)):
            raise Conflict("another key with this id is already registered.", code="api_key_exists")
        return key
    _store_key(
        tenant,
        match.group(1),
        key,
        scopes=API_KEY_SCOPES,
        name=LOCAL_KEY_NAME,
        expires_at=None,
        created_by=None,
    )
    return key


# ---- authenticating ----------------------------------------------------------------------------------
def authenticate(key: str | None, *, now: datetime | None = None) -> Principal:
    """The principal of a key; Unauthorized (401) without a key, Forbidden (403) for a bad one."""
    if not key:
        raise Unauthorized(
            "this route needs an API key: send it in the x-api-key header.", code="missing_api_key"
        )
    match = _KEY_PATTERN.match(key.strip())
    found = deps.stores().api_keys.find_api_key(match.group(1)) if match else None
    # One answer for unknown ids and wrong secrets; compare_digest keeps the timing flat.
    if found is None or not hmac.compare_digest(found[1].key_hash, hash_key(key.strip())):
        raise Forbidden("this API key is not valid.", code="invalid_api_key")
    tenant, record = found
    api_key = record.to_api()
    if api_key.revoked_at is not None:
        raise Forbidden(f"this API key was revoked at {api_key.revoked_at}.", code="api_key_revoked")
    if api_key.expires_at is not None and parse_iso(api_key.expires_at) <= (now or datetime.now(UTC)):
        raise Forbidden(f"this API key expired at {api_key.expires_at}.", code="api_key_expired")
    return Principal(tenant=tenant, scopes=frozenset(api_key.scopes), key_id=api_key.id)


# ---- managing -------------------------------------------------------------------------------------------
def list_keys(tenant: str, limit: int = 50, next_token: str | None = None) -> tuple[list[ApiKey], str | None]:
    records, token = deps.stores().api_keys.list_api_keys(tenant, limit, next_token)
    return [r.to_api() for r in records], token


def _check_id(key_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{16}", key_id):
        raise NotFound(f"API key '{key_id[:64]}' does not exist.", code="api_key_not_found")
    return key_id


def get_key(tenant: str, key_id: str) -> ApiKey:
    return deps.stores().api_keys.get_api_key(tenant, _check_id(key_id)).to_api()


def revoke_key(principal: Principal, key_id: str) -> ApiKey:
    """Revoke at once (API Gateway may keep a cached yes for up to the authorizer's cache TTL). As
    with creating, a key acts only on keys within its own scopes: a ``write`` key cannot revoke an
    ``execute`` key (403 ``scope_not_held``); a key's scopes never change, so reading them first is
    safe."""
    target = get_key(principal.tenant, key_id)
    missing = sorted(set(target.scopes) - principal.scopes)
    if missing:
        raise Forbidden(
            f"a key can only revoke keys within its own scopes; this key lacks {', '.join(missing)}, "
            f"which key '{target.id}' holds.",
            code="scope_not_held",
        )
    return deps.stores().api_keys.revoke_api_key(principal.tenant, target.id, now_iso()).to_api()

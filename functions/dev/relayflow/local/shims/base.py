"""What every patch of moto shares: the record of originals, `_patch` / `_restore`, and the error
raised when moto's internals are not where a patch expects them.

Each shim registers its patches with `patch_required` (the local stack cannot run without it: a
moto that moved the hook is a `MotoIncompatibleError`) or `patch_optional` (a refinement: without
the hook, moto runs as it is, with a warning saying what is lost); both hand the replacement's
factory moto's original.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("relayflow.local")

# Parameter names of moto.awslambda.models.LambdaFunction._invoke_lambda, and `event`'s default.
# Unchanged from moto 4.2.14 to 5.2.5; it returns (payload_json, is_error, logs).
MOTO_INVOKE_SIGNATURE: tuple[str, ...] = ("self", "event")
MOTO_INVOKE_EVENT_DEFAULT: Any = None


class MotoIncompatibleError(RuntimeError):
    """The installed moto does not have the private hook this shim replaces."""


# (module path, attribute) -> original, while installed
_originals: dict[tuple[str, str], Any] = {}


def _incompatible(what: str) -> str:
    import moto

    expected = ", ".join(MOTO_INVOKE_SIGNATURE)
    return (
        f"moto {getattr(moto, '__version__', '?')}: {what}. relayflow's local stack replaces "
        f"LambdaFunction._invoke_lambda({expected}=None) -> (payload_json, is_error, logs). "
        "Install moto in the pinned range (moto>=5.2.3,<5.3) or update relayflow/local/shims/."
    )


_INHERITED = object()


def _patch(module_name: str, attribute: str, replacement: Any) -> None:
    module = importlib.import_module(module_name)
    owner: Any = module
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    if isinstance(owner, type):  # a class's own attribute, or _INHERITED when it inherits it
        _originals[(module_name, attribute)] = owner.__dict__.get(name, _INHERITED)
    else:
        _originals[(module_name, attribute)] = getattr(owner, name)
    setattr(owner, name, replacement)


def _hook(module_name: str, attribute: str, *, own: bool) -> Any | None:
    """moto's ``module.attribute`` (a dotted path through classes) as a caller reads it, or None
    where the module or any step is gone; with ``own``, also None for an attribute a class only
    inherits."""
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    if own and isinstance(owner, type) and name not in owner.__dict__:
        return None
    return getattr(owner, name, None)


def patch_required(
    module_name: str,
    attribute: str,
    replacement: Callable[[Any], Any],
    *,
    own: bool = True,
    check: Callable[[Any], bool] | None = None,
    problem: str | None = None,
) -> None:
    """Replace moto's ``module.attribute`` by ``replacement(original)``. A hook that is gone (with
    ``own``, one its class no longer defines itself) or that fails ``check`` is a
    `MotoIncompatibleError` saying ``problem`` (by default: the attribute moved)."""
    original = _hook(module_name, attribute, own=own)
    if original is None or (check is not None and not check(original)):
        raise MotoIncompatibleError(_incompatible(problem or f"{attribute} moved"))
    _patch(module_name, attribute, replacement(original))


def patch_optional(
    module_name: str,
    attribute: str,
    replacement: Callable[[Any], Any],
    *,
    check: Callable[[Any], bool] | None = None,
    lost: str | None = None,
) -> bool:
    """Replace moto's ``module.attribute`` by ``replacement(original)`` where moto has it (and it
    passes ``check``); else leave moto as it is, warning ``moto changed: {lost}`` when given.
    Whether it patched."""
    original = _hook(module_name, attribute, own=False)
    if original is None or (check is not None and not check(original)):
        if lost:
            log.warning("moto changed: %s", lost)
        return False
    _patch(module_name, attribute, replacement(original))
    return True


def _optional_target(module_name: str, attribute: str) -> Any | None:
    """moto's ``module.attribute``, or None where it is gone."""
    return _hook(module_name, attribute, own=False)


def _restore() -> None:
    """Put back every original patched by `_patch`, last patched first."""
    for (module_name, attribute), original in reversed(list(_originals.items())):
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        if original is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _originals.clear()

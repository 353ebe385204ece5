"""What every patch of moto shares: the record of originals, `_patch` / `_restore`, and the error
raised when moto's internals are not where a patch expects them.
"""

from __future__ import annotations

import importlib
import logging
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


def _optional_target(module_name: str, attribute: str) -> Any | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attribute, None)


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

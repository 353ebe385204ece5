"""relayflow: versioned AI workflows on AWS Step Functions, runnable on a laptop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relayflow_runtime import __version__ as __version__

__all__ = ["ApiError", "ApiUnreachable", "Client", "RelayflowError"]

if TYPE_CHECKING:
    from relayflow.client import ApiError, ApiUnreachable, Client, RelayflowError


def __getattr__(name: str) -> Any:
    # The client is imported lazily so Lambda cold starts never load it.
    if name in __all__:
        from relayflow import client

        return getattr(client, name)
    raise AttributeError(name)

"""relayflow's development package, never shipped to Lambda (the runtime is relayflow_runtime): the
Python client (``Client``), the CLI (relayflow.cli), the demo and the embedded local stack
(relayflow.local)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relayflow_runtime import __version__ as __version__

__all__ = ["ApiError", "ApiUnreachable", "Client", "RelayflowError"]

if TYPE_CHECKING:
    from relayflow.client import ApiError, ApiUnreachable, Client, RelayflowError


def __getattr__(name: str) -> Any:
    # The client is imported on first use: what needs only the local stack does not load it (nor httpx).
    if name in __all__:
        from relayflow import client

        return getattr(client, name)
    raise AttributeError(name)

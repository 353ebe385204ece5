"""What the services work with: the stores of the configured table, the bucket, the state machines.

The one place a service gets an adapter from (``deps.stores().executions``, ``deps.blobs()``,
``deps.machines()``), so no use case builds its own or reaches into another module for one. The
stores are built once per table name (adapters/stores.py); settings.reset_caches forgets them.
"""

from __future__ import annotations

from relayflow_runtime.adapters.blobs import BlobStore
from relayflow_runtime.adapters.engine import StateMachines
from relayflow_runtime.adapters.stores import Stores, stores_for
from relayflow_runtime.settings import get_settings


def stores() -> Stores:
    return stores_for(get_settings().table_name)


def blobs() -> BlobStore:
    return BlobStore(get_settings().bucket_name)


def machines() -> StateMachines:
    return StateMachines()

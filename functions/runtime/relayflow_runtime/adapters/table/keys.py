"""The keys of the one table: how each entity's partition and sort key are spelled.

Every key starts with the tenant (``T#<tenant>#<kind>#<id>``), so one tenant can never address
another's items; the layout of every entity is drawn in adapters/table/__init__.py. The helpers
here are the ones more than one store (or adapters/budget.py, adapters/sweep.py) spells.
"""

from __future__ import annotations

import zlib

#: Shards of the sweep index's partitions (a run's shard is a hash of its id).
SWEEP_SHARDS = 8


def tenant_pk(tenant: str, kind: str, ident: str) -> str:
    """The partition key of a tenant's entity: ``T#<tenant>#<kind>#<id>``."""
    return f"T#{tenant}#{kind}#{ident}"


def execution_key(tenant: str, execution_id: str) -> dict[str, str]:
    """The execution item's key (its node records, outcomes and attempts share the partition)."""
    return {"pk": tenant_pk(tenant, "X", execution_id), "sk": "X"}


def node_record_key(tenant: str, execution_id: str, record_sk: str) -> dict[str, str]:
    """record_sk: ``N#<node>`` for a single run, ``I#<item>#N#<node>`` for an item of a batch."""
    return {"pk": tenant_pk(tenant, "X", execution_id), "sk": record_sk}


def sweep_shard(execution_id: str) -> int:
    return zlib.crc32(execution_id.encode()) % SWEEP_SHARDS


def sweep_keys(tenant: str, execution_id: str, created_at: str, partition: str) -> dict[str, str]:
    """The sweep index's keys of an execution: partition ``ACTIVE`` or ``SETTLE``."""
    return {
        "sweep_pk": f"{partition}#{sweep_shard(execution_id)}",
        "sweep_sk": f"{created_at}#{tenant}#{execution_id}",
    }

"""One boto3 client per AWS service per warm container."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

# Model calls (Bedrock, SageMaker, Lambda) may run as long as a node may: up to 15 minutes.
_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"},
    max_pool_connections=50,
    connect_timeout=5,
    read_timeout=900,
)


@lru_cache(maxsize=1)
def session() -> boto3.session.Session:
    # One session per warm container: creating sessions dominates client start-up time.
    return boto3.session.Session()


@lru_cache(maxsize=32)
def client(service: str) -> Any:
    return session().client(service, config=_CONFIG)


class _ThreadResources(threading.local):
    generation = -1
    cache: dict[str, Any]


_resources = _ThreadResources()
_generation = 0


def resource(service: str) -> Any:
    """One boto3 resource per service per thread.

    Clients are thread-safe, resources are not: their condition-expression builder is shared and
    hands out placeholder names (#n0, :v0) from one counter. A Lambda container runs one request at
    a time, but the local stack runs many handlers in threads of one process.
    """
    if _resources.generation != _generation:
        _resources.cache = {}
        _resources.generation = _generation
    if service not in _resources.cache:
        _resources.cache[service] = session().resource(service, config=_CONFIG)
    return _resources.cache[service]


def dynamodb_table(name: str) -> Any:
    """The boto3 Table of this thread (building one costs ~15 ms of resource-model work)."""
    key = f"dynamodb-table:{name}"
    if _resources.generation != _generation or key not in _resources.cache:
        table = resource("dynamodb").Table(name)
        _resources.cache[key] = table
    return _resources.cache[key]


def clear_resources() -> None:
    global _generation
    _generation += 1

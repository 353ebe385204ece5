"""One boto3 client per AWS service per warm container."""

from __future__ import annotations

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


@lru_cache(maxsize=8)
def resource(service: str) -> Any:
    return session().resource(service, config=_CONFIG)

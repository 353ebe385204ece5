"""One boto3 client per AWS service per warm container, and lent boto3 resources."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

#: Model calls (Bedrock, SageMaker, Lambda) may run as long as a node may: up to 15 minutes.
MODEL_SERVICES = frozenset({"bedrock-runtime", "sagemaker-runtime", "lambda"})
_MODEL_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"},
    max_pool_connections=50,
    connect_timeout=5,
    read_timeout=900,
)
#: Every other call (DynamoDB, S3, Step Functions, EventBridge, SQS …) is answered in milliseconds,
#: and S3 keeps a long copy or completion talking: a connection silent this long is hung, and the
#: retry goes out on a fresh one. So one stalled socket cannot hold an API answer past API
#: Gateway's 30 s, or a task past its deadline, for 15 minutes a try.
DATA_READ_TIMEOUT_SECONDS = 10
_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"},
    max_pool_connections=50,
    connect_timeout=5,
    read_timeout=DATA_READ_TIMEOUT_SECONDS,
)


def config_for(service: str) -> Config:
    return _MODEL_CONFIG if service in MODEL_SERVICES else _CONFIG


@lru_cache(maxsize=1)
def session() -> boto3.session.Session:
    # One session per warm container: creating sessions dominates client start-up time.
    return boto3.session.Session()


@lru_cache(maxsize=32)
def client(service: str) -> Any:
    return session().client(service, config=config_for(service))


class _Lender:
    """Lends boto3 resources, one borrower at a time each.

    Clients are thread-safe, resources are not: a resource's condition-expression builder hands out
    placeholder names (#n0, :v0) from one counter it resets on every call. Building one costs
    ~15 ms of model loading, so they are kept and lent out again rather than built per thread: a
    Lambda container runs one request at a time, but the local stack runs many handlers at once
    in threads that come and go (one per Step Functions task).
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[Any]:
        with self._lock:
            lent = self._idle.pop() if self._idle else None
        if lent is None:
            lent = self._build()
        try:
            yield lent
        finally:
            with self._lock:
                self._idle.append(lent)


class Lent:
    """Stands for a boto3 resource (or Table): every call borrows one for as long as it runs."""

    def __init__(self, lender: _Lender) -> None:
        self._lender = lender

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lender.lend() as lent:
                return getattr(lent, operation)(*args, **kwargs)

        return call

    @contextmanager
    def batch_writer(self, **kwargs: Any) -> Iterator[Any]:
        """A Table's batch writer, holding its Table until the block ends."""
        with self._lender.lend() as table, table.batch_writer(**kwargs) as writer:
            yield writer


_lenders: dict[str, _Lender] = {}
_lenders_lock = threading.Lock()


def _lender(key: str, build: Callable[[], Any]) -> _Lender:
    with _lenders_lock:
        if key not in _lenders:
            _lenders[key] = _Lender(build)
        return _lenders[key]


def resource(service: str) -> Lent:
    """A boto3 resource of ``service`` (see ``_Lender`` for why it is lent, not shared)."""
    return Lent(_lender(service, lambda: session().resource(service, config=_CONFIG)))


def dynamodb_table(name: str) -> Lent:
    """The boto3 Table ``name``: each call (or batch writer) borrows one of its own."""
    return Lent(
        _lender(f"dynamodb-table:{name}", lambda: session().resource("dynamodb", config=_CONFIG).Table(name))
    )


def clear_resources() -> None:
    """Forget every resource (tests: a new moto backend, new settings)."""
    with _lenders_lock:
        _lenders.clear()

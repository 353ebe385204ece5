"""The local stack's S3 and EventBridge on a loopback port, for the user's own tools.

On AWS a file uploaded under the bucket's ``inputs/`` starts a run. Locally the bucket lives in the
stack's process (moto, in-process), which ``aws s3 cp`` or a boto3 script of the user's cannot
reach; this serves moto's own HTTP front end (its werkzeug application, the one ``moto_server``
runs) in a thread of that process, over the same in-memory backends. An upload through it is an
upload to the stack's bucket: moto sends the bucket's notification, the S3 trigger function runs
(through the shim, as for any upload), and the run starts — or the upload is moved aside as on AWS.

Only S3 and EventBridge are answered: the other services would reach tables and state the stack
owns (and keeps in its data directory) behind its back. ``/moto-api`` (moto's reset and state
dump) is refused. Loopback addresses only: there is no authentication (any credentials are taken).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SERVED_SERVICES", "S3Endpoint"]

log = logging.getLogger("relayflow.local.s3")

SERVED_SERVICES = frozenset({"s3", "events"})

StartResponse = Callable[..., Any]


def _refuse(start_response: StartResponse, status: str, code: str, message: str) -> Iterable[bytes]:
    body = json.dumps({"__type": code, "message": message}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class S3Endpoint:
    """moto's S3 and EventBridge over HTTP on ``host:port`` (0: a free port) while started.

    Use it while a LocalStack runs (it serves moto's in-process state, whoever started it)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the local S3 endpoint binds loopback addresses only (127.0.0.1), not {host!r}")
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the endpoint is not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> S3Endpoint:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class Handler(MotoRequestHandler):
            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                log.debug("%s %s", self.requestline, code)

        dispatcher = DomainDispatcherApplication(create_backend_app)

        def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
                return _refuse(start_response, "403 Forbidden", "AccessDenied", "not served here")
            backend = dispatcher.get_application(environ)
            service = getattr(backend, "service", None)
            if service not in SERVED_SERVICES:
                return _refuse(
                    start_response,
                    "400 Bad Request",
                    "UnsupportedService",
                    f"the relayflow local endpoint serves S3 and EventBridge only, not {service}; use the "
                    "HTTP API (RELAYFLOW_URL) for everything else.",
                )
            served: Iterable[bytes] = backend(environ, start_response)
            return served

        try:
            self._server = make_server(
                self.host, self.port, application, threaded=True, request_handler=Handler
            )
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise OSError(exc.errno, f"cannot listen on {where} for S3: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="relayflow-s3", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

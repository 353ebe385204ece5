"""API Gateway HTTP API, locally: an HTTP server on 127.0.0.1 that turns each request into a
payload-format-2.0 event for the stack's API function and the function's answer back into HTTP.

`build_http_event` is the one place that builds such events; tests use it too.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from relayflow.local.stack import LocalStack

__all__ = [
    "MAX_BODY_BYTES",
    "HttpResponse",
    "build_http_event",
    "is_textual",
    "make_server",
    "parse_http_response",
    "run_server",
    "start_server",
]

log = logging.getLogger("relayflow.local.server")

# API Gateway's request payload limit.
MAX_BODY_BYTES = 10 * 1024 * 1024

_MISSING: Any = object()
_TEXTUAL_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/graphql",
        "application/x-yaml",
        "application/yaml",
    }
)


def is_textual(content_type: str | None) -> bool:
    """Whether a body of this content type travels as text (else base64) in the event."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type in _TEXTUAL_TYPES
        or media_type.endswith("+json")
        or media_type.endswith("+xml")
    )


def _header_items(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def build_http_event(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | str | None = None,
    query: Mapping[str, str | Sequence[str]] | str | None = None,
    json_body: Any = _MISSING,
    source_ip: str = "127.0.0.1",
    account_id: str = "123456789012",
    api_id: str = "local",
    domain_name: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event for one request.

    `path` may carry a query string when `query` is None. `json_body` serialises a value as the
    body and sets content-type application/json unless a content-type header is given. Headers
    are lower-cased, repeated ones comma-joined; Cookie headers become `cookies`. The body is
    base64-encoded unless the content type is textual and the bytes are UTF-8.
    """
    split = urlsplit(path)
    raw_path = split.path or "/"
    if query is None:
        raw_query = split.query
    elif isinstance(query, str):
        raw_query = query.lstrip("?")
    else:
        from urllib.parse import urlencode

        raw_query = urlencode(
            [(k, v) for k, values in query.items() for v in ([values] if isinstance(values, str) else values)]
        )

    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in _header_items(headers):
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value

    if json_body is not _MISSING:
        body = json.dumps(json_body)
        merged.setdefault("content-type", "application/json")
    raw_body = body.encode() if isinstance(body, str) else body

    host = domain_name or merged.get("host") or "localhost"
    merged.setdefault("host", host)
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-proto", "http")
    merged.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    if raw_body:
        merged.setdefault("content-length", str(len(raw_body)))

    decoded_path = unquote(raw_path)
    route_key = "ANY /" if raw_path == "/" else "ANY /{proxy+}"
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": account_id,
            "apiId": api_id,
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": method.upper(),
                "path": decoded_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": base64.b32encode(uuid.uuid4().bytes).decode()[:16],
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        parameters: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            parameters[key] = f"{parameters[key]},{value}" if key in parameters else value
        event["queryStringParameters"] = parameters
    if route_key != "ANY /":
        event["pathParameters"] = {"proxy": decoded_path.lstrip("/")}
    if raw_body:
        text: str | None = None
        if is_textual(merged.get("content-type")):
            try:
                text = raw_body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(raw_body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def parse_http_response(result: Any) -> HttpResponse:
    """What API Gateway makes of a payload-2.0 Lambda result (including its inference when the
    result has no statusCode: 200, application/json, the result as the body)."""
    if isinstance(result, Mapping) and "statusCode" in result:
        headers = {
            str(k).lower(): ", ".join(map(str, v)) if isinstance(v, list) else str(v)
            for k, v in (result.get("headers") or {}).items()
        }
        for k, values in (result.get("multiValueHeaders") or {}).items():
            headers[str(k).lower()] = ", ".join(map(str, values))
        raw = result.get("body")
        if raw is None:
            body = b""
        elif result.get("isBase64Encoded"):
            body = base64.b64decode(raw)
        else:
            body = raw.encode("utf-8") if isinstance(raw, str) else json.dumps(raw).encode()
        return HttpResponse(int(result["statusCode"]), headers, list(result.get("cookies") or []), body)
    body = result.encode("utf-8") if isinstance(result, str) else json.dumps(result).encode()
    return HttpResponse(200, {"content-type": "application/json"}, [], body)


def _error(status: int, code: str, message: str) -> HttpResponse:
    return HttpResponse(
        status,
        {"content-type": "application/json"},
        [],
        json.dumps({"code": code, "message": message}).encode(),
    )


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class _RequestTooLarge(Exception):
    pass


class _BadRequest(Exception):
    """A request whose framing cannot be read (Content-Length, chunk sizes, a body cut short)."""


#: Seconds a connection may stay silent while a request (or its body) is read; then it is answered
#: (a body cut short) or closed (an idle keep-alive connection).
SOCKET_TIMEOUT_SECONDS = 30
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_value(value: str) -> str:
    """A header value http.server can send: no control characters (they would split the answer),
    and Latin-1 only (others become ``?``), so that no answer ever dies while its headers go out."""
    cleaned = _UNSAFE_IN_HEADER.sub("", value)
    return cleaned.encode("latin-1", "replace").decode("latin-1")


def make_server(
    stack: LocalStack, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call serve_forever) in front of the stack's API function.
    Only loopback addresses are accepted: the local stack has no authentication of its own.
    ``access_log``: a line per request (a dashboard or a watching CLI polls every second, which
    would bury what `relayflow serve` printed at start); errors of the server itself are always
    logged."""
    if not _is_loopback(host):
        raise ValueError(f"the local server binds loopback addresses only (127.0.0.1), not {host!r}")
    cors = stack.api_cors

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "relayflow-local"
        timeout = SOCKET_TIMEOUT_SECONDS
        disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            if access_log:
                log.info("%s %s", self.address_string(), format % args)

        def log_error(self, format: str, *args: Any) -> None:
            log.warning("%s %s", self.address_string(), format % args)

        def _handle(self) -> None:
            started = time.perf_counter()
            try:
                body = self._read_body()
            except _BadRequest as exc:
                self.close_connection = True
                self._send(_error(400, "bad_request", str(exc)))
                return
            except TimeoutError:  # a chunked body that stopped coming
                self.close_connection = True
                message = f"the body stopped coming: nothing for {SOCKET_TIMEOUT_SECONDS} s."
                self._send(_error(400, "bad_request", message))
                return
            except _RequestTooLarge:
                self.close_connection = True
                self._send(
                    _error(
                        413,
                        "payload_too_large",
                        f"the request body is larger than API Gateway's {MAX_BODY_BYTES // (1024 * 1024)} MB "
                        "limit; upload large files to S3 instead.",
                    )
                )
                return
            origin = self.headers.get("origin")
            if (
                cors
                and self.command == "OPTIONS"
                and origin
                and self.headers.get("access-control-request-method")
            ):
                self._send(HttpResponse(204, self._cors_headers(origin, preflight=True)))
                return
            event = build_http_event(
                self.command,
                self.path,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                account_id=stack.account_id,
                api_id=stack.api_id,
                domain_name=self.headers.get("host") or f"{host}:{getattr(self.server, 'server_port', port)}",
            )
            try:
                response = parse_http_response(stack.handle_api_request(event))
            except Exception:
                log.exception("the API function failed on %s %s", self.command, self.path)
                response = HttpResponse(
                    500, {"content-type": "application/json"}, [], b'{"message":"Internal Server Error"}'
                )
            if cors and origin:
                response.headers.update(self._cors_headers(origin, preflight=False))
            self._send(response)
            log.debug("%s %s took %.1f ms", self.command, self.path, (time.perf_counter() - started) * 1000)

        def _cors_headers(self, origin: str, *, preflight: bool) -> dict[str, str]:
            assert cors is not None
            allowed = [str(o) for o in cors.get("AllowOrigins", [])]
            if "*" not in allowed and origin not in allowed:
                return {}
            headers = {"access-control-allow-origin": "*" if "*" in allowed else origin}
            if cors.get("AllowCredentials"):
                headers["access-control-allow-credentials"] = "true"
            if preflight:
                headers["access-control-allow-methods"] = ",".join(cors.get("AllowMethods", ["*"]))
                headers["access-control-allow-headers"] = ",".join(cors.get("AllowHeaders", ["*"]))
                if "MaxAge" in cors:
                    headers["access-control-max-age"] = str(cors["MaxAge"])
            elif cors.get("ExposeHeaders"):
                headers["access-control-expose-headers"] = ",".join(cors["ExposeHeaders"])
            return headers

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                chunks: list[bytes] = []
                total = 0
                while True:
                    line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                    if not _HEX.fullmatch(line):
                        raise _BadRequest(f"the chunk size {line[:20]!r} is not a hexadecimal number.")
                    size = int(line, 16)
                    if size == 0:
                        while self.rfile.readline(65536).strip():  # trailers
                            pass
                        return b"".join(chunks)
                    total += size
                    if total > MAX_BODY_BYTES:
                        raise _RequestTooLarge
                    chunks.append(self._read_exactly(size))
                    self.rfile.readline(1024)
            declared = (self.headers.get("content-length") or "0").strip()
            if not _DIGITS.fullmatch(declared):
                raise _BadRequest(f"the Content-Length {declared[:20]!r} is not a number of bytes.")
            length = int(declared)
            if length > MAX_BODY_BYTES:
                raise _RequestTooLarge
            return self._read_exactly(length) if length else b""

        def _read_exactly(self, size: int) -> bytes:
            try:
                data = self.rfile.read(size)
            except TimeoutError:
                data = b""
            if len(data) < size:
                raise _BadRequest(
                    f"the body ended after {len(data)} of its {size} bytes (or nothing came for "
                    f"{SOCKET_TIMEOUT_SECONDS} s)."
                )
            return data

        def _send(self, response: HttpResponse) -> None:
            self.send_response(response.status)
            headers = dict(response.headers)
            if response.body and "content-type" not in headers:
                headers["content-type"] = "application/json"
            headers["content-length"] = str(len(response.body))
            headers["apigw-requestid"] = base64.b32encode(uuid.uuid4().bytes).decode()[:16]
            for name, value in headers.items():
                if name in ("connection", "transfer-encoding"):
                    continue
                self.send_header(header_value(name), header_value(value))
            for cookie in response.cookies:
                self.send_header("set-cookie", header_value(cookie))
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle
        # Methods the API declares nowhere still reach it (and get its 405), as through API Gateway.
        do_TRACE = do_QUERY = do_CONNECT = _handle

        def __getattr__(self, name: str) -> Any:
            # API Gateway answers any method (TRACE, QUERY, ...): none ends in http.server's bare 501.
            if name.startswith("do_"):
                return self._handle
            raise AttributeError(name)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def start_server(
    stack: LocalStack, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """make_server + serve_forever in a daemon thread. Stop with server.shutdown();
    server.server_close(). The URL is f"http://{host}:{server.server_port}"."""
    server = make_server(stack, host, port, access_log=access_log)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="relayflow-http", daemon=True
    )
    thread.start()
    return server, thread


def run_server(
    port: int,
    host: str = "127.0.0.1",
    on_ready: Callable[[str, LocalStack], None] | None = None,
    *,
    stack: LocalStack | None = None,
    stop: threading.Event | None = None,
    s3_port: int | None = None,
    access_log: bool = False,
) -> None:
    """Start a LocalStack (or use `stack`, started or not) and serve its API on host:port until
    Ctrl-C, SIGTERM or `stop` is set; then stop both. With `s3_port` (0: a free port), the stack's
    S3 and EventBridge are served there too (`stack.s3_endpoint`). `on_ready(base_url, stack)` runs
    once the servers listen. On the way out it says what it waits for."""
    from relayflow.local.stack import LocalStack

    stop = stop or threading.Event()
    own_stack = stack is None or not stack.started
    # Schedules tick (the sweeper) as on AWS: a served stack runs for a while.
    local = stack or LocalStack(run_schedules=True)
    previous_handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[signum] = signal.signal(signum, lambda *_: stop.set())
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    try:
        if own_stack:
            local.start()
        server, thread = start_server(local, host, port, access_log=access_log)
        if s3_port is not None:
            local.serve_s3(s3_port, host)
        base_url = f"http://{host}:{server.server_port}"
        print(f"relayflow serving on {base_url}", flush=True)
        if on_ready is not None:
            on_ready(base_url, local)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            print(stopping_message(local, own_stack), flush=True)
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if own_stack:
            local.stop()
            if server is not None:
                print("stopped.", flush=True)
        for restored, handler in previous_handlers.items():
            signal.signal(restored, handler)


def stopping_message(stack: LocalStack, stopping_stack: bool) -> str:
    """What a stop waits for: the requests in flight, then the runs in progress and the data."""
    waits = ["the requests in flight (at most 5 s)"]
    if stopping_stack:
        try:
            running = len(stack.deployment.running_executions())
        except Exception:  # the stack may be half started: say what is certain
            running = 0
        if running:
            waits.append(
                f"{running} state machine execution{'s' * (running != 1)} in progress to stop (at most 2 s; "
                "their runs end failed at the next start)"
            )
        waits.append(
            f"the data to be written to {stack.data_dir}" if stack.data_dir else "the in-memory stack to stop"
        )
    return "stopping: waiting for " + ", then ".join(waits) + " ..."

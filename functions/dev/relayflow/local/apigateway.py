"""The API Gateway HTTP API, emulated: what API Gateway does with a request before and after the
API function sees it.

`HttpApi.configure` reads the API from the template as SAM would deploy it: the API function's
HttpApi events are the routes, the `AWS::Serverless::HttpApi` resource gives the API id, its CORS
configuration (which `relayflow.local.server` answers preflights from) and its Lambda authorizers
(REQUEST, header identity sources, simple responses; other kinds are refused at start rather than
run differently).

`HttpApi.handle_request` takes a payload-2.0 request event built for `ANY /{proxy+}` and does what
API Gateway does: pick the template's route (literal segments before parameters, parameters before
a greedy `{proxy+}`, an exact method before ANY) and set `routeKey` and `pathParameters`; run the
route's authorizer (401 without the identity header, 403 when it refuses, 500 when it fails; its
answer cached per identity for `ReauthorizeEvery` seconds) and put its context in
`requestContext.authorizer.lambda`; then call the API function and return its raw result, or the
gateway's own JSON answer. `HttpApi.invoke` calls the API function directly, one request at a time.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from relayflow.local.provision import Deployment, LocalFunction, StackError

__all__ = ["HttpApi", "HttpAuthorizer", "HttpRoute", "api_function_id"]

log = logging.getLogger("relayflow.local")


@dataclass
class HttpRoute:
    """One route of the HTTP API (an HttpApi event of the API function)."""

    method: str  # GET, POST, ... or ANY
    path: str  # /workflows/{id}, /{proxy+}
    authorizer: str | None  # name in the API's Auth.Authorizers; None: open route

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route takes the request, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        return _match_path(self.path, path)

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key, most specific first: API Gateway prefers literal segments over parameters,
        parameters over a greedy {proxy+}, an exact method over ANY."""
        segments = [s for s in self.path.split("/") if s]
        greedy = int(any(s.endswith("+}") for s in segments))
        literals = sum(1 for s in segments if not s.startswith("{"))
        return (greedy, -literals, -len(segments), int(self.method == "ANY"))


@dataclass
class HttpAuthorizer:
    """A Lambda authorizer of the HTTP API (REQUEST, simple responses)."""

    name: str
    function_id: str
    identity_headers: list[str]
    ttl_seconds: int = 0
    payload_version: str = "2.0"


class HttpApi:
    """The template's HTTP API in front of its function: `routes`, `authorizers`, `cors` and
    `api_id` once `configure()` has read them (no routes and the id "local" before).

    `invoke(logical_id, event)` runs a function of the stack as Lambda would (JSON in, JSON out).
    """

    def __init__(self, deployment: Deployment, invoke: Callable[[str, Any], Any]) -> None:
        self._deployment = deployment
        self._invoke_function = invoke
        self.api_id = "local"
        self.routes: list[HttpRoute] = []
        self.authorizers: dict[str, HttpAuthorizer] = {}
        self.cors: dict[str, Any] | None = None
        self._api_lock = threading.RLock()
        self._authorizer_cache: dict[tuple[str, tuple[str, ...]], tuple[float, Any]] = {}
        self._authorizer_lock = threading.Lock()

    def configure(self) -> None:
        """Read the routes, authorizers and CORS of the deployed template (nothing without an API
        function)."""
        deployment = self._deployment
        resources = deployment.active_resources()
        try:
            function = deployment.functions[api_function_id(deployment.functions)]
        except StackError:
            return
        api_properties: dict[str, Any] = {}
        for event in function.events.values():
            api_ref = (event.get("Properties") or {}).get("ApiId")
            if isinstance(api_ref, dict) and api_ref.get("Ref") in resources:
                self.api_id = str(deployment.context.refs[api_ref["Ref"]])
                api_properties = deployment.resolve(
                    {k: v for k, v in (resources[api_ref["Ref"]].get("Properties") or {}).items()},
                    api_ref["Ref"],
                )
                break
        cors = api_properties.get("CorsConfiguration")
        if cors is True:
            cors = {"AllowOrigins": ["*"], "AllowMethods": ["*"], "AllowHeaders": ["*"]}
        self.cors = cors or None
        auth = api_properties.get("Auth") or {}
        by_arn = {f.arn: logical_id for logical_id, f in deployment.functions.items()}
        for name, spec in (auth.get("Authorizers") or {}).items():
            if "FunctionArn" not in spec:
                log.warning("authorizer %s is not a Lambda authorizer: not run locally", name)
                continue
            if str(spec["FunctionArn"]) not in by_arn:
                raise StackError(f"authorizer {name}: FunctionArn must be a function of the template")
            identity = spec.get("Identity") or {}
            if identity.get("QueryStrings") or identity.get("Context") or identity.get("StageVariables"):
                raise StackError(f"authorizer {name}: only header identity sources are run locally")
            if not spec.get("EnableSimpleResponses"):
                raise StackError(f"authorizer {name}: only simple responses are run locally")
            self.authorizers[name] = HttpAuthorizer(
                name=name,
                function_id=by_arn[str(spec["FunctionArn"])],
                identity_headers=[str(h) for h in identity.get("Headers") or []],
                ttl_seconds=int(identity.get("ReauthorizeEvery", 300)),
                payload_version=str(spec.get("AuthorizerPayloadFormatVersion", "2.0")),
            )
        default_authorizer = auth.get("DefaultAuthorizer")
        for event_name, event in function.events.items():
            if event.get("Type") not in ("HttpApi", "Api"):
                continue
            properties = event.get("Properties") or {}
            authorizer = (properties.get("Auth") or {}).get("Authorizer", default_authorizer)
            if authorizer in ("NONE", None):
                authorizer = None
            elif authorizer not in self.authorizers:
                raise StackError(f"{function.logical_id}.{event_name}: unknown authorizer {authorizer!r}")
            self.routes.append(
                HttpRoute(
                    method=str(properties.get("Method", "ANY")).upper(),
                    path=str(properties.get("Path", "/{proxy+}")),
                    authorizer=authorizer,
                )
            )
        self.routes.sort(key=lambda route: route.specificity)

    def invoke(self, event: Mapping[str, Any]) -> Any:
        """Call the HTTP API's function with an API Gateway v2 event; returns its raw result.

        One request at a time: Powertools' resolver keeps the request it is answering on its
        module-level app, which concurrent requests in threads of one process would share (Lambda
        runs concurrent requests in separate instances)."""
        with self._api_lock:
            return self._invoke_function(api_function_id(self._deployment.functions), dict(event))

    def handle_request(self, event: Mapping[str, Any]) -> Any:
        """What API Gateway does with a request event built for `ANY /{proxy+}`: pick the
        template's route (routeKey, pathParameters), run the route's Lambda authorizer (401 without
        the identity header, 403 when it refuses, its context in requestContext.authorizer.lambda),
        then call the API function. Returns the function's result or the gateway's own answer."""
        request = copy.deepcopy(dict(event))
        context = request.setdefault("requestContext", {})
        method = context.get("http", {}).get("method", "GET")
        route = self.match_route(method, request.get("rawPath", "/"))
        if route is None:
            return _gateway_answer(404, "Not Found")
        route_key, parameters = route
        request["routeKey"] = context["routeKey"] = route_key.route_key
        if parameters:
            request["pathParameters"] = parameters
        else:
            request.pop("pathParameters", None)
        if route_key.authorizer is not None:
            authorizer = self.authorizers[route_key.authorizer]
            headers = request.get("headers") or {}
            identity = tuple(headers.get(h.lower(), "") for h in authorizer.identity_headers)
            if not all(identity):
                return _gateway_answer(401, "Unauthorized")
            try:
                answer = self._authorize(authorizer, identity, request)
            except Exception:
                log.exception("authorizer %s failed", authorizer.name)
                return _gateway_answer(500, "Internal Server Error")
            if not (isinstance(answer, Mapping) and answer.get("isAuthorized") is True):
                return _gateway_answer(403, "Forbidden")
            context["authorizer"] = {"lambda": dict(answer.get("context") or {})}
        return self.invoke(request)

    def match_route(self, method: str, raw_path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The template route API Gateway would pick for this request, with its path parameters."""
        for route in self.routes:
            parameters = route.match(method, raw_path)
            if parameters is not None:
                return route, parameters
        return None

    def flush_authorizer_cache(self) -> None:
        with self._authorizer_lock:
            self._authorizer_cache.clear()

    def _authorize(
        self, authorizer: HttpAuthorizer, identity: tuple[str, ...], request: dict[str, Any]
    ) -> Any:
        cache_key = (authorizer.name, identity)
        now = time.monotonic()
        with self._authorizer_lock:
            cached = self._authorizer_cache.get(cache_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        event = {key: value for key, value in request.items() if key not in ("body", "isBase64Encoded")}
        event.update(
            {
                "version": authorizer.payload_version,
                "type": "REQUEST",
                "routeArn": self._deployment.arn(
                    "execute-api",
                    f"{self.api_id}/$default/{request['requestContext']['http']['method']}{request['rawPath']}",
                ),
                "identitySource": list(identity),
            }
        )
        answer = self._invoke_function(authorizer.function_id, event)
        if authorizer.ttl_seconds > 0:
            with self._authorizer_lock:
                self._authorizer_cache[cache_key] = (now + authorizer.ttl_seconds, answer)
        return answer


def api_function_id(functions: Mapping[str, LocalFunction]) -> str:
    """The function with the template's HttpApi events."""
    for logical_id, function in functions.items():
        if any(e.get("Type") in ("HttpApi", "Api") for e in function.events.values()):
            return logical_id
    raise StackError("no function in the template has an HttpApi event")


def _match_path(template: str, raw_path: str) -> dict[str, str] | None:
    """Path parameters of raw_path under a route path like /a/{id}/{proxy+}, or None."""
    wanted = [s for s in template.split("/") if s]
    given = [s for s in raw_path.split("/") if s]
    parameters: dict[str, str] = {}
    for index, segment in enumerate(wanted):
        if segment.startswith("{") and segment.endswith("+}"):
            rest = given[index:]
            if not rest:
                return None
            parameters[segment[1:-2]] = unquote("/".join(rest))
            return parameters
        if index >= len(given):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            parameters[segment[1:-1]] = unquote(given[index])
        elif segment != given[index]:
            return None
    return parameters if len(given) == len(wanted) else None


def _gateway_answer(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": message}),
    }

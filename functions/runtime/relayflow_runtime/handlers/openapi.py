"""The OpenAPI document of the HTTP API: generated from the routes, then completed here.

The routes declare their operation ids, tags, request and response models; this module adds what
is true of many operations at once, so that the document says exactly what the server does:

* the error answers of each operation (all ``{"code", "message", "details"}``): 400 for what the
  request itself gets wrong (validation is 400 here, not Powertools' 422), 401/403 for the key,
  404 for an id in the path, 409 for a resource whose state does not allow the change, 413/415
  for a body, 500 for a failure of relayflow's own;
* the request constraints that the parameters' Python types cannot carry: ``next_token`` is an
  opaque base64url cursor (a bad one is 400 ``invalid_next_token``), ``created_after``/``before``
  are RFC 3339 ``date-time``, path ids are 1 to 256 characters, a parameter is never ``null``;
* the schema of a model's ``config`` for each provider (checked by the providers' own validators);
* links from each created resource to the operations that take its id (schemathesis' stateful
  tests follow them, so do code generators' docs);
* the tags, the ``x-api-key`` security scheme and, per operation, the scope it needs
  (``x-required-scope``).

It is served at GET /openapi.json, built from the routes when first asked for (the Lambda package
ships no copy). A copy is kept outside the package as docs/openapi.json for readers and code
generators; tests/integration/test_openapi.py fails when it drifts (``relayflow openapi -o
docs/openapi.json`` regenerates it).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

from relayflow_runtime import __version__
from relayflow_runtime.domain.datasets import MAX_FILTER_LENGTH
from relayflow_runtime.domain.limits import (
    MAX_DATASET_FILE_BYTES,
    MAX_ID_LENGTH,
    MAX_JSON_ARRAY_BYTES,
    MAX_REQUEST_BODY_BYTES,
    UPLOAD_PART_BYTES,
)
from relayflow_runtime.errors import CURSOR_PATTERN, MAX_CURSOR_LENGTH
from relayflow_runtime.handlers.authorizer import API_KEY_HEADER
from relayflow_runtime.handlers.context import required_scope
from relayflow_runtime.providers import config_schemas
from relayflow_runtime.schemas.api import BASE64_PATTERN
from relayflow_runtime.schemas.json_text import MAX_JSON_DEPTH, MAX_JSON_NUMBER_CHARS
from relayflow_runtime.schemas.responses import CURSOR_DESCRIPTION

SECURITY_SCHEME = "apiKey"

DESCRIPTION = f"""\
Versioned AI workflows (graphs of model nodes) run on AWS Step Functions, over one input or a whole
dataset, with every run watchable: status, progress, each node's prompt, output, duration and error.

**Authentication**: send an API key in the `{API_KEY_HEADER}` header. Each key holds scopes: `read`
(every GET), `execute` (starting, cancelling and re-running executions) and `write` (everything
else); each operation names the scope it needs in `x-required-scope`.

**Errors**: every error answer is JSON `{{"code", "message", "details"}}`: `code` is
machine-readable (e.g. `workflow_not_found`, `invalid_request`, `invalid_next_token`), `message` a
sentence a person can act on, `details` (optional) the fields at fault. A method a path does not
declare is 405 with an `Allow` header. Request bodies are JSON (`Content-Type: application/json`, else
415), at most {MAX_REQUEST_BODY_BYTES} bytes, nested at most {MAX_JSON_DEPTH} levels deep, with numbers of at
most {MAX_JSON_NUMBER_CHARS} characters (beyond: 400 `invalid_json`) and strings that are text (an unpaired
UTF-16 surrogate such as `"\\ud800"` is 400 `invalid_text`, naming the field).

**Paging**: listings answer `{{"items": [...], "next_token": ...}}`; pass `next_token` back,
unchanged, for the next page (it is opaque); it is null on the last page.

**Outputs**: a node's `output` is always the text its model produced; a node declared
`output_format: "json"` also carries the parsed value in `parsed_output` (so does a batch item's
result, and a single run's `results`).
"""

TAGS = [
    {"name": "workflows", "description": "Workflows: versioned graphs of model nodes."},
    {"name": "versions", "description": "A workflow's versions; one is active. Config: retries, timeouts."},
    {"name": "nodes", "description": "The model nodes of a version and their input templates."},
    {"name": "edges", "description": "Which node feeds which (a DAG; without edges, creation order)."},
    {"name": "models", "description": "Providers and their configuration, called by nodes."},
    {
        "name": "executions",
        "description": "Execution & monitoring: run a workflow on one input or a dataset, watch its "
        "status and progress, read results and each node's record, cancel, list, download the input.",
    },
    {"name": "datasets", "description": "Datasets, their versions and items: the inputs of batch runs."},
    {"name": "webhooks", "description": "Terminal statuses POSTed to a callback URL, signed and recorded."},
    {"name": "api-keys", "description": "The tenant's API keys and their scopes."},
    {"name": "meta", "description": "The service itself."},
]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error answer. API Gateway's own 401/403 answers carry only `message`.",
    "required": ["message"],
    "properties": {
        "code": {"type": "string", "description": "Machine-readable, e.g. `workflow_not_found`."},
        "message": {"type": "string", "description": "What went wrong and what to do about it."},
        "details": {"description": "The fields at fault (validation errors), or more about the error."},
    },
}
ERROR_DESCRIPTIONS = {
    400: "The request is not valid: a field, a parameter, a limit (code `invalid_request` or a "
    "more precise one).",
    401: "No API key was sent.",
    403: "The API key is not valid, revoked, expired, or lacks the operation's scope.",
    404: "No such resource for this tenant: the one the path names.",
    409: "The state of a resource does not allow this (e.g. cancelling a finished run, a version that "
    "cannot run), or an id the body refers to names nothing (`details.field` says which).",
    413: f"The request body is larger than {MAX_REQUEST_BODY_BYTES} bytes (or the answer would be "
    "larger than one response can carry).",
    415: "The request body is not JSON (send Content-Type: application/json).",
    500: "relayflow failed to answer; the error was logged.",
}
PAGED_400 = (
    ERROR_DESCRIPTIONS[400] + " A `next_token` this listing did not return is refused with "
    "`invalid_next_token`."
)

# ---- links: each created resource's id into the operations that take it -------------------------------
_BODY = "$response.body#/"
_WORKFLOW = {"workflow_id": f"{_BODY}id"}
_VERSION = {"workflow_id": f"{_BODY}workflow_id", "version_id": f"{_BODY}id"}
_OF_VERSION = {"version_id": f"{_BODY}id"}
_NODE = {"version_id": f"{_BODY}version_id", "node_id": f"{_BODY}id"}
_EDGE = {"version_id": f"{_BODY}version_id", "edge_id": f"{_BODY}id"}
_EXECUTION = {"workflow_id": f"{_BODY}workflow_id", "execution_id": f"{_BODY}id"}
_DATASET = {"dataset_id": f"{_BODY}id"}
_DATASET_VERSION = {"dataset_id": f"{_BODY}dataset_id", "version_id": f"{_BODY}id"}
_UPLOAD = {
    "dataset_id": f"{_BODY}dataset_id",
    "version_id": f"{_BODY}version_id",
    "upload_id": f"{_BODY}id",
}
_EXECUTION_LINKS = {
    "getWorkflowExecution": _EXECUTION,
    "cancelWorkflowExecution": _EXECUTION,
    "rerunWorkflowExecution": _EXECUTION,
    "deleteWorkflowExecution": _EXECUTION,
    "downloadExecutionInput": _EXECUTION,
    "getExecutionResults": _EXECUTION,
    "retryFailedItems": _EXECUTION,
    "getExecutionWebhookDeliveries": _EXECUTION,
}
LINKS: dict[str, dict[str, dict[str, str]]] = {
    "createWorkflow": {
        "getWorkflow": _WORKFLOW,
        "updateWorkflow": _WORKFLOW,
        "deleteWorkflow": _WORKFLOW,
        "createWorkflowVersion": _WORKFLOW,
        "getWorkflowVersions": _WORKFLOW,
        "executeWorkflow": _WORKFLOW,
        "getWorkflowExecutions": _WORKFLOW,
        "rotateWebhookSecret": _WORKFLOW,
        "getWebhookDeliveries": _WORKFLOW,
    },
    "createWorkflowVersion": {
        "getWorkflowVersion": _VERSION,
        "updateWorkflowVersion": _VERSION,
        "deleteWorkflowVersion": _VERSION,
        "validateWorkflowVersion": _VERSION,
        "createWorkflowNode": _OF_VERSION,
        "getWorkflowNodes": _OF_VERSION,
        "createWorkflowEdge": _OF_VERSION,
        "getWorkflowEdges": _OF_VERSION,
    },
    "createWorkflowNode": {
        "getWorkflowNode": _NODE,
        "updateWorkflowNode": _NODE,
        "deleteWorkflowNode": _NODE,
    },
    "createWorkflowEdge": {"deleteWorkflowEdge": _EDGE},
    "createModel": {"getModel": {"model_id": f"{_BODY}id"}, "deleteModel": {"model_id": f"{_BODY}id"}},
    "executeWorkflow": _EXECUTION_LINKS,
    "rerunWorkflowExecution": _EXECUTION_LINKS,
    "retryFailedItems": _EXECUTION_LINKS,
    "createDataset": {
        "getDataset": _DATASET,
        "deleteDataset": _DATASET,
        "createDatasetVersion": _DATASET,
        "getDatasetVersions": _DATASET,
    },
    "createDatasetVersion": {
        "getDatasetVersion": _DATASET_VERSION,
        "deleteDatasetVersion": _DATASET_VERSION,
        "addDatasetItems": _DATASET_VERSION,
        "getDatasetItems": _DATASET_VERSION,
        "startDatasetUpload": _DATASET_VERSION,
    },
    "startDatasetUpload": {"commitDatasetUpload": _UPLOAD},
    "createApiKey": {"getApiKey": {"key_id": f"{_BODY}id"}, "revokeApiKey": {"key_id": f"{_BODY}id"}},
}


def _link_name(operation_id: str) -> str:
    return operation_id[0].upper() + operation_id[1:]


def _links(operation_id: str) -> dict[str, Any]:
    return {
        _link_name(target): {
            "operationId": target,
            "parameters": parameters,
            "description": f"The id(s) this answer returns, to {target}.",
        }
        for target, parameters in LINKS.get(operation_id, {}).items()
    }


# ---- what the services check, beyond the models' own fields (the limits are domain constants) ---------
DATASET_FILE_PATTERN = r"\.([Jj][Ss][Oo][Nn][Ll]?|[Nn][Dd][Jj][Ss][Oo][Nn]|[Cc][Ss][Vv])$"
FIELD_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("StartUpload", "filename"): {
        "pattern": DATASET_FILE_PATTERN,
        "description": "The file's name: .jsonl, .ndjson, .csv or .json (any case) gives its format.",
    },
    ("StartUpload", "size"): {"maximum": MAX_DATASET_FILE_BYTES},
    ("UploadPart", "content_base64"): {
        "pattern": BASE64_PATTERN,
        "maxLength": -(-UPLOAD_PART_BYTES // 3) * 4,
        "contentEncoding": "base64",
        "description": f"The part, base64: at most {UPLOAD_PART_BYTES} bytes once decoded.",
    },
    ("BatchConfigInput", "filter_query"): {
        "format": "jmespath",
        "maxLength": MAX_FILTER_LENGTH,
        "description": "Run only the items for which this JMESPath expression is truthy (empty: all), "
        "e.g. lang == 'en', score > `3`. One that does not parse is 400 invalid_filter.",
    },
}
# A .json array is read whole: smaller than the other formats.
START_UPLOAD_JSON = {
    "if": {"required": ["filename"], "properties": {"filename": {"pattern": r"\.[Jj][Ss][Oo][Nn]$"}}},
    "then": {"properties": {"size": {"maximum": MAX_JSON_ARRAY_BYTES}}},
}


def _field_rules(schemas: dict[str, Any]) -> None:
    for (model, field), rules in FIELD_RULES.items():
        target = schemas[model]["properties"][field]
        branches = [b for b in target.get("anyOf", []) if b.get("type") != "null"]
        (branches[0] if branches else target).update(rules)
    schemas["StartUpload"].update(START_UPLOAD_JSON)


# ---- the document -------------------------------------------------------------------------------------
def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter is sent or not; ``anyOf: [X, null]`` from an optional Python type becomes X."""
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**kept[0], **rest}
    return schema


def _complete_parameter(parameter: dict[str, Any]) -> None:
    schema = _never_null(parameter.get("schema", {}))
    name, where = parameter["name"], parameter["in"]
    if where == "path" and schema.get("type") == "string":
        schema.update(minLength=1, maxLength=MAX_ID_LENGTH)
    if where == "query" and name == "next_token":
        schema.update(pattern=CURSOR_PATTERN, maxLength=MAX_CURSOR_LENGTH, description=CURSOR_DESCRIPTION)
        parameter["description"] = CURSOR_DESCRIPTION
    if where == "query" and name in ("created_after", "created_before"):
        schema["format"] = "date-time"
    parameter["schema"] = schema


#: Read-only operations that still answer 409: the estimate refuses what a start would refuse, a
#: validation a dataset version that names nothing.
CONFLICTING_READS = frozenset({"estimateWorkflowExecution", "validateWorkflowVersion"})


def _error_statuses(method: str, operation: dict[str, Any], scope: str | None) -> list[int]:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses = [500]
    checked = [p for p in parameters if p["in"] != "path" or p["schema"].get("type") != "string"]
    if has_body or checked:
        statuses.append(400)
    if scope is not None:
        statuses += [401, 403]
    if any(p["in"] == "path" for p in parameters):
        statuses.append(404)
    if method != "get" and (scope != "read" or operation.get("operationId") in CONFLICTING_READS):
        statuses.append(409)
    if has_body:
        statuses += [413, 415]
    return sorted(statuses)


PROVIDER_NAMES = {"builtin": "Builtin", "bedrock": "Bedrock", "openai": "OpenAI", "sagemaker": "Sagemaker",
                  "lambda": "Lambda"}  # fmt: skip


COMPONENTS = "#/components/schemas/"


def inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with each reference to one of ``definitions`` replaced by the definition, untitled."""
    if isinstance(node, list):
        return [inline_refs(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    name = str(node.get("$ref", "")).removeprefix(COMPONENTS)
    if name in definitions:
        definition = {key: value for key, value in definitions[name].items() if key != "title"}
        rest = {key: value for key, value in node.items() if key != "$ref"}
        return inline_refs({**definition, **rest}, definitions)
    return {key: inline_refs(value, definitions) for key, value in node.items()}


def _model_config_schemas(schemas: dict[str, Any]) -> None:
    """CreateModel, one shape per provider: ``config``'s schema depends on ``provider``. The
    server's checks (CreateModel's fields, then the provider's config model) accept exactly these.
    The models a config refers to (price, rate limit, Bedrock's inference) are written inline, where
    generated clients have always found them (so their class names stay); one that refers to itself
    (SageMaker's prompt template) can only be a component."""
    create = schemas["CreateModel"]
    variants: dict[str, str] = {}
    for provider, config in config_schemas().items():
        definitions = config.pop("$defs", {})
        recursive = {name for name, definition in definitions.items()
                     if f'"{COMPONENTS}{name}"' in json.dumps(definition)}  # fmt: skip
        for name in recursive:
            if schemas.setdefault(name, definitions[name]) != definitions[name]:
                raise ValueError(f"two different schemas named {name}")
        config = inline_refs(
            config, {name: value for name, value in definitions.items() if name not in recursive}
        )
        title = PROVIDER_NAMES[provider]
        schemas[f"{title}ModelConfig"] = {
            **config,
            "type": "object",
            "title": f"{title}ModelConfig",
            "description": f"The settings of a {provider} model.",
        }
        variant = f"Create{title}Model"
        schemas[variant] = {
            "type": "object",
            "title": variant,
            "additionalProperties": False,
            "required": ["name", "provider", "config"],
            "properties": {
                "name": create["properties"]["name"],
                "provider": {"type": "string", "const": provider},
                "config": {"$ref": f"#/components/schemas/{title}ModelConfig"},
            },
        }
        variants[provider] = f"#/components/schemas/{variant}"
    schemas["CreateModel"] = {
        "title": "CreateModel",
        "description": create.get("description", ""),
        "oneOf": [{"$ref": ref} for ref in variants.values()],
        "discriminator": {"propertyName": "provider", "mapping": variants},
    }


def _rename_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """A model used in requests and in answers has two schemas (``X-Input``, ``X-Output``; an
    answer always holds every field). Name them ``XInput`` and ``X``: code generators name classes
    after schema titles, and both were titled ``X``."""
    schemas = document["components"]["schemas"]
    renames: dict[str, str] = {}
    for name in list(schemas):
        if name.endswith("-Output"):
            renames[name] = name.removesuffix("-Output")
        elif name.endswith("-Input"):
            renames[name] = name.removesuffix("-Input") + "Input"
    for old, new in renames.items():
        schemas[new] = {**schemas.pop(old), "title": new}
    text = json.dumps(document)
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    renamed: dict[str, Any] = json.loads(text)
    return renamed


def build_document(app: APIGatewayHttpResolver) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title="relayflow",
            version=__version__,
            description=DESCRIPTION,
            security_schemes={SECURITY_SCHEME: APIKey(name=API_KEY_HEADER, in_=APIKeyIn.header)},
            security=[{SECURITY_SCHEME: []}],
        )
    )
    document["tags"] = TAGS
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    _model_config_schemas(schemas)
    document = _rename_schemas(document)
    _field_rules(document["components"]["schemas"])
    for path, operations in document.get("paths", {}).items():
        route = path.replace("{", "<").replace("}", ">")
        for method, operation in operations.items():
            scope = required_scope(method, route)
            operation["x-required-scope"] = scope
            if scope is None:
                operation["security"] = []
            for parameter in operation.get("parameters", []):
                _complete_parameter(parameter)
            responses = operation.setdefault("responses", {})
            for generated in ("422", "500"):
                responses.pop(generated, None)
            paged = any(p["name"] == "next_token" for p in operation.get("parameters", []))
            for code in _error_statuses(method, operation, scope):
                description = PAGED_400 if code == 400 and paged else ERROR_DESCRIPTIONS[code]
                responses[str(code)] = {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            links = _links(operation.get("operationId", ""))
            if links:
                success = next(s for s in sorted(responses) if s.startswith("2"))
                responses[success]["links"] = links
    return document


@lru_cache(maxsize=1)
def document_text(app: APIGatewayHttpResolver) -> str:
    return json.dumps(build_document(app), indent=2, sort_keys=True) + "\n"

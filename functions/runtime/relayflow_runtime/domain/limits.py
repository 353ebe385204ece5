"""The documented maximums of relayflow's HTTP API, in one place.

Each value is defined once: the domain's and the schemas' next to the code that enforces them,
the services' here (so this pure module never imports a service; the services import them from
here); this module names them all so the documentation (docs/security.md), the OpenAPI document
and the tests read one table. Exceeding a limit answers a 4xx whose message names the limit
(the field, the value allowed).
"""

from __future__ import annotations

from typing import NamedTuple

from relayflow_runtime.domain.datasets import MAX_FILE_BYTES as MAX_DATASET_FILE_BYTES
from relayflow_runtime.domain.datasets import (
    MAX_FILTER_LENGTH,
    MAX_FILTER_LIST_STAGES,
    MAX_ITEM_DEPTH,
    MAX_ITEM_ID_LENGTH,
    MAX_ITEMS_PER_VERSION,
    MAX_LINE_BYTES,
)
from relayflow_runtime.domain.templating import MAX_TEMPLATE_LENGTH
from relayflow_runtime.domain.urls import MAX_CALLBACK_URL_LENGTH

# A file input sent through the API (decoded; a Lambda request carries 6 MB, base64 included) and
# a text input of a single run: services.executions checks them, the request schema states them.
from relayflow_runtime.schemas.api import MAX_INPUT_FILE_BYTES, MAX_SINGLE_INPUT_CHARS
from relayflow_runtime.schemas.dataset_api import MAX_INLINE_ITEMS, MAX_RESULTS_PAGE
from relayflow_runtime.schemas.entities import (
    MAX_BATCH_PARALLELISM,
    MAX_NODE_TIMEOUT_SECONDS,
    MAX_WORKFLOW_TIMEOUT_SECONDS,
)
from relayflow_runtime.schemas.json_text import MAX_JSON_DEPTH, MAX_JSON_NUMBER_CHARS

#: Most nodes in one workflow version (services.authoring). The run machine's inline Map runs at
#: most 40 iterations at once on AWS and a parked gate holds its slot: with at most 40 nodes every
#: node's gate holds one at once, so no order of starting iterations can deadlock a run.
MAX_NODES_PER_VERSION = 40
#: A model's config, as JSON (services.authoring; it is one DynamoDB attribute, items are 400 KB).
MAX_MODEL_CONFIG_BYTES = 64 * 1024
#: Largest download (batch results, an input file) answered in one HTTP response (a Lambda answer
#: is at most 6 MB); larger: a presigned URL where one can be offered, else 413 (services.downloads).
MAX_RESULTS_DOWNLOAD_BYTES = 5 * 1024 * 1024
#: Size of one part sent through the API (base64 in JSON stays under the 6 MB request limit)
#: (services.dataset_service).
UPLOAD_PART_BYTES = 4 * 1024 * 1024
MAX_UPLOAD_PARTS = -(-MAX_DATASET_FILE_BYTES // UPLOAD_PART_BYTES)
#: A .json array is parsed whole (JSONL and CSV stream): above this, the file must be JSONL
#: (services.dataset_service).
MAX_JSON_ARRAY_BYTES = 64 * 1024 * 1024
#: Most items in one page of dataset items (services.dataset_service).
MAX_DATASET_ITEMS_PAGE = 1000

#: Largest request body the API function accepts (a synchronous Lambda invocation carries 6 MB).
MAX_REQUEST_BODY_BYTES = 6 * 1024 * 1024

#: Longest id in a path (ids are UUIDs; DynamoDB keys are at most 1 KiB-2 KiB).
MAX_ID_LENGTH = 256

#: Most items of a batch run at once (the Map state's MaxConcurrency).
MAX_PARALLELISM = MAX_BATCH_PARALLELISM

#: Most API keys a tenant may hold at once (revoked and expired ones do not count).
MAX_API_KEYS_PER_TENANT = 100
#: Longest lifetime given to an API key at creation.
MAX_API_KEY_TTL_DAYS = 3650


class Limit(NamedTuple):
    name: str
    value: int
    unit: str
    status: int  # the HTTP status that exceeding it answers
    what: str


LIMITS: tuple[Limit, ...] = (
    Limit("request_body", MAX_REQUEST_BODY_BYTES, "bytes", 413, "size of one request body"),
    Limit("json_depth", MAX_JSON_DEPTH, "levels", 400, "nesting of a request body (invalid_json)"),
    Limit("json_number", MAX_JSON_NUMBER_CHARS, "characters", 400, "a number literal of a request body"),
    Limit("input_file", MAX_INPUT_FILE_BYTES, "bytes", 400, "a file input sent through the API (decoded)"),
    Limit("single_input", MAX_SINGLE_INPUT_CHARS, "characters", 400, "a text input of a single run"),
    Limit("template_length", MAX_TEMPLATE_LENGTH, "characters", 400, "a node's input_template"),
    Limit("nodes_per_version", MAX_NODES_PER_VERSION, "nodes", 409, "nodes in one workflow version"),
    Limit("model_config", MAX_MODEL_CONFIG_BYTES, "bytes", 400, "a model's config, as JSON"),
    Limit("dataset_file", MAX_DATASET_FILE_BYTES, "bytes", 400, "one dataset file"),
    Limit("dataset_json_array", MAX_JSON_ARRAY_BYTES, "bytes", 400, "a .json array file (read whole)"),
    Limit("dataset_line", MAX_LINE_BYTES, "bytes", 400, "one line (item) of a JSONL or CSV file"),
    Limit("dataset_items", MAX_ITEMS_PER_VERSION, "items", 400, "items of one dataset version"),
    Limit("item_id_length", MAX_ITEM_ID_LENGTH, "characters", 400, "an item's own id field"),
    Limit("item_depth", MAX_ITEM_DEPTH, "levels", 400, "nesting of one dataset item (malformed_file)"),
    Limit("inline_items", MAX_INLINE_ITEMS, "items", 400, "items=[...] sent in one request"),
    Limit("upload_part", UPLOAD_PART_BYTES, "bytes", 400, "one part of an upload sent through the API"),
    Limit("upload_parts", MAX_UPLOAD_PARTS, "parts", 400, "parts of one upload"),
    Limit("dataset_items_page", MAX_DATASET_ITEMS_PAGE, "items", 400, "limit of a page of dataset items"),
    Limit("filter_query", MAX_FILTER_LENGTH, "characters", 400, "batch_config.filter_query"),
    Limit(
        "filter_stages",
        MAX_FILTER_LIST_STAGES,
        "places",
        400,
        "places a filter builds a list or object ([a, b], {k: v}, [], [*], *, [?...])",
    ),
    Limit("callback_url", MAX_CALLBACK_URL_LENGTH, "characters", 400, "a callback_url (and the URL rules)"),
    Limit("parallelism", MAX_PARALLELISM, "items", 400, "batch_config.parallelism (items run at once)"),
    Limit("results_page", MAX_RESULTS_PAGE, "items", 400, "limit of a page of batch results"),
    Limit(
        "results_download",
        MAX_RESULTS_DOWNLOAD_BYTES,
        "bytes",
        413,
        "a download in one answer (larger: a presigned URL, 303, where S3 is reachable)",
    ),
    Limit("workflow_timeout", MAX_WORKFLOW_TIMEOUT_SECONDS, "seconds", 400, "timeout of a whole run"),
    Limit("node_timeout", MAX_NODE_TIMEOUT_SECONDS, "seconds", 400, "timeout of one node"),
    Limit("id_length", MAX_ID_LENGTH, "characters", 404, "an id in a path"),
    Limit("api_keys_per_tenant", MAX_API_KEYS_PER_TENANT, "keys", 409, "active API keys of one tenant"),
)


def as_table() -> list[dict[str, object]]:
    """The limits as rows (for the documentation)."""
    return [limit._asdict() for limit in LIMITS]

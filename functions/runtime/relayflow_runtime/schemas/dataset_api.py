"""Request bodies of the dataset and batch-result routes. Unknown fields are refused, not ignored."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relayflow_runtime.schemas.api import MAX_NAME_LENGTH
from relayflow_runtime.schemas.entities import MAX_BATCH_PARALLELISM, RequestModel

#: Most items sent in one ``items=[...]`` request (larger lists go through an upload).
MAX_INLINE_ITEMS = 10_000
#: Most item results in one page of a batch run's results (``GET .../results?limit=``).
MAX_RESULTS_PAGE = 1000


class Body(RequestModel):
    model_config = ConfigDict(extra="forbid")


class CreateDataset(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Field("", max_length=4000)


class CreateDatasetVersion(Body):
    name: str = Field("", max_length=MAX_NAME_LENGTH)


class AddItems(Body):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_INLINE_ITEMS)


class StartUpload(Body):
    filename: str = Field(min_length=1, max_length=500)
    size: int | None = Field(None, ge=0)


class UploadPart(Body):
    content_base64: str


class CommitUpload(Body):
    # How many parts were sent through the API (1..n); None: the file went to upload_url.
    parts: int | None = Field(None, ge=1)


class RetryFailed(Body):
    # None: the failed run's own snapshot of its version; else this version of the workflow.
    version_id: str | None = None
    parallelism: int | None = Field(None, ge=1, le=MAX_BATCH_PARALLELISM)


# ---- the download formats of batch results -----------------------------------------------------------
# ``output`` is the text of the item's last node; ``parsed_output`` its parsed value (JSON nodes).
RESULT_COLUMNS = ("source_item_id", "status", "input", "output", "parsed_output", "error", "failed_node_id")


def result_row(result: BaseModel | dict[str, Any]) -> dict[str, Any]:
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    return {column: data.get(column) for column in RESULT_COLUMNS}


def format_rows(rows: Iterable[dict[str, Any]], fmt: str, *, header: bool = True) -> Iterator[bytes]:
    """JSONL: one JSON object per line. CSV: a header row (unless ``header`` is False: a file
    written in several rounds has it once), then one row per item; a value that is not a string
    (an input item, a parsed output) is written as JSON, null as an empty field."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False).encode() + b"\n"
        return
    if fmt != "csv":
        raise ValueError(f"results download as jsonl or csv, not {fmt!r}")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow(_cell(row.get(column)) for column in RESULT_COLUMNS)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

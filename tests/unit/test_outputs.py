"""A node's ``output`` is always the text its model produced; a JSON node's parsed value is
``parsed_output``, beside it. The read path accepts both ways records were written: text and value
apart (the runner now), or the parsed value alone in ``output`` (records written before)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from relayflow_runtime.schemas.dataset_api import format_rows, result_row
from relayflow_runtime.schemas.entities import BatchItemResult, ExecutionResults, NodeExecution

VALUE = {"label": "positive", "score": 0.9, "tags": ["é", 1]}


@pytest.mark.parametrize("model", [NodeExecution, BatchItemResult])
def test_text_and_value_apart_are_kept_as_they_are(model: type) -> None:
    # Given a record holding the model's text and, apart, its parsed value
    key = {"node_id": "n"} if model is NodeExecution else {"source_item_id": "i"}
    text = '{"label": "positive",  "score": 0.9, "tags": ["é", 1]}'
    # When it is read
    read = model.model_validate({**key, "output": text, "parsed_output": VALUE})
    # Then the text is the output, byte for byte, and the value the parsed output
    assert (read.output, read.parsed_output) == (text, VALUE)


@pytest.mark.parametrize("model", [NodeExecution, BatchItemResult])
def test_a_parsed_value_stored_as_the_output_reads_as_its_text_and_its_value(model: type) -> None:
    # Given a record written before outputs were kept as text: the parsed value in output
    key = {"node_id": "n"} if model is NodeExecution else {"source_item_id": "i"}
    # When it is read
    read = model.model_validate({**key, "output": VALUE})
    # Then the output is its compact JSON text and the value is the parsed output
    assert read.output == '{"label":"positive","score":0.9,"tags":["é",1]}'
    assert json.loads(read.output) == read.parsed_output == VALUE


@pytest.mark.parametrize("model", [NodeExecution, BatchItemResult])
def test_no_output_yet_is_empty_text(model: type) -> None:
    key = {"node_id": "n"} if model is NodeExecution else {"source_item_id": "i"}
    for record in ({**key}, {**key, "output": None}):
        read = model.model_validate(record)
        assert (read.output, read.parsed_output) == ("", None)
    # The reference documentation's Complete Example slices it
    assert read.model_dump().get("output", "No output")[:100] == ""


def test_a_single_runs_results() -> None:
    assert ExecutionResults.of_single_run(None) is None
    text = ExecutionResults.of_single_run("HELLO")
    assert text is not None and (text.output, text.parsed_output, text.items) == ("HELLO", None, [])
    both = ExecutionResults.of_single_run('{"a": 1}', {"a": 1})
    assert both is not None and (both.output, both.parsed_output) == ('{"a": 1}', {"a": 1})
    legacy = ExecutionResults.of_single_run({"a": 1})
    assert legacy is not None and (legacy.output, legacy.parsed_output) == ('{"a":1}', {"a": 1})
    # The reference documentation reads results.get("items", []) for every run: an object
    assert text.model_dump(mode="json").get("items", []) == []


def test_downloads_carry_the_text_and_the_parsed_value() -> None:
    # Given an item of a JSON node
    item = BatchItemResult(
        source_item_id="i", status="completed", input="x", output='{"n": 1}', parsed_output={"n": 1}
    )
    # When it is written as JSONL and as CSV
    (line,) = list(format_rows([result_row(item)], "jsonl"))
    table = list(csv.reader(io.StringIO(b"".join(format_rows([result_row(item)], "csv")).decode())))
    # Then both keep the text and the value
    assert json.loads(line)["output"] == '{"n": 1}' and json.loads(line)["parsed_output"] == {"n": 1}
    row = dict(zip(table[0], table[1], strict=True))
    assert row["output"] == '{"n": 1}' and json.loads(row["parsed_output"]) == {"n": 1}

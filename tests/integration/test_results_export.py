"""The jobs machine's export of a finished batch (services/results_export.py, docs/batch.md
Downloads): concurrent inside a round and byte-identical to the sequential export and to the
results pages; a round killed half-way or run twice resumes to the same file, completed once; a
round with little time left stops before its margin (an injected clock, no sleeps). Results
pages read the values stored apart a wave at a time, a bounded number per page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.batches import (
    TENANT,
    compaction_ended,
    dataset,
    pending_run,
    record,
    run_every_item,
    stored,
    workflow,
)

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.domain.batch import BATCH_VALUE_LIMIT
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.outcomes import NO_SEGMENTS, Segments
from relayflow_runtime.schemas.dataset_api import format_rows, result_row
from relayflow_runtime.schemas.entities import Execution
from relayflow_runtime.services import (
    batch,
    batch_results,
    deps,
    outcomes,
    results_export,
)

pytestmark = pytest.mark.shared_stack

ECHO = ("echo", {"model": "echo"}, {"input_template": "{{input}}"})
ITEMS = 120
#: Items whose output is stored apart (over BATCH_VALUE_LIMIT: an S3 object each).
LARGE = {7, 40, 41, 90}
PART = blob_stream.MIN_PART_SIZE


def _echo(config: dict[str, Any], prompt: str, ctx: Any) -> str:
    size = BATCH_VALUE_LIMIT + 10_000 if prompt.endswith("!") else 120_000
    return f"{prompt}:" + "x" * size


@pytest.fixture(scope="module")
def run(module_api: Any) -> RunRef:
    """A finished, compacted batch of ITEMS items: outputs of 120 KB (≈15 MB in all), LARGE ones over
    BATCH_VALUE_LIMIT, and one input over 64 KiB (stored apart in the list)."""
    from relayflow_runtime.providers import builtin

    def text(i: int) -> str:
        if i == 3:
            return "y" * 70_000
        return f"item {i}" + ("!" if i in LARGE else "")

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(builtin.MODELS, "echo", _echo)
        dataset_id, version_id = dataset(
            module_api, [{"id": f"e{i:03d}", "text": text(i)} for i in range(ITEMS)]
        )
        workflow_id, wf_version = workflow(module_api, [ECHO])
        ref = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
        run_every_item(ref)
        batch.complete(ref)
        assert compaction_ended(ref) == "SUCCEEDED"
    assert batch_results.compacted(stored(ref)).every
    return ref


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of S3's smallest size and chunks of a few items, so the file is several parts and a
    chunk's answer ends early (its rest read next)."""
    monkeypatch.setattr(results_export, "EXPORT_PART_BYTES", PART)
    monkeypatch.setattr(results_export, "EXPORT_CHUNK_ITEMS", 9)
    monkeypatch.setattr(results_export, "EXPORT_CHUNK_BYTES", 200_000)


def job(ref: RunRef, fmt: str) -> dict[str, Any]:
    return {"tenant": TENANT, "workflow_id": ref.workflow_id, "execution_id": ref.execution_id, "format": fmt}


def expected(ref: RunRef, fmt: str) -> bytes:
    """The file as the results pages read it (each page's own requests, no export code)."""
    execution = Execution.model_validate({k: v for k, v in record(ref).items() if k != "results"})
    rows = (
        result_row(r)
        for r in batch_results.iter_results(TENANT, execution, 100, compacted=Segments(every=True))
    )
    return b"".join(format_rows(rows, fmt))


class Clock:
    """Seconds that pass only when the test says so (thread-safe)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def rounds(first: dict[str, Any], **options: Any) -> Iterator[dict[str, Any]]:
    """Each round's answer until the object is complete."""
    current = first
    while True:
        answer = results_export.export_results_job(current, **options)
        yield answer
        if not answer.get("more"):
            return
        current = answer


def exported(answer: dict[str, Any]) -> bytes:
    return deps.blobs().get_bytes(answer["key"])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_concurrent_export_is_byte_identical_to_the_sequential_one_and_to_the_pages(
    run: RunRef, fmt: str
) -> None:
    # Given the pages' file of a run with values stored apart, an input stored apart, and chunks
    # whose answers end early
    want = expected(run, fmt)
    assert len(want) > 2 * PART
    # When it is exported concurrently, then one thing at a time, in one round each
    concurrent = list(rounds(job(run, fmt)))
    first = exported(concurrent[-1])
    sequential = list(rounds(job(run, fmt), concurrent=False))
    # Then both files are the pages' bytes: every item once, in order, the CSV header once
    assert len(concurrent) == len(sequential) == 1
    assert first == want
    assert exported(sequential[-1]) == want
    assert concurrent[-1]["size"] == len(want)
    assert record(run)["exports"][fmt]["status"] == "ready"


def test_rounds_out_of_time_hand_on_at_whole_parts_and_end_with_the_same_file(
    run: RunRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a clock on which every part sent takes 30 s, and rounds of 50 s before their margin
    clock = Clock()
    real = blob_stream.PartUpload.send

    def slow(self: blob_stream.PartUpload, number: int, body: bytes) -> None:
        real(self, number, body)
        clock.advance(30)

    monkeypatch.setattr(blob_stream.PartUpload, "send", slow)
    remaining = int((results_export.EXPORT_MARGIN_SECONDS + 50) * 1000)
    # When it is exported round after round, each on its own clock's time
    answers = []
    for answer in rounds(job(run, "jsonl"), remaining_ms=remaining, clock=clock, concurrent=False):
        answers.append(answer)
        clock.now = 0.0
    # Then it took several rounds, each handing on a whole number of parts, and the file is whole
    assert len(answers) >= 2, answers
    sent = [a["upload"]["parts"] for a in answers[:-1]]
    assert sent == list(range(1, len(sent) + 1)), sent  # one part a round: 30 + 30 > 50
    assert all(a["upload"]["size"] == a["upload"]["parts"] * PART for a in answers[:-1])
    assert exported(answers[-1]) == expected(run, "jsonl")


def test_a_round_with_little_time_left_starts_nothing_and_one_never_passes_its_margin(
    run: RunRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a clock on which a part takes 60 s: longer than the EXPORT_PART_SECONDS floor
    clock = Clock()
    real = blob_stream.PartUpload.send
    ends: list[float] = []

    def slow(self: blob_stream.PartUpload, number: int, body: bytes) -> None:
        real(self, number, body)
        clock.advance(60)
        ends.append(clock())

    monkeypatch.setattr(blob_stream.PartUpload, "send", slow)
    margin = results_export.EXPORT_MARGIN_SECONDS
    # When a round has less time before its margin than a worst-case part takes
    idle = results_export.export_results_job(
        job(run, "jsonl"), remaining_ms=int((margin + 10) * 1000), clock=clock, concurrent=False
    )
    # Then it starts nothing and hands the job on as it was
    assert idle["more"] and idle["upload"]["parts"] == 0 and ends == [] and clock() == 0
    # And when a round has 100 s before its margin: after its first part (60 s), the worst case it
    # has seen no longer fits, so it stops there instead of starting a second one (to end at 120 s)
    answer = results_export.export_results_job(
        job(run, "jsonl"), remaining_ms=int((margin + 100) * 1000), clock=clock, concurrent=False
    )
    assert answer["more"] and answer["upload"]["parts"] == 1
    assert clock() <= 100 and ends == [60]


class Killed(BaseException):
    """Lambda's timeout: the invocation ends where it is, nothing runs after it."""


def test_a_round_killed_half_way_or_run_twice_resumes_to_the_same_file_completed_once(
    run: RunRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = expected(run, "csv")
    real = blob_stream.PartUpload.send
    sent: list[int] = []
    kill_at: list[int] = [3]

    def killing(self: blob_stream.PartUpload, number: int, body: bytes) -> None:
        if kill_at and number == kill_at[0]:
            kill_at.clear()
            raise Killed
        real(self, number, body)
        sent.append(number)

    monkeypatch.setattr(blob_stream.PartUpload, "send", killing)
    completed: list[str] = []
    real_complete = blob_stream.PartUpload.complete

    def counting(self: blob_stream.PartUpload, count: int, size: int) -> None:
        real_complete(self, count, size)
        completed.append(self.key)

    monkeypatch.setattr(blob_stream.PartUpload, "complete", counting)
    # Given a first round that sent a part and handed on (a part takes 30 s, its round had 40)
    clock = Clock()

    def timed(self: blob_stream.PartUpload, number: int, body: bytes) -> None:
        killing(self, number, body)
        clock.advance(30)

    monkeypatch.setattr(blob_stream.PartUpload, "send", timed)
    handed = results_export.export_results_job(
        job(run, "csv"),
        remaining_ms=int((results_export.EXPORT_MARGIN_SECONDS + 40) * 1000),
        clock=clock,
        concurrent=False,
    )
    assert handed["more"] and handed["upload"]["parts"] == 1 and sent == [1]
    # When the next round is killed while it sends its parts (concurrently), and Step Functions
    # runs it again from the same input
    with pytest.raises(Killed):
        results_export.export_results_job(handed)
    last = results_export.export_results_job(handed)
    # And that last round is run twice (a retried Lambda call whose first run had ended)
    again = results_export.export_results_job(handed)
    # Then the file is the pages' bytes, and it was completed once (the second run found the upload
    # completed with the same size: nothing to do)
    assert not last.get("more") and last == again
    assert exported(last) == want
    assert len(completed) == 1


def test_a_page_reads_its_values_stored_apart_in_waves_a_bounded_number_at_most(
    run: RunRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given pages with values stored apart (an output over BATCH_VALUE_LIMIT each, an input over
    # 64 KiB) and a page allowed 2 such reads
    monkeypatch.setattr(batch_results, "PAGE_VALUE_READS", 2)
    reads: list[str] = []
    real = type(deps.blobs()).get_bytes

    def counted(self: Any, key: str) -> bytes:
        reads.append(key)
        return real(self, key)

    monkeypatch.setattr(type(deps.blobs()), "get_bytes", counted)
    # When pages of 100 are read
    results: list[Any] = []
    token: str | None = None
    most = 0
    while True:
        reads.clear()
        answer = batch_results.get_results(TENANT, run.workflow_id, run.execution_id, 100, token)
        page, token = answer.items, answer.next_token
        results.extend(page)
        most = max(most, len(reads))
        if not token:
            break
    # Then every item is there once, in order, with its whole value, and no page read more than 2
    assert [r.source_item_id for r in results] == [f"e{i:03d}" for i in range(ITEMS)]
    assert all(len(results[i].output) > BATCH_VALUE_LIMIT for i in LARGE)
    assert len(results[3].input or "") == 70_000
    assert most == 2
    # And a page filtered by status reads no value of the items it passes over
    reads.clear()
    failed = batch_results.get_results(TENANT, run.workflow_id, run.execution_id, 100, None, "failed").items
    assert failed == [] and reads == []


def test_the_jobs_machine_runs_a_round_killed_at_the_lambda_timeout_again_from_its_input() -> None:
    # Given the jobs machine's definition (what a killed round's resumption rests on)
    definition = json.loads((Path(__file__).parents[2] / "statemachine" / "jobs.asl.json").read_text())
    # Then its task retries Lambda's timeout (a round repeats from the same input)
    retried = [r for r in definition["States"]["RunJob"]["Retry"] if "Sandbox.Timedout" in r["ErrorEquals"]]
    assert retried and retried[0]["MaxAttempts"] >= 1


def test_a_page_of_a_running_run_reads_a_bounded_number_of_child_objects(
    run: RunRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run read as while it runs (its child objects, ten items each) and pages allowed 3
    monkeypatch.setattr(outcomes, "PAGE_OBJECT_READS", 3)
    execution = Execution.model_validate({k: v for k, v in record(run).items() if k != "results"})
    # When pages of 100 are read
    results: list[Any] = []
    token: str | None = None
    sizes = []
    while True:
        answer = batch_results.results_page(TENANT, execution, 100, token, compacted=NO_SEGMENTS)
        page, token = answer.items, answer.next_token
        results.extend(page)
        sizes.append(len(page))
        if not token:
            break
    # Then each page ends before a fourth child object (30 items), and every item is read once
    assert sizes == [30, 30, 30, 30], sizes
    assert [r.source_item_id for r in results] == [f"e{i:03d}" for i in range(ITEMS)]

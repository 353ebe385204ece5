"""Runs started by S3 uploads: inputs/<workflow_id>/<file> starts one run, however often the
notification arrives; an upload that cannot run is moved to rejected/ with a reason."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from relayflow.local import moto_shim
from relayflow.local.stack import LocalStack
from relayflow_runtime.domain.records import UploadMarker
from relayflow_runtime.services import deps, notify, uploads

TRIGGER = "relayflow_runtime.handlers.s3_trigger.lambda_handler"

# One stack for the module: each test uploads under a workflow of its own, and keys() answers only
# the objects the test itself added (see _earlier_objects).
pytestmark = pytest.mark.shared_stack
_EARLIER: set[str] = set()


@pytest.fixture(autouse=True)
def _earlier_objects(request: pytest.FixtureRequest) -> None:
    """The bucket's keys when a test on the stack begins (other tests' objects)."""
    _EARLIER.clear()
    if "local_stack" in request.fixturenames:
        _EARLIER.update(_all_keys(request.getfixturevalue("local_stack")))


@pytest.fixture
def notifications(local_stack: LocalStack) -> Iterator[list[dict[str, Any]]]:
    """Every S3 notification the trigger function receives (it still handles them)."""
    from relayflow_runtime.handlers import s3_trigger

    seen: list[dict[str, Any]] = []

    def recording(event: dict[str, Any], context: Any) -> Any:
        seen.append(json.loads(json.dumps(event)))
        return s3_trigger.lambda_handler(event, context)

    with moto_shim.override(TRIGGER, recording):
        yield seen


class RecordingBus:
    """The relayflow bus as a list of (detail type, detail)."""

    name = "recording-bus"

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def rule_patterns(self) -> list[str | None]:
        return ['{"source": ["relayflow"]}']

    def put(self, source: str, detail_type: str, detail: dict[str, Any]) -> str | None:
        self.events.append((detail_type, json.loads(json.dumps(detail))))
        return None


def make_workflow(api: Any, *, with_version: bool = True) -> dict[str, Any]:
    _, model = api(
        "POST", "/models", {"name": "x", "provider": "builtin", "config": {"model": "text_extract"}}
    )
    _, workflow = api("POST", "/workflows", {"name": "uploads"})
    if with_version:
        add_version(api, workflow["id"], model["id"])
    return {"id": workflow["id"], "model_id": model["id"]}


def add_version(api: Any, workflow_id: str, model_id: str) -> str:
    _, version = api("POST", f"/workflows/{workflow_id}/versions", {})
    status, _ = api("POST", f"/versions/{version['id']}/nodes", {"name": "read", "entity_id": model_id})
    assert status == 201
    return str(version["id"])


def executions_of(api: Any, workflow_id: str) -> list[dict[str, Any]]:
    status, page = api("GET", f"/workflows/{workflow_id}/executions")
    assert status == 200, page
    return list(page["items"])


def wait_finished(api: Any, workflow_id: str, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        _, execution = api("GET", f"/workflows/{workflow_id}/executions/{execution_id}")
        if execution["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return dict(execution)
        time.sleep(0.05)


def keys(local_stack: LocalStack, prefix: str) -> list[str]:
    """The keys under prefix that the running test added."""
    listing = local_stack.client("s3").list_objects_v2(
        Bucket=local_stack.outputs["BucketName"], Prefix=prefix
    )
    return sorted(o["Key"] for o in listing.get("Contents", []) if o["Key"] not in _EARLIER)


def read(local_stack: LocalStack, key: str) -> bytes:
    s3 = local_stack.client("s3")
    body: bytes = s3.get_object(Bucket=local_stack.outputs["BucketName"], Key=key)["Body"].read()
    return body


def upload(local_stack: LocalStack, key: str, data: bytes) -> None:
    local_stack.client("s3").put_object(Bucket=local_stack.outputs["BucketName"], Key=key, Body=data)


def test_an_upload_starts_exactly_one_run_even_when_the_notification_arrives_twice(
    local_stack: LocalStack, api: Any, notifications: list[dict[str, Any]]
) -> None:
    # Given a workflow that reads its input file
    workflow = make_workflow(api)
    key = f"inputs/{workflow['id']}/quarterly report.txt"

    # When a file is uploaded under inputs/<workflow id>/ and S3 delivers the notification again
    upload(local_stack, key, b"Revenue went up.")
    assert len(notifications) == 1
    assert notifications[0]["Records"][0]["s3"]["object"]["key"].endswith("quarterly+report.txt")
    again = local_stack.invoke("S3TriggerFunction", notifications[0])

    # Then exactly one run exists, started from that object, and the repeat was recognised
    (execution,) = executions_of(api, workflow["id"])
    assert again["results"][0]["outcome"] == "duplicate"
    assert again["results"][0]["execution_id"] == execution["id"]
    assert execution["trigger"]["key"] == key
    assert execution["trigger"]["etag"] == hashlib.md5(b"Revenue went up.").hexdigest()
    assert execution["input_file"]["filename"] == "quarterly report.txt"
    # And it runs on its own copy of the file, which stays downloadable
    finished = wait_finished(api, workflow["id"], execution["id"])
    assert finished["status"] == "completed"
    assert finished["results"]["output"] == "Revenue went up."
    status, data = api("GET", f"/workflows/{workflow['id']}/executions/{execution['id']}/input")
    assert status == 200 and data == "Revenue went up."
    # And the uploaded object is left where it was; nothing was rejected
    assert keys(local_stack, "inputs/") == [key]
    assert keys(local_stack, "rejected/") == []


def test_an_upload_for_an_unknown_workflow_is_moved_to_rejected_with_a_reason(
    local_stack: LocalStack, api: Any, notifications: list[dict[str, Any]]
) -> None:
    # Given no workflow "wf-that-does-not-exist", and a bus whose events are recorded
    key = "inputs/wf-that-does-not-exist/notes.txt"
    bus = RecordingBus()

    # When a file is uploaded for it (and the notification is delivered twice)
    with notify.using_bus(bus):
        upload(local_stack, key, b"some notes")
        local_stack.invoke("S3TriggerFunction", notifications[0])

    # Then the object is moved to rejected/<its key>, next to a reason anyone can read
    assert keys(local_stack, "rejected/") == [f"rejected/{key}", f"rejected/{key}.reason.json"]
    # And the uploader finds the same reason beside the key it uploaded (the trigger, notified of
    # it, ignores it: no run, no rejection of the reason)
    assert keys(local_stack, "inputs/") == [f"{key}.reason.json"]
    beside = json.loads(read(local_stack, f"{key}.reason.json"))
    assert beside == json.loads(read(local_stack, f"rejected/{key}.reason.json"))
    assert beside["reason_key"] == f"{key}.reason.json"
    notified = [r["s3"]["object"]["key"] for n in notifications for r in n["Records"]]
    assert f"{key}.reason.json" in notified
    # And the rejection is an event on the relayflow bus (once per delivery: at least once)
    rejected = [d for t, d in bus.events if t == "Upload Rejected"]
    assert rejected and all(d == {**beside, "schema_version": "1", "time": d["time"]} for d in rejected)
    assert rejected[0]["code"] == "unknown_workflow" and rejected[0]["key"] == key
    assert read(local_stack, f"rejected/{key}") == b"some notes"
    reason = json.loads(read(local_stack, f"rejected/{key}.reason.json"))
    assert reason["code"] == "unknown_workflow"
    assert reason["message"] == "workflow 'wf-that-does-not-exist' does not exist"
    assert reason["key"] == key and reason["workflow_id"] == "wf-that-does-not-exist"
    assert reason["etag"] == hashlib.md5(b"some notes").hexdigest()


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("empty.txt", b"", "empty_file"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unsupported_file"),
    ],
)
def test_files_no_node_can_read_are_rejected(
    local_stack: LocalStack, api: Any, name: str, data: bytes, code: str
) -> None:
    # Given a workflow
    workflow = make_workflow(api)
    key = f"inputs/{workflow['id']}/{name}"
    # When a file it cannot read is uploaded
    upload(local_stack, key, data)
    # Then no run starts and the file is moved aside with the reason
    assert executions_of(api, workflow["id"]) == []
    assert json.loads(read(local_stack, f"rejected/{key}.reason.json"))["code"] == code


def test_the_key_can_name_a_version_and_a_pdf_is_a_valid_input(local_stack: LocalStack, api: Any) -> None:
    # Given a workflow with two versions (the first is active)
    workflow = make_workflow(api)
    second = add_version(api, workflow["id"], workflow["model_id"])
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4

    # When a file is uploaded under inputs/<workflow>/versions/<second>/, in a sub-folder
    upload(local_stack, f"inputs/{workflow['id']}/versions/{second}/2025/06/scan.pdf", pdf)

    # Then the run uses that version
    (execution,) = executions_of(api, workflow["id"])
    assert execution["version_id"] == second
    assert execution["input_file"]["filename"] == "scan.pdf"
    assert execution["input_file"]["size"] == len(pdf)


def test_an_unknown_version_or_another_tenants_workflow_is_rejected(
    local_stack: LocalStack, api: Any
) -> None:
    # Given a workflow of the default tenant
    workflow = make_workflow(api)
    # When files name a version it does not have, or the same workflow under another tenant
    upload(local_stack, f"inputs/{workflow['id']}/versions/v-nope/a.txt", b"a")
    upload(local_stack, f"inputs/tenants/acme/{workflow['id']}/b.txt", b"b")
    upload(local_stack, "inputs/only-a-file.txt", b"c")
    # Then none runs, and each reason says why
    assert executions_of(api, workflow["id"]) == []
    reasons = {
        key: json.loads(read(local_stack, key))
        for key in keys(local_stack, "rejected/")
        if key.endswith(".reason.json")
    }
    assert {r["key"]: r["code"] for r in reasons.values()} == {
        f"inputs/{workflow['id']}/versions/v-nope/a.txt": "unknown_version",
        f"inputs/tenants/acme/{workflow['id']}/b.txt": "unknown_workflow",
        "inputs/only-a-file.txt": "bad_key",
    }
    acme = next(r for r in reasons.values() if r["tenant"] == "acme")
    assert acme["message"] == f"workflow '{workflow['id']}' does not exist for tenant 'acme'"


def test_a_rejected_file_uploaded_again_once_it_can_run_starts_a_run(
    local_stack: LocalStack, api: Any
) -> None:
    # Given a workflow without any version: an upload for it is rejected
    workflow = make_workflow(api, with_version=False)
    key = f"inputs/{workflow['id']}/retry.txt"
    upload(local_stack, key, b"same bytes")
    assert json.loads(read(local_stack, f"rejected/{key}.reason.json"))["code"] == "no_active_version"

    # When the workflow gets a version and the very same file is uploaded to the same key
    add_version(api, workflow["id"], workflow["model_id"])
    upload(local_stack, key, b"same bytes")

    # Then this upload starts a run (a rejected upload does not block the next one)
    (execution,) = executions_of(api, workflow["id"])
    assert execution["trigger"]["key"] == key


def test_a_delivery_that_finds_another_one_starting_retries_and_an_abandoned_start_is_taken_over(
    local_stack: LocalStack, api: Any, notifications: list[dict[str, Any]]
) -> None:
    # Given an upload whose marker says another delivery is starting it right now
    workflow = make_workflow(api)
    key, data = f"inputs/{workflow['id']}/contested.txt", b"contested"
    bucket, etag = local_stack.outputs["BucketName"], hashlib.md5(data).hexdigest()
    digest = uploads.upload_digest(bucket, key, etag)
    now = int(time.time())
    marker = UploadMarker(
        bucket=bucket,
        key=key,
        etag=etag,
        state="starting",
        execution_id="11111111-2222-3333-4444-555555555555",
        claim_token="other-delivery",
        lease_until=now + 60,
    )
    assert deps.stores().uploads.claim_upload(
        "default", digest, marker, now_epoch=now, expires_epoch=now + 3600
    )

    # When the notification arrives
    upload(local_stack, key, data)

    # Then this delivery starts nothing and fails, so that Lambda tries it again later
    assert executions_of(api, workflow["id"]) == []
    with pytest.raises(Exception, match="to be retried"):
        local_stack.invoke("S3TriggerFunction", notifications[0])

    # When the other delivery's lease runs out (it crashed) and the retry comes
    deps.stores().uploads.update_upload("default", digest, {"lease_until": 0})
    result = local_stack.invoke("S3TriggerFunction", notifications[0])

    # Then the retry takes over and starts the run under the execution id the first one chose
    assert result["results"][0]["outcome"] == "started"
    (execution,) = executions_of(api, workflow["id"])
    assert execution["id"] == marker.execution_id


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("inputs/wf1/a.txt", ("default", "wf1", None, "a.txt")),
        ("inputs/wf1/x/y/a b.txt", ("default", "wf1", None, "a b.txt")),
        ("inputs/wf1/versions/v2/a.txt", ("default", "wf1", "v2", "a.txt")),
        ("inputs/wf1/versions/a.txt", ("default", "wf1", None, "a.txt")),
        ("inputs/tenants/acme/wf1/a.txt", ("acme", "wf1", None, "a.txt")),
        ("inputs/tenants/acme/wf1/versions/v2/d/a.txt", ("acme", "wf1", "v2", "a.txt")),
    ],
)
def test_where_an_upload_lies_says_which_run(key: str, expected: tuple[Any, ...]) -> None:
    target = uploads.parse_key(key)
    assert (target.tenant, target.workflow_id, target.version_id, target.filename) == expected


@pytest.mark.parametrize(
    "key", ["inputs/a.txt", "inputs//a.txt", "inputs/tenants/acme/a.txt", "inputs/tenants/a#b/wf/a.txt"]
)
def test_keys_that_name_no_workflow_are_refused(key: str) -> None:
    with pytest.raises(uploads.Rejection) as refused:
        uploads.parse_key(key)
    assert refused.value.code == "bad_key"


def test_content_checks() -> None:
    uploads.check_content("héllo wörld".encode(), 13)
    uploads.check_content(b"%PDF-1.7 ...", 12)
    # A sample cut inside a multi-byte character is still text
    cut = ("é" * 3000).encode()[: uploads.SNIFF_BYTES - 1]
    uploads.check_content(cut, 6000)
    for data, size, code in [
        (b"", 0, "empty_file"),
        (b"a", uploads.MAX_UPLOAD_BYTES + 1, "file_too_large"),
        (b"\xff\xfe\x00a", 4, "unsupported_file"),
        (b"text\x00with nul", 14, "unsupported_file"),
        (cut, len(cut), "unsupported_file"),  # the whole file: a cut character is an error
    ]:
        with pytest.raises(uploads.Rejection) as refused:
            uploads.check_content(data, size)
        assert refused.value.code == code


def _all_keys(local_stack: LocalStack) -> list[str]:
    s3 = local_stack.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=local_stack.outputs["BucketName"])
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_a_long_key_runs_on_a_copy_whose_key_fits_in_s3(
    local_stack: LocalStack, api: Any, notifications: list[dict[str, Any]]
) -> None:
    # Given an upload whose key is as long as one that can run (its file name alone ~950 bytes)
    workflow = make_workflow(api)
    prefix = f"inputs/{workflow['id']}/"
    name = "é" * ((uploads.MAX_INPUT_KEY_BYTES - len(prefix) - 4) // 2) + ".txt"
    key = prefix + name
    assert len(key.encode()) <= uploads.MAX_INPUT_KEY_BYTES
    # When it is uploaded
    upload(local_stack, key, b"long name")
    # Then its run starts, keeps the whole name, and no object key exceeds S3's 1,024 bytes
    (execution,) = executions_of(api, workflow["id"])
    assert execution["input_file"]["filename"] == name
    assert wait_finished(api, workflow["id"], execution["id"])["status"] == "completed"
    assert max(len(k.encode()) for k in _all_keys(local_stack)) <= uploads.MAX_S3_KEY_BYTES


def test_a_key_too_long_for_its_copies_is_refused_and_moved_aside_under_a_short_key(
    local_stack: LocalStack, api: Any, notifications: list[dict[str, Any]]
) -> None:
    # Given an upload whose key is longer than one whose copies S3 could hold
    workflow = make_workflow(api)
    key = f"inputs/{workflow['id']}/" + "n" * (uploads.MAX_INPUT_KEY_BYTES - 40) + ".txt"
    assert uploads.MAX_INPUT_KEY_BYTES < len(key.encode()) <= uploads.MAX_S3_KEY_BYTES
    # When it is uploaded
    upload(local_stack, key, b"too long")
    # Then no run starts; it is moved aside under a short key, with a reason naming the whole key
    assert executions_of(api, workflow["id"]) == []
    digest = hashlib.sha256(key.encode()).hexdigest()
    aside = f"rejected/long-keys/{digest}"
    assert keys(local_stack, "rejected/") == [aside, f"{aside}.reason.json"]
    reason = json.loads(read(local_stack, f"{aside}.reason.json"))
    assert reason["code"] == "key_too_long" and reason["key"] == key
    # (its reason beside it where that key fits in S3)
    beside = f"{key}.reason.json"
    assert keys(local_stack, "inputs/") == (
        [beside] if len(beside.encode()) <= uploads.MAX_S3_KEY_BYTES else []
    )
    assert max(len(k.encode()) for k in _all_keys(local_stack)) <= uploads.MAX_S3_KEY_BYTES

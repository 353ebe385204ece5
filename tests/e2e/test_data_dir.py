"""`relayflow serve --data-dir`: what a user made is still there after a restart — after a graceful
stop (SIGTERM) and after a crash (SIGKILL) — and what was running then is settled, not left running.
Uploads through the printed S3 endpoint start runs. Each server is a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from relayflow import Client
from relayflow.local.datadir import MARKER, DataDir

RELAYFLOW = Path(sys.executable).with_name("relayflow")
ITEMS = [{"id": f"r{i:02d}", "text": f"review number {i}"} for i in range(12)]


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RELAYFLOW_", "AWS_"))}


@dataclass
class Serve:
    """`relayflow serve` on free ports with a data directory; the variables it prints."""

    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    exports: dict[str, str] = field(default_factory=dict)

    def start(self) -> Serve:
        self.exports = {}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [RELAYFLOW, "serve", "--port", "0", "--s3-port", "0", "--data-dir", str(self.data_dir)],
                stdout=log,  # a file, not a pipe: the server's logs never block it
                stderr=subprocess.STDOUT,
                env=_environment(),
            )
        deadline = time.monotonic() + 90
        while "EVENT_BUS" not in self.exports:
            assert self.process.poll() is None, f"relayflow serve exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "relayflow serve never became ready"
            time.sleep(0.1)
            for line in self.log.read_bytes()[offset:].decode(errors="replace").splitlines():
                if line.startswith("  export "):
                    name, _, value = line.removeprefix("  export ").partition("=")
                    self.exports[name] = value
        return self

    def client(self) -> Client:
        return Client(base_url=self.exports["RELAYFLOW_URL"], api_key=self.exports["RELAYFLOW_API_KEY"])

    def s3(self) -> Any:
        session = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
        )
        return session.client("s3", endpoint_url=self.exports["AWS_ENDPOINT_URL_S3"])

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self.process = None


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path / "data", tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def _workflow(client: Client, name: str, model: dict[str, Any]) -> str:
    workflow = client.create_workflow(name=name)
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"max_retries": 0, "node_timeout": 60}
    )
    created = client.create_model(name=f"{name} model", provider="builtin", config=model)
    client.create_workflow_node(version_id=version.id, name="only", entity_id=created.id)
    return workflow.id


def _wait_for(condition: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def _results(client: Client, workflow_id: str, execution_id: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    token = None
    while True:
        page = client.get_execution_results(workflow_id, execution_id, limit=100, next_token=token)
        results.update({item.source_item_id: item for item in page})
        token = page.next_token
        if not token:
            return results


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "sigkill"])
def test_a_restart_keeps_workflows_runs_datasets_files_and_the_key_and_settles_running_runs(
    serve: Serve, tmp_path: Path, stop_signal: int
) -> None:
    # Given a server with a data directory, where a user authored workflows, ran them on a text, a
    # file and a dataset, uploaded a file to the bucket, and has a batch running
    serve.start()
    with serve.client() as client:
        upper = _workflow(client, "upper", {"model": "uppercase"})
        slow = _workflow(client, "slow", {"model": "sleep", "seconds": 1.0})
        single = client.wait_for_execution(
            upper, client.execute_workflow(upper, single_input="kept text").id, timeout=60
        )
        document = tmp_path / "note.txt"
        document.write_bytes(b"a file input")
        with_file = client.wait_for_execution(
            upper, client.execute_workflow(upper, item=document).id, timeout=60
        )
        dataset = client.create_dataset(name="reviews")
        version = client.create_dataset_version(dataset.id)
        client.upload_dataset_items(dataset.id, version.id, items=ITEMS)
        batch_config = {"dataset_id": dataset.id, "dataset_version_id": version.id, "input_field": "text"}
        finished = client.wait_for_execution(
            upper,
            client.execute_workflow(
                upper, input_mode="batch", batch_config={**batch_config, "parallelism": 4}
            ).id,
            timeout=120,
        )
        assert (single.status, with_file.status, finished.status) == ("completed", "completed", "completed")
        s3 = serve.s3()
        bucket = serve.exports["BUCKET"]
        s3.put_object(Bucket=bucket, Key=f"inputs/{upper}/uploaded.txt", Body=b"uploaded through s3")
        s3.put_object(Bucket=bucket, Key="inputs/no-such-workflow/lost.txt", Body=b"nobody runs this")
        uploaded = _wait_for(
            lambda: [e for e in client.get_workflow_executions(upper) if e.trigger],
            "the run the upload started",
        )[0]
        uploaded = client.wait_for_execution(upper, uploaded.id, timeout=60)
        running = client.execute_workflow(
            slow, input_mode="batch", batch_config={**batch_config, "parallelism": 2}
        )
        seen = _wait_for(
            lambda: (
                (e := client.get_workflow_execution(slow, running.id)).progress.processed_items
                and e.progress.processed_items >= 3
                and e
            ),
            "three items of the running batch",
        )
        assert seen.status == "running"
        done_before_stop = {
            item_id
            for item_id, item in _results(client, slow, running.id).items()
            if item.status == "completed"
        }
    key = serve.exports["RELAYFLOW_API_KEY"]

    # When the server stops: gracefully, or killed a good second after those writes were acknowledged
    if stop_signal == signal.SIGKILL:
        time.sleep(1.5)
    serve.stop(stop_signal)
    restarted_at = time.monotonic()
    serve.start()
    assert time.monotonic() - restarted_at < 60

    # Then it prints the same key, and everything the API acknowledged is there
    assert serve.exports["RELAYFLOW_API_KEY"] == key
    with serve.client() as client:
        assert {w.name for w in client.get_workflows()} >= {"upper", "slow"}
        again = client.get_workflow_execution(upper, single.id)
        assert (again.status, again.results["output"]) == ("completed", "KEPT TEXT")
        copy = client.download_execution_input(upper, with_file.id, output_path=tmp_path / "copy.txt")
        assert copy.read_bytes() == b"a file input"
        assert client.get_dataset_version(dataset.id, version.id).item_count == len(ITEMS)
        kept = _results(client, upper, finished.id)
        assert client.get_workflow_execution(upper, finished.id).status == "completed"
        assert {i: r.output for i, r in kept.items()} == {i["id"]: i["text"].upper() for i in ITEMS}
        assert client.get_workflow_execution(upper, uploaded.id).results["output"] == "UPLOADED THROUGH S3"
        s3 = serve.s3()
        reason = s3.get_object(Bucket=bucket, Key="rejected/inputs/no-such-workflow/lost.txt.reason.json")
        assert "no-such-workflow" in reason["Body"].read().decode()

        # And the batch that was running is failed, saying why, with the items it finished kept
        interrupted = client.get_workflow_execution(slow, running.id)
        assert interrupted.status == "failed"
        assert "local stack stopped" in (interrupted.error or "")
        results = _results(client, slow, running.id)
        completed = {i for i, r in results.items() if r.status == "completed"}
        assert done_before_stop <= completed
        assert all(results[i].output == next(x["text"] for x in ITEMS if x["id"] == i) for i in completed)

        # And retry-failed runs exactly the others, and a rerun runs them all
        retry = client.retry_failed_items(slow, running.id, parallelism=6)
        retried = client.wait_for_execution(slow, retry.id, timeout=120)
        assert retried.status == "completed"
        assert set(_results(client, slow, retry.id)) == {i["id"] for i in ITEMS} - completed
        rerun = client.wait_for_execution(
            slow, client.rerun_workflow_execution(slow, running.id).id, timeout=120
        )
        assert (rerun.status, rerun.progress.processed_items) == ("completed", len(ITEMS))

        # And uploads through the new endpoint start runs again
        s3.put_object(Bucket=bucket, Key=f"inputs/{upper}/after.txt", Body=b"after the restart")
        after = _wait_for(
            lambda: [e for e in client.get_workflow_executions(upper) if e.trigger and e.id != uploaded.id],
            "the run of the upload after the restart",
        )[0]
        assert client.wait_for_execution(upper, after.id, timeout=60).results["output"] == "AFTER THE RESTART"
    serve.stop()


def test_a_second_server_on_the_same_directory_is_refused_naming_the_first(tmp_path: Path) -> None:
    # Given a data directory in use (locked by this process)
    with DataDir.open(tmp_path / "data"):
        # When `relayflow serve` is started on it
        refused = subprocess.run(
            [RELAYFLOW, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=60,
        )
    # Then it exits with a usage error that names the other server's pid and what to do
    assert refused.returncode == 2
    assert f"in use by another relayflow server (pid {os.getpid()})" in refused.stderr
    assert "--ephemeral" in refused.stderr and "Traceback" not in refused.stderr


def test_a_directory_of_another_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    # Given a data directory written in another format
    directory = tmp_path / "data"
    DataDir.open(directory).close()
    (directory / MARKER).write_text(json.dumps({"format": 999, "written_by": "relayflow 9.0.0"}))
    # When `relayflow serve` is started on it
    refused = subprocess.run(
        [RELAYFLOW, "serve", "--port", "0", "--data-dir", str(directory)],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
    )
    # Then it is refused, saying which version wrote it and how to go on; nothing was changed
    assert refused.returncode == 2
    assert "format 999 (written by relayflow 9.0.0)" in refused.stderr
    assert f"mv {directory} {directory}.old" in refused.stderr
    assert json.loads((directory / MARKER).read_text())["format"] == 999


def test_uploads_through_the_printed_s3_endpoint_start_runs_or_are_moved_aside(
    serve: Serve, tmp_path: Path
) -> None:
    # Given `relayflow serve` and the endpoint and bucket it printed
    serve.start()
    assert serve.exports["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
    s3, bucket = serve.s3(), serve.exports["BUCKET"]
    with serve.client() as client:
        upper = _workflow(client, "upper", {"model": "uppercase"})

        # When a user's boto3 uploads a file under inputs/<workflow id>/, and one for no workflow
        s3.put_object(Bucket=bucket, Key=f"inputs/{upper}/2025/note.txt", Body=b"from my script")
        s3.upload_file(str(_file(tmp_path, b"nobody")), bucket, "inputs/no-such-workflow/x.txt")

        # Then the first starts a run of that workflow on the file, as on AWS
        started = _wait_for(lambda: list(client.get_workflow_executions(upper)), "the upload's run")[0]
        done = client.wait_for_execution(upper, started.id, timeout=60)
        assert (done.status, done.results["output"]) == ("completed", "FROM MY SCRIPT")
        assert done.trigger is not None and done.trigger.key == f"inputs/{upper}/2025/note.txt"
        # And the other is moved aside with the reason
        reason = json.loads(
            s3.get_object(Bucket=bucket, Key="rejected/inputs/no-such-workflow/x.txt.reason.json")[
                "Body"
            ].read()
        )
        assert reason["code"] == "unknown_workflow"
        # And the endpoint answers S3 and EventBridge only
        events = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
        ).client("events", endpoint_url=serve.exports["AWS_ENDPOINT_URL_EVENTBRIDGE"])
        buses = {b["Name"] for b in events.list_event_buses()["EventBuses"]}
        assert serve.exports["EVENT_BUS"] in buses
        dynamodb = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
        ).client("dynamodb", endpoint_url=serve.exports["AWS_ENDPOINT_URL_S3"])
        with pytest.raises(ClientError, match="serves S3 and EventBridge only"):
            dynamodb.list_tables()
    serve.stop()


def _file(directory: Path, content: bytes) -> Path:
    path = directory / "upload.txt"
    path.write_bytes(content)
    return path

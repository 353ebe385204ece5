"""The data directory: private, one server at a time, refused when it is not ours to read."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relayflow.local.datadir import FORMAT, MARKER, DataDir, DataDirError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_directory_is_private_and_marked_with_its_format(tmp_path: Path) -> None:
    # Given no directory yet (nor its parent)
    path = tmp_path / "home" / ".relayflow"
    # When it is opened
    with DataDir.open(path) as directory:
        directory.save_api_key("rf_key")
        # Then it exists, readable by its owner only, as is the key kept in it
        assert _mode(path) == 0o700
        assert _mode(path / "api-key") == 0o600
        assert directory.api_key() == "rf_key"
        assert json.loads((path / MARKER).read_text())["format"] == FORMAT


def test_an_existing_directory_open_to_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    DataDir.open(path).close()
    assert _mode(path) == 0o700


def test_a_folder_with_other_things_in_it_is_not_taken(tmp_path: Path) -> None:
    # Given a folder of the user's that is not a data directory
    (tmp_path / "notes.txt").write_text("mine")
    # When it is given as the data directory, Then it is refused and left as it was
    with pytest.raises(DataDirError, match=r"not a relayflow data directory .* \(notes\.txt\)"):
        DataDir.open(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = DataDir.open(tmp_path / "data")
    with pytest.raises(DataDirError, match=rf"in use by another relayflow server \(pid {os.getpid()}\)"):
        DataDir.open(tmp_path / "data")
    first.close()
    DataDir.open(tmp_path / "data").close()


def test_the_lock_of_a_killed_server_is_free_at_once(tmp_path: Path) -> None:
    # Given a process that holds the directory and is then killed (no chance to clean up)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from relayflow.local.datadir import DataDir; "
            f"DataDir.open({str(tmp_path / 'data')!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirError, match=f"pid {holder.pid}"):
            DataDir.open(tmp_path / "data")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Then the directory can be opened (the kernel released the lock with the process)
    deadline = time.monotonic() + 5
    while True:
        try:
            DataDir.open(tmp_path / "data").close()
            break
        except DataDirError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_another_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "data"
    DataDir.open(path).close()
    (path / MARKER).write_text(json.dumps({"format": FORMAT + 1, "written_by": "relayflow 9.9.9"}))
    with pytest.raises(DataDirError) as refused:
        DataDir.open(path)
    message = str(refused.value)
    assert f"format {FORMAT + 1} (written by relayflow 9.9.9)" in message
    assert f"mv {path} {path}.old" in message and "--data-dir" in message
    # And the refusal left the lock free
    (path / MARKER).write_text(json.dumps({"format": FORMAT}))
    DataDir.open(path).close()


def test_a_damaged_marker_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data"
    DataDir.open(path).close()
    (path / MARKER).write_text("{not json")
    with pytest.raises(DataDirError, match="unreadable"):
        DataDir.open(path)

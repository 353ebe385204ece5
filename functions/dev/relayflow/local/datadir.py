"""The data directory of `relayflow serve`: where the embedded stack keeps its state between runs.

One directory holds one stack's tables, objects and printed API key (`relayflow.local.persistence`
writes the first two). It is private to the user (0700, files 0600), one server uses it at a time
(an fcntl lock on ``lock``; the kernel releases it when the process dies, even by SIGKILL), and
``relayflow-data.json`` says which on-disk format it holds, so that a relayflow that cannot read it
refuses to start instead of misreading it.

Default: ``$RELAYFLOW_DATA_DIR``, else ``~/.relayflow``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "MARKER",
    "DataDir",
    "DataDirError",
    "default_data_dir",
]

#: The on-disk format this relayflow reads and writes. Bump it when the layout of the journal,
#: the snapshot or the object files changes in a way an older reader would misread.
FORMAT = 1
MARKER = "relayflow-data.json"
LOCK = "lock"
API_KEY = "api-key"


class DataDirError(RuntimeError):
    """The data directory cannot be used: the message says why and what to do."""


def default_data_dir() -> Path:
    override = os.environ.get("RELAYFLOW_DATA_DIR")
    return Path(override).expanduser() if override else Path.home() / ".relayflow"


def _version() -> str:
    try:
        from relayflow import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "?"


class DataDir:
    """An opened (locked, checked) data directory. Use `DataDir.open(path)`; `close()` unlocks."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | Path) -> DataDir:
        root = Path(path).expanduser().absolute()
        cls._make_private(root)
        marker = root / MARKER
        if not marker.exists():
            strangers = sorted(p.name for p in root.iterdir() if p.name != LOCK)
            if strangers:
                raise DataDirError(
                    f"{root} is not a relayflow data directory (it has no {MARKER}) and is not empty "
                    f"({', '.join(strangers[:5])}{', ...' if len(strangers) > 5 else ''}). "
                    "Choose a new or empty directory with --data-dir."
                )
        lock_fd = cls._lock(root)
        try:
            if marker.exists():
                cls._check_format(root, marker)
            else:
                _write_private(
                    marker,
                    json.dumps(
                        {
                            "format": FORMAT,
                            "written_by": f"relayflow {_version()}",
                            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        },
                        indent=2,
                    )
                    + "\n",
                )
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(root, lock_fd)

    @staticmethod
    def _make_private(root: Path) -> None:
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            root.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create the data directory {root}: {exc.strerror}") from exc
        info = root.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise DataDirError(f"{root} is not a directory; choose another with --data-dir.")
        if info.st_uid != os.getuid():
            raise DataDirError(
                f"{root} belongs to another user (uid {info.st_uid}); choose your own with --data-dir."
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            # It holds API keys and whatever people process: nobody else may read it.
            os.chmod(root, 0o700)

    @staticmethod
    def _lock(root: Path) -> int:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DataDirError(
                f"{root} is in use by another relayflow server (pid {holder}). Stop that one first, or "
                "give this one another directory (--data-dir DIR) or none (--ephemeral)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    @staticmethod
    def _check_format(root: Path, marker: Path) -> None:
        try:
            document: Any = json.loads(marker.read_text())
            found = document["format"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataDirError(
                f"{marker} is unreadable ({exc}); the directory may be damaged. Move it away "
                f"(mv {root} {root}.old) to start afresh, or choose another with --data-dir."
            ) from None
        if found != FORMAT:
            writer = document.get("written_by", "another relayflow")
            raise DataDirError(
                f"{root} holds data in format {found} (written by {writer}); this relayflow "
                f"({_version()}) reads format {FORMAT}. Run the relayflow version that wrote it, or move "
                f"the directory away (mv {root} {root}.old) to start with an empty one, or choose "
                "another with --data-dir."
            )

    # ---------------------------------------------------------------- using it

    @property
    def state(self) -> Path:
        """Where the tables and objects live (see relayflow.local.persistence)."""
        return self.path / "state"

    def api_key(self) -> str | None:
        """The API key `relayflow serve` printed last time (None on first start)."""
        try:
            return (self.path / API_KEY).read_text().strip() or None
        except FileNotFoundError:
            return None

    def save_api_key(self, key: str) -> None:
        if self.api_key() != key:
            _write_private(self.path / API_KEY, key + "\n")

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r})"


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)

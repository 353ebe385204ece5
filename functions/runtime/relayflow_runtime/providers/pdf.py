"""A PDF's text, read within a CPU budget (issue 24 #7: a 117 KB PDF could take minutes of CPU).

pypdf has no budget of its own and a thread cannot be stopped, so the text is read by a child
process (pdf_worker.py) that limits itself to :data:`PDF_CPU_SECONDS` of CPU and
:data:`PDF_MEMORY_BYTES` of address space, and is killed after :data:`PDF_WALL_SECONDS`. The
environment variables ``PDF_CPU_SECONDS`` and ``PDF_WALL_SECONDS`` lower them (the tests do). A PDF
over budget is a permanent node error that says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from relayflow_runtime.providers.base import PermanentModelError

#: CPU seconds one PDF may take to read: well inside a node's default timeout (300 s) and the
#: node runner's (900 s). A text PDF of a hundred pages takes well under a second.
PDF_CPU_SECONDS = 20
#: Wall-clock seconds (the child may wait for the machine's other work).
PDF_WALL_SECONDS = 40
#: The child's address space (Lambda's 512 MB is shared with the node runner; pypdf starts at ~45 MB).
PDF_MEMORY_BYTES = 256 * 1024 * 1024

_WORKER = Path(__file__).with_name("pdf_worker.py")


def _budget(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def pdf_text(data: bytes) -> str:
    """The text of a PDF (pages joined by newlines), or PermanentModelError: unreadable, or over
    its CPU, wall-clock or memory budget."""
    cpu = _budget("PDF_CPU_SECONDS", PDF_CPU_SECONDS)
    wall = _budget("PDF_WALL_SECONDS", PDF_WALL_SECONDS)
    # The child finds pypdf where this process does (Lambda's /var/task, a virtualenv).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run(
            [sys.executable, str(_WORKER), str(cpu), str(PDF_MEMORY_BYTES)],
            input=data,
            capture_output=True,
            timeout=wall,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PermanentModelError(
            f"could not read the PDF file within {wall} s: it is too costly to read (its pages' "
            "content is too large or too deeply nested); split it or send its text"
        ) from None
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise PermanentModelError(
            f"could not read the PDF file within its budget of {cpu} s of CPU: it is too costly to "
            "read (its pages' content is too large or too deeply nested); split it or send its text"
        )
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise PermanentModelError(
            f"could not read the PDF file: {last[0] if last else f'exit {done.returncode}'}"
        ) from None
    if answer.get("memory"):
        raise PermanentModelError(
            f"could not read the PDF file within {PDF_MEMORY_BYTES // 2**20} MiB of memory; split it or "
            "send its text"
        )
    if "error" in answer:
        raise PermanentModelError(f"could not read the PDF file: {answer['error']}")
    return str(answer["text"])

"""Reads a PDF's text in a child process (providers/pdf.py starts it): run as a script, not imported.

Usage: ``python pdf_worker.py CPU_SECONDS MEMORY_BYTES`` with the PDF on stdin; writes one JSON
object on stdout: ``{"text": "..."}`` or ``{"error": "..."}``. Before reading anything it limits
its own CPU time (``RLIMIT_CPU``: the kernel ends it with SIGXCPU past the budget) and its address
space (``RLIMIT_AS``: a PDF that would need more memory fails with MemoryError), so a hostile PDF
costs at most the budget, even when nothing waits for it any more.
"""

from __future__ import annotations

import io
import json
import resource
import sys


def _limit(cpu_seconds: int, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def main() -> int:
    _limit(int(sys.argv[1]), int(sys.argv[2]))
    data = sys.stdin.buffer.read()
    from pypdf import PdfReader  # after the limits: pypdf's own import counts against them
    from pypdf.errors import PyPdfError

    answer: dict[str, object]
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        answer = {"text": "\n".join(p.strip() for p in pages if p.strip())}
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        answer = {"error": " ".join(str(exc).split()) or type(exc).__name__}
    except MemoryError:
        answer = {"error": "memory", "memory": True}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())

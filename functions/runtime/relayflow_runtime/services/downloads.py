"""What a download answers: the bytes when they fit in an API answer, else a presigned S3 URL.

A Lambda answer carries at most 6 MB (and API Gateway's HTTP API waits at most 30 s), so a file
larger than ``max_inline_download_bytes`` is offered as a presigned GET (``303 See Other`` with
``Location`` and ``{"url": ...}``), which the client follows without its API key. Where S3 cannot
be reached by the client (the local stack, unless RELAYFLOW_PRESIGNED_UPLOADS=1) there is no URL:
an input file is then answered whole, and a large results download with ``413`` (the client pages).
"""

from __future__ import annotations

from dataclasses import dataclass

from relayflow_runtime.services import dataset_service

#: A presigned download URL's lifetime.
URL_SECONDS = 3600


@dataclass(frozen=True)
class Download:
    """A download's answer: the bytes, a URL to fetch them from, or "being prepared" (retry)."""

    body: bytes | None = None
    media_type: str = "application/octet-stream"
    filename: str = "download"
    url: str | None = None
    preparing: bool = False


def presigned_urls_enabled() -> bool:
    """One switch for presigned URLs, uploads and downloads alike (see
    dataset_service.presigned_uploads_enabled)."""
    return dataset_service.presigned_uploads_enabled()

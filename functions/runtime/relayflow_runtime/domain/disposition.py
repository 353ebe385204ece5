"""The ``Content-Disposition`` of a download, safe for any file name (RFC 6266).

A file name is the client's text: it may hold CR/LF (which would split the answer's headers),
quotes, or characters outside Latin-1 (which no HTTP header carries as they are). The header
therefore carries only printable ASCII: ``filename="..."`` an ASCII stand-in (each other character
``_``, quotes and backslashes dropped) for old clients, and ``filename*=UTF-8''...`` the name
itself, percent-encoded (RFC 8187), which current browsers and clients prefer. Control characters
(C0, DEL, C1, and the Unicode line and paragraph separators) are dropped from both.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

#: RFC 8187's attr-char, besides letters and digits: left as they are in ``filename*``.
_ATTR_CHARS = "!#$&+-.^_`|~"
_DROPPED = {"\u2028", "\u2029"}


def clean_filename(filename: str, default: str = "download") -> str:
    """The name without control characters or path separators (``default`` if nothing is left)."""
    kept = "".join(
        "_" if char in "/\\" else char
        for char in filename
        if unicodedata.category(char) not in ("Cc", "Cs") and char not in _DROPPED
    )
    return kept.strip() or default


def ascii_filename(filename: str) -> str:
    """The ASCII stand-in of a clean name: other characters become ``_``; no quotes or backslashes."""
    return "".join(char if " " <= char <= "~" else "_" for char in filename if char not in '"\\')


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``attachment; filename="report_.pdf"; filename*=UTF-8''report%C3%A9.pdf`` (printable ASCII)."""
    name = clean_filename(filename)
    fallback = ascii_filename(name) or "download"
    header = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe=_ATTR_CHARS)}"
    return header

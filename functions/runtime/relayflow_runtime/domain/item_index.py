"""The index of a run's item list: where the line of one item id is, found in O(1) whatever the
list's length (``GET …/items/{item}``).

One S3 object beside the list, a hash table on disk::

    header:  (buckets + 1) unsigned 64-bit little-endian offsets, where each bucket starts
    buckets: one line per item of the bucket: b"<offset> <length> <id as JSON>\\n"

An id's bucket is a hash of it, so a lookup is two ranged GETs of the index (the bucket's two
offsets, then the bucket: ~``ITEMS_PER_BUCKET`` short lines) and one ranged GET of the list line.
``prepare_batch`` writes it while it writes the list, holding one small buffer per bucket and
spilling them to temporary files (services/item_lists.py): memory stays flat for a million items.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable

#: Items per bucket aimed at (a bucket of 512 short lines is ~20 KB: one small GET).
ITEMS_PER_BUCKET = 512
MAX_BUCKETS = 1 << 14
_OFFSET = struct.Struct("<Q")


def bucket_count(expected_items: int) -> int:
    """A power of two near ``expected_items / ITEMS_PER_BUCKET`` (the list's upper bound)."""
    buckets = 1
    while buckets * ITEMS_PER_BUCKET < expected_items and buckets < MAX_BUCKETS:
        buckets *= 2
    return buckets


def bucket_of(item_id: str, buckets: int) -> int:
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def encode_line(item_id: str, offset: int, length: int) -> bytes:
    # JSON with ensure_ascii: an id's own newlines and spaces are escaped, the line stays one line.
    return f"{offset} {length} {json.dumps(item_id)}\n".encode("ascii")


def find_in_bucket(bucket: bytes, item_id: str) -> tuple[int, int] | None:
    """(offset, length) of the item's line in the list, or None when the id is not in the list."""
    wanted = json.dumps(item_id).encode("ascii")
    for line in bucket.splitlines():
        offset, length, encoded = line.split(b" ", 2)
        if encoded == wanted:
            return int(offset), int(length)
    return None


def header(bucket_sizes: Iterable[int]) -> bytes:
    """The header for buckets of these sizes (bytes), in bucket order."""
    sizes = list(bucket_sizes)
    position = (len(sizes) + 1) * _OFFSET.size
    offsets = [position]
    for size in sizes:
        position += size
        offsets.append(position)
    return b"".join(_OFFSET.pack(o) for o in offsets)


def header_range(bucket: int) -> tuple[int, int]:
    """The inclusive byte range of the header holding where ``bucket`` starts and ends."""
    start = bucket * _OFFSET.size
    return start, start + 2 * _OFFSET.size - 1


def bucket_range(two_offsets: bytes) -> tuple[int, int] | None:
    """The inclusive byte range of a bucket from its two header offsets; None when it is empty."""
    start = _OFFSET.unpack_from(two_offsets, 0)[0]
    end = _OFFSET.unpack_from(two_offsets, _OFFSET.size)[0]
    return (start, end - 1) if end > start else None

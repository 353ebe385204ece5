"""Base64 sent through the API: decoded and bounded by one function (domain/encoded.py) for a start's
input file and an upload's part, each refusal naming its field and its limit."""

from __future__ import annotations

import base64

import pytest

from relayflow_runtime.domain.encoded import decode_base64
from relayflow_runtime.errors import InvalidInput

PART = {"field": "content_base64", "code": "invalid_part", "max_bytes": 4, "too_large_code": "invalid_part"}


def test_text_within_the_limit_is_decoded() -> None:
    assert decode_base64(base64.b64encode(b"abcd").decode(), too_large="", **PART) == b"abcd"


def test_text_that_is_not_base64_is_refused_naming_its_field() -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_base64("not base64!", too_large="", **PART)
    assert (refused.value.code, str(refused.value)) == ("invalid_part", "content_base64 is not valid base64.")


def test_more_bytes_than_the_limit_are_refused_with_the_callers_sentence_and_code() -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_base64(
            base64.b64encode(b"abcdef").decode(),
            field="file.content_base64",
            code="invalid_file",
            max_bytes=4,
            too_large="at most 4 bytes; this one is {size}.",
            too_large_code="file_too_large",
        )
    assert (refused.value.code, str(refused.value)) == ("file_too_large", "at most 4 bytes; this one is 6.")

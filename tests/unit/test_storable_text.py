"""Text that UTF-8 cannot encode (lone surrogates) is repaired before it is stored (issue 24 #1)."""

from __future__ import annotations

from decimal import Decimal

from relayflow_runtime.adapters.codec import to_dynamo
from relayflow_runtime.domain.text import storable, storable_value


def test_a_lone_surrogate_becomes_the_replacement_character_and_a_split_pair_its_character() -> None:
    assert storable("cut \ud800 here") == "cut \ufffd here"
    assert storable("\ude00 low first \ud83d") == "\ufffd low first \ufffd"
    assert storable("a pair \ud83d\ude00 in two code points") == "a pair \U0001f600 in two code points"
    text = "plain é 😀"
    assert storable(text) is text


def test_every_string_of_a_value_is_repaired_keys_too() -> None:
    value = {"k\udfff": ["a\ud800", {"n": 1, "s": "ok"}], "x": None}
    assert storable_value(value) == {"k\ufffd": ["a\ufffd", {"n": 1, "s": "ok"}], "x": None}


def test_what_goes_to_dynamodb_always_encodes_as_utf8() -> None:
    stored = to_dynamo({"output": "answer cut inside a pair \ud83d", "score": 0.5})
    assert stored == {"output": "answer cut inside a pair \ufffd", "score": Decimal("0.5")}
    stored["output"].encode("utf-8")

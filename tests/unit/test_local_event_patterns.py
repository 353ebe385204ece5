"""Event patterns as the local stack's EventBridge reads them: moto's own matcher
(`moto.events.models.EventPattern`), through `relayflow.local.eventbridge`, and the patterns it
refuses at start as AWS refuses them at PutRule."""

from __future__ import annotations

from typing import Any

import pytest

from relayflow.local.eventbridge import event_matches
from relayflow.local.provision import StackError


@pytest.mark.parametrize(
    ("pattern", "event", "matches"),
    [
        # exact values: one of the list; an array in the event matches when they share a value
        ({"source": ["relayflow", "aws.states"]}, {"source": "relayflow"}, True),
        ({"source": ["relayflow"]}, {"source": "relayflow-extra"}, False),
        ({"source": ["relayflow"]}, {}, False),
        ({"detail": {"tags": ["b"]}}, {"detail": {"tags": ["a", "b"]}}, True),
        ({"detail": {"tags": ["c"]}}, {"detail": {"tags": ["a", "b"]}}, False),
        # nested objects: every field of the pattern, at its place
        ({"detail": {"status": ["completed"]}}, {"detail": {"status": "completed", "x": 1}}, True),
        ({"detail": {"status": ["completed"]}}, {"status": "completed"}, False),
        # prefix and suffix
        ({"detail": {"key": [{"prefix": "inputs/"}]}}, {"detail": {"key": "inputs/wf/a.txt"}}, True),
        ({"detail": {"key": [{"prefix": "inputs/"}]}}, {"detail": {"key": "rejected/inputs/a"}}, False),
        ({"detail": {"key": [{"suffix": ".csv"}]}}, {"detail": {"key": "a/b.csv"}}, True),
        ({"detail": {"key": [{"suffix": ".csv"}]}}, {"detail": {"key": "a/b.csv.gz"}}, False),
        # exists: a leaf present (null included) or absent; an object is not a leaf
        ({"detail": {"error": [{"exists": True}]}}, {"detail": {"error": None}}, True),
        ({"detail": {"error": [{"exists": True}]}}, {"detail": {}}, False),
        ({"detail": {"error": [{"exists": False}]}}, {"detail": {"status": "ok"}}, True),
        ({"detail": {"error": [{"exists": False}]}}, {"detail": {"error": "boom"}}, False),
        ({"detail": {"error": [{"exists": True}]}}, {"detail": {"error": {"code": "x"}}}, False),
        # anything-but: values, a prefix, a wildcard; a missing field matches none of them
        ({"detail": {"status": [{"anything-but": ["draft"]}]}}, {"detail": {"status": "live"}}, True),
        ({"detail": {"status": [{"anything-but": ["draft"]}]}}, {"detail": {"status": "draft"}}, False),
        ({"detail": {"status": [{"anything-but": ["draft"]}]}}, {"detail": {}}, False),
        ({"detail": {"key": [{"anything-but": {"prefix": "tmp/"}}]}}, {"detail": {"key": "in/a"}}, True),
        ({"detail": {"key": [{"anything-but": {"prefix": "tmp/"}}]}}, {"detail": {"key": "tmp/a"}}, False),
        ({"detail": {"arn": [{"anything-but": {"wildcard": "*/*"}}]}}, {"detail": {"arn": "a:b:c"}}, True),
        ({"detail": {"arn": [{"anything-but": {"wildcard": "*/*"}}]}}, {"detail": {"arn": "a:b/c"}}, False),
        # equals-ignore-case, numeric, $or
        ({"detail": {"status": [{"equals-ignore-case": "FAILED"}]}}, {"detail": {"status": "failed"}}, True),
        ({"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"n": 5}}, True),
        ({"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"n": 6}}, False),
        ({"$or": [{"source": ["a"]}, {"detail": {"x": ["1"]}}]}, {"source": "b", "detail": {"x": "1"}}, True),
        (
            {"$or": [{"source": ["a"]}, {"detail": {"x": ["1"]}}]},
            {"source": "b", "detail": {"x": "2"}},
            False,
        ),
    ],
)
def test_a_pattern_matches_as_eventbridge_reads_it(
    pattern: dict[str, Any], event: dict[str, Any], matches: bool
):
    assert event_matches(pattern, event) is matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"source": "relayflow"}, "'source' must be an object or an array"),
        ({"detail": {"status": []}}, "Empty arrays are not allowed"),
        ({"detail": {"key": [{"startswith": "inputs/"}]}}, "startswith, which is not an EventBridge filter"),
        (
            {"detail": {"key": [{"anything-but": {"begins": "x"}}]}},
            "begins, which is not an EventBridge filter",
        ),
    ],
)
def test_a_pattern_eventbridge_would_refuse_is_a_clear_error(pattern: dict[str, Any], message: str):
    # moto's matcher would read an unknown filter as a match: the stack refuses it instead
    with pytest.raises(StackError, match=message):
        event_matches(pattern, {"source": "relayflow", "detail": {"key": "inputs/a"}})

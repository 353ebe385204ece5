"""Whether an EventBridge rule could match an event, decided from the rule's pattern alone.

The node runner sends a node's event only while some rule on the bus could receive it
(services/notify.py): an event no rule matches is a paid call that reaches nobody. The decision is
conservative: it looks only at the pattern's ``source`` and ``detail-type`` (the two fields fixed
by the event's kind) and says "could match" whenever it is unsure: a key it does not read (``detail``,
``account``...) never rules a rule out, a matcher it does not know counts as matching, a pattern
that does not parse counts as matching. Only a rule without an ``EventPattern`` (a schedule) never
matches an event put on the bus.

The matchers read (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html):
an exact string, ``prefix``, ``suffix``, ``equals-ignore-case``, ``wildcard``, ``exists`` and
``anything-but`` (a value, a list, or a ``prefix`` / ``suffix`` / ``equals-ignore-case`` /
``wildcard`` inside it); ``$or`` at the top level is read branch by branch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: The event fields a rule's pattern is read for, as the pattern names them.
_FIELDS = ("source", "detail-type")


def _wildcard(pattern: str, value: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _ignoring_case(arg: Any) -> str | None:
    """The string of ``{"equals-ignore-case": "..."}`` inside a prefix or suffix, else None."""
    if (
        isinstance(arg, dict)
        and set(arg) == {"equals-ignore-case"}
        and isinstance(arg["equals-ignore-case"], str)
    ):
        return str(arg["equals-ignore-case"])
    return None


#: The string matchers read: (the value, the matcher's string) -> matches.
_STRING_MATCHERS: dict[str, Any] = {
    "prefix": str.startswith,
    "suffix": str.endswith,
    "equals-ignore-case": lambda value, arg: value.lower() == arg.lower(),
    "wildcard": lambda value, arg: _wildcard(arg, value),
}
#: Matchers no string satisfies.
_NEVER_A_STRING = frozenset({"numeric", "cidr"})


def _operator(matcher: dict[str, Any], value: str) -> bool:
    """One content-filter object (``{"prefix": ...}``...) against a string value; unsure: True."""
    if len(matcher) != 1:
        return True
    ((name, arg),) = matcher.items()
    if name in ("prefix", "suffix") and _ignoring_case(arg) is not None:
        return bool(_STRING_MATCHERS[name](value.lower(), str(_ignoring_case(arg)).lower()))
    if name in _STRING_MATCHERS:
        return bool(_STRING_MATCHERS[name](value, arg)) if isinstance(arg, str) else True
    if name == "exists":
        return arg is not False  # the field is always there: only exists false rules it out
    if name == "anything-but":
        if isinstance(arg, str):
            return value != arg
        if isinstance(arg, list):
            return value not in arg
        inner = next(iter(arg.items())) if isinstance(arg, dict) and len(arg) == 1 else None
        if inner and inner[0] in _STRING_MATCHERS and (isinstance(inner[1], str) or _ignoring_case(inner[1])):
            return not _operator(arg, value)
        return True  # a number or null is never the string; unsure of anything else
    return name not in _NEVER_A_STRING  # a matcher this module does not know: it may match


def _field_could_match(matchers: Any, value: str) -> bool:
    """A pattern's value for one field (a list of matchers, any of which may match)."""
    if not isinstance(matchers, list):
        return True  # not a valid pattern field: unsure
    for matcher in matchers:
        if isinstance(matcher, str) and matcher == value:
            return True
        if isinstance(matcher, dict) and _operator(matcher, value):
            return True
        if not isinstance(matcher, str | dict | int | float | bool) and matcher is not None:
            return True
    return False


def _could_match(pattern: Any, event: dict[str, str]) -> bool:
    if not isinstance(pattern, dict):
        return True
    branches = pattern.get("$or")
    if branches is not None:
        rest = {k: v for k, v in pattern.items() if k != "$or"}
        if not isinstance(branches, list) or not branches:
            return True
        return _could_match(rest, event) and any(_could_match(b, event) for b in branches)
    return all(_field_could_match(pattern[field], event[field]) for field in _FIELDS if field in pattern)


def pattern_could_match(event_pattern: str | None, source: str, detail_type: str) -> bool:
    """Whether a rule with this ``EventPattern`` (the JSON text ListRules gives, None for a rule
    without one) could match an event of this source and detail type. Unsure: True."""
    if event_pattern is None:
        return False
    try:
        pattern = json.loads(event_pattern)
    except ValueError:
        return True
    return _could_match(pattern, {"source": source, "detail-type": detail_type})


def any_rule_could_match(event_patterns: Iterable[str | None], source: str, detail_type: str) -> bool:
    """Whether any of the bus's rules (their patterns) could match such an event."""
    return any(pattern_could_match(p, source, detail_type) for p in event_patterns)

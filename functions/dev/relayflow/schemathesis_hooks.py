"""What schemathesis needs to know about relayflow's document that JSON Schema cannot say.

The contract test (tests/integration/test_schemathesis.py) loads this module, and so can anyone who
runs schemathesis against a relayflow server:

    SCHEMATHESIS_HOOKS=relayflow.schemathesis_hooks st run http://127.0.0.1:8765/openapi.json \\
        --checks all -H "x-api-key: $RELAYFLOW_API_KEY"

Five things, all documented in the OpenAPI document itself:

* ``format: "mustache"`` (a node's ``input_template``): a Mustache template, whose balanced sections
  no JSON Schema keyword can describe. Valid values are drawn from a small grammar over ``input``;
  invalid ones are refused with 400 ``invalid_template`` (tests/unit/test_fuzz.py and the random
  template test send those).
* ``format: "jmespath"`` (a batch's ``filter_query``): a JMESPath expression; a few valid ones.
* ``format: "callback-url"`` (``callback_url``): an http(s) URL to a public host (domain/urls.py);
  valid ones are drawn from names that never resolve (.invalid); others are 400
  ``invalid_callback_url``.
* ``created_after`` must not be later than ``created_before`` (400 ``invalid_time_range``): a rule
  between two parameters, which JSON Schema cannot state. Positive requests keep them in order.
* ``next_token``: an opaque cursor, valid only as a listing returned it (a bad one is 400
  ``invalid_next_token``). A schema-valid request cannot draw one, so positive requests leave it
  out; negative requests keep the arbitrary values, which the server must refuse. The stateful
  tests and the paging tests pass real cursors back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import schemathesis
from hypothesis import strategies as st

#: Text that is not a tag (no braces).
_TEXT = st.text(st.characters(exclude_characters="{}", codec="utf-8"), max_size=12)
_VARIABLE = st.sampled_from(["{{input}}", "{{{input}}}", "{{&input}}", "{{ input }}", "{{.}}"])


def _sections(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda kind, body: f"{{{{{kind}input}}}}{body}{{{{/input}}}}", st.sampled_from("#^"), inner
    )


#: Valid templates: text, variables, comments and (nested) sections over ``input``.
MUSTACHE_TEMPLATES: st.SearchStrategy[str] = st.recursive(
    st.one_of(_TEXT, _VARIABLE, st.just("{{! a comment }}")),
    lambda inner: st.one_of(_sections(inner), st.lists(inner, min_size=2, max_size=4).map("".join)),
    max_leaves=6,
)

schemathesis.openapi.format("mustache", MUSTACHE_TEMPLATES)

#: Valid dataset filters (``format: "jmespath"``, a batch's ``filter_query``).
JMESPATH_FILTERS: st.SearchStrategy[str] = st.sampled_from(
    ["", "text", "lang == 'en'", "score > `3`", "!flagged", "contains(tags || `[]`, 'urgent')", "id"]
)

schemathesis.openapi.format("jmespath", JMESPATH_FILTERS)

#: Valid callback URLs (``format: "callback-url"``): http(s), no credentials, a host name. Names
#: under .invalid never resolve (RFC 6761), so a run's webhook to one goes nowhere: no traffic.
CALLBACK_URLS: st.SearchStrategy[str] = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["hooks.example.invalid", "receiver.invalid"]),
    st.sampled_from(["", ":443", ":8080"]),
    st.text(st.characters(categories=["L", "N"], codec="ascii"), max_size=12),
)

schemathesis.openapi.format("callback-url", CALLBACK_URLS)


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).upper().replace("Z", "+00:00"))
    except ValueError:
        return None


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Positive requests: no opaque cursor (none can be drawn from the schema), and time bounds in
    order (``created_after`` not later than ``created_before``, as the parameters' descriptions say)."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive or not case.query:
        return case
    query = {k: v for k, v in case.query.items() if k != "next_token"}
    after, before = _moment(query.get("created_after")), _moment(query.get("created_before"))
    if after and before and after > before:
        query["created_after"], query["created_before"] = query["created_before"], query["created_after"]
    case.query = query
    return case

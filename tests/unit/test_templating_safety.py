"""Templates are logic-less: nothing in a template, or in the data it renders, can run code.

General-purpose Mustache renderers load partials from files, call values as lambdas, accept set
delimiters and fall back to ``getattr``; relayflow's renderer does none of these, and these tests
keep it so.
"""

from __future__ import annotations

from typing import Any

import pytest

from relayflow_runtime.domain import templating
from relayflow_runtime.domain.templating import TemplateError, parse_template, render


def refused(template: str) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        parse_template(template)
    assert info.value.code == "invalid_template"
    return info.value


# --------------------------------------------------------------------------- partials


def test_a_partial_is_refused_even_when_the_file_exists(tmp_path: Any, monkeypatch: Any) -> None:
    # Given a file a Mustache renderer would load for {{> secrets}} (from the working directory)
    (tmp_path / "secrets.mustache").write_text("TOP SECRET")
    monkeypatch.chdir(tmp_path)
    # When a node template names it
    # Then the template is refused at parse time and at render time, and nothing is read
    assert "partials" in str(refused("before {{> secrets}} after"))
    with pytest.raises(TemplateError):
        render("{{> secrets}}", {"input": "x"})


@pytest.mark.parametrize("template", ["{{>secrets}}", "{{> ../etc/passwd}}", "a\n  {{> p}}\nb"])
def test_every_partial_spelling_is_refused(template: str) -> None:
    assert "partials" in str(refused(template))


# --------------------------------------------------------------------------- set delimiters


@pytest.mark.parametrize(
    "template",
    [
        "{{=<% %>=}}<% input %>",
        "{{=| |=}}|> secrets|",  # a partial smuggled behind new delimiters
        "{{= {{ }} =}}{{input}}",
        "ok {{input}}\n{{=[[ ]]=}}[[#x]][[/x]]",
    ],
)
def test_set_delimiter_tags_are_refused(template: str) -> None:
    assert "set-delimiter" in str(refused(template))


# --------------------------------------------------------------------------- lambdas


def test_callables_in_the_scope_are_never_called() -> None:
    # Given a scope value a Mustache renderer would call as a lambda
    calls: list[Any] = []

    def spy(text: str, render: Any = None) -> str:
        calls.append(text)
        return "CALLED"

    scope = {"input": "x", "item": {"f": spy}}
    # When a template uses it as a section, an inverted section, a variable and through an attribute
    out = render("{{#item.f}}[body]{{/item.f}}{{^item.f}}never{{/item.f}}|{{item.f}}", scope)
    with pytest.raises(TemplateError) as info:
        render("{{item.f.__call__}}", scope)
    # Then it is never called: it is a value like any other (true, and only ever rendered as text)
    assert calls == []
    assert out.startswith("[body]|")
    assert "CALLED" not in out
    assert info.value.code == "unknown_variable"


# --------------------------------------------------------------------------- attributes


def test_python_attributes_are_not_names() -> None:
    # Given names that are attributes of the Python objects holding the values
    scope = {"input": "text", "item": {"n": 3, "tags": ["a"], "flag": False}}
    # When they are used as variables or sections
    # Then they never resolve: an unknown variable at the top, nothing inside a section
    for template in ("{{input.upper}}", "{{input.__class__}}", "{{item.tags.append}}", "{{item.n.real}}"):
        with pytest.raises(TemplateError) as info:
            render(template, scope)
        assert info.value.code == "unknown_variable"
    assert render("{{#input.upper}}x{{/input.upper}}{{#item.n.real}}y{{/item.n.real}}", scope) == ""
    assert (
        render("{{#item.tags}}{{__class__}}{{upper}}{{#__init__}}z{{/__init__}}{{/item.tags}}", scope) == ""
    )


def test_inverted_sections_expose_no_attributes() -> None:
    # Given an inverted section, where a renderer pushing a Python bool as the context would
    # resolve names on it with getattr ("real" is an attribute of True)
    scope = {"input": "x", "item": {"rows": [{"flag": False}]}}
    # When a relative name inside an inverted section is an attribute of bool
    out = render(
        "{{#item.rows}}{{^flag}}[{{real}}{{#conjugate}}c{{/conjugate}}{{0}}]{{/flag}}{{/item.rows}}", scope
    )
    # Then it resolves to nothing: the inverted section's context is not a bool
    assert out == "[]"


# --------------------------------------------------------------------------- values are data


def test_values_are_never_parsed_as_templates() -> None:
    # Given an input that is itself Mustache (a prompt injection attempt)
    payload = "{{> secrets}} {{=<% %>=}} {{#nodes}}{{.}}{{/nodes}} {{{input}}}"
    # When it is rendered
    # Then it is inserted verbatim
    assert render("Q: {{input}}", {"input": payload, "nodes": {"a": "SECRET"}}) == f"Q: {payload}"


def test_names_cannot_contain_nul() -> None:
    # The renderer's internal keys start with NUL: a template can never spell them
    assert "invalid name" in str(refused("{{input.\x00this}}"))


# --------------------------------------------------------------------------- bounded work


def test_nested_loops_are_bounded(monkeypatch: Any) -> None:
    # Given loops nested four deep over a list of 10 (10,000 passes) and a budget of 1,000 steps
    monkeypatch.setattr(templating, "MAX_RENDER_STEPS", 1_000)
    scope = {"input": "", "item": {"a": list(range(10))}}
    template = "{{#item.a}}" * 4 + "{{/item.a}}" * 4
    # When it is rendered
    with pytest.raises(TemplateError) as info:
        render(template, scope)
    # Then rendering stops early instead of exhausting the function
    assert info.value.code == "rendered_too_long"


def test_loop_bodies_count_towards_the_rendered_length(monkeypatch: Any) -> None:
    # Given a 100-character loop body over 50 elements (5,000 characters) and a 4,000 limit
    monkeypatch.setattr(templating, "MAX_RENDERED_LENGTH", 4_000)
    scope = {"input": "", "item": {"a": list(range(50))}}
    with pytest.raises(TemplateError) as info:
        render("{{#item.a}}" + "x" * 100 + "{{/item.a}}", scope)
    assert info.value.code == "rendered_too_long"
    # And 30 elements (3,000 characters) fit
    assert len(render("{{#item.a}}" + "x" * 100 + "{{/item.a}}", {"item": {"a": list(range(30))}})) == 3000


# --------------------------------------------------------------------------- loops and sections


def test_a_loop_renders_every_element_even_false_ones() -> None:
    # Given a list with false-looking elements (chevron, which rendered templates before, skipped those)
    scope = {"item": {"a": ["", "x", 0, None, False, [], {}]}}
    # When a loop renders it
    # Then every element gets its pass, as the Mustache spec says
    assert render("{{#item.a}}[{{.}}]{{/item.a}}", scope) == "[][x][0][][false][[]][{}]"


def test_an_inverted_section_inside_a_loop_of_the_same_name() -> None:
    # Given a section and an inverted section with the same name, nested
    scope = {"item": {"a": [{"a": []}, {"a": [1]}]}}
    # When rendered
    # Then each closes its own body (names inside a loop resolve on the element first)
    assert render("{{#item.a}}<{{^a}}empty{{/a}}>{{/item.a}}", scope) == "<empty><>"


def test_an_unknown_node_is_an_error_even_where_it_would_not_render() -> None:
    # Given a reference to a node without output, inside a section that is false for this item
    scope = {"input": "", "nodes": {"a": "x"}, "item": {"flag": False}}
    # When rendered
    with pytest.raises(TemplateError) as info:
        render("{{#item.flag}}{{nodes.ghost}}{{/item.flag}}", scope)
    # Then it is reported all the same: such a template is wrong for every item
    assert info.value.code == "unknown_variable"
    assert info.value.variable == "nodes.ghost"


def test_the_rendered_length_counts_every_character(monkeypatch: Any) -> None:
    # Given a limit of 10 characters
    monkeypatch.setattr(templating, "MAX_RENDERED_LENGTH", 10)
    # When literal text and values add up to exactly 10, then to 11
    # Then the first renders and the second is refused
    assert render("12345{{input}}", {"input": "67890"}) == "1234567890"
    with pytest.raises(TemplateError) as info:
        render("12345{{input}}!", {"input": "67890"})
    assert info.value.code == "rendered_too_long"

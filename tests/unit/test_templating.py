"""Node input templates: scope kinds, plain-text rendering, sections, and every refusal."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from relayflow_runtime.domain.templating import (
    MAX_SECTION_DEPTH,
    MAX_TEMPLATE_LENGTH,
    TemplateError,
    TemplateInfo,
    available_variables,
    parse_template,
    render,
    unavailable_variables,
)

SCOPE: dict[str, Any] = {
    "input": "the parent output",
    "nodes": {
        "summary": "short text",
        "extract": {"title": "Q3 report", "people": [{"name": "Ada"}, {"name": "Lin"}], "score": 0},
    },
    "item": {"id": "7", "text": "hello", "tags": ["urgent", "billing"], "lang": "en", "notes": None},
}


def raises(template: str, scope: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        if scope is None:
            parse_template(template)
        else:
            render(template, scope)
    return info.value


# --------------------------------------------------------------------------- the scope kinds


def test_input_renders_the_parent_output() -> None:
    # Given a template reading the single parent's output
    # When it is rendered
    # Then the string is inserted verbatim
    assert render("Summarise: {{input}}", SCOPE) == "Summarise: the parent output"


def test_nodes_string_output_by_name() -> None:
    # Given an upstream node whose output is plain text
    # When a template references it by name
    assert render("Summary: {{nodes.summary}}", SCOPE) == "Summary: short text"


def test_nodes_json_output_fields_and_whole_object() -> None:
    # Given an upstream node that produced JSON (a dict)
    # When a template reads one field, a list element's field and the whole object
    out = render("{{nodes.extract.title}} / {{nodes.extract.people.1.name}} / {{nodes.extract}}", SCOPE)
    # Then fields render as text and the object as compact JSON (not a Python repr)
    assert out == (
        'Q3 report / Lin / {"title":"Q3 report","people":[{"name":"Ada"},{"name":"Lin"}],"score":0}'
    )


def test_item_fields_in_batch_mode() -> None:
    # Given a batch scope with the whole dataset item
    # When fields of the item are referenced, and the item itself
    out = render("[{{item.lang}}] {{item.text}} {{item.tags}}", SCOPE)
    # Then fields are inserted, the list as JSON
    assert out == '[en] hello ["urgent","billing"]'


def test_scalars_render_as_json_text() -> None:
    # Given values of every JSON type (and a DynamoDB Decimal)
    scope = {"input": "", "item": {"t": True, "f": False, "n": None, "i": 3, "x": 1.5, "d": Decimal("2")}}
    # When they are rendered
    out = render("{{item.t}}|{{item.f}}|{{item.n}}|{{item.i}}|{{item.x}}|{{item.d}}", scope)
    # Then booleans are JSON booleans, null is empty, numbers are numbers
    assert out == "true|false||3|1.5|2"


def test_non_ascii_is_kept_in_json() -> None:
    # Given a dict with non-ASCII text
    # When rendered as a variable
    # Then the characters stay readable (no \\u escapes)
    assert render("{{item}}", {"item": {"q": "café ☕"}}) == '{"q":"café ☕"}'


def test_any_mapping_renders_as_json() -> None:
    # Given mappings that are not dicts (the node runner reads upstream outputs lazily through one)
    scope = {"nodes": MappingProxyType({"a": "x"}), "item": {"m": MappingProxyType({"b": [1]})}}
    # When they are rendered whole
    # Then they are JSON objects like dicts, never a Python repr
    assert render("{{nodes}} {{item}} {{#nodes}}{{a}}{{/nodes}}", scope) == '{"a":"x"} {"m":{"b":[1]}} x'


# --------------------------------------------------------------------------- no HTML escaping


@pytest.mark.parametrize("tag", ["{{input}}", "{{{input}}}", "{{&input}}", "{{& input}}"])
def test_no_html_escaping(tag: str) -> None:
    # Given text full of HTML-special characters
    scope = {"input": "a & b <c> \"d\" 'e'"}
    # When rendered with any variable tag
    # Then nothing is escaped: prompts are not HTML
    assert render(tag, scope) == "a & b <c> \"d\" 'e'"


# --------------------------------------------------------------------------- sections


def test_loop_over_a_list_with_implicit_iterator() -> None:
    # Given a list field
    # When a section iterates it with {{.}}
    assert render("{{#item.tags}}{{.}}, {{/item.tags}}", SCOPE) == "urgent, billing, "


def test_loop_standalone_lines_leave_no_blank_lines() -> None:
    # Given a multi-line template whose section tags stand on their own lines
    template = "Tags:\n{{#item.tags}}\n- {{.}}\n{{/item.tags}}\nEnd"
    # When rendered
    # Then the tag lines disappear (Mustache's standalone rule)
    assert render(template, SCOPE) == "Tags:\n- urgent\n- billing\nEnd"


def test_loop_over_objects_resolves_names_relative_to_the_element() -> None:
    # Given a list of objects from a JSON node output
    # When the loop body uses element fields and a root name
    out = render("{{#nodes.extract.people}}{{name}} ({{item.lang}}); {{/nodes.extract.people}}", SCOPE)
    # Then element names resolve on the element and root names on the scope
    assert out == "Ada (en); Lin (en); "


def test_missing_name_inside_a_loop_renders_empty() -> None:
    # Given list elements lacking a field
    scope = {"item": {"rows": [{"a": "1"}, {"b": "2"}]}}
    # When the loop references it
    # Then Mustache semantics apply inside sections: the missing field is empty
    assert render("{{#item.rows}}[{{a}}]{{/item.rows}}", scope) == "[1][]"


def test_section_over_object_pushes_its_context() -> None:
    assert render("{{#nodes.extract}}{{title}}{{/nodes.extract}}", SCOPE) == "Q3 report"


def test_section_over_a_present_string_renders_once() -> None:
    # Given a conditional block guarded by a field
    template = "{{#item.text}}Text: {{item.text}}{{/item.text}}"
    assert render(template, SCOPE) == "Text: hello"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        ("x", True),
        (True, True),
    ],
)
def test_section_truthiness_is_jmespath_like(value: Any, shown: bool) -> None:
    # Given a value of each kind
    scope = {"item": {"v": value}}
    # When used as a section and as an inverted section
    # Then null/false/""/[]/{} are false, everything else (0 included) is true
    assert render("{{#item.v}}yes{{/item.v}}", scope) == ("yes" if shown else "")
    assert render("{{^item.v}}no{{/item.v}}", scope) == ("" if shown else "no")


def test_section_over_a_missing_field_is_false() -> None:
    # Given an item without "context"
    # When a section and an inverted section test it
    template = (
        "{{#item.context}}Context: {{item.context}}{{/item.context}}{{^item.context}}(none){{/item.context}}"
    )
    # Then the guarded variable is never evaluated and the inverted branch renders
    assert render(template, SCOPE) == "(none)"


def test_nested_sections() -> None:
    scope = {"item": {"groups": [{"name": "a", "xs": [1, 2]}, {"name": "b", "xs": []}]}}
    template = "{{#item.groups}}{{name}}:{{#xs}}{{.}}{{/xs}}{{^xs}}-{{/xs}};{{/item.groups}}"
    assert render(template, scope) == "a:12;b:-;"


def test_comments_are_dropped() -> None:
    assert render("a{{! a note }}b", SCOPE) == "ab"


def test_lookups_never_touch_attributes_or_callables() -> None:
    # Given names that exist as Python attributes of str/dict
    # When they are looked up
    # Then only dict keys and list indexes count: they are unknown, never called
    assert raises("{{input.upper}}", SCOPE).code == "unknown_variable"
    assert raises("{{#nodes.keys}}x{{/nodes.keys}}", SCOPE).code == "unknown_variable"
    assert raises("{{input.__class__}}", SCOPE).code == "unknown_variable"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # a comment alone on its line takes the line with it
        ("A\n{{! a note }}\nB", "A\nB"),
        # indented section tags alone on their lines: the indentation goes with the line
        ("A\n  {{#item.tags}}\n  - {{.}}\n  {{/item.tags}}\nB", "A\n  - urgent\n  - billing\nB"),
        # Windows line breaks: the whole "\r\n" goes with the tag's line
        ("A\r\n{{#item.tags}}\r\n- {{.}}\r\n{{/item.tags}}\r\nB", "A\r\n- urgent\r\n- billing\r\nB"),
        # text after a tag on its line: not standalone, the line break stays
        ("A\n{{#item.tags}} x\n{{/item.tags}}\nB", "A\n x\n x\nB"),
        # a variable alone on its line keeps its line
        ("A\n{{input}}\nB", "A\nthe parent output\nB"),
        # two tags on one line: the second is not alone on it
        ("A\n{{#item.tags}}{{/item.tags}}\nB", "A\n\nB"),
        # a false section at the start and an inverted one at the end of the template
        ("{{#item.notes}}\nx\n{{/item.notes}}\nB", "B"),
        ("A\n{{^item.notes}}\nnone\n{{/item.notes}}", "A\nnone\n"),
        # only spaces before a standalone tag are removed, as chevron did (a tab stays)
        ("A\n\t{{#item.tags}}\n{{.}}\n\t{{/item.tags}}\nB", "A\n\turgent\n\tbilling\n\tB"),
    ],
)
def test_standalone_lines(template: str, expected: str) -> None:
    # Given tags alone on their lines, or not
    # When rendered
    # Then the lines of standalone section and comment tags disappear, the others stay
    assert render(template, SCOPE) == expected


def test_spaces_inside_tags_are_ignored() -> None:
    assert render("{{ input }}|{{# item.tags }}{{ . }},{{/ item.tags }}", SCOPE) == (
        "the parent output|urgent,billing,"
    )


def test_list_elements_by_index() -> None:
    # Given a list field
    # When elements are read by index
    assert render("{{item.tags.0}}/{{item.tags.1}}", SCOPE) == "urgent/billing"
    # Then an index past the end is an unknown variable naming the list
    err = raises("{{item.tags.5}}", SCOPE)
    assert err.code == "unknown_variable"
    assert "'item.tags' has no '5'" in str(err)


def test_the_current_value_of_a_section() -> None:
    # Given sections over an object, a string and a tuple
    # When {{.}} is rendered inside them
    assert render("{{#item}}{{.}}{{/item}}", SCOPE) == (
        '{"id":"7","text":"hello","tags":["urgent","billing"],"lang":"en","notes":null}'
    )
    assert render("{{#item.text}}[{{.}}]{{/item.text}}", SCOPE) == "[hello]"
    assert render("{{#item.t}}<{{.}}>{{/item.t}}", {"item": {"t": ("a", 1)}}) == "<a><1>"


def test_names_fall_back_to_enclosing_contexts() -> None:
    # Given an object section and a loop whose elements lack the names used inside
    # Then names resolve in the enclosing contexts, up to the scope
    assert render("{{#nodes.extract}}{{input}}|{{title}}{{/nodes.extract}}", SCOPE) == (
        "the parent output|Q3 report"
    )
    assert render("{{#nodes.extract.people}}{{nodes.extract.title}};{{/nodes.extract.people}}", SCOPE) == (
        "Q3 report;Q3 report;"
    )


def test_a_dotted_name_resolves_where_the_whole_path_does() -> None:
    # Given elements holding "item" with or without "lang", and one holding "lang" itself
    scope = {"item": {"lang": "en", "rows": [{"item": {"lang": "fr"}}, {"item": {"x": 1}}, {"lang": "de"}]}}
    # When item.lang and lang are rendered inside the loop
    out = render("{{#item.rows}}[{{item.lang}}|{{lang}}]{{/item.rows}}", scope)
    # Then item.lang comes from the innermost context that has the whole path (an element's
    # "item" without "lang" does not hide the scope's), and lang only from elements that have it
    assert out == "[fr|][en|][en|de]"


def test_an_inverted_section_is_transparent() -> None:
    # Given an inverted section inside a loop
    out = render(
        "{{#nodes.extract.people}}{{^missing}}<{{name}}:{{.}}>{{/missing}}{{/nodes.extract.people}}", SCOPE
    )
    # Then names and {{.}} inside it are those of the loop's element
    assert out == '<Ada:{"name":"Ada"}><Lin:{"name":"Lin"}>'


# --------------------------------------------------------------------------- unknown variables


def test_unknown_top_level_name() -> None:
    # Given a name the scope does not provide
    err = raises("Hi {{user}}", SCOPE)
    # Then rendering fails instead of inserting an empty string, naming the variable
    assert err.code == "unknown_variable"
    assert err.variable == "user"
    assert "'user'" in str(err)


def test_unknown_node_name_lists_the_upstream_nodes() -> None:
    err = raises("{{nodes.sumary}}", SCOPE)
    assert err.code == "unknown_variable"
    assert err.variable == "nodes.sumary"
    assert "no output of an upstream node named 'sumary'" in str(err)
    assert "extract, summary" in str(err)


def test_item_outside_batch_mode() -> None:
    err = raises("{{item.text}}", {"input": "x", "nodes": {}})
    assert err.code == "unknown_variable"
    assert "batch mode" in str(err)


def test_missing_field_of_item_as_a_variable() -> None:
    err = raises("{{item.missing}}", SCOPE)
    assert err.code == "unknown_variable"
    assert "'item' has no 'missing'" in str(err)


def test_root_name_inside_a_loop_is_still_checked() -> None:
    err = raises("{{#item.tags}}{{nodes.nope}}{{/item.tags}}", SCOPE)
    assert err.code == "unknown_variable"
    assert err.variable == "nodes.nope"


def test_section_over_an_unknown_node_is_an_error() -> None:
    # Given a section naming an upstream node that does not exist
    # Then it is a mistake, not a false condition
    assert raises("{{#nodes.ghost}}x{{/nodes.ghost}}", SCOPE).code == "unknown_variable"


def test_null_value_is_not_unknown() -> None:
    # Given a field that exists with a JSON null
    # Then it renders empty rather than failing
    assert render("[{{item.notes}}]", SCOPE) == "[]"


# --------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{#item.tags}}x", "line 1: section {{#item.tags}} is never closed"),
        ("a\n{{/item}}", "line 2: closing tag {{/item}} has no matching opening tag"),
        ("{{#a}}\n\n{{/b}}", "line 3: closing tag {{/b}} does not match the section {{#a}} opened at line 1"),
        ("hello {{input", "line 1: tag '{{input' is never closed"),
        ("{{{input}}", "must close with '}}}'"),
        ("{{}}", "empty tag"),
        ("{{ }}", "empty tag"),
        ("{{item..text}}", "empty path segment"),
        ("{{ #item }}{{/item}}", "no space is allowed"),
    ],
)
def test_syntax_errors_are_readable(template: str, fragment: str) -> None:
    # Given a malformed template
    err = raises(template)
    # Then it is invalid_template with a message naming the line and the problem
    assert err.code == "invalid_template"
    assert fragment in str(err)


def test_partials_are_refused() -> None:
    # Given a partial tag (which would load another template)
    err = raises("Intro\n{{> header}}")
    # Then the template is refused: logic-less, nothing can be loaded
    assert err.code == "invalid_template"
    assert "line 2" in str(err) and "partials" in str(err)


def test_set_delimiter_tags_are_refused() -> None:
    err = raises("{{=<% %>=}}<% input %>")
    assert err.code == "invalid_template"
    assert "set-delimiter" in str(err)


def test_render_checks_syntax_too() -> None:
    assert raises("{{#input}}", SCOPE).code == "invalid_template"


def test_template_too_long() -> None:
    # Given a template one character over the documented limit
    err = raises("x" * (MAX_TEMPLATE_LENGTH + 1))
    assert err.code == "template_too_long"
    # And one exactly at the limit is fine
    assert parse_template("x" * MAX_TEMPLATE_LENGTH).variables == frozenset()


def test_section_depth_is_bounded() -> None:
    depth = MAX_SECTION_DEPTH + 1
    template = "".join(f"{{{{#s{i}}}}}" for i in range(depth)) + "".join(
        f"{{{{/s{i}}}}}" for i in reversed(range(depth))
    )
    err = raises(template)
    assert err.code == "invalid_template"
    assert "nested deeper" in str(err)


def test_literal_braces_without_tags_are_plain_text() -> None:
    assert render('Answer as {"label": "x"} JSON: {{input}}', {"input": "ok"}) == (
        'Answer as {"label": "x"} JSON: ok'
    )


# --------------------------------------------------------------------------- parse_template


def test_parse_reports_top_level_paths() -> None:
    # Given a template using every scope kind, a loop and an inverted section
    info = parse_template(
        "{{input}} {{nodes.summary}} {{item.text}}"
        "{{#item.tags}}{{.}} {{label}} {{nodes.extract.title}}{{/item.tags}}"
        "{{^item.notes}}{{fallback}}{{/item.notes}}"
    )
    # Then the section's own name is reported, names relative to list elements are not
    # (except root-prefixed ones), and names inside inverted sections are top level
    assert info.variables == frozenset(
        {"input", "nodes.summary", "item.text", "item.tags", "nodes.extract.title", "item.notes", "fallback"}
    )
    assert info.roots == frozenset({"input", "nodes", "item", "fallback"})
    assert info.node_names == frozenset({"summary", "extract"})


def test_parse_of_plain_text() -> None:
    assert parse_template("no tags here") == TemplateInfo(frozenset())


# --------------------------------------------------------------------------- availability


def test_available_variables() -> None:
    assert available_variables(["a", "b"], batch=False) == frozenset({"input", "nodes", "nodes.a", "nodes.b"})
    assert "item" in available_variables([], batch=True)


def test_unavailable_variables_flags_unknown_nodes_item_and_roots() -> None:
    # Given a template referencing an upstream node, a non-upstream node, the item and a typo
    template = "{{nodes.a.x}} {{nodes.c}} {{item.text}} {{inptu}} {{input}} {{nodes}}"
    # When checked for a single-mode node whose only ancestor is "a"
    missing = unavailable_variables(template, ["a"], batch=False)
    # Then every path nothing provides is listed, sorted
    assert missing == ["inptu", "item.text", "nodes.c"]
    # And in batch mode the item is available
    assert unavailable_variables(parse_template(template), ["a"], batch=True) == ["inptu", "nodes.c"]


def test_unavailable_variables_propagates_syntax_errors() -> None:
    with pytest.raises(TemplateError):
        unavailable_variables("{{#x}}", [], False)

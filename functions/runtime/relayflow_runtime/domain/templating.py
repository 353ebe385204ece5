"""Node input templates: logic-less Mustache, checked before a run and rendered as plain text.

A node's ``input_template`` builds the prompt sent to its model. The language is Mustache
(https://mustache.github.io/mustache.5.html) without partials, lambdas and set-delimiter tags,
parsed and rendered by this module (a few hundred lines: the rules below are the renderer's own
rules, not defaults of a general-purpose Mustache library undone after the fact):

* **No HTML escaping.** ``{{x}}``, ``{{{x}}}`` and ``{{&x}}`` all insert the value as it is:
  prompts are not HTML, ``&`` stays ``&``.
* **Values become text predictably.** Strings as they are, ``null`` as the empty string,
  ``true``/``false``, numbers as JSON numbers, objects and lists as compact JSON (never a
  Python ``repr``).
* **Missing data is an error, not an empty string.** A name of the scope that does not resolve
  raises :class:`TemplateError` ``unknown_variable`` naming it (see :func:`render`).
* **Logic-less, with nothing to load or execute.** Partials (``{{> name}}``) and set-delimiter
  tags (``{{=<% %>=}}``) are refused; names are looked up by dict key or list index only (never
  a Python attribute), and no value is ever called.
* **Bounded work.** Output length and loop passes are capped, so nested loops over large lists
  cannot exhaust the Lambda.

The scope a template sees (built by the node runner):

``input``
    A string: the parent's output (several parents: their outputs joined by a blank line), or
    the execution input for a root node (in batch mode, the item's ``input_field``).
``nodes``
    ``{node name: output}`` of the upstream nodes; an output is a string, or parsed JSON
    (dict/list) when that node declared ``output_format: "json"``. Node names containing a
    ``.`` cannot be referenced (the dot separates path segments).
``item``
    Batch mode only: the whole dataset item (a dict).

Section truthiness follows JSON/JMESPath (the same rule as dataset filters): ``null``,
``false``, ``""``, ``[]`` and ``{}`` are false; every number, ``0`` included, is true. A list
section renders once per element (``{{.}}`` is the element), an object or other true value
renders once with that value pushed as the context, an inverted section (``{{^x}}``) renders
when the value is false or missing.

Names resolve against the stack of contexts, innermost first: a dotted name ``a.b`` is the first
context in which the whole path resolves (so an element lacking ``b`` does not hide an outer
``a.b``). Section, inverted-section and comment tags that stand alone on their line take the whole
line with them (Mustache's standalone rule: the line's leading spaces and its line break go).
These rules are the ones templates were written against when chevron 0.14.0 rendered them;
tests/unit/test_templating*.py pin them down.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

# The longest accepted template, in characters: defined with the request schemas (the document
# states it), checked here with its own error code (template_too_long).
from relayflow_runtime.schemas.entities import MAX_TEMPLATE_LENGTH

__all__ = [
    "MAX_RENDERED_LENGTH",
    "MAX_SECTION_DEPTH",
    "MAX_TEMPLATE_LENGTH",
    "ROOT_NAMES",
    "TemplateError",
    "TemplateInfo",
    "available_variables",
    "parse_template",
    "render",
    "unavailable_variables",
]

#: Deepest accepted nesting of sections.
MAX_SECTION_DEPTH = 32
#: Longest rendered text, in characters (nested loops over large lists could otherwise explode).
MAX_RENDERED_LENGTH = 4 * 1024 * 1024
#: Most values inserted plus loop passes while rendering one prompt (same reason, for empty bodies).
MAX_RENDER_STEPS = 2_000_000

#: The names a template's scope provides. ``item`` only in batch mode.
ROOT_NAMES = frozenset({"input", "nodes", "item"})

_SIGILS = "#^/>!=&{}"


class TemplateError(ValueError):
    """A template that cannot be used or rendered.

    ``code`` is one of ``invalid_template`` (syntax, partials, set-delimiter tags, nesting too
    deep), ``template_too_long``, ``unknown_variable`` (a referenced name has no value),
    ``unrenderable_value`` and ``rendered_too_long``. ``variable`` names the offending variable
    for ``unknown_variable``.
    """

    def __init__(self, code: str, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.variable = variable


@dataclass(frozen=True)
class TemplateInfo:
    """What a template references.

    ``variables`` are the dotted paths looked up in the template's own scope: every variable
    and section name outside (non-inverted) sections, plus names anywhere whose first segment is
    a root name (``input``, ``nodes``, ``item``). Names inside a section are otherwise relative
    to the section's value (a list element, an object) and are not requirements of the scope.
    ``{{.}}`` is never reported.
    """

    variables: frozenset[str]

    @property
    def roots(self) -> frozenset[str]:
        """First segments of the referenced paths, e.g. ``{"input", "nodes"}``."""
        return frozenset(path.split(".", 1)[0] for path in self.variables)

    @property
    def node_names(self) -> frozenset[str]:
        """Names ``NAME`` of the referenced ``nodes.NAME...`` paths."""
        return frozenset(
            parts[1]
            for parts in (path.split(".") for path in self.variables)
            if parts[0] == "nodes" and len(parts) > 1
        )


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Variable:
    """``{{name}}``, ``{{{name}}}`` or ``{{&name}}``; ``path`` is empty for ``{{.}}``."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Section:
    """``{{#name}}...{{/name}}`` or, ``inverted``, ``{{^name}}...{{/name}}``."""

    path: tuple[str, ...]
    inverted: bool
    body: tuple[_Element, ...]


#: What a parsed template is made of: literal text, variables and sections.
_Element: TypeAlias = "str | _Variable | _Section"


def _invalid(message: str) -> TemplateError:
    return TemplateError("invalid_template", message)


def _check_name(name: str, line: int, tag: str) -> tuple[str, ...]:
    if not name:
        raise _invalid(f"line {line}: empty tag {tag}")
    if name == ".":
        return ()
    if name[0] in _SIGILS:
        raise _invalid(
            f"line {line}: unexpected {name[0]!r} in tag {tag} "
            f"(no space is allowed between '{{{{' and {name[0]!r})"
        )
    if any(ch in name for ch in "{}\r\n\t\x00"):
        raise _invalid(f"line {line}: invalid name in tag {tag}")
    parts = tuple(name.split("."))
    if any(not part.strip() for part in parts):
        raise _invalid(f"line {line}: invalid name {name!r} in tag {tag} (empty path segment)")
    return parts


def _read_tag(template: str, start: int, line: int) -> tuple[str, str, str, int]:
    """The tag opening at ``start``: its kind (``variable``, ``section``, ``inverted``, ``end`` or
    ``comment``), its name, its text and the position after it. Refuses partials, set-delimiter
    tags, unclosed tags and ``{{{`` without ``}}}``."""
    end = template.find("}}", start + 2)
    if end < 0:
        snippet = template[start : start + 30].split("\n", 1)[0]
        raise _invalid(f"line {line}: tag {snippet!r} is never closed with '}}}}'")
    content = template[start + 2 : end]
    after = end + 2
    tag = template[start:after]
    if content.startswith("{"):
        if not template.startswith("}", after):
            raise _invalid(f"line {line}: tag {tag!r} opened with '{{{{{{' must close with '}}}}}}'")
        return "variable", content[1:].strip(), tag + "}", after + 1
    if not content:
        raise _invalid(f"line {line}: empty tag '{{{{}}}}'")
    sigil, name = content[0], content[1:].strip()
    if sigil == ">":
        raise _invalid(
            f"line {line}: partials ({tag}) are not supported: templates are logic-less "
            "and cannot include other templates"
        )
    if sigil == "=":
        raise _invalid(f"line {line}: set-delimiter tags ({tag}) are not supported: use '{{{{' and '}}}}'")
    kinds = {"!": "comment", "#": "section", "^": "inverted", "/": "end", "&": "variable"}
    if sigil in kinds:
        return kinds[sigil], name, tag, after
    return "variable", content.strip(), tag, after


def _alone_on_its_line(template: str, literal: str, after: int, previous_alone: bool) -> bool:
    """Mustache's standalone rule, as chevron 0.14.0 applied it (templates were written against
    it): a section, end or comment tag stands alone when the text before it on its line is only
    whitespace (the line starts in ``literal``, or the tag comes first in the template or right
    after another standalone tag's line) and so is the text after it up to the line break."""
    if "\n" not in literal and not previous_alone:
        return False
    padding = literal.rsplit("\n", 1)[-1]
    if padding and not padding.isspace():
        return False
    line_end = template.find("\n", after)
    rest = template[after:] if line_end < 0 else template[after:line_end]
    return rest == "" or rest.isspace()


def _parse(template: str) -> tuple[tuple[_Element, ...], frozenset[str]]:
    """Parse ``template`` into its elements, validating every tag (with exact line numbers), and
    collect its variables (see :class:`TemplateInfo`)."""
    variables: set[str] = set()
    elements: list[_Element] = []  # the body being filled: the template's, or an open section's
    # Open sections: name, path, line, inverted, and the body they belong to.
    open_sections: list[tuple[str, tuple[str, ...], int, bool, list[_Element]]] = []
    pushed = 0  # open non-inverted sections: names inside them may be relative
    pos = 0  # where the pending literal text starts
    line = 1
    line_pos = 0
    standalone = True  # the previous tag stood alone on its line (or nothing came before)
    while True:
        start = template.find("{{", pos)
        if start < 0:
            if pos < len(template):
                elements.append(template[pos:])
            break
        line += template.count("\n", line_pos, start)
        line_pos = start
        kind, name, tag, after = _read_tag(template, start, line)
        literal = template[pos:start]
        standalone = kind != "variable" and _alone_on_its_line(template, literal, after, standalone)
        if standalone:
            # The tag's line goes: the spaces before it, and what follows it up to the line break.
            line_end = template.find("\n", after)
            after = after if line_end < 0 else line_end + 1
            literal = literal.rstrip(" ")
        if literal:
            elements.append(literal)
        pos = after
        if kind == "comment":
            continue

        path = _check_name(name, line, tag)
        if kind == "end":
            if not open_sections:
                raise _invalid(f"line {line}: closing tag {tag} has no matching opening tag")
            open_name, open_path, open_line, inverted, parent = open_sections.pop()
            if open_name != name:
                raise _invalid(
                    f"line {line}: closing tag {tag} does not match the section "
                    f"{{{{#{open_name}}}}} opened at line {open_line}"
                )
            if not inverted:
                pushed -= 1
            parent.append(_Section(open_path, inverted, tuple(elements)))
            elements = parent
            continue
        if path and (pushed == 0 or path[0] in ROOT_NAMES):
            variables.add(name)
        if kind == "variable":
            elements.append(_Variable(path))
            continue
        inverted = kind == "inverted"
        open_sections.append((name, path, line, inverted, elements))
        elements = []
        if not inverted:
            pushed += 1
        if len(open_sections) > MAX_SECTION_DEPTH:
            raise _invalid(f"line {line}: sections are nested deeper than {MAX_SECTION_DEPTH} levels")
    if open_sections:
        name, _, open_line, inverted, _ = open_sections[-1]
        raise _invalid(f"line {open_line}: section {{{{{'^' if inverted else '#'}{name}}}}} is never closed")
    return tuple(elements), frozenset(variables)


@dataclass(frozen=True)
class _Compiled:
    info: TemplateInfo
    elements: tuple[_Element, ...]


@functools.lru_cache(maxsize=256)
def _compile(template: str) -> _Compiled:
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(
            "template_too_long",
            f"the template is {len(template)} characters long; the limit is {MAX_TEMPLATE_LENGTH}",
        )
    elements, variables = _parse(template)
    return _Compiled(TemplateInfo(variables), elements)


def parse_template(template: str) -> TemplateInfo:
    """Validate ``template`` and return what it references.

    Raises :class:`TemplateError` with code ``template_too_long`` above
    :data:`MAX_TEMPLATE_LENGTH` characters, or ``invalid_template`` with a message naming the
    line for: a tag never closed, a section never closed or closed by the wrong name, an empty
    tag or name, ``{{{x}}`` without its third brace, sections nested deeper than
    :data:`MAX_SECTION_DEPTH`, partials and set-delimiter tags.
    """
    if not isinstance(template, str):
        raise _invalid(f"a template must be a string, not {type(template).__name__}")
    return _compile(template).info


# --------------------------------------------------------------------------- rendering

_MISSING: Any = object()


def _child(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, _MISSING)
    if isinstance(value, list | tuple) and key.isascii() and key.isdigit():
        index = int(key)
        if index < len(value):
            return value[index]
    return _MISSING


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):  # e.g. the runner's lazily read ``nodes``
        return dict(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    try:
        if isinstance(value, int):
            return str(value)
        if isinstance(value, Decimal):
            return str(_json_default(value))
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TemplateError("unrenderable_value", f"a value cannot be rendered as text: {exc}") from None


def _unknown(name: str, failed: int, root: Mapping[str, Any]) -> TemplateError:
    parts = name.split(".")
    head = parts[0]
    if failed == 0:
        if head == "item":
            detail = "'item' is only available in batch mode"
        elif head in ROOT_NAMES:
            detail = f"the scope has no {head!r}"
        else:
            names = ", ".join(sorted(map(str, root))) or "none"
            detail = f"the template scope provides only: {names}"
    elif head == "nodes" and failed == 1:
        nodes = root.get("nodes")
        available = ", ".join(sorted(map(str, nodes))) if isinstance(nodes, Mapping) and nodes else "none"
        detail = f"no output of an upstream node named {parts[1]!r} (available: {available})"
    else:
        detail = f"{'.'.join(parts[:failed])!r} has no {parts[failed]!r}"
    return TemplateError("unknown_variable", f"unknown template variable {name!r}: {detail}", variable=name)


def _resolve(path: tuple[str, ...], contexts: list[Any]) -> Any:
    """The value of ``path`` in the innermost context where the whole path resolves (``.``: the
    innermost context itself), else ``_MISSING``."""
    if not path:
        return contexts[-1]
    for value in reversed(contexts):
        for key in path:
            value = _child(value, key)
            if value is _MISSING:
                break
        else:
            return value
    return _MISSING


class _Run:
    """One rendering: the root scope, the text so far and the work done."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.parts: list[str] = []
        self.length = 0
        self.steps = 0

    def write(self, text: str) -> None:
        self.length += len(text)
        if self.length > MAX_RENDERED_LENGTH:
            raise TemplateError(
                "rendered_too_long", f"the rendered text exceeds {MAX_RENDERED_LENGTH} characters"
            )
        self.parts.append(text)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_RENDER_STEPS:
            raise TemplateError("rendered_too_long", f"rendering needs more than {MAX_RENDER_STEPS} steps")

    def render(self, elements: tuple[_Element, ...], contexts: list[Any]) -> None:
        for element in elements:
            if isinstance(element, str):
                self.write(element)
            elif isinstance(element, _Variable):
                value = _resolve(element.path, contexts)
                if value is not _MISSING:
                    self.step()
                    self.write(_to_text(value))
                elif element.path[0] in self.root:
                    raise self.unknown(element.path)
                # else: a name relative to a section's value that this value lacks renders empty
            else:
                value = _resolve(element.path, contexts)
                if element.inverted:
                    # Transparent: names and "." inside resolve in the enclosing contexts.
                    if value is _MISSING or not _truthy(value):
                        self.render(element.body, contexts)
                elif isinstance(value, list | tuple):
                    for each in value:  # every element gets its pass, false ones included
                        self.step()
                        self.render(element.body, [*contexts, each])
                elif value is not _MISSING and _truthy(value):
                    self.render(element.body, [*contexts, value])

    def unknown(self, path: tuple[str, ...]) -> TemplateError:
        """The error for a path starting at a name of the scope that does not resolve."""
        value: Any = self.root
        failed = len(path) - 1
        for i, key in enumerate(path):
            value = _child(value, key)
            if value is _MISSING:
                failed = i
                break
        return _unknown(".".join(path), failed, self.root)


def _check_roots(info: TemplateInfo, scope: Mapping[str, Any]) -> None:
    """Names that can never resolve, found before rendering: an unknown name of the scope, or
    ``nodes.NAME`` for a node that has no output (wherever they stand, even in a section that
    would not render)."""
    for name in sorted(info.variables):
        parts = name.split(".")
        if parts[0] not in scope:
            raise _unknown(name, 0, scope)
        if parts[0] == "nodes" and len(parts) > 1 and _child(scope["nodes"], parts[1]) is _MISSING:
            raise _unknown(name, 1, scope)


def render(template: str, scope: Mapping[str, Any]) -> str:
    """Render ``template`` with ``scope`` (``input``, ``nodes``, ``item``) into plain text.

    No HTML escaping; objects and lists render as compact JSON, ``null`` as ``""``.
    Raises :class:`TemplateError`: the :func:`parse_template` errors, ``unknown_variable`` when a
    template names something the scope does not have (a name other than ``input``/``nodes``/
    ``item`` outside sections, ``item`` outside batch mode, ``nodes.NAME`` of a node without an
    output: anywhere in the template), or when a variable starting with one of those names has no
    value where it is rendered (a section over a missing *field*, e.g. ``{{#item.notes}}``, is
    simply false, and names relative to a section's value may be absent: they render empty),
    ``unrenderable_value``, ``rendered_too_long``.
    """
    if not isinstance(scope, Mapping):
        raise TypeError(f"scope must be a mapping, not {type(scope).__name__}")
    if not isinstance(template, str):
        raise _invalid(f"a template must be a string, not {type(template).__name__}")
    compiled = _compile(template)
    _check_roots(compiled.info, scope)
    run = _Run(scope)
    run.render(compiled.elements, [scope])
    return "".join(run.parts)


# --------------------------------------------------------------------------- validation helpers


def available_variables(upstream_node_names: Iterable[str], batch: bool) -> frozenset[str]:
    """The paths a node's template may reference: ``input``, ``nodes``, ``nodes.<name>`` for each
    upstream (ancestor) node, and ``item`` in batch mode."""
    names = {"input", "nodes"} | {f"nodes.{name}" for name in upstream_node_names}
    if batch:
        names.add("item")
    return frozenset(names)


def unavailable_variables(
    template: str | TemplateInfo, upstream_node_names: Iterable[str], batch: bool = False
) -> list[str]:
    """Referenced paths that nothing provides, sorted: a ``nodes.NAME...`` path whose ``NAME`` is
    not an upstream node, ``item...`` outside batch mode, and any other unknown root name.

    Raises :class:`TemplateError` if ``template`` is a string that does not parse.
    """
    info = template if isinstance(template, TemplateInfo) else parse_template(template)
    available = available_variables(upstream_node_names, batch)
    missing = []
    for path in info.variables:
        parts = path.split(".")
        if parts[0] == "nodes" and len(parts) > 1:
            ok = f"nodes.{parts[1]}" in available
        else:
            ok = parts[0] in available
        if not ok:
            missing.append(path)
    return sorted(missing)

"""Node input templates: logic-less Mustache, checked before a run and rendered as plain text.

A node's ``input_template`` builds the prompt sent to its model. The language is Mustache
(https://mustache.github.io/mustache.5.html) tokenized by ``chevron``; this module adds what a
prompt needs and chevron does not do:

* **No HTML escaping.** ``{{x}}``, ``{{{x}}}`` and ``{{&x}}`` all insert the value as it is:
  prompts are not HTML, ``&`` stays ``&``.
* **Values become text predictably.** Strings as they are, ``null`` as the empty string,
  ``true``/``false``, numbers as JSON numbers, objects and lists as compact JSON (never a
  Python ``repr``).
* **Missing data is an error, not an empty string.** A top-level name that does not resolve
  raises :class:`TemplateError` ``unknown_variable`` naming it (see :func:`render`).
* **Logic-less, with nothing to load or execute.** Partials (``{{> name}}``) and set-delimiter
  tags (``{{=<% %>=}}``) are refused; lookups only walk dicts and lists (never attributes, never
  callables).

The scope a template sees (built by the node runner):

``input``
    A string: the single parent's output, or the execution input for a root node (in batch
    mode, the item's ``input_field``).
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
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chevron.tokenizer import ChevronError, tokenize

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

#: Longest accepted template, in characters.
MAX_TEMPLATE_LENGTH = 20_000
#: Deepest accepted nesting of sections.
MAX_SECTION_DEPTH = 32
#: Longest rendered text, in characters (nested loops over large lists could otherwise explode).
MAX_RENDERED_LENGTH = 4 * 1024 * 1024
#: Most template elements visited while rendering one prompt (same reason, for empty bodies).
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


@dataclass(frozen=True)
class _Var:
    name: str
    path: tuple[str, ...]  # () for "."


@dataclass(frozen=True)
class _Section:
    name: str
    path: tuple[str, ...]
    inverted: bool
    body: tuple[_Node, ...]


_Node = str | _Var | _Section


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
    if any(ch in name for ch in "{}\r\n\t"):
        raise _invalid(f"line {line}: invalid name in tag {tag}")
    parts = tuple(name.split("."))
    if any(not part.strip() for part in parts):
        raise _invalid(f"line {line}: invalid name {name!r} in tag {tag} (empty path segment)")
    return parts


def _scan(template: str) -> frozenset[str]:
    """Validate the tags of ``template`` (with exact line numbers) and collect its variables."""
    variables: set[str] = set()
    open_sections: list[tuple[str, int, bool]] = []  # (name, line, inverted)
    pushed = 0  # open non-inverted sections: names inside them may be relative
    pos = 0
    line = 1
    line_pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            break
        line += template.count("\n", line_pos, start)
        line_pos = start
        end = template.find("}}", start + 2)
        if end < 0:
            snippet = template[start : start + 30].split("\n", 1)[0]
            raise _invalid(f"line {line}: tag {snippet!r} is never closed with '}}}}'")
        content = template[start + 2 : end]
        pos = end + 2
        tag = template[start:pos]
        kind = "variable"
        if content.startswith("{"):
            if not template.startswith("}", pos):
                raise _invalid(f"line {line}: tag {tag!r} opened with '{{{{{{' must close with '}}}}}}'")
            pos += 1
            tag += "}"
            name = content[1:].strip()
        elif not content:
            raise _invalid(f"line {line}: empty tag '{{{{}}}}'")
        else:
            sigil = content[0]
            name = content[1:].strip()
            if sigil == "!":
                continue
            if sigil == ">":
                raise _invalid(
                    f"line {line}: partials ({tag}) are not supported: templates are logic-less "
                    "and cannot include other templates"
                )
            if sigil == "=":
                raise _invalid(
                    f"line {line}: set-delimiter tags ({tag}) are not supported: use '{{{{' and '}}}}'"
                )
            if sigil in "#^":
                kind = "section"
            elif sigil == "/":
                kind = "end"
            elif sigil != "&":
                name = content.strip()
        path = _check_name(name, line, tag)
        if kind == "end":
            if not open_sections:
                raise _invalid(f"line {line}: closing tag {tag} has no matching opening tag")
            open_name, open_line, inverted = open_sections.pop()
            if open_name != name:
                raise _invalid(
                    f"line {line}: closing tag {tag} does not match the section "
                    f"{{{{#{open_name}}}}} opened at line {open_line}"
                )
            if not inverted:
                pushed -= 1
            continue
        if path and (pushed == 0 or path[0] in ROOT_NAMES):
            variables.add(name)
        if kind == "section":
            inverted = content[0] == "^"
            open_sections.append((name, line, inverted))
            if not inverted:
                pushed += 1
            if len(open_sections) > MAX_SECTION_DEPTH:
                raise _invalid(f"line {line}: sections are nested deeper than {MAX_SECTION_DEPTH} levels")
    if open_sections:
        name, open_line, inverted = open_sections[-1]
        raise _invalid(f"line {open_line}: section {{{{{'^' if inverted else '#'}{name}}}}} is never closed")
    return frozenset(variables)


def _build(template: str) -> tuple[_Node, ...]:
    """The render tree, from chevron's tokens (chevron handles standalone-line whitespace)."""
    stack: list[tuple[str, bool, list[_Node]]] = [("", False, [])]
    try:
        for kind, key in tokenize(template):
            body = stack[-1][2]
            if kind == "literal":
                body.append(key)
            elif kind in ("variable", "no escape"):
                body.append(_Var(key, () if key == "." else tuple(key.split("."))))
            elif kind in ("section", "inverted section"):
                stack.append((key, kind == "inverted section", []))
            elif kind == "end":
                name, inverted, inner = stack.pop()
                path = () if name == "." else tuple(name.split("."))
                stack[-1][2].append(_Section(name, path, inverted, tuple(inner)))
            else:  # partials, set delimiters, malformed triple mustaches: refused by _scan
                raise _invalid(f"unsupported tag {kind!r}")
    except ChevronError as exc:  # pragma: no cover - _scan rejects these first
        raise _invalid(" ".join(str(exc).split())) from None
    if len(stack) != 1:  # pragma: no cover - _scan rejects these first
        raise _invalid("unclosed section")
    return tuple(stack[0][2])


@functools.lru_cache(maxsize=256)
def _compile(template: str) -> tuple[TemplateInfo, tuple[_Node, ...]]:
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(
            "template_too_long",
            f"the template is {len(template)} characters long; the limit is {MAX_TEMPLATE_LENGTH}",
        )
    info = TemplateInfo(_scan(template))
    return info, _build(template)


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
    return _compile(template)[0]


# --------------------------------------------------------------------------- rendering

_MISSING: Any = object()


def _child(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, _MISSING)
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes | bytearray)
        and key.isascii()
        and key.isdigit()
    ):
        index = int(key)
        if index < len(value):
            return value[index]
    return _MISSING


def _resolve(path: tuple[str, ...], stack: list[Any]) -> tuple[Any, int]:
    """Look ``path`` up Mustache-style; returns (value, index of the segment that failed or -1)."""
    if not path:
        return stack[-1], -1
    for context in reversed(stack):
        value = _child(context, path[0])
        if value is not _MISSING:
            break
    else:
        return _MISSING, 0
    for i, key in enumerate(path[1:], start=1):
        value = _child(value, key)
        if value is _MISSING:
            return _MISSING, i
    return value, -1


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return True


def _json_default(value: Any) -> Any:
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


class _Renderer:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.out: list[str] = []
        self.length = 0
        self.steps = 0

    def emit(self, text: str) -> None:
        self.length += len(text)
        if self.length > MAX_RENDERED_LENGTH:
            raise TemplateError(
                "rendered_too_long", f"the rendered text exceeds {MAX_RENDERED_LENGTH} characters"
            )
        self.out.append(text)

    def strict(self, path: tuple[str, ...], stack: list[Any]) -> bool:
        # Names must resolve at top level and whenever they start with a root name; inside a
        # section, other names are relative to the section value and may be absent (empty).
        return len(stack) == 1 or path[0] in ROOT_NAMES

    def run(self, nodes: tuple[_Node, ...], stack: list[Any]) -> None:
        for node in nodes:
            self.steps += 1
            if self.steps > MAX_RENDER_STEPS:
                raise TemplateError(
                    "rendered_too_long", f"rendering needs more than {MAX_RENDER_STEPS} steps"
                )
            if isinstance(node, str):
                self.emit(node)
            elif isinstance(node, _Var):
                value, failed = _resolve(node.path, stack)
                if value is _MISSING:
                    if self.strict(node.path, stack):
                        raise _unknown(node.name, failed, self.root)
                    continue
                self.emit(_to_text(value))
            else:
                value, failed = _resolve(node.path, stack)
                if value is _MISSING:
                    # A section over an absent field is false, but an unknown root or an unknown
                    # upstream node is always a mistake.
                    structural = failed == 0 or (failed == 1 and node.path[0] == "nodes")
                    if structural and self.strict(node.path, stack):
                        raise _unknown(node.name, failed, self.root)
                if node.inverted:
                    if value is _MISSING or not _truthy(value):
                        self.run(node.body, stack)
                elif value is _MISSING or not _truthy(value):
                    continue
                elif isinstance(value, list | tuple):
                    for element in value:
                        self.run(node.body, [*stack, element])
                else:
                    self.run(node.body, [*stack, value])


def render(template: str, scope: Mapping[str, Any]) -> str:
    """Render ``template`` with ``scope`` (``input``, ``nodes``, ``item``) into plain text.

    No HTML escaping; objects and lists render as compact JSON, ``null`` as ``""``.
    Raises :class:`TemplateError`: the :func:`parse_template` errors, ``unknown_variable`` when a
    variable outside sections (or any name starting with ``input``/``nodes``/``item``) does not
    resolve, or when a section names an unknown root or upstream node (a section over a missing
    *field*, e.g. ``{{#item.notes}}``, is simply false), ``unrenderable_value``,
    ``rendered_too_long``.
    """
    if not isinstance(scope, Mapping):
        raise TypeError(f"scope must be a mapping, not {type(scope).__name__}")
    if not isinstance(template, str):
        raise _invalid(f"a template must be a string, not {type(template).__name__}")
    _, tree = _compile(template)
    renderer = _Renderer(scope)
    try:
        renderer.run(tree, [scope])
    except RecursionError:  # pragma: no cover - depth is bounded by MAX_SECTION_DEPTH
        raise TemplateError("rendered_too_long", "the template nests too deeply") from None
    return "".join(renderer.out)


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

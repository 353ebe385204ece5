"""Node input templates: logic-less Mustache, checked before a run and rendered as plain text.

A node's ``input_template`` builds the prompt sent to its model. The language is Mustache
(https://mustache.github.io/mustache.5.html), tokenized **and rendered by chevron** (a pinned,
spec-following Mustache library). This module validates templates (with line numbers) and hands
chevron a read-only view of the scope that adds what a prompt needs:

* **No HTML escaping.** ``{{x}}``, ``{{{x}}}`` and ``{{&x}}`` all insert the value as it is
  (every variable tag reaches chevron as ``{{&x}}``): prompts are not HTML, ``&`` stays ``&``.
* **Values become text predictably.** Strings as they are, ``null`` as the empty string,
  ``true``/``false``, numbers as JSON numbers, objects and lists as compact JSON (never a
  Python ``repr``).
* **Missing data is an error, not an empty string.** A name of the scope that does not resolve
  raises :class:`TemplateError` ``unknown_variable`` naming it (see :func:`render`).
* **Logic-less, with nothing to load or execute.** Partials (``{{> name}}``) and set-delimiter
  tags (``{{=<% %>=}}``) are refused; chevron only ever sees wrappers that answer lookups by
  dict key or list index (never attributes) and are never callable, so its lambda feature
  cannot run anything.
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
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import chevron
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


# Keys of the token stream handed to chevron. Template names can never contain "\x00" (see
# _check_name), so these pseudo path segments cannot be written by a user.
_THIS = "\x00this"  # the innermost real context (what "{{.}}" means)
_SECTION = "\x00s"  # + section number: "the value of this name, as section number N sees it"


@dataclass(frozen=True)
class _SectionSpec:
    inverted: bool
    body_chars: int  # literal text inside the section, nested sections included (a loop's cost)


@dataclass(frozen=True)
class _Compiled:
    info: TemplateInfo
    tokens: tuple[tuple[str, str], ...]
    sections: tuple[_SectionSpec, ...]


def _build(template: str) -> tuple[tuple[tuple[str, str], ...], tuple[_SectionSpec, ...]]:
    """chevron's tokens, rewritten for chevron's renderer.

    * every variable becomes a ``no escape`` tag (``{{&x}}``): prompts are not HTML;
    * ``.`` becomes the pseudo name :data:`_THIS`;
    * each section ``{{#x}}`` / ``{{^x}}`` becomes a plain section over ``x.<_SECTION>N`` (N numbers
      the sections). The value of ``x`` answers that last segment itself (see :meth:`_Value.section`):
      an inverted section gets the value's negation, so chevron never pushes a Python ``bool`` as
      a context (whose attributes its ``getattr`` fallback would reach), and a loop gets the cost of
      one pass over its body. Unique keys also keep chevron from pairing a section with the end
      tag of a nested section of the same name.
    """
    tokens: list[tuple[str, str]] = []
    specs: list[list[Any]] = []  # [inverted, body_chars]
    open_sections: list[int] = []
    keys: list[str] = []
    try:
        for kind, key in tokenize(template):
            if kind == "literal":
                tokens.append(("literal", key))
                for number in open_sections:
                    specs[number][1] += len(key)
            elif kind in ("variable", "no escape"):
                tokens.append(("no escape", _THIS if key == "." else key))
            elif kind in ("section", "inverted section"):
                number = len(specs)
                specs.append([kind == "inverted section", 0])
                open_sections.append(number)
                keys.append(f"{_THIS if key == '.' else key}.{_SECTION}{number}")
                tokens.append(("section", keys[number]))
            elif kind == "end":
                tokens.append(("end", keys[open_sections.pop()]))
            else:  # partials, set delimiters, malformed triple mustaches: refused by _scan
                raise _invalid(f"unsupported tag {kind!r}")
    except ChevronError as exc:  # pragma: no cover - _scan rejects these first
        raise _invalid(" ".join(str(exc).split())) from None
    return tuple(tokens), tuple(_SectionSpec(inverted, chars) for inverted, chars in specs)


@functools.lru_cache(maxsize=256)
def _compile(template: str) -> _Compiled:
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(
            "template_too_long",
            f"the template is {len(template)} characters long; the limit is {MAX_TEMPLATE_LENGTH}",
        )
    info = TemplateInfo(_scan(template))
    tokens, sections = _build(template)
    return _Compiled(info, tokens, sections)


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


class _Run:
    """One rendering: the root data, the template's sections and the work done so far."""

    def __init__(self, root: Mapping[str, Any], sections: tuple[_SectionSpec, ...]) -> None:
        self.root = root
        self.sections = sections
        self.length = 0
        self.steps = 0

    def charge(self, chars: int) -> None:
        self.steps += 1
        self.length += chars
        if self.length > MAX_RENDERED_LENGTH:
            raise TemplateError(
                "rendered_too_long", f"the rendered text exceeds {MAX_RENDERED_LENGTH} characters"
            )
        if self.steps > MAX_RENDER_STEPS:
            raise TemplateError("rendered_too_long", f"rendering needs more than {MAX_RENDER_STEPS} steps")


class _Value:
    """What chevron sees of a scope value: it can only be looked up by key, never called.

    chevron looks names up with ``value[segment]`` and falls back to ``getattr`` only on
    ``TypeError``/``AttributeError``; these wrappers raise ``KeyError`` for anything they do not
    hold, so attributes (``input.upper``, ``__class__``) are never reached. No wrapper is callable
    (chevron would call it as a lambda) and ``_CHEVRON_return_scope_when_falsy`` (chevron's hook
    for custom falsy types) keeps ``0``, ``false`` and ``[]`` from being replaced by ``""``.

    ``context`` marks a value pushed as a context (the scope itself, a list element inside its
    loop): chevron renders nothing while its innermost context is false, which would drop the
    passes over ``""`` or ``null`` elements of a list, so a context is always true; its own truth
    is asked again when a section tests it (``{{#.}}``).
    """

    __slots__ = ("context", "data", "run")
    _CHEVRON_return_scope_when_falsy = True

    def __init__(self, data: Any, run: _Run, context: bool = False) -> None:
        self.data = data
        self.run = run
        self.context = context

    def __getitem__(self, key: str) -> _Value:
        if key == _THIS:
            return self
        if key.startswith(_SECTION):
            spec = self.run.sections[int(key[len(_SECTION) :])]
            value = self.as_section(spec)
            return _Negation(value, self.run) if spec.inverted else value
        return self.child(key)

    def child(self, key: str) -> _Value:
        raise KeyError(key)

    def as_section(self, spec: _SectionSpec) -> _Value:
        return type(self)(self.data, self.run) if self.context else self

    def __bool__(self) -> bool:
        return self.context or _truthy(self.data)

    def __str__(self) -> str:
        text = _to_text(self.data)
        self.run.charge(len(text))
        return text


class _Object(_Value):
    __slots__ = ()

    def child(self, key: str) -> _Value:
        if key not in self.data:
            raise KeyError(key)
        return _wrap(self.data[key], self.run)


class _Array(_Value, Sequence):  # type: ignore[misc]
    """A list: chevron loops over a Sequence; each pass is charged the loop body's length."""

    __slots__ = ("body_chars",)

    def __init__(self, data: Any, run: _Run, context: bool = False, body_chars: int = 0) -> None:
        super().__init__(data, run, context)
        self.body_chars = body_chars

    def child(self, key: str) -> _Value:
        if key.isascii() and key.isdigit() and int(key) < len(self.data):
            return _wrap(self.data[int(key)], self.run)
        raise KeyError(key)

    def as_section(self, spec: _SectionSpec) -> _Value:
        return _Array(self.data, self.run, body_chars=spec.body_chars)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[_Value]:
        for element in self.data:
            self.run.charge(self.body_chars)
            yield _wrap(element, self.run, context=True)


class _Negation(_Value):
    """An inverted section's context: true when the value is false, and transparent (every name,
    ``.`` included, resolves in the enclosing contexts)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> _Value:
        raise KeyError(key)

    def __bool__(self) -> bool:
        return not self.data

    def __str__(self) -> str:  # pragma: no cover - never looked up, see __getitem__
        return ""


class _Missing(_Value):
    """A name no context holds (``data`` is its path). False as a section; as a variable, empty
    when it is relative to a section's value, an ``unknown_variable`` error when it starts at a
    name of the scope (``input``, ``nodes``, ``item``)."""

    __slots__ = ()

    def child(self, key: str) -> _Value:
        return _Missing((*self.data, key), self.run)

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        path: tuple[str, ...] = self.data
        if path[0] not in self.run.root:
            return ""
        value: Any = self.run.root
        failed = len(path) - 1
        for i, key in enumerate(path):
            value = _child(value, key)
            if value is _MISSING:
                failed = i
                break
        raise _unknown(".".join(path), failed, self.run.root)


class _Unresolved:
    """The outermost context: answers every name chevron could not find with :class:`_Missing`
    (chevron itself would silently render ``""``)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def __getitem__(self, key: str) -> _Value:
        return _Missing((key,), self.run)


def _wrap(value: Any, run: _Run, context: bool = False) -> _Value:
    if isinstance(value, Mapping):
        return _Object(value, run, context)
    if isinstance(value, list | tuple):
        return _Array(value, run, context)
    return _Value(value, run, context)


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
    """Render ``template`` with ``scope`` (``input``, ``nodes``, ``item``) into plain text, with
    chevron's renderer over a read-only view of the scope.

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
    run = _Run(scope, compiled.sections)
    try:
        return chevron.render(
            compiled.tokens,
            scopes=[_Object(scope, run, context=True), _Unresolved(run)],
            partials_path=None,
            partials_dict={},
        )
    except RecursionError:  # pragma: no cover - depth is bounded by MAX_SECTION_DEPTH
        raise TemplateError("rendered_too_long", "the template nests too deeply") from None


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

"""Every import of the runtime package is at the top of its module (issue 14).

An import inside a function hides a dependency: it is how a cycle between modules (or an import
across the layers import-linter checks) is made to load anyway. So the rule is checked here, over
every module of ``relayflow_runtime``; the only imports allowed below the top are an
``if TYPE_CHECKING:`` block's and the few listed in :data:`DEFERRED`, each with its reason. That
the services import each other without a cycle is import-linter's ``acyclic_siblings`` contract
(pyproject.toml, ``make lint``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import relayflow_runtime

PACKAGE = Path(relayflow_runtime.__file__).parent

#: (module, imported module) pairs allowed inside a function, and why. Neither dodges a cycle nor a
#: layer: a third-party import only one rare path needs, kept off every function's cold start.
DEFERRED = {
    # The PDF reader's child process (a script, never imported) sets its CPU and memory limits
    # first: pypdf's import counts against them.
    ("relayflow_runtime.providers.pdf_worker", "pypdf"): "after the limits",
    ("relayflow_runtime.providers.pdf_worker", "pypdf.errors"): "after the limits",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.module is None:  # from . import sibling
        return ["." * node.level + alias.name for alias in node.names]
    return ["." * node.level + node.module]


def nested_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, imported module) of each import inside a function or method body, outside an
    ``if TYPE_CHECKING:`` block."""
    for node in nested_import_statements(tree):
        for name in _imported(node):
            yield node.lineno, name


def nested_import_statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    def walk(node: ast.AST, in_function: bool) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom) and in_function:
                yield child
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, inside)

    yield from walk(tree, False)


def test_the_walk_finds_imports_in_functions_and_methods_only() -> None:
    # Given a module with imports at the top, under TYPE_CHECKING, in a function and in a method
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from collections import abc\n"
        "def f():\n"
        "    import json\n"
        "    if TYPE_CHECKING:\n"
        "        import enum\n"
        "class C:\n"
        "    def m(self):\n"
        "        from . import sibling\n"
        "        def inner():\n"
        "            from pkg.mod import name\n"
    )
    # When it is walked
    found = list(nested_imports(ast.parse(source)))
    # Then the function's, the method's and the nested function's imports are found, nothing else
    assert found == [(6, "json"), (11, ".sibling"), (13, "pkg.mod")]


def test_no_runtime_module_imports_inside_a_function() -> None:
    # Given every module of the runtime package
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        # When its imports inside functions and methods are collected
        for node in nested_import_statements(ast.parse(path.read_text(), filename=str(path))):
            if not all((module, name) in DEFERRED for name in _imported(node)):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    # Then there are none: each dependency is declared at the top of its module
    assert not offenders, "imports inside functions (move them to the top):\n" + "\n".join(offenders)

"""The ``cycleguard-data`` directive: document the type aliases and constants autodoc skips.

cycleguard's public modules re-export names from private ones. autodoc's
``automodule`` documents re-exported classes and functions, but a module-level
*value* (a type alias such as ``CyclesError``, a constant such as
``MICROCENTS_PER_USD``) is documented only when the module itself assigns it
with a docstring; a re-exported one is skipped, and ``autodata`` on it shows the
docstring of ``UnionType`` or ``int`` instead of the project's own.

This directive fills the gap from the source, not by hand: for every name in
the module's ``__all__`` that is neither a class nor a function and that
autodoc does not document, it follows the ``from ... import`` chain to the
assignment and emits a ``py:data`` entry with the assignment's right-hand side
as written (so ``CyclesError`` reads ``ServerError | Denied | ...`` rather than
a flattened union of private paths) and the docstring below it.

Use it in an ``eval-rst`` block right after the module's ``automodule``::

    .. automodule:: cycleguard.errors

    .. cycleguard-data:: cycleguard.errors
       :exclude: SomeName, OtherName
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

if TYPE_CHECKING:
    from collections.abc import Iterator

    from docutils import nodes
    from sphinx.application import Sphinx
    from sphinx.util.typing import ExtensionMetadata, OptionSpec

_MAX_HOPS = 5  # re-export chains in this project are one or two imports long


@dataclass(frozen=True)
class Assignment:
    """A module-level ``NAME = value`` (or ``NAME: T = value``) and its docstring."""

    module: str
    value: str
    type_alias: bool
    doc: str


def _statements(body: list[ast.stmt]) -> Iterator[tuple[ast.stmt, ast.stmt | None]]:
    """Module-level statements with the one after each, looking inside ``if`` blocks.

    ``if TYPE_CHECKING:`` bodies come before their ``else``, so the typed spelling
    of an alias wins over its run-time stand-in.
    """
    for index, statement in enumerate(body):
        following = body[index + 1] if index + 1 < len(body) else None
        if isinstance(statement, ast.If):
            yield from _statements(statement.body)
            yield from _statements(statement.orelse)
        else:
            yield statement, following


def _source(module: str) -> str:
    return inspect.getsource(importlib.import_module(module))


def _flat(text: str) -> str:
    """One line, without the parentheses a long expression was wrapped in."""
    text = " ".join(text.split())
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def find_assignment(module: str, name: str) -> Assignment | None:
    """Where ``module.name`` gets its value, following ``from x import y as name``."""
    for _ in range(_MAX_HOPS):
        source = _source(module)
        tree = ast.parse(source)
        imported: tuple[str, str] | None = None
        for statement, following in _statements(tree.body):
            if isinstance(statement, ast.ImportFrom) and statement.module:
                for alias in statement.names:
                    if (alias.asname or alias.name) == name:
                        imported = (statement.module, alias.name)
            target: ast.expr | None = None
            value: ast.expr | None = None
            annotation: ast.expr | None = None
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target, value = statement.targets[0], statement.value
            elif isinstance(statement, ast.AnnAssign):
                target, value, annotation = statement.target, statement.value, statement.annotation
            if not (isinstance(target, ast.Name) and target.id == name and value is not None):
                continue
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                written = value.value  # a forward reference spelled as a string
            else:
                written = ast.get_source_segment(source, value) or ""
            doc = ""
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                doc = inspect.cleandoc(following.value.value)
            type_alias = annotation is not None and ast.unparse(annotation).endswith("TypeAlias")
            return Assignment(module, _flat(written), type_alias, doc)
        if imported is None:
            return None
        module, name = imported
    return None


def undocumented_values(module: str) -> list[str]:
    """Names in ``module.__all__`` that are values autodoc's ``automodule`` leaves out.

    Run-time aliases of a class are included too; exclude them from the
    ``automodule`` (``:exclude-members:``), which would call them "alias of ...".
    """
    loaded = importlib.import_module(module)
    documented = ModuleAnalyzer.for_module(module).find_attr_docs()
    names: list[str] = []
    for name in loaded.__all__:
        value = getattr(loaded, name)
        # A class exported under its own name is autodoc's; one exported under
        # another name is an alias (``JsonValue`` is ``object`` at run time).
        if inspect.isclass(value) and value.__name__ == name:
            continue
        if inspect.isroutine(value) or inspect.ismodule(value):
            continue
        if ("", name) in documented:
            continue
        names.append(name)
    return names


def rst_entry(module: str, name: str, found: Assignment | None) -> list[str]:
    """The ``py:data`` entry for one name, as reST lines."""
    lines = [f".. py:data:: {name}", f"   :module: {module}"]
    if found is not None and found.type_alias:
        lines.append("   :type: TypeAlias")
    if found is not None and found.value:
        lines.append(f"   :value: {found.value}")
    lines.append("")
    if found is not None and found.doc:
        lines.extend(textwrap.indent(found.doc, "   ").splitlines())
        lines.append("")
    return lines


class CycleguardData(SphinxDirective):
    """Emit ``py:data`` entries for a module's re-exported aliases and constants."""

    required_arguments = 1
    option_spec: ClassVar[OptionSpec] = {"exclude": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        module = self.arguments[0]
        excluded = {part.strip() for part in self.options.get("exclude", "").split(",")}
        lines: list[str] = []
        for name in undocumented_values(module):
            if name in excluded:
                continue
            found = find_assignment(module, name)
            if found is not None:
                # Rebuild the page when the defining module changes.
                self.env.note_dependency(inspect.getfile(importlib.import_module(found.module)))
            lines.extend(rst_entry(module, name, found))
        if not lines:
            return []
        return self.parse_text_to_nodes(StringList(lines, source=f"<cycleguard-data {module}>"))


def setup(app: Sphinx) -> ExtensionMetadata:
    """Register the directive."""
    app.add_directive("cycleguard-data", CycleguardData)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

"""The ``cycleguard-states`` directive: the reservation state machine, drawn from the code.

It imports ``TRANSITIONS`` from ``cycleguard._core._state`` (the table the
client lease and the server ledger both move through) at build time and emits
an inline SVG diagram plus a table of every transition. Nothing is fetched
and no external program runs, so the docs build and display offline.

Usage in a MyST page::

    ```{cycleguard-states}
    ```
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, ClassVar

from docutils import nodes
from sphinx.util.docutils import SphinxDirective
from state_diagram import layout, render_svg, transitions

from cycleguard._core import _state

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sphinx.application import Sphinx
    from sphinx.util.typing import ExtensionMetadata, OptionSpec


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> nodes.table:
    """A plain docutils table; each cell is inline code."""
    group = nodes.tgroup(cols=len(header))
    group += [nodes.colspec(colwidth=1) for _ in header]
    head = nodes.thead()
    head += _row(header, code=False)
    body = nodes.tbody()
    body += [_row(row, code=True) for row in rows]
    group += [head, body]
    table = nodes.table(classes=["cycleguard-transitions"])
    table += group
    return table


def _row(cells: tuple[str, ...], *, code: bool) -> nodes.row:
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        content = nodes.literal(text, text) if code and text else nodes.Text(text)
        entry += nodes.paragraph("", "", content)
        row += entry
    return row


class CycleguardStates(SphinxDirective):
    """Render ``cycleguard._core._state.TRANSITIONS`` as a diagram and a table."""

    has_content = False
    option_spec: ClassVar[OptionSpec] = {}

    def run(self) -> list[nodes.Node]:
        # Rebuild the page when the table changes.
        self.env.note_dependency(inspect.getfile(_state))
        table = _state.TRANSITIONS
        diagram = layout(table)
        serial = self.env.new_serialno("cycleguard-states")
        svg = render_svg(
            diagram,
            title="Reservation states and the events that move between them",
            id_prefix=f"cycleguard-states-{serial}",
        )
        figure = nodes.container(classes=["cycleguard-states-figure"])
        figure += nodes.raw("", svg, format="html")
        rows = [(move.source, move.event, move.target) for move in transitions(table)]
        final = nodes.paragraph("", "Final states (thick borders), which accept no further event: ")
        for number, box in enumerate(box for box in diagram.boxes if box.terminal):
            if number:
                final += nodes.Text(", ")
            final += nodes.literal(box.state, box.state)
        final += nodes.Text(".")
        return [figure, _table(("From", "Event", "To"), rows), final]


def setup(app: Sphinx) -> ExtensionMetadata:
    """Register the directive."""
    app.add_directive("cycleguard-states", CycleguardStates)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

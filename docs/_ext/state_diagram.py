"""Draw a state machine's transition table as an inline SVG, with no external tools.

The docs show the reservation lifecycle from the table the code itself runs on
(``cycleguard._core._state.TRANSITIONS``), so the picture cannot drift from the
rules. This module is the pure part: table -> transitions -> layout -> SVG
text. It imports neither Sphinx nor docutils, so the tests can check it with
the real table and the strict type checkers can follow it.

The layout is a small layered drawing, left to right: the states nobody moves
into start in column 0, and every other state sits one column after the
furthest state that leads to it. Edges between neighbouring columns are
straight lines; an edge that skips columns (or points backwards) runs in a
lane above every box, so it never crosses one; a self-transition is a loop
under its box. Colours come from ``currentColor`` and the theme's background
variable, so the drawing follows the page's light or dark mode.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)

# Geometry, in SVG user units (pixels at 100 % zoom).
_STATE_FONT = 13
_LABEL_FONT = 11
_STATE_CHAR = 0.62 * _STATE_FONT  # a monospace glyph is about 0.6 em wide
_LABEL_CHAR = 0.62 * _LABEL_FONT
_BOX_PAD = 14
_BOX_HEIGHT = 34
_ROW_PITCH = 64
_MARGIN = 16
_LANE_PITCH = 22
_LOOP_DEPTH = 26
_ENTRY = 22  # length of the arrow into an initial state


@dataclass(frozen=True)
class Transition:
    """One row of the table: ``event`` moves ``source`` to ``target``."""

    source: str
    event: str
    target: str


@dataclass(frozen=True)
class Box:
    """Where a state is drawn; ``x`` and ``y`` are the box's top-left corner."""

    state: str
    column: int
    row: int
    x: float
    y: float
    width: float
    height: float
    initial: bool
    terminal: bool

    @property
    def centre_x(self) -> float:
        """The horizontal middle of the box."""
        return self.x + self.width / 2

    @property
    def centre_y(self) -> float:
        """The vertical middle of the box."""
        return self.y + self.height / 2

    @property
    def right(self) -> float:
        """The box's right edge."""
        return self.x + self.width

    @property
    def bottom(self) -> float:
        """The box's bottom edge."""
        return self.y + self.height


@dataclass(frozen=True)
class Edge:
    """A drawn transition: an SVG path and where its label goes.

    The label is centred on (``label_x``, ``label_y``), turned by ``angle``
    degrees: a straight edge's label runs along it, just above the line, so the
    labels of edges that fan out from one state never collide.
    """

    transition: Transition
    path: str
    label_x: float
    label_y: float
    angle: float = 0.0


@dataclass(frozen=True)
class Diagram:
    """Everything needed to draw the state machine."""

    states: tuple[str, ...]
    transitions: tuple[Transition, ...]
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]
    width: float
    height: float

    def box(self, state: str) -> Box:
        """The box of ``state``."""
        return next(box for box in self.boxes if box.state == state)


def transitions(table: Mapping[S, Mapping[E, S]]) -> tuple[Transition, ...]:
    """Every transition of ``table``, in the table's order.

    States are named by their enum member name, events by their value, as the
    code spells them (``LeaseState.ACTIVE``, ``LeaseEvent.COMMIT_SENT`` is
    ``"commit_sent"``).
    """
    return tuple(
        Transition(source.name, str(event.value), target.name)
        for source, moves in table.items()
        for event, target in moves.items()
    )


def state_names(table: Mapping[S, Mapping[E, S]]) -> tuple[str, ...]:
    """Every state the table mentions, sources first in table order, then other targets."""
    names = [state.name for state in table]
    for moves in table.values():
        names.extend(target.name for target in moves.values() if target.name not in names)
    return tuple(dict.fromkeys(names))


def columns(states: Sequence[str], moves: Sequence[Transition]) -> dict[str, int]:
    """The column of each state: one after the furthest state that leads to it.

    States without incoming moves (self-loops aside) start in column 0; if every
    state has one (a pure cycle), the first state does. A cycle cannot push a
    state past the last column, so this always ends.
    """
    incoming = {move.target for move in moves if move.source != move.target}
    starts = [state for state in states if state not in incoming] or list(states[:1])
    column = dict.fromkeys(starts, 0)
    last = max(len(states) - 1, 0)
    for _ in states:
        changed = False
        for move in moves:
            if move.source == move.target or move.source not in column:
                continue
            wanted = min(column[move.source] + 1, last)
            if wanted > column.get(move.target, -1):
                column[move.target] = wanted
                changed = True
        if not changed:
            break
    for state in states:  # unreachable from a start: draw it in the first column
        column.setdefault(state, 0)
    return column


def _ordered(
    states: Sequence[str], column: Mapping[str, int], moves: Sequence[Transition]
) -> list[list[str]]:
    """States per column, each column ordered by where its predecessors sit (then table order)."""
    count = max(column.values(), default=0) + 1
    stacks: list[list[str]] = [[] for _ in range(count)]
    row: dict[str, int] = {}
    for index in range(count):
        members = [state for state in states if column[state] == index]

        def weight(state: str, members: list[str] = members) -> tuple[float, int]:
            before = [
                row[move.source]
                for move in moves
                if move.target == state and move.source != state and move.source in row
            ]
            centre = sum(before) / len(before) if before else float(members.index(state))
            return (centre, states.index(state))

        stacks[index] = sorted(members, key=weight)
        row.update({state: position for position, state in enumerate(stacks[index])})
    return stacks


def _text_width(text: str, char: float) -> float:
    return len(text) * char


def layout(table: Mapping[S, Mapping[E, S]]) -> Diagram:
    """Place every state of ``table`` and route every transition."""
    states = state_names(table)
    moves = transitions(table)
    column = columns(states, moves)
    stacks = _ordered(states, column, moves)
    terminal = {state.name for state, out in table.items() if not out}
    initial = {state for state in states if column[state] == 0}

    box_width = max(_text_width(state, _STATE_CHAR) for state in states) + 2 * _BOX_PAD
    widest_label = max((_text_width(move.event, _LABEL_CHAR) for move in moves), default=0.0)
    gap = max(widest_label + 48, 90.0)
    tallest = max(len(stack) for stack in stacks)
    long_moves = [
        move
        for move in moves
        if move.source != move.target and column[move.target] != column[move.source] + 1
    ]
    top = _MARGIN + _LANE_PITCH * (len(long_moves) + 1)
    left = _MARGIN + _ENTRY

    boxes: dict[str, Box] = {}
    for index, stack in enumerate(stacks):
        # Centre each column against the tallest one.
        offset = (tallest - len(stack)) * _ROW_PITCH / 2
        for position, state in enumerate(stack):
            boxes[state] = Box(
                state=state,
                column=index,
                row=position,
                x=left + index * (box_width + gap),
                y=top + offset + position * _ROW_PITCH,
                width=box_width,
                height=_BOX_HEIGHT,
                initial=state in initial,
                terminal=state in terminal,
            )

    edges: list[Edge] = []
    loops_seen: dict[str, int] = {}
    for move in moves:
        source, target = boxes[move.source], boxes[move.target]
        if move.source == move.target:
            edges.append(_loop(move, source, loops_seen.get(move.source, 0)))
            loops_seen[move.source] = loops_seen.get(move.source, 0) + 1
        elif move in long_moves:
            lane = top - _LANE_PITCH * (long_moves.index(move) + 1)
            edges.append(_over_the_top(move, source, target, lane, gap, stacks))
        else:
            edges.append(_straight(move, source, target))

    lowest = max(
        *(box.bottom for box in boxes.values()),
        *(edge.label_y + _LABEL_FONT / 2 for edge in edges),
    )
    height = lowest + _MARGIN
    width = left + len(stacks) * box_width + (len(stacks) - 1) * gap + _MARGIN
    return Diagram(
        states=states,
        transitions=moves,
        boxes=tuple(boxes[state] for state in states),
        edges=tuple(edges),
        width=width,
        height=height,
    )


def _straight(move: Transition, source: Box, target: Box) -> Edge:
    x1, y1 = source.right, source.centre_y
    x2, y2 = target.x, target.centre_y
    angle = math.atan2(y2 - y1, x2 - x1)
    lift = 5.0  # from the line to the text's baseline, on the side above the line
    # Past the middle, where edges fanning out of one state are further apart.
    t = 0.6
    return Edge(
        transition=move,
        path=f"M {x1:.1f} {y1:.1f} L {x2:.1f} {y2:.1f}",
        label_x=x1 + (x2 - x1) * t + lift * math.sin(angle),
        label_y=y1 + (y2 - y1) * t - lift * math.cos(angle),
        angle=math.degrees(angle),
    )


def _loop(move: Transition, box: Box, nth: int) -> Edge:
    depth = _LOOP_DEPTH * (nth + 1)
    x1, x2 = box.centre_x - 18, box.centre_x + 18
    y = box.bottom
    return Edge(
        transition=move,
        path=(
            f"M {x1:.1f} {y:.1f} C {x1 - 24:.1f} {y + depth:.1f} "
            f"{x2 + 24:.1f} {y + depth:.1f} {x2:.1f} {y:.1f}"
        ),
        label_x=box.centre_x,
        label_y=y + depth * 0.75 + _LABEL_FONT,
    )


def _over_the_top(
    move: Transition,
    source: Box,
    target: Box,
    lane: float,
    gap: float,
    stacks: Sequence[Sequence[str]],
) -> Edge:
    # Leave through the top when nothing sits above the box in its column,
    # otherwise through the side into the gap between columns; enter the same way.
    if stacks[source.column][0] == source.state:
        start = f"M {source.centre_x + 10:.1f} {source.y:.1f} V {lane:.1f}"
    else:
        out_x = source.right + gap / 4
        start = f"M {source.right:.1f} {source.centre_y:.1f} H {out_x:.1f} V {lane:.1f}"
    if stacks[target.column][0] == target.state:
        end = f"H {target.centre_x - 10:.1f} V {target.y:.1f}"
    else:
        in_x = target.x - gap / 4
        end = f"H {in_x:.1f} V {target.centre_y:.1f} H {target.x:.1f}"
    middle = (source.centre_x + target.centre_x) / 2
    return Edge(transition=move, path=f"{start} {end}", label_x=middle, label_y=lane - 5)


def render_svg(diagram: Diagram, *, title: str, id_prefix: str = "cg-states") -> str:
    """The diagram as one ``<svg>`` element, ready to inline in an HTML page."""
    arrow = f"{id_prefix}-arrow"
    halo = "stroke: var(--color-background-primary, #fff); stroke-width: 4px;"
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="cycleguard-states" role="img" '
            f'aria-labelledby="{id_prefix}-title" viewBox="0 0 {diagram.width:.0f} '
            f'{diagram.height:.0f}" width="{diagram.width:.0f}" height="{diagram.height:.0f}" '
            f'style="max-width: 100%; height: auto;">'
        ),
        f'<title id="{id_prefix}-title">{escape(title)}</title>',
        "<defs>",
        (
            f'<marker id="{arrow}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse">'
            '<path d="M 0 0 L 10 5 L 0 10 z" fill="currentColor"/></marker>'
        ),
        "</defs>",
    ]
    for box in diagram.boxes:
        if box.initial:
            y = box.centre_y
            parts.append(
                f'<circle cx="{box.x - _ENTRY:.1f}" cy="{y:.1f}" r="4" fill="currentColor"/>'
                f'<path class="entry" d="M {box.x - _ENTRY + 4:.1f} {y:.1f} H {box.x:.1f}" '
                f'stroke="currentColor" fill="none" marker-end="url(#{arrow})"/>'
            )
        parts.append(
            f'<rect class="state" x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="8" fill="none" stroke="currentColor" '
            f'stroke-width="{2.5 if box.terminal else 1.2}"/>'
        )
        parts.append(
            f'<text x="{box.centre_x:.1f}" y="{box.centre_y + _STATE_FONT * 0.35:.1f}" '
            f'text-anchor="middle" font-family="monospace" font-size="{_STATE_FONT}" '
            f'fill="currentColor">{escape(box.state)}</text>'
        )
    for edge in diagram.edges:
        move = edge.transition
        parts.append(
            f'<path class="edge" data-source="{escape(move.source)}" '
            f'data-event="{escape(move.event)}" data-target="{escape(move.target)}" '
            f'd="{edge.path}" fill="none" stroke="currentColor" stroke-width="1.2" '
            f'marker-end="url(#{arrow})"/>'
        )
    # Labels last, with a halo in the page background, so no line runs through them.
    style = (
        f'text-anchor="middle" font-family="monospace" font-size="{_LABEL_FONT}" '
        f'fill="currentColor" paint-order="stroke" style="{halo}"'
    )
    for edge in diagram.edges:
        event = escape(edge.transition.event)
        if edge.angle:
            rotate = f' transform="rotate({edge.angle:.1f} {edge.label_x:.1f} {edge.label_y:.1f})"'
        else:
            rotate = ""
        parts.append(
            f'<text x="{edge.label_x:.1f}" y="{edge.label_y:.1f}"{rotate} {style}>{event}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)

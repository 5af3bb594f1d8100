"""The documentation: the state diagram follows the code, the site builds, the tutorial runs.

- The diagram and table on the lifecycle page are drawn from
  ``cycleguard._core._state.TRANSITIONS`` by ``docs/_ext/state_diagram.py``;
  the first tests feed it the real table and check that every state and every
  transition comes out, and nothing else.
- One Sphinx build (warnings are errors) into a temporary directory, shared by
  the checks on its pages: the API reference names every public member, the
  lifecycle page every state and event, the changelog page every unreleased
  fragment, and no page loads anything from the network.
- The tutorial's program runs as written against the embedded server, on
  asyncio and on trio, and prints what the tutorial says it prints.
"""

from __future__ import annotations

import enum
import html
import importlib
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio
import pytest
from docs._ext.state_diagram import Diagram, columns, layout, render_svg, transitions

import cycleguard.anthropic
import cycleguard.openai
from cycleguard._core._state import TERMINAL_STATES, TRANSITIONS, LeaseEvent, LeaseState
from cycleguard.server.seed import load_seed
from tests._embedded import provision
from tests.test_public_api import PUBLIC_MODULES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests._embedded import Embedded

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
SVG = "{http://www.w3.org/2000/svg}"

# Every module the API reference documents, beyond the ones test_public_api checks.
DOCUMENTED_MODULES = (
    *PUBLIC_MODULES,
    "cycleguard.metering",
    "cycleguard.testing",
    "cycleguard.server.app",
    "cycleguard.server.clock",
    "cycleguard.server.seed",
    "cycleguard.server.stores",
    "cycleguard.server.stores.memory",
    "cycleguard.server.stores.sqlite",
)

# Re-exports documented once, under another module: what cycleguard.anthropic
# re-exports from cycleguard.openai is documented there.
_SHARED_WITH_OPENAI = tuple(
    name
    for name in cycleguard.anthropic.__all__
    if getattr(cycleguard.openai, name, None) is getattr(cycleguard.anthropic, name)
)
DOCUMENTED_ELSEWHERE = {
    "cycleguard.transports.Timeouts": "cycleguard.Timeouts",
    **{f"cycleguard.anthropic.{name}": f"cycleguard.openai.{name}" for name in _SHARED_WITH_OPENAI},
}


# The diagram follows the transition table ---------------------------------------------


def expected_transitions() -> set[tuple[str, str, str]]:
    return {
        (source.name, event.value, target.name)
        for source, moves in TRANSITIONS.items()
        for event, target in moves.items()
    }


def test_every_transition_of_the_table_is_listed() -> None:
    """The table rows are exactly the table's (state, event) -> state entries."""
    rows = transitions(TRANSITIONS)
    assert {(row.source, row.event, row.target) for row in rows} == expected_transitions()
    assert len(rows) == len(expected_transitions())


def test_layout_places_every_state_and_routes_every_transition() -> None:
    """One box per state, one edge per transition; final states are the table's own."""
    diagram = layout(TRANSITIONS)
    assert set(diagram.states) == {state.name for state in LeaseState}
    assert {box.state for box in diagram.boxes} == set(diagram.states)
    assert {box.state for box in diagram.boxes if box.terminal} == {
        state.name for state in TERMINAL_STATES
    }
    assert [box.state for box in diagram.boxes if box.initial] == [LeaseState.ACTIVE.name]
    drawn = {(e.transition.source, e.transition.event, e.transition.target) for e in diagram.edges}
    assert drawn == expected_transitions()


def test_every_move_points_forward() -> None:
    """Reading left to right follows the lifecycle: a move never leads to an earlier column."""
    diagram = layout(TRANSITIONS)
    for move in diagram.transitions:
        source, target = diagram.box(move.source), diagram.box(move.target)
        if move.source != move.target:
            assert target.column > source.column, move


def test_boxes_do_not_overlap_and_fit_the_canvas() -> None:
    diagram = layout(TRANSITIONS)
    boxes = diagram.boxes
    for index, one in enumerate(boxes):
        assert one.x >= 0
        assert one.y >= 0
        assert one.right <= diagram.width
        assert one.bottom <= diagram.height
        for other in boxes[index + 1 :]:
            apart = (
                one.right <= other.x
                or other.right <= one.x
                or one.bottom <= other.y
                or other.bottom <= one.y
            )
            assert apart, (one.state, other.state)


def svg_of(diagram: Diagram) -> ET.Element:
    return ET.fromstring(render_svg(diagram, title="Reservation states"))


def test_the_svg_draws_every_state_and_labels_every_transition() -> None:
    """The SVG is well-formed; its texts are the states and events, its edges the transitions."""
    root = svg_of(layout(TRANSITIONS))
    texts = ["".join(text.itertext()) for text in root.iter(f"{SVG}text")]
    states = {state.name for state in LeaseState}
    events = {event.value for event in LeaseEvent if any(event in m for m in TRANSITIONS.values())}
    assert states <= set(texts)
    assert events <= set(texts)
    assert set(texts) == states | events
    edges = [path for path in root.iter(f"{SVG}path") if path.get("class") == "edge"]
    drawn = {(p.get("data-source"), p.get("data-event"), p.get("data-target")) for p in edges}
    assert drawn == expected_transitions()
    assert len(edges) == len(expected_transitions())


class Light(enum.Enum):
    RED = "RED"
    GREEN = "GREEN"
    AMBER = "AMBER"
    OFF = "OFF"


class Signal(enum.Enum):
    GO = "go"
    SLOW = "slow"
    STOP = "stop"
    SWITCH_OFF = "switch_off"


def test_a_table_with_a_cycle_still_lays_out() -> None:
    """The layout ends and draws everything even when the table has a cycle and no start."""
    cycle: Mapping[Light, Mapping[Signal, Light]] = {
        Light.RED: {Signal.GO: Light.GREEN},
        Light.GREEN: {Signal.SLOW: Light.AMBER},
        Light.AMBER: {Signal.STOP: Light.RED, Signal.SWITCH_OFF: Light.OFF},
        Light.OFF: {},
    }
    moves = transitions(cycle)
    placed = columns([light.name for light in Light], moves)
    assert set(placed) == {light.name for light in Light}
    assert all(0 <= column < len(Light) for column in placed.values())
    root = svg_of(layout(cycle))
    edges = [path for path in root.iter(f"{SVG}path") if path.get("class") == "edge"]
    assert len(edges) == len(moves) == 4


# The site builds -------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


def page_text(page: Path) -> str:
    """A built page's visible text, tags removed and whitespace collapsed."""
    text = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))
    return " ".join(html.unescape(text).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once for this module with warnings as errors."""
    out = tmp_path_factory.mktemp("docs")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out / "html"


@pytest.mark.parametrize(
    "page",
    [
        "index",
        "why",
        "tutorial",
        "lifecycle",
        "errors",
        "cancellation",
        "heartbeat",
        "settlement",
        "howto/openai",
        "howto/anthropic",
        "howto/streaming",
        "howto/usd-budgets",
        "howto/production",
        "testing",
        "server",
        "rust-async-openai",
        "performance",
        "changelog",
        "api/index",
    ],
)
def test_the_page_is_built(site: Path, page: str) -> None:
    assert (site / f"{page}.html").is_file()


def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    """Each name in a documented module's ``__all__`` has an entry (or its shared one)."""
    anchors: set[str] = set()
    for page in (site / "api").glob("*.html"):
        anchors.update(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    assert "cycleguard.CyclesClient" in anchors
    missing: list[str] = []
    for module_name in DOCUMENTED_MODULES:
        module = importlib.import_module(module_name)
        for name in cast("tuple[str, ...]", module.__all__):
            full = f"{module_name}.{name}"
            if DOCUMENTED_ELSEWHERE.get(full, full) not in anchors:
                missing.append(full)
    assert missing == []


def test_the_lifecycle_page_shows_every_state_and_event(site: Path) -> None:
    page = (site / "lifecycle.html").read_text(encoding="utf-8")
    assert page.count('class="cycleguard-states"') == 1  # the inline SVG
    text = page_text(site / "lifecycle.html")
    for state in LeaseState:
        assert state.name in text
    for source, moves in TRANSITIONS.items():
        for event, target in moves.items():
            assert f"{source.name} {event.value} {target.name}" in text  # a table row


def test_the_changelog_page_shows_every_unreleased_fragment(site: Path) -> None:
    # Compare words only: rendering drops backticks and curls quotes.
    text = " ".join(words(page_text(site / "changelog.html")))
    fragments = [path for path in (ROOT / "changelog.d").glob("*.md") if path.name != "README.md"]
    assert fragments
    for fragment in fragments:
        opening = " ".join(words(fragment.read_text(encoding="utf-8"))[:6])
        assert opening in text, fragment.name


def test_no_page_loads_anything_from_the_network(site: Path) -> None:
    """Scripts, styles, images and fonts are local, so the site works offline."""
    remote = re.compile(r'<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)="(?:https?:)?//')
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text(encoding="utf-8")), page


# The tutorial runs as written ------------------------------------------------------------


def tutorial_blocks(language: str) -> list[str]:
    text = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def promised_output() -> list[str]:
    """The lines the tutorial shows after ``$ python first_call.py``."""
    (run,) = [block for block in tutorial_blocks("console") if "$ python first_call.py" in block]
    return run.split("$ python first_call.py\n", 1)[1].strip().splitlines()


def test_the_tutorial_seed_gives_the_budget_the_program_expects(tmp_path: Path) -> None:
    (toml,) = tutorial_blocks("toml")
    (tmp_path / "seed.toml").write_text(toml)
    seed = load_seed(tmp_path / "seed.toml")
    assert [budget.allocated.amount for budget in seed.budgets] == [10_000]
    assert tomllib.loads(toml)["tenants"][0]["tenant_id"] == "acme"


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_tutorial_program_runs(embedded: Embedded, tmp_path: Path, loop: str) -> None:
    """``first_call.py`` prints the tutorial's lines, and on trio with its one-line change."""
    (program,) = [block for block in tutorial_blocks("python") if "anyio.run(main)" in block]
    if loop == "trio":
        (trio_line,) = [block for block in tutorial_blocks("python") if "backend=" in block]
        program = program.replace("anyio.run(main)\n", trio_line)
        assert 'backend="trio"' in program
    tenant = anyio.run(provision, embedded, {"": 10_000})
    env = {
        **os.environ,
        "CYCLES_BASE_URL": embedded.base_url,
        "CYCLES_API_KEY": tenant.api_key,
        "CYCLES_TENANT": tenant.tenant_id,
        "CYCLES_JOURNAL_DIR": str(tmp_path),
    }
    run = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == promised_output()

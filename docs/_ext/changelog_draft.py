"""Render the unreleased ``changelog.d/`` fragments for the changelog page.

At the start of every build this runs ``towncrier build --draft`` (which
writes nothing and removes nothing) and stores its Markdown under
``docs/_build/generated/``; ``changelog.md`` includes that file. The file
is rewritten only when the draft changed, so Sphinx re-reads the changelog
page exactly when a fragment was added, edited or removed. towncrier runs
offline: it only reads ``pyproject.toml`` and ``changelog.d/``.

A fragment towncrier cannot place (an unknown type, a bad name) makes it
fail, and the build fails with its message, rather than the page silently
leaving the change out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sphinx.errors import ExtensionError

if TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.util.typing import ExtensionMetadata

GENERATED = Path("_build") / "generated" / "changelog-draft.md"
"""Where the draft goes, relative to the docs source directory (git-ignored)."""


def draft(project_root: Path, version: str) -> str:
    """towncrier's draft of the next release's notes, as Markdown."""
    command = [
        sys.executable,
        "-m",
        "towncrier",
        "build",
        "--draft",
        "--version",
        version,
        "--date",
        "unreleased",
        "--dir",
        str(project_root),
    ]
    # A fixed argument list run with this interpreter: no shell, no user input.
    done = subprocess.run(  # noqa: S603
        command, cwd=project_root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ExtensionError(f"towncrier build --draft failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic, so two builds at once (a test and a developer) never see half a file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".draft-", suffix=".md")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    Path(temporary).replace(path)


def _generate(app: Sphinx) -> None:
    source = Path(app.srcdir)
    root = app.config.changelog_project_root or source.parent
    _write_if_changed(source / GENERATED, draft(Path(root), app.config.release))


def setup(app: Sphinx) -> ExtensionMetadata:
    """Generate the draft when the builder starts, before any page is read."""
    # Where pyproject.toml (with [tool.towncrier]) lives; the docs' parent by default.
    app.add_config_value("changelog_project_root", None, "env", types=frozenset({str}))
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

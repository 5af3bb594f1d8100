"""The built wheel ships ``py.typed`` and gives users fully typed code."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("cycleguard-*.whl")
    return wheel


def test_wheel_is_typed_and_consumer_sees_no_any(tmp_path: Path) -> None:
    """py.typed is in the wheel, and a strict consumer gets no Any from the wheel's code."""
    wheel = build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "cycleguard/py.typed" in names
        assert not any(name.startswith("tests/") for name in names)
        archive.extractall(tmp_path / "site")
    # Installed packages are analysed silently by mypy; MYPYPATH needs saying so.
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\ndisallow_any_expr = True\n"
        "[mypy-cycleguard.*]\nfollow_imports = silent\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(ROOT / "tests" / "typing" / "consumer.py"),
        ],
        env={**os.environ, "MYPYPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The installed distribution's version, read once."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


@functools.cache
def package_version() -> str:
    """The version of the installed ``cycleguard`` distribution."""
    try:
        return version("cycleguard")
    except PackageNotFoundError:
        return "0+unknown"


def user_agent() -> str:
    """The ``User-Agent`` this library sends."""
    return f"cycleguard/{package_version()}"

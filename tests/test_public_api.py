"""The public surface: complete ``__all__`` tuples, final value classes, a real version."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from typing import cast

import attrs
import pytest

import cycleguard

PUBLIC_MODULES = (
    "cycleguard",
    "cycleguard.errors",
    "cycleguard.admin",
    "cycleguard.transports",
    "cycleguard.transports.h11",
    "cycleguard.transports.httpx",
    "cycleguard.transports.httpx2",
    "cycleguard.transports.aiohttp",
    "cycleguard.transports.asgi",
    "cycleguard.transports.mock",
    "cycleguard.openai",
    "cycleguard.anthropic",
)
REEXPORTING_MODULES = ("cycleguard", "cycleguard.errors", "cycleguard.transports")


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_a_tuple_naming_every_public_member(name: str) -> None:
    """Everything public is exported, and everything exported exists."""
    module = importlib.import_module(name)
    exported = cast("tuple[str, ...]", module.__all__)
    assert isinstance(exported, tuple)
    assert len(set(exported)) == len(exported)
    assert all(hasattr(module, member) for member in exported)
    if name in REEXPORTING_MODULES:
        # A facade: every public name it holds is a re-export.
        public = {
            member
            for member, value in vars(module).items()
            if not member.startswith("_")
            and not inspect.ismodule(value)
            and member != "annotations"
        }
    else:
        # An implementation module: what it defines itself must be exported.
        public = {
            member
            for member, value in vars(module).items()
            if not member.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == name
        }
        assert public <= set(exported)
        return
    assert public == set(exported)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_value_classes_are_final(name: str) -> None:
    """Value types, error variants and transports are @final: use them, never extend them."""
    module = importlib.import_module(name)
    names = cast("tuple[str, ...]", module.__all__)
    classes = [getattr(module, m) for m in names if inspect.isclass(getattr(module, m))]
    value_classes = [
        cls
        for cls in classes
        if attrs.has(cls)
        or (cls.__name__.endswith("Transport") and not getattr(cls, "_is_protocol", False))
    ]
    for cls in value_classes:
        assert getattr(cls, "__final__", False), f"{cls.__name__} is not @final"


def test_version_matches_the_distribution() -> None:
    """__version__ is the installed distribution's version."""
    assert cycleguard.__version__ == version("cycleguard")

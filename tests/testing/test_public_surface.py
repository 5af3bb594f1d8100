"""``cycleguard.metering`` and ``cycleguard.testing``: complete ``__all__``, final value classes."""

from __future__ import annotations

import importlib
import inspect
from typing import cast

import attrs
import pytest

MODULES = ("cycleguard.metering", "cycleguard.testing")


@pytest.mark.parametrize("name", MODULES)
def test_all_names_every_public_member(name: str) -> None:
    module = importlib.import_module(name)
    exported = cast("tuple[str, ...]", module.__all__)
    assert isinstance(exported, tuple)
    assert len(set(exported)) == len(exported)
    public = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_") and not inspect.ismodule(value) and member != "annotations"
    }
    assert public == set(exported)


@pytest.mark.parametrize("name", MODULES)
def test_value_classes_are_final(name: str) -> None:
    module = importlib.import_module(name)
    classes = [
        getattr(module, member)
        for member in cast("tuple[str, ...]", module.__all__)
        if inspect.isclass(getattr(module, member))
    ]
    value_classes = [cls for cls in classes if attrs.has(cls)]
    assert value_classes
    for cls in value_classes:
        assert getattr(cls, "__final__", False), f"{cls.__name__} is not @final"

"""JSON value types shared by the wire models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    JsonValue: TypeAlias = (
        "Mapping[str, JsonValue] | Sequence[JsonValue] | str | int | float | bool | None"
    )
    JsonObject: TypeAlias = Mapping[str, JsonValue]
else:
    # attrs and cattrs evaluate field annotations at run time, where a recursive
    # alias cannot be resolved; at run time the alias only has to be a stable,
    # comparable object for the codec's hook lookup.
    JsonValue = object
    JsonObject = Mapping[str, object]

MAX_INT64 = 2**63 - 1

__all__ = ("MAX_INT64", "JsonObject", "JsonValue")

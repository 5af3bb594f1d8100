"""Small, fully typed helpers over ``returns`` results."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from returns.pipeline import is_successful
from returns.result import Failure, Result

if TYPE_CHECKING:
    from collections.abc import Callable

A = TypeVar("A")
B = TypeVar("B")
E = TypeVar("E")


def and_then(result: Result[A, E], step: Callable[[A], Result[B, E]]) -> Result[B, E]:
    """Run ``step`` on a success; pass a failure through unchanged.

    (``Result.bind`` does the same, but its higher-kinded signature reads as
    partly unknown to pyright.)

    >>> from returns.result import Success
    >>> and_then(Success(2), lambda n: Success(n * 10))
    <Success: 20>
    """
    if is_successful(result):
        return step(result.unwrap())
    return Failure(result.failure())

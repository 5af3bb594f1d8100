"""Scope derivation: a subject's canonical scope path and its cumulative prefixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cycleguard._core._models import Subject


def scope_segments(subject: Subject) -> tuple[str, ...]:
    """``level:value`` segments in canonical order, values lower-cased, gaps skipped.

    >>> from cycleguard import Subject
    >>> scope_segments(Subject(tenant="Acme", workflow="refund"))
    ('tenant:acme', 'workflow:refund')
    """
    return tuple(f"{level}:{value.lower()}" for level, value in subject.levels())


def affected_scopes(subject: Subject) -> tuple[str, ...]:
    """Every cumulative prefix of the subject's scope path, root first.

    >>> from cycleguard import Subject
    >>> affected_scopes(Subject(tenant="acme", app="bot", workflow="refund"))
    ('tenant:acme', 'tenant:acme/app:bot', 'tenant:acme/app:bot/workflow:refund')
    """
    segments = scope_segments(subject)
    return tuple("/".join(segments[: i + 1]) for i in range(len(segments)))


def scope_path(subject: Subject) -> str:
    """The leaf scope: the full canonical path of the subject.

    >>> from cycleguard import Subject
    >>> scope_path(Subject(tenant="acme", agent="bot"))
    'tenant:acme/agent:bot'
    """
    return "/".join(scope_segments(subject))


def leaf_segment(path: str) -> str:
    """The last ``level:value`` segment of a scope path.

    >>> leaf_segment("tenant:acme/agent:bot")
    'agent:bot'
    """
    return path.rsplit("/", 1)[-1]

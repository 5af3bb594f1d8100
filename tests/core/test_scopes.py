"""Scope derivation: canonical order, gaps skipped, values lower-cased."""

from __future__ import annotations

from cycleguard import Subject
from cycleguard._core._scopes import affected_scopes, leaf_segment, scope_path


def test_canonical_order_and_gaps() -> None:
    """Fields are ordered tenant → toolset whatever the caller set; unset levels vanish."""
    subject = Subject(toolset="Tools", tenant="Acme", workflow="refund")
    assert affected_scopes(subject) == (
        "tenant:acme",
        "tenant:acme/workflow:refund",
        "tenant:acme/workflow:refund/toolset:tools",
    )
    assert scope_path(subject) == "tenant:acme/workflow:refund/toolset:tools"


def test_dimensions_are_not_scopes() -> None:
    """Dimensions do not take part in scope derivation."""
    assert affected_scopes(Subject(agent="a", dimensions={"run": "1"})) == ("agent:a",)


def test_leaf_segment() -> None:
    """The balance ``scope`` is the last segment of the path."""
    assert leaf_segment("tenant:a/agent:b") == "agent:b"
    assert leaf_segment("tenant:a") == "tenant:a"

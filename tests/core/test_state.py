"""The reservation transition table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cycleguard._core._errors import UsageError
from cycleguard._core._state import (
    TERMINAL_STATES,
    TRANSITIONS,
    LeaseEvent,
    LeaseState,
    can_transition,
    next_state,
)


def test_terminal_states() -> None:
    """Committed, rejected, released and expired reservations accept nothing more."""
    terminal = {LeaseState.COMMITTED, LeaseState.REJECTED, LeaseState.RELEASED, LeaseState.EXPIRED}
    assert frozenset(terminal) == TERMINAL_STATES


def test_active_moves() -> None:
    """An active reservation can be extended, committed, released or expire."""
    assert next_state(LeaseState.ACTIVE, LeaseEvent.EXTEND) is LeaseState.ACTIVE
    assert next_state(LeaseState.ACTIVE, LeaseEvent.COMMIT) is LeaseState.COMMITTED
    assert next_state(LeaseState.ACTIVE, LeaseEvent.RELEASE) is LeaseState.RELEASED
    assert next_state(LeaseState.ACTIVE, LeaseEvent.EXPIRE) is LeaseState.EXPIRED


def test_pending_commit_never_releases() -> None:
    """Once a commit is in flight the spend is known: it can settle, never be released."""
    assert not can_transition(LeaseState.COMMIT_PENDING, LeaseEvent.RELEASE)
    assert (
        next_state(LeaseState.COMMIT_PENDING, LeaseEvent.COMMIT_CONFIRMED) is LeaseState.COMMITTED
    )


@given(state=st.sampled_from(LeaseState), event=st.sampled_from(LeaseEvent))
def test_every_pair_is_legal_or_a_usage_error(state: LeaseState, event: LeaseEvent) -> None:
    """next_state agrees with can_transition for every (state, event) pair."""
    if can_transition(state, event):
        assert next_state(state, event) in TRANSITIONS
    else:
        with pytest.raises(UsageError):
            next_state(state, event)

"""The reservation state machine: every legal transition lives in this table.

Server side (what the ledger stores)::

    ACTIVE --commit--> COMMITTED
    ACTIVE --release--> RELEASED
    ACTIVE --expire--> EXPIRED
    ACTIVE --extend--> ACTIVE

The client lease adds two states of its own: a commit whose outcome is not yet
known (sent, journaled, awaiting an answer) is ``COMMIT_PENDING``; it can only
settle as committed, never be released. A commit the server refused for good
ends in ``REJECTED``: nothing more is sent and the server's expiry returns the
hold (the work already ran, so the lease never releases it).

Both the server ledger and the client lease ask :func:`next_state`; the docs'
state diagram is drawn from :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from cycleguard._core._errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping


class LeaseState(enum.Enum):
    """States of a reservation as the client lease and the server ledger see it."""

    ACTIVE = "ACTIVE"
    COMMIT_PENDING = "COMMIT_PENDING"
    COMMITTED = "COMMITTED"
    REJECTED = "REJECTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class LeaseEvent(enum.Enum):
    """What can happen to a reservation."""

    EXTEND = "extend"
    COMMIT = "commit"
    COMMIT_SENT = "commit_sent"
    COMMIT_CONFIRMED = "commit_confirmed"
    COMMIT_REJECTED = "commit_rejected"
    RELEASE = "release"
    EXPIRE = "expire"


TRANSITIONS: Mapping[LeaseState, Mapping[LeaseEvent, LeaseState]] = {
    LeaseState.ACTIVE: {
        LeaseEvent.EXTEND: LeaseState.ACTIVE,
        LeaseEvent.COMMIT: LeaseState.COMMITTED,
        LeaseEvent.COMMIT_SENT: LeaseState.COMMIT_PENDING,
        LeaseEvent.RELEASE: LeaseState.RELEASED,
        LeaseEvent.EXPIRE: LeaseState.EXPIRED,
    },
    LeaseState.COMMIT_PENDING: {
        LeaseEvent.COMMIT_CONFIRMED: LeaseState.COMMITTED,
        LeaseEvent.COMMIT_REJECTED: LeaseState.REJECTED,
    },
    LeaseState.COMMITTED: {},
    LeaseState.REJECTED: {},
    LeaseState.RELEASED: {},
    LeaseState.EXPIRED: {},
}

TERMINAL_STATES = frozenset(state for state, moves in TRANSITIONS.items() if not moves)


def can_transition(state: LeaseState, event: LeaseEvent) -> bool:
    """Whether ``event`` is legal in ``state``.

    >>> can_transition(LeaseState.ACTIVE, LeaseEvent.COMMIT)
    True
    >>> can_transition(LeaseState.COMMITTED, LeaseEvent.RELEASE)
    False
    """
    return event in TRANSITIONS[state]


def next_state(state: LeaseState, event: LeaseEvent) -> LeaseState:
    """The state after ``event``; an illegal move is a programming error.

    Callers that must answer an illegal move with a value (the server's 409,
    the lease's refused second finalisation) check :func:`can_transition` first.
    """
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise UsageError(f"{event.value} is not allowed in state {state.value}") from None

"""A user's module: everything it gets from cycleguard has a precise type (no ``Any``).

``tests/test_packaging.py`` type-checks this file against the built wheel with
``mypy --strict --disallow-any-expr``.
"""

from __future__ import annotations

from returns.pipeline import is_successful

from cycleguard import Action, Amount, ClientConfig, CyclesClient, Subject
from cycleguard.errors import BudgetExceeded, CyclesError, is_retryable, retry_after
from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.mock import MockTransport


def answer(request: HttpRequest) -> HttpResponse:
    """A canned grant."""
    return HttpResponse(200, (), b"{}" if request.method else b"")


async def spend(tokens: int) -> str:
    """Reserve, commit and report, the way the README shows."""
    config = ClientConfig(base_url="http://127.0.0.1:7878", api_key="k")
    async with CyclesClient(config, transport=MockTransport(answer)) as cycles:
        reserved = await cycles.create_reservation(
            subject=Subject(tenant="acme"),
            action=Action("llm.completion", "m"),
            estimate=Amount.tokens(tokens),
        )
        if not is_successful(reserved):
            error: CyclesError = reserved.failure()
            wait = retry_after(error)
            if isinstance(error, BudgetExceeded):
                return f"{error.message} {error.request_id}"
            return f"retry={is_retryable(error)} after={wait}"
        reservation = reserved.unwrap()
        committed = await cycles.commit_reservation(
            reservation.reservation_id, Amount.tokens(tokens // 2)
        )
        if is_successful(committed):
            return str(committed.unwrap().charged.amount)
        return committed.failure().__class__.__name__

"""The exception table helper every transport uses: lookup order and secret removal."""

from __future__ import annotations

from typing import Final

import pytest

from cycleguard.errors import ConnectionFailed, TimedOut
from cycleguard.transports import HttpRequest
from cycleguard.transports._mapping import (
    ExceptionMap,
    connection_failed,
    invalid_response,
    redact_secrets,
    timed_out,
)

PLAIN: Final = HttpRequest("GET", "http://cycles.test/")


@pytest.mark.parametrize("reverse", [False, True])
def test_most_specific_entry_wins_whatever_the_order(reverse: bool) -> None:
    """ConnectionRefusedError finds its own entry before OSError's, in either order."""
    entries = [
        (OSError, connection_failed("os error", request_sent=True)),
        (ConnectionRefusedError, connection_failed("refused", request_sent=False)),
        (TimeoutError, timed_out("connect", "slow")),
    ]
    table = ExceptionMap(dict(reversed(entries) if reverse else entries))
    refused = table.failure(ConnectionRefusedError(111, "Connection refused"), PLAIN)
    assert refused == ConnectionFailed(
        message="refused (ConnectionRefusedError: [Errno 111] Connection refused)",
        request_sent=False,
    )
    # No entry of its own: the nearest base class in the MRO decides.
    reset = table.failure(ConnectionResetError(104, "reset"), PLAIN)
    assert reset == ConnectionFailed(
        message="os error (ConnectionResetError: [Errno 104] reset)", request_sent=True
    )
    assert table.failure(TimeoutError(), PLAIN) == TimedOut(
        phase="connect", message="slow (TimeoutError)"
    )
    assert set(table.types) == {OSError, ConnectionRefusedError, TimeoutError}


def test_an_exception_outside_the_table_is_raised_again() -> None:
    """Only listed types are translated; anything else is not ours to turn into a value."""
    table = ExceptionMap({OSError: invalid_response("bad")})
    with pytest.raises(KeyError):
        table.failure(KeyError("x"), PLAIN)


def test_library_detail_can_be_left_out() -> None:
    """detail=False keeps the library's text (which may quote our headers) out."""
    table = ExceptionMap(
        {ValueError: connection_failed("cannot encode", request_sent=False, detail=False)}
    )
    failure = table.failure(ValueError("Illegal header value b'hunter2'"), PLAIN)
    assert failure.message == "cannot encode (ValueError)"


def test_secret_header_values_are_redacted() -> None:
    """API keys and bearer tokens vanish from messages; other header values stay."""
    request = HttpRequest(
        "GET",
        "http://cycles.test/",
        (
            ("x-cycles-api-key", "cyc_live_tenant_key"),
            ("X-Admin-API-Key", "admin-key-0001"),
            ("Authorization", "Bearer tok_abcdefgh"),
            ("X-Request-Id", "req-visible"),
        ),
    )
    message = (
        "saw cyc_live_tenant_key, admin-key-0001, 'Bearer tok_abcdefgh',"
        " tok_abcdefgh alone, and req-visible"
    )
    assert redact_secrets(message, request) == (
        "saw <redacted>, <redacted>, '<redacted>', <redacted> alone, and req-visible"
    )


def test_redaction_applies_to_every_table_lookup() -> None:
    """ExceptionMap.failure redacts whatever the factory produced."""
    request = HttpRequest("GET", "http://cycles.test/", (("X-Cycles-API-Key", "sk-abcdef123"),))
    table = ExceptionMap({OSError: connection_failed("broke", request_sent=True)})
    failure = table.failure(OSError("peer echoed sk-abcdef123"), request)
    assert failure.message == "broke (OSError: peer echoed <redacted>)"

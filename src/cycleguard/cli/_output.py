"""What the admin commands print: rich tables for people, JSON for scripts, one-line errors.

Tables go to stdout through a :class:`rich.console.Console`, which takes its
width from ``COLUMNS`` (80 on a pipe) and adds no colour off a terminal. Cell
values are plain :class:`rich.text.Text`, so data that looks like rich markup
prints as it is. Errors are one line on stderr and never carry a key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cycleguard._core._errors import (
    BudgetClosed,
    BudgetExceeded,
    BudgetFrozen,
    ConnectionFailed,
    DebtOutstanding,
    Denied,
    Forbidden,
    IdempotencyMismatch,
    InternalError,
    InvalidRequest,
    InvalidResponse,
    LimitExceeded,
    MaxExtensionsExceeded,
    NotFound,
    OverdraftLimitExceeded,
    ReservationExpired,
    ReservationFinalized,
    TenantClosed,
    TimedOut,
    TransportUnavailable,
    Unauthorized,
    UnitMismatch,
    UnknownServerError,
    ValidationFailed,
)
from cycleguard.server.clock import format_ms

if TYPE_CHECKING:
    from cycleguard._core._errors import CyclesError
    from cycleguard._core._json import JsonObject, JsonValue

Columns = Sequence[tuple[str, str]]
"""A table's columns: (header, field of each row)."""


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False)


def fail(message: str) -> int:
    """Print ``cycleguard: error: <message>`` on stderr; the exit status 1."""
    print(f"cycleguard: error: {message}", file=sys.stderr)
    return 1


def print_json(document: JsonObject) -> None:
    """The document as indented JSON on stdout, for scripts."""
    print(json.dumps(document, indent=2))


def print_note(text: str) -> None:
    """One line of prose on stdout, under a table."""
    _console().print(Text(text))


def cell(field: str, value: JsonValue | None) -> Text:
    """One value as a table shows it.

    Amounts read ``<amount> <unit>``, ``*_at_ms`` times are RFC 3339, lists are
    comma-separated, flat objects are ``key=value`` pairs.

    >>> str(cell("allocated", {"unit": "TOKENS", "amount": 5}))
    '5 TOKENS'
    >>> str(cell("expires_at_ms", 0)), str(cell("subject", {"tenant": "acme", "agent": "bot"}))
    ('1970-01-01T00:00:00.000Z', 'tenant=acme, agent=bot')
    >>> str(cell("caps", {"max_tokens": 64, "tool_denylist": ["shell", "web"]}))
    'max_tokens=64, tool_denylist=[shell, web]'
    """
    return Text(_text(field, value))


def _text(field: str, value: JsonValue | None) -> str:
    match value:
        case None:
            return ""
        case bool():
            return "true" if value else "false"
        case int() if field.endswith("_at_ms"):
            return format_ms(value)
        case str() | int() | float():
            return str(value)
        case Mapping() if set(value) == {"unit", "amount"}:
            return f"{value['amount']} {value['unit']}"
        case Mapping() if all(_is_flat(v) for v in value.values()):
            return ", ".join(f"{name}={_nested(name, v)}" for name, v in value.items())
        case Sequence() if _is_flat(value):
            return ", ".join(_text(field, v) for v in value)
        case _:
            return json.dumps(value, separators=(",", ":"))


def _is_flat(value: JsonValue) -> bool:
    """A scalar, or a list of scalars."""
    if isinstance(value, list):
        return not any(isinstance(v, Mapping | list) for v in value)
    return not isinstance(value, Mapping)


def _nested(field: str, value: JsonValue) -> str:
    text = _text(field, value)
    return f"[{text}]" if isinstance(value, list) else text


def print_record(document: JsonObject, title: str) -> None:
    """Every field of one object, a row each."""
    table = Table(title=title, title_justify="left")
    table.add_column("field", overflow="fold")
    table.add_column("value", overflow="fold")
    for field, value in document.items():
        table.add_row(Text(field), cell(field, value))
    _console().print(table)


def _is_amount(value: JsonValue | None) -> bool:
    return isinstance(value, Mapping) and set(value) == {"unit", "amount"}


def _row_cell(row: Mapping[str, JsonValue], field: str) -> Text:
    """A list cell: amounts as bare numbers, their unit in the row's ``unit`` column."""
    value = row.get(field)
    if field == "unit" and value is None:
        value = next(
            (v["unit"] for v in row.values() if isinstance(v, Mapping) and _is_amount(v)), None
        )
    if isinstance(value, Mapping) and _is_amount(value):
        amount = value["amount"]
        return Text(f"{amount:,}" if isinstance(amount, int) else str(amount))
    return cell(field, value)


def print_rows(rows: Sequence[JsonValue], columns: Columns, title: str) -> None:
    """One row per object of ``rows``, the fields ``columns`` name.

    A column whose field is ``unit`` shows the row's unit (or that of its
    amounts), and amounts show as bare numbers, so rows stay one line wide.
    """
    table = Table(title=title, title_justify="left")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        if isinstance(row, Mapping):
            table.add_row(*(_row_cell(row, field) for _, field in columns))
    _console().print(table)


def print_page(document: JsonObject, rows_field: str, columns: Columns, title: str) -> None:
    """A list answer: its rows, then how to ask for the next page if there is one."""
    rows = document.get(rows_field)
    print_rows(rows if isinstance(rows, list) else [], columns, title)
    cursor = document.get("next_cursor")
    if document.get("has_more") and isinstance(cursor, str):
        print_note(f"more: repeat with --cursor {cursor}")


def print_changes(document: JsonObject, fields: Sequence[str], title: str) -> None:
    """``previous_<field>`` against ``new_<field>``, a row each."""
    table = Table(title=title, title_justify="left")
    for header in ("field", "before", "after"):
        table.add_column(header, overflow="fold")
    for field in fields:
        before, after = document.get(f"previous_{field}"), document.get(f"new_{field}")
        table.add_row(Text(field), cell(field, before), cell(field, after))
    _console().print(table)


def _refusal(status: int, code: str, message: str, credential: str) -> str:
    match status:
        case 401:
            return f"the server refused the {credential}: {message}"
        case 400 | 422:
            return f"the server rejected the request: {message}"
        case 403:
            return f"forbidden: {message}"
        case 404:
            return f"not found: {message}"
        case _:
            return f"{code} (HTTP {status}): {message}"


def describe_error(error: CyclesError, *, base_url: str, credential: str) -> str:
    """One line saying what went wrong, for a person; ``credential`` names the key sent."""
    match error:
        case ConnectionFailed(message=message):
            return f"cannot reach {base_url}: {message}"
        case TimedOut(phase=phase, message=message):
            return f"{base_url} did not answer in time ({phase} timeout): {message}"
        case TransportUnavailable(message=message):
            return f"cannot send to {base_url}: {message}"
        case InvalidResponse(message=message):
            return f"{base_url} answered something that is not a Cycles response: {message}"
        case ValidationFailed():
            return f"invalid request: {error.message}"
        case Denied(reason_code=reason):
            return f"denied: {reason or 'no reason given'}"
        case UnknownServerError(status=status, error_code=code, message=message):
            return _refusal(status, code, message, credential)
        case (
            InvalidRequest()
            | Unauthorized()
            | Forbidden()
            | NotFound()
            | BudgetExceeded()
            | BudgetFrozen()
            | BudgetClosed()
            | ReservationExpired()
            | ReservationFinalized()
            | IdempotencyMismatch()
            | UnitMismatch()
            | OverdraftLimitExceeded()
            | DebtOutstanding()
            | MaxExtensionsExceeded()
            | LimitExceeded()
            | TenantClosed()
            | InternalError()
        ):
            return _refusal(error.status, error.code.value, error.message, credential)

"""Query strings of the list endpoints: parsing, filtering, sorting and cursors.

Pure functions over plain values. Unknown parameters are ignored (the spec's
additive-parameter rule); blank values count as absent. Cursors are opaque
to clients: URL-safe base64 of the last row's sort key plus a fingerprint of
the filters, so a cursor reused with different filters is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Generic, TypeVar, cast, final

import attrs

from cycleguard._core._errors import ErrorCode
from cycleguard._core._models import SUBJECT_LEVELS, SortBy, SortDirection
from cycleguard._core._state import LeaseState
from cycleguard._core._validation import LIST_LIMIT_RANGE
from cycleguard.server.clock import parse_datetime_ms
from cycleguard.server.records import Rejection, ReservationRecord, rejection

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = (
    "BalanceQuery",
    "Page",
    "ReservationQuery",
    "paginate",
    "parse_balance_query",
    "parse_limit",
    "parse_reservation_query",
    "reservation_sort_key",
)

T = TypeVar("T")
SortValue = tuple[int | str, str]

DEFAULT_LIMIT = 50


def _invalid(message: str) -> Rejection:
    return rejection(ErrorCode.INVALID_REQUEST, message)


def _value(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def parse_limit(
    params: Mapping[str, str], *, bounds: tuple[int, int] = LIST_LIMIT_RANGE
) -> int | Rejection:
    """``limit`` within ``bounds`` (default 50)."""
    text = _value(params, "limit")
    if text is None:
        return DEFAULT_LIMIT
    low, high = bounds
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        return _invalid(f"limit must be an integer between {low} and {high}, got {text!r}")
    return int(text)


def _subject_filters(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (level, value.lower())
        for level in SUBJECT_LEVELS
        if (value := _value(params, level)) is not None
    )


@final
@attrs.frozen(kw_only=True)
class BalanceQuery:
    """``GET /v1/balances``: subject filters (lower-cased), page size and cursor."""

    filters: tuple[tuple[str, str], ...]
    tenant: str | None
    limit: int
    cursor: str | None


def parse_balance_query(params: Mapping[str, str]) -> BalanceQuery | Rejection:
    """At least one subject filter is required."""
    filters = _subject_filters(params)
    if not filters:
        return _invalid(
            "at least one subject filter is required (tenant, workspace, app, workflow, "
            "agent or toolset)"
        )
    limit = parse_limit(params)
    if isinstance(limit, Rejection):
        return limit
    return BalanceQuery(
        filters=filters,
        tenant=_value(params, "tenant"),
        limit=limit,
        cursor=_value(params, "cursor"),
    )


Window = tuple[int | None, int | None]


@final
@attrs.frozen(kw_only=True)
class ReservationQuery:
    """``GET /v1/reservations``: filters, windows, sort, projection, page."""

    status: LeaseState | None = None
    filters: tuple[tuple[str, str], ...] = ()
    tenant: str | None = None
    idempotency_key: str | None = None
    created: Window = (None, None)
    expires: Window = (None, None)
    finalized: Window = (None, None)
    sort_by: SortBy = SortBy.CREATED_AT_MS
    sort_dir: SortDirection = SortDirection.DESC
    include: frozenset[str] = frozenset()
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    def fingerprint(self) -> str:
        """What a cursor binds: every filter, window and the sort order."""
        bound = {
            "status": self.status.value if self.status else None,
            "filters": self.filters,
            "tenant": self.tenant,
            "idempotency_key": self.idempotency_key,
            "windows": (self.created, self.expires, self.finalized),
            "sort": (self.sort_by.value, self.sort_dir.value),
        }
        text = json.dumps(bound, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, reservation: ReservationRecord, state: LeaseState) -> bool:
        """Whether a reservation (seen in ``state``) passes every filter."""
        if self.status is not None and state is not self.status:
            return False
        if self.idempotency_key is not None and reservation.idempotency_key != (
            self.idempotency_key
        ):
            return False
        subject = reservation.subject
        for level, value in self.filters:
            actual = getattr(subject, level)
            if not isinstance(actual, str) or actual.lower() != value:
                return False
        return (
            _within(self.created, reservation.created_at_ms)
            and _within(self.expires, reservation.expires_at_ms)
            and (
                self.finalized == (None, None)
                or (
                    reservation.finalized_at_ms is not None
                    and _within(self.finalized, reservation.finalized_at_ms)
                )
            )
        )


def _within(window: Window, value: int) -> bool:
    low, high = window
    return (low is None or value >= low) and (high is None or value <= high)


def _window(params: Mapping[str, str], low: str, high: str) -> Window | Rejection:
    bounds: list[int | None] = []
    for name in (low, high):
        text = _value(params, name)
        if text is None:
            bounds.append(None)
            continue
        parsed = parse_datetime_ms(text)
        if parsed is None:
            return _invalid(f"{name} must be an RFC 3339 date-time, got {text!r}")
        bounds.append(parsed)
    start, end = bounds
    if start is not None and end is not None and start > end:
        return _invalid(f"{low} must not be after {high}")
    return start, end


def parse_reservation_query(params: Mapping[str, str]) -> ReservationQuery | Rejection:
    """Parse and check the list parameters; unknown ones are ignored."""
    status_text = _value(params, "status")
    status: LeaseState | None = None
    if status_text is not None:
        if status_text not in {"ACTIVE", "COMMITTED", "RELEASED", "EXPIRED"}:
            return _invalid(
                f"status must be ACTIVE, COMMITTED, RELEASED or EXPIRED, got {status_text!r}"
            )
        status = LeaseState(status_text)
    windows: list[Window] = []
    for low, high in (
        ("from", "to"),
        ("expires_from", "expires_to"),
        ("finalized_from", "finalized_to"),
    ):
        window = _window(params, low, high)
        if isinstance(window, Rejection):
            return window
        windows.append(window)
    sort_text = _value(params, "sort_by")
    dir_text = _value(params, "sort_dir")
    try:
        sort_by = SortBy(sort_text) if sort_text is not None else SortBy.CREATED_AT_MS
    except ValueError:
        return _invalid(
            f"sort_by must be one of {', '.join(s.value for s in SortBy)}, got {sort_text!r}"
        )
    try:
        sort_dir = SortDirection(dir_text) if dir_text is not None else SortDirection.DESC
    except ValueError:
        return _invalid(f"sort_dir must be asc or desc, got {dir_text!r}")
    limit = parse_limit(params)
    if isinstance(limit, Rejection):
        return limit
    include_text = _value(params, "include") or ""
    return ReservationQuery(
        status=status,
        filters=tuple((k, v) for k, v in _subject_filters(params) if k != "tenant"),
        tenant=_value(params, "tenant"),
        idempotency_key=_value(params, "idempotency_key"),
        created=windows[0],
        expires=windows[1],
        finalized=windows[2],
        sort_by=sort_by,
        sort_dir=sort_dir,
        include=frozenset(token.strip() for token in include_text.split(",") if token.strip()),
        limit=limit,
        cursor=_value(params, "cursor"),
    )


_STATE_SORT: Mapping[LeaseState, str] = {state: state.value for state in LeaseState}


def reservation_sort_key(
    sort_by: SortBy, reservation: ReservationRecord, state: LeaseState
) -> SortValue:
    """The sort value of a row, with the reservation id as tie-breaker."""
    value: int | str
    match sort_by:
        case SortBy.RESERVATION_ID:
            value = reservation.reservation_id
        case SortBy.TENANT:
            value = reservation.tenant_id
        case SortBy.SCOPE_PATH:
            value = reservation.scope_path
        case SortBy.STATUS:
            value = _STATE_SORT[state]
        case SortBy.RESERVED:
            value = reservation.estimate.amount
        case SortBy.CREATED_AT_MS:
            value = reservation.created_at_ms
        case SortBy.EXPIRES_AT_MS:
            value = reservation.expires_at_ms
    return value, reservation.reservation_id


@final
@attrs.frozen
class Page(Generic[T]):
    """One page of rows and the cursor of the next, if there is more."""

    rows: tuple[T, ...]
    next_cursor: str | None


def _encode_cursor(key: SortValue, fingerprint: str) -> str:
    text = json.dumps({"k": list(key), "f": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> SortValue | Rejection:
    bad = _invalid("cursor is not valid for this query")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        return bad
    if not isinstance(data, dict):
        return bad
    fields = cast("dict[str, object]", data)
    key = fields.get("k")
    if fields.get("f") != fingerprint or not isinstance(key, list):
        return bad
    parts = cast("list[object]", key)
    if len(parts) != 2:
        return bad
    value, tie = parts
    if not isinstance(value, int | str) or not isinstance(tie, str):
        return bad
    return value, tie


def paginate(
    rows: Sequence[T],
    *,
    key: Callable[[T], SortValue],
    descending: bool,
    limit: int,
    cursor: str | None,
    fingerprint: str,
) -> Page[T] | Rejection:
    """Sort ``rows`` by ``key`` and cut the page after ``cursor``."""
    ordered = sorted(rows, key=key, reverse=descending)
    if cursor is not None:
        after = _decode_cursor(cursor, fingerprint)
        if isinstance(after, Rejection):
            return after
        try:
            ordered = [
                row for row in ordered if (key(row) < after if descending else key(row) > after)
            ]
        except TypeError:
            return _invalid("cursor is not valid for this query")
    page = ordered[:limit]
    more = len(ordered) > limit
    next_cursor = _encode_cursor(key(page[-1]), fingerprint) if more and page else None
    return Page(tuple(page), next_cursor)

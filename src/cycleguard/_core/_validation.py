"""Protocol rules a request must satisfy before it is sent (or, on the server, accepted).

Each check returns the issues it finds; an empty tuple means the request is
valid. Nothing here raises for bad data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import TypeAlias

from cycleguard._core._errors import ValidationIssue
from cycleguard._core._json import MAX_INT64, JsonObject
from cycleguard._core._models import (
    Action,
    Amount,
    CommitRequest,
    DecisionRequest,
    EventCreateRequest,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationExtendRequest,
    StandardMetrics,
    Subject,
)

TTL_MS_RANGE = (1_000, 86_400_000)
GRACE_MS_RANGE = (0, 60_000)
EXTEND_MS_RANGE = (1, 86_400_000)
LIST_LIMIT_RANGE = (1, 200)
IDEMPOTENCY_KEY_MAX = 256
RESERVATION_ID_MAX = 128
SUBJECT_FIELD_MAX = 128
DIMENSION_VALUE_MAX = 256
MAX_DIMENSIONS = 16
ACTION_KIND_MAX = 64
ACTION_NAME_MAX = 256
ACTION_TAG_MAX = 64
MAX_ACTION_TAGS = 10
REASON_MAX = 256
MODEL_VERSION_MAX = 128

SUBJECT_VALUE_PATTERN = re.compile(r"[a-zA-Z0-9_.-]+")
DIMENSION_KEY_PATTERN = re.compile(r"[a-z0-9_.-]+")

Request: TypeAlias = (
    DecisionRequest
    | ReservationCreateRequest
    | CommitRequest
    | ReleaseRequest
    | ReservationExtendRequest
    | EventCreateRequest
)
_Issues = Iterator[ValidationIssue]


def _int_in(field: str, value: object, low: int, high: int) -> _Issues:
    if type(value) is not int:
        yield ValidationIssue(field, "must be an integer")
    elif not low <= value <= high:
        yield ValidationIssue(field, f"must be between {low} and {high}, got {value}")


def _text(field: str, value: object, max_length: int, *, min_length: int = 0) -> _Issues:
    if type(value) is not str:
        yield ValidationIssue(field, "must be a string")
    elif not min_length <= len(value) <= max_length:
        yield ValidationIssue(
            field, f"length must be between {min_length} and {max_length}, got {len(value)}"
        )


def idempotency_key_issues(key: object, field: str = "idempotency_key") -> _Issues:
    """The key must be 1 to 256 characters."""
    yield from _text(field, key, IDEMPOTENCY_KEY_MAX, min_length=1)


def reservation_id_issues(reservation_id: object) -> tuple[ValidationIssue, ...]:
    """A reservation id path parameter must be 1 to 128 characters."""
    return tuple(_text("reservation_id", reservation_id, RESERVATION_ID_MAX, min_length=1))


def amount_issues(field: str, amount: object) -> _Issues:
    """An amount is a known unit and a whole number in 0..2**63-1."""
    if not isinstance(amount, Amount):
        yield ValidationIssue(field, "must be an Amount")
        return
    yield from _int_in(f"{field}.amount", amount.amount, 0, MAX_INT64)


def subject_issues(subject: object, field: str = "subject") -> _Issues:
    """At least one standard field; values within length and pattern; at most 16 dimensions."""
    if not isinstance(subject, Subject):
        yield ValidationIssue(field, "must be a Subject")
        return
    standard = {
        "tenant": subject.tenant,
        "workspace": subject.workspace,
        "app": subject.app,
        "workflow": subject.workflow,
        "agent": subject.agent,
        "toolset": subject.toolset,
    }
    if all(value is None for value in standard.values()):
        yield ValidationIssue(
            field, "needs at least one of tenant, workspace, app, workflow, agent, toolset"
        )
    for level, value in standard.items():
        if value is None:
            continue
        issues = list(_text(f"{field}.{level}", value, SUBJECT_FIELD_MAX, min_length=1))
        yield from issues
        if not issues and not SUBJECT_VALUE_PATTERN.fullmatch(str(value)):
            yield ValidationIssue(f"{field}.{level}", "may only contain letters, digits, _ . -")
    yield from _dimension_issues(f"{field}.dimensions", subject.dimensions)


def _dimension_issues(field: str, dimensions: Mapping[str, str] | None) -> _Issues:
    if dimensions is None:
        return
    if len(dimensions) > MAX_DIMENSIONS:
        yield ValidationIssue(field, f"at most {MAX_DIMENSIONS} entries, got {len(dimensions)}")
    for key, value in dimensions.items():
        if type(key) is not str or not DIMENSION_KEY_PATTERN.fullmatch(key):
            yield ValidationIssue(field, f"key {key!r} must be lower-case letters, digits, _ . -")
        yield from _text(f"{field}.{key}", value, DIMENSION_VALUE_MAX)


def action_issues(action: object, field: str = "action") -> _Issues:
    """``kind`` up to 64 characters, ``name`` up to 256, at most 10 tags of up to 64."""
    if not isinstance(action, Action):
        yield ValidationIssue(field, "must be an Action")
        return
    yield from _text(f"{field}.kind", action.kind, ACTION_KIND_MAX, min_length=1)
    yield from _text(f"{field}.name", action.name, ACTION_NAME_MAX, min_length=1)
    if action.tags is not None:
        if len(action.tags) > MAX_ACTION_TAGS:
            yield ValidationIssue(f"{field}.tags", f"at most {MAX_ACTION_TAGS} tags")
        for index, tag in enumerate(action.tags):
            yield from _text(f"{field}.tags[{index}]", tag, ACTION_TAG_MAX)


def metrics_issues(metrics: StandardMetrics | None, field: str = "metrics") -> _Issues:
    """Counts are whole numbers >= 0; ``model_version`` up to 128 characters."""
    if metrics is None:
        return
    for name in ("tokens_input", "tokens_output", "latency_ms"):
        value = getattr(metrics, name)
        if value is not None:
            yield from _int_in(f"{field}.{name}", value, 0, MAX_INT64)
    if metrics.model_version is not None:
        yield from _text(f"{field}.model_version", metrics.model_version, MODEL_VERSION_MAX)
    yield from json_object_issues(f"{field}.custom", metrics.custom)


# ``json.dumps`` with an option builds an encoder per call; this one has the same settings.
_JSON_CHECK = json.JSONEncoder(allow_nan=False)


def json_object_issues(field: str, value: JsonObject | None) -> _Issues:
    """Free-form objects must be JSON-serialisable with string keys."""
    if value is None:
        return
    try:
        _JSON_CHECK.encode(value)
    except (TypeError, ValueError) as error:
        yield ValidationIssue(field, f"is not JSON-serialisable: {error}")


def _optional_int(field: str, value: int | None, bounds: tuple[int, int]) -> _Issues:
    if value is not None:
        yield from _int_in(field, value, *bounds)


def _request_issues(request: Request) -> _Issues:
    yield from idempotency_key_issues(request.idempotency_key)
    match request:
        case DecisionRequest():
            yield from subject_issues(request.subject)
            yield from action_issues(request.action)
            yield from amount_issues("estimate", request.estimate)
            yield from json_object_issues("metadata", request.metadata)
        case ReservationCreateRequest():
            yield from subject_issues(request.subject)
            yield from action_issues(request.action)
            yield from amount_issues("estimate", request.estimate)
            yield from _optional_int("ttl_ms", request.ttl_ms, TTL_MS_RANGE)
            yield from _optional_int("grace_period_ms", request.grace_period_ms, GRACE_MS_RANGE)
            yield from json_object_issues("metadata", request.metadata)
        case CommitRequest():
            yield from amount_issues("actual", request.actual)
            yield from metrics_issues(request.metrics)
            yield from json_object_issues("metadata", request.metadata)
        case ReleaseRequest():
            if request.reason is not None:
                yield from _text("reason", request.reason, REASON_MAX)
        case ReservationExtendRequest():
            yield from _int_in("extend_by_ms", request.extend_by_ms, *EXTEND_MS_RANGE)
            yield from json_object_issues("metadata", request.metadata)
        case EventCreateRequest():
            yield from subject_issues(request.subject)
            yield from action_issues(request.action)
            yield from amount_issues("actual", request.actual)
            yield from metrics_issues(request.metrics)
            yield from _optional_int("client_time_ms", request.client_time_ms, (0, MAX_INT64))
            yield from json_object_issues("metadata", request.metadata)


def validate(request: Request) -> tuple[ValidationIssue, ...]:
    """Every protocol rule ``request`` breaks; empty when it is valid.

    >>> from cycleguard._core._models import Amount
    >>> validate(ReservationExtendRequest(idempotency_key="k", extend_by_ms=0))
    (ValidationIssue(field='extend_by_ms', message='must be between 1 and 86400000, got 0'),)
    """
    return tuple(_request_issues(request))


def list_limit_issues(limit: int | None) -> tuple[ValidationIssue, ...]:
    """A page size must be 1 to 200."""
    return tuple(_optional_int("limit", limit, LIST_LIMIT_RANGE))

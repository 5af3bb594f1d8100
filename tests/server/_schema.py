"""Every response the server emits, checked against the spec's schema-only extract.

Maps a request (method, path) to its operation in ``tests/spec/*.schemas.json``
(runtime plane first; the admin plane for ``/v1/admin/*`` and introspection)
and validates the body for the response status with :mod:`tests._spec`. A
status the operation does not declare is an error too. Hook
:func:`validate_response` into an ``httpx.AsyncClient`` and no test can get a
nonconformant body past it.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, cast

from tests._spec import Plane, operations, response_errors, schema_errors

if TYPE_CHECKING:
    import httpx

TRACE_ID = re.compile(r"[0-9a-f]{32}")


@functools.cache
def _routes() -> list[tuple[str, re.Pattern[str], Plane, str]]:
    routes: list[tuple[str, re.Pattern[str], Plane, str]] = []
    planes: tuple[Plane, ...] = ("runtime", "admin")
    for plane in planes:
        for key, op in operations(plane).items():
            operation_id, method = key.split(":")
            template = str(op["path"])
            pattern = re.compile(re.sub(r"\{[^/]+\}", "[^/]+", template))
            routes.append((method.upper(), pattern, plane, operation_id))
    return routes


def find_operation(method: str, path: str) -> tuple[Plane, str] | None:
    """The (plane, operationId) serving ``method path``; runtime wins on shared paths."""
    for route_method, pattern, plane, operation_id in _routes():
        if route_method == method.upper() and pattern.fullmatch(path):
            return plane, operation_id
    return None


def response_problems(method: str, path: str, status: int, body: object) -> list[str]:
    """Why this response breaks the spec; empty when it conforms."""
    found = find_operation(method, path)
    if found is None:
        if status in {404, 405}:
            return schema_errors("runtime", "ErrorResponse", body)
        return [f"{method} {path} is no operation of the spec"]
    plane, operation_id = found
    declared = operations(plane)[f"{operation_id}:{method.lower()}"]
    responses = cast("dict[str, object]", declared["responses"])
    if str(status) not in responses:
        return [f"{operation_id} does not declare status {status}"]
    if responses[str(status)] is None:
        return schema_errors(plane, "ErrorResponse", body)
    return response_errors(plane, operation_id, method, status, body)


async def validate_response(response: httpx.Response) -> None:
    """httpx response hook: the body must fit the spec and carry the correlation headers."""
    await response.aread()
    request = response.request
    body: object = json.loads(response.content)
    problems = response_problems(request.method, request.url.path, response.status_code, body)
    assert not problems, (
        f"{request.method} {request.url.path} -> {response.status_code}: {problems}"
    )
    trace_id = response.headers.get("x-cycles-trace-id", "")
    request_id = response.headers.get("x-request-id", "")
    assert TRACE_ID.fullmatch(trace_id), "X-Cycles-Trace-Id must be on every response"
    assert request_id, "X-Request-Id must be on every response"
    if response.status_code >= 400:
        envelope = body
        assert isinstance(envelope, dict)
        assert envelope["trace_id"] == trace_id
        assert envelope["request_id"] == request_id

"""Validate wire bodies against the committed schema-only extract of the Cycles spec.

``tests/spec/*.schemas.json`` is produced by ``scripts/extract_spec.py`` from the
official OpenAPI files; this module turns it into ``jsonschema`` validators.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Literal, cast

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012, Schema, SchemaRegistry

SPEC_DIR = Path(__file__).parent / "spec"
Plane = Literal["runtime", "admin"]


@functools.cache
def extract(plane: Plane) -> dict[str, object]:
    """The parsed extract of one plane."""
    return cast("dict[str, object]", json.loads((SPEC_DIR / f"{plane}.schemas.json").read_text()))


@functools.cache
def _registry(plane: Plane) -> SchemaRegistry:
    document: Schema = {"components": {"schemas": extract(plane)["schemas"]}}
    resource = referencing.Resource.from_contents(document, default_specification=DRAFT202012)
    registry: SchemaRegistry = referencing.Registry()
    registered: SchemaRegistry = registry.with_resource(f"urn:cycles:{plane}", resource)
    return registered


def _validator(plane: Plane, schema: object) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        cast("dict[str, object]", schema),
        registry=_registry(plane),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _messages(validator: jsonschema.Draft202012Validator, body: object) -> list[str]:
    # jsonschema's stubs type instances as a private JSON alias; bodies here come from json.loads.
    instance = cast("dict[str, str]", body)
    errors = validator.iter_errors(instance)  # pyright: ignore[reportUnknownMemberType]
    return [str(error.message) for error in errors]


def _rebase(schema: object, plane: Plane) -> object:
    """Point the extract's local ``#/components`` references at the registered resource."""
    text = json.dumps(schema).replace('"#/components/', f'"urn:cycles:{plane}#/components/')
    return json.loads(text)


def schema_errors(plane: Plane, schema_name: str, body: object) -> list[str]:
    """Every way ``body`` breaks component schema ``schema_name``; empty when valid."""
    schema = {"$ref": f"urn:cycles:{plane}#/components/schemas/{schema_name}"}
    return _messages(_validator(plane, schema), body)


def operations(plane: Plane) -> dict[str, dict[str, object]]:
    """Every operation of a plane, keyed ``operationId:method``."""
    return cast("dict[str, dict[str, object]]", extract(plane)["operations"])


def operation(plane: Plane, operation_id: str, method: str) -> dict[str, object]:
    """The extract's entry for one operation."""
    return operations(plane)[f"{operation_id}:{method.lower()}"]


def request_errors(plane: Plane, operation_id: str, method: str, body: object) -> list[str]:
    """Every way ``body`` breaks the operation's request schema."""
    schema = operation(plane, operation_id, method)["request"]
    assert schema is not None, f"{operation_id} takes no JSON body"
    return _messages(_validator(plane, _rebase(schema, plane)), body)


def response_errors(
    plane: Plane, operation_id: str, method: str, status: int, body: object
) -> list[str]:
    """Every way ``body`` breaks the operation's response schema for ``status``."""
    responses = cast("dict[str, object]", operation(plane, operation_id, method)["responses"])
    assert str(status) in responses, f"{operation_id} declares no {status} response"
    schema = responses[str(status)]
    assert schema is not None, f"{operation_id} {status} has no JSON body"
    return _messages(_validator(plane, _rebase(schema, plane)), body)


def parameters(plane: Plane, operation_id: str, method: str) -> dict[str, dict[str, object]]:
    """The operation's parameters by name, ``$ref`` entries resolved."""
    shared = cast("dict[str, dict[str, object]]", extract(plane)["parameters"])
    declared = cast("list[dict[str, object]]", operation(plane, operation_id, method)["parameters"])
    resolved: dict[str, dict[str, object]] = {}
    for entry in declared:
        ref = entry.get("$ref")
        param = shared[str(ref).rsplit("/", 1)[-1]] if isinstance(ref, str) else entry
        resolved[str(param["name"])] = param
    return resolved


def parameter_errors(
    plane: Plane, operation_id: str, method: str, name: str, raw: str
) -> list[str]:
    """Whether query value ``raw`` fits the declared parameter (integers and booleans parsed)."""
    declared = parameters(plane, operation_id, method)
    if name not in declared:
        return [f"{name} is not a parameter of {operation_id}"]
    schema = _rebase(declared[name].get("schema", {}), plane)
    value: object = raw
    kind = cast("dict[str, object]", schema).get("type")
    if kind == "integer" and raw.lstrip("-").isdigit():
        value = int(raw)
    elif kind == "boolean" and raw in {"true", "false"}:
        value = raw == "true"
    elif kind == "array":  # style form, explode false: comma-separated
        value = raw.split(",")
    return _messages(_validator(plane, schema), value)

"""Build the schema-only extract of the Cycles OpenAPI files that the tests use.

The extract keeps what a machine needs to check wire bodies (component schemas,
parameters and, per operation, the request and response schema references) and
drops every human-readable part (descriptions, summaries, examples). Response
examples are data, not prose; they go to a separate file so contract tests can
decode them.

Run from the repository root with the shared spec beside the checkout::

    uv run python scripts/extract_spec.py ../shared/spec

The outputs are committed under ``tests/spec/`` so the tests run without
``../shared``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TypeAlias, cast

import yaml

SOURCES = {
    "runtime": "cycles-protocol-v0.yaml",
    "admin": "cycles-governance-admin-v0.1.25.yaml",
}
PROSE_KEYS = frozenset({"description", "summary", "example", "examples", "externalDocs", "title"})
HTTP_METHODS = ("get", "post", "put", "patch", "delete")

Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | None"


def strip_prose(node: Json) -> Json:
    """Return ``node`` without the keys that carry prose or samples."""
    if isinstance(node, dict):
        return {k: strip_prose(v) for k, v in node.items() if k not in PROSE_KEYS}
    if isinstance(node, list):
        return [strip_prose(item) for item in node]
    return node


def _json_schema_of(content: Json) -> Json:
    if not isinstance(content, dict):
        return None
    media = content.get("application/json")
    if isinstance(media, dict):
        return strip_prose(media.get("schema"))
    return None


def _resolve_response(spec: dict[str, Json], response: dict[str, Json]) -> dict[str, Json]:
    """Follow a ``#/components/responses/...`` reference to the response it names."""
    ref = response.get("$ref")
    if not isinstance(ref, str):
        return response
    node: Json = spec
    for part in ref.removeprefix("#/").split("/"):
        node = cast("dict[str, Json]", node)[part]
    return cast("dict[str, Json]", node)


def operations(spec: dict[str, Json]) -> dict[str, Json]:
    """Map each operationId to its method, path, parameters and body schemas."""
    found: dict[str, Json] = {}
    paths = cast("dict[str, dict[str, Json]]", spec["paths"])
    for path, item in sorted(paths.items()):
        shared_params = item.get("parameters", [])
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            body = op.get("requestBody")
            request = _json_schema_of(body.get("content")) if isinstance(body, dict) else None
            responses = cast("dict[str, dict[str, Json]]", op.get("responses", {}))
            found[cast("str", op["operationId"]) + ":" + method] = {
                "operation_id": op["operationId"],
                "method": method.upper(),
                "path": path,
                "parameters": strip_prose(
                    cast("list[Json]", shared_params) + cast("list[Json]", op.get("parameters", []))
                ),
                "request": request,
                "responses": {
                    status: _json_schema_of(_resolve_response(spec, resp).get("content"))
                    for status, resp in sorted(responses.items())
                },
            }
    return found


def response_examples(spec: dict[str, Json]) -> dict[str, Json]:
    """Collect ``example`` values of component schemas (wire samples, no prose)."""
    schemas = cast(
        "dict[str, dict[str, Json]]", cast("dict[str, Json]", spec["components"])["schemas"]
    )
    return {name: s["example"] for name, s in sorted(schemas.items()) if "example" in s}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: extract_spec.py SPEC_DIR", file=sys.stderr)
        return 2
    spec_dir = Path(argv[1])
    out_dir = Path(__file__).resolve().parent.parent / "tests" / "spec"
    out_dir.mkdir(parents=True, exist_ok=True)
    examples: dict[str, Json] = {}
    for plane, filename in SOURCES.items():
        spec = cast("dict[str, Json]", yaml.safe_load((spec_dir / filename).read_text("utf-8")))
        info = cast("dict[str, Json]", spec["info"])
        components = cast("dict[str, Json]", spec["components"])
        extract: dict[str, Json] = {
            "source": filename,
            "version": info["version"],
            "schemas": strip_prose(components.get("schemas", {})),
            "parameters": strip_prose(components.get("parameters", {})),
            "operations": operations(spec),
        }
        target = out_dir / f"{plane}.schemas.json"
        target.write_text(json.dumps(extract, indent=1, sort_keys=True) + "\n", "utf-8")
        examples[plane] = response_examples(spec)
        print(f"wrote {target.relative_to(out_dir.parent.parent)}")
    (out_dir / "examples.json").write_text(json.dumps(examples, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

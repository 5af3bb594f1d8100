"""The server's shared JSON encoders write exactly what the stdlib encoder writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cycleguard.server.records import canonical_json, compact_json

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_compact_json_matches_the_stdlib_encoder(value: object) -> None:
    assert compact_json(value) == _COMPACT.encode(value)


@given(json_values)
def test_canonical_json_matches_the_stdlib_encoder_with_sorted_keys(value: object) -> None:
    assert canonical_json(value) == _CANONICAL.encode(value)


def test_non_ascii_text_is_written_as_is_and_control_characters_escaped() -> None:
    assert compact_json({"é": "r🚀\n"}) == '{"é":"r🚀\\n"}'
    assert canonical_json({"b": 1, "a": [True, None]}) == '{"a":[true,null],"b":1}'

"""The server's shared JSON encoders and reader agree with the stdlib's, number for number."""

from __future__ import annotations

import json
import math
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cycleguard.server.records import JsonText, canonical_json, compact_json, read_json

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _values(numbers: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | numbers | st.text(),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=30,
    )


int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
without_floats = _values(int64)
with_floats = _values(int64 | finite_floats)
any_integers = _values(st.integers() | finite_floats)


def _permuted(value: object) -> object:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        items = cast("dict[str, object]", value).items()
        return {key: _permuted(item) for key, item in reversed(list(items))}
    if isinstance(value, list):
        return [_permuted(item) for item in cast("list[object]", value)]
    return value


@given(without_floats)
def test_without_floats_the_text_is_the_stdlib_encoders(value: object) -> None:
    assert compact_json(value) == _COMPACT.encode(value)
    assert canonical_json(value) == _CANONICAL.encode(value)


@given(any_integers)
def test_every_value_reads_back_equal(value: object) -> None:
    assert json.loads(compact_json(value)) == value
    assert json.loads(canonical_json(value)) == value
    assert read_json(compact_json(value).encode()) == value


@given(with_floats)
def test_canonical_text_does_not_depend_on_key_order(value: object) -> None:
    assert canonical_json(_permuted(value)) == canonical_json(value)


@given(any_integers)
def test_reading_agrees_with_the_stdlib_reader(value: object) -> None:
    text = _COMPACT.encode(value).encode()
    assert read_json(text) == json.loads(text)


def test_some_floats_are_written_in_another_form_of_the_same_number() -> None:
    floats = [1e16, 1e-05, 1e-07, 0.1, -0.0, 2.5]
    assert _COMPACT.encode(floats) == "[1e+16,1e-05,1e-07,0.1,-0.0,2.5]"
    assert compact_json(floats) == "[1e+16,0.00001,1e-7,0.1,-0.0,2.5]"


def test_what_orjson_refuses_the_stdlib_encoder_writes() -> None:
    beyond_64_bits = {"n": 2**64, "m": -(2**63) - 1}
    assert compact_json(beyond_64_bits) == _COMPACT.encode(beyond_64_bits)
    lone_surrogate = {"s": "\ud800"}
    assert compact_json(lone_surrogate) == _COMPACT.encode(lone_surrogate)


def test_non_ascii_text_is_written_as_is_and_control_characters_escaped() -> None:
    assert compact_json({"é": "r🚀\n\x1f"}) == '{"é":"r🚀\\n\\u001f"}'
    assert canonical_json({"b": 1, "a": [True, None]}) == '{"a":[true,null],"b":1}'


def test_long_integers_are_read_exactly() -> None:
    assert read_json(b'{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }
    assert read_json(b'[18446744073709551616, "12345678901234567890123"]') == [
        2**64,
        "12345678901234567890123",
    ]


LONG = b"123456789012345678901"


@pytest.mark.parametrize(
    "text",
    [
        b"NaN",
        b"[Infinity]",
        b"[-Infinity]",
        b"[1e400]",
        b"\xef\xbb\xbf{}",
        b"{",
        b"[\xff]",
        b"",
        b"[NaN, " + LONG + b"]",
        b"[Infinity, " + LONG + b"]",
        b"[1e400, " + LONG + b"]",
        b"\xef\xbb\xbf[" + LONG + b"]",
        b"[" + LONG,
        b"[\xff, " + LONG + b"]",
        b'["\\ud800"]',
        b'["\\ud800", ' + LONG + b"]",
    ],
)
def test_what_is_not_strict_json_is_refused(text: bytes) -> None:
    with pytest.raises(ValueError):
        read_json(text)


def test_a_float_that_overflows_is_refused_not_infinite() -> None:
    with pytest.raises(ValueError, match="out of range"):
        read_json(b"[1e400, 123456789012345678901]")
    assert not math.isinf(cast("float", read_json(b"1e308")))


def test_json_text_is_written_as_the_object_it_holds_by_either_encoder() -> None:
    held = JsonText('{"status":"COMMITTED","n":1}')
    assert compact_json({"a": 1, "answer": held}) == '{"a":1,"answer":{"status":"COMMITTED","n":1}}'
    beyond_64_bits = {"n": 2**64, "answer": held}
    assert (
        compact_json(beyond_64_bits)
        == '{"n":18446744073709551616,"answer":{"status":"COMMITTED","n":1}}'
    )
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_json({"n": 2**64, "x": object()})

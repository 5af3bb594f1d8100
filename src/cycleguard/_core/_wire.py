"""The JSON codec: frozen values to wire bytes and back, strictly typed.

Decoding is a tolerant reader: unknown response fields are ignored and the open
sets (``reason_code``, reservation ``status``) map unknown strings to explicit
``Unknown…`` values. It is strict about types: no ``1 -> "1"``, no ``True -> 1``,
no ``1.0 -> 1``. Encoding writes only the spec's fields and omits unset
(``None``) optionals.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception
from returns.result import Failure, Result, Success

from cycleguard._core._json import MAX_INT64, JsonObject
from cycleguard._core._models import (
    Amount,
    ReasonCode,
    ReservationStatus,
    ResponseMeta,
    SignedAmount,
    Unit,
    UnknownReasonCode,
    UnknownReservationStatus,
)

T = TypeVar("T")

MIN_INT64 = -(2**63)

# cattrs hooks are dynamically typed by nature; ``Any`` stays inside this module.
_Hook = Callable[[Any, Any], Any]
_UnstructureHook = Callable[[Any], Any]


class WireError(ValueError):
    """A body that does not decode to the expected schema."""


def _strict_int(value: object, _: object) -> int:
    if type(value) is not int:
        raise WireError(f"expected an integer, got {type(value).__name__}")
    if not MIN_INT64 <= value <= MAX_INT64:
        raise WireError(f"integer {value} is outside int64")
    return value


def _strict_str(value: object, _: object) -> str:
    if type(value) is not str:
        raise WireError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_bool(value: object, _: object) -> bool:
    if type(value) is not bool:
        raise WireError(f"expected a boolean, got {type(value).__name__}")
    return value


def _json_object(value: object, _: object) -> JsonObject:
    if not isinstance(value, dict):
        raise WireError(f"expected an object, got {type(value).__name__}")
    return typing.cast("JsonObject", value)


def _amount_hook(*, strict: bool) -> Callable[[object, object], Amount]:
    def structure_amount(value: object, _: object) -> Amount:
        unit, amount = _unit_and_int(value, strict=strict)
        if amount < 0:
            raise WireError(f"amount {amount} is negative")
        return Amount(unit, amount)

    return structure_amount


def _signed_amount_hook(*, strict: bool) -> Callable[[object, object], SignedAmount]:
    def structure_signed_amount(value: object, _: object) -> SignedAmount:
        unit, amount = _unit_and_int(value, strict=strict)
        return SignedAmount(unit, amount)

    return structure_signed_amount


_UNITS: dict[object, Unit] = {unit.value: unit for unit in Unit}
_AMOUNT_KEYS = frozenset({"unit", "amount"})


def _unit_and_int(value: object, *, strict: bool = False) -> tuple[Unit, int]:
    if not isinstance(value, dict):
        raise WireError("expected an amount object")
    fields = typing.cast("dict[str, object]", value)
    if strict:
        extra = fields.keys() - _AMOUNT_KEYS
        if extra:
            raise WireError(f"extra fields found ({', '.join(sorted(extra))})")
    try:
        raw_unit = fields["unit"]
        # A dict lookup, not Unit(...): amounts are the most frequent value on the wire.
        unit = _UNITS.get(raw_unit) if type(raw_unit) is str else None
        if unit is None:
            unit = Unit(_strict_str(raw_unit, None))  # raises, naming what is wrong
        amount = _strict_int(fields["amount"], None)
    except KeyError as missing:
        raise WireError(f"amount lacks {missing}") from None
    except ValueError as bad:
        raise WireError(f"bad amount: {bad}") from None
    return unit, amount


def _open_enum(known: type[enum.Enum], unknown: type[Any]) -> _Hook:
    def structure(value: object, _: object) -> object:
        text = _strict_str(value, None)
        try:
            return known(text)
        except ValueError:
            return unknown(text)

    return structure


def _is_union_of(*members: type[Any]) -> Callable[[Any], bool]:
    wanted = set(members)

    def predicate(tp: Any) -> bool:
        origin = typing.get_origin(tp)
        if origin is not typing.Union and origin is not types.UnionType:
            return False
        args = set(typing.get_args(tp)) - {type(None)}
        return args == wanted

    return predicate


def _is_optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return (origin is typing.Union or origin is types.UnionType) and type(None) in typing.get_args(
        tp
    )


def _optional_inner(tp: Any) -> Any:
    """The annotation an optional one wraps: ``int`` for ``int | None``."""
    members = tuple(arg for arg in typing.get_args(tp) if arg is not type(None))
    return members[0] if len(members) == 1 else typing.Union[members]  # noqa: UP007


def _is_enum(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_str_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) is Mapping and typing.get_args(tp) == (str, str)


def _build_converter(*, forbid_extra_keys: bool) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)

    def structure_attrs_factory(cls: type[Any]) -> _Hook:
        generated = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=forbid_extra_keys)

        def structure_object(value: object, tp: object) -> object:
            # cattrs reads attrs classes with ``.get``/``[]``; without this check an
            # empty list would quietly become an object with every default.
            if not isinstance(value, dict):
                raise WireError(f"expected an object, got {type(value).__name__}")
            return generated(typing.cast("dict[str, object]", value), tp)

        return structure_object

    conv.register_structure_hook_factory(attrs.has, structure_attrs_factory)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    # Amount objects are read by hand, so the strict reader checks their keys itself.
    strict = forbid_extra_keys
    conv.register_structure_hook(Amount, _amount_hook(strict=strict))
    # ``meta`` is never read from the wire: the decoder puts the exchange's own
    # ResponseMeta there, and anything a server sent under that name is dropped.
    conv.register_structure_hook(
        ResponseMeta, lambda value, _: value if isinstance(value, ResponseMeta) else None
    )
    conv.register_structure_hook(SignedAmount, _signed_amount_hook(strict=strict))
    conv.register_structure_hook_func(lambda tp: tp == JsonObject, _json_object)

    for known, unknown in (
        (ReasonCode, UnknownReasonCode),
        (ReservationStatus, UnknownReservationStatus),
    ):
        conv.register_structure_hook_func(_is_union_of(known, unknown), _open_enum(known, unknown))
        conv.register_unstructure_hook(unknown, lambda u: u.value)

    # cattrs hands hook factories the annotation itself, which is typed as Any.
    def optional_factory(tp: Any) -> _Hook:
        # An optional field may be absent (the generated code then uses the default
        # and never calls this); an explicit JSON null is not schema-valid. The inner
        # hook is looked up once per type, not per value.
        inner = _optional_inner(tp)
        inner_hook = conv.get_structure_hook(inner)

        def structure_optional(value: object, _: object) -> object:
            if value is None:
                raise WireError("null is not allowed; omit the field instead")
            structured: object = inner_hook(value, inner)
            return structured

        return structure_optional

    conv.register_structure_hook_factory(_is_optional, optional_factory)

    def tuple_factory(tp: Any) -> _Hook:
        item_type = typing.get_args(tp)[0]
        item_hook = conv.get_structure_hook(item_type)  # looked up once per type

        def structure_tuple(value: object, _: object) -> tuple[object, ...]:
            if not isinstance(value, list):
                raise WireError(f"expected an array, got {type(value).__name__}")
            items = typing.cast("list[object]", value)
            return tuple([item_hook(item, item_type) for item in items])

        return structure_tuple

    conv.register_structure_hook_factory(_is_homogeneous_tuple, tuple_factory)

    def structure_str_mapping(value: object, _: object) -> Mapping[str, str]:
        if not isinstance(value, dict):
            raise WireError(f"expected an object, got {type(value).__name__}")
        items = typing.cast("dict[object, object]", value).items()
        return {_strict_str(k, None): _strict_str(v, None) for k, v in items}

    conv.register_structure_hook_func(_is_str_mapping, structure_str_mapping)

    def unstructure_optional_factory(tp: Any) -> _UnstructureHook:
        # Where the value needs no conversion (int | None, str | None, ...) the hook
        # is ``identity`` itself, which the generated unstructure code inlines.
        inner_hook = conv.get_unstructure_hook(_optional_inner(tp))
        if inner_hook is identity:
            return identity

        def unstructure_optional(value: object) -> object:
            return None if value is None else inner_hook(value)

        return unstructure_optional

    conv.register_unstructure_hook_factory(_is_optional, unstructure_optional_factory)

    def unstructure_enum_factory(cls: type[enum.Enum]) -> _UnstructureHook:
        # A dict lookup, not ``member.value`` (a Python-level property on every call).
        return {member: member.value for member in cls}.__getitem__

    conv.register_unstructure_hook_factory(_is_enum, unstructure_enum_factory)

    def unstructure_factory(cls: type[Any]) -> _UnstructureHook:
        if "meta" in attrs.fields_dict(cls):
            return make_dict_unstructure_fn(
                cls, conv, _cattrs_omit_if_default=True, meta=override(omit=True)
            )
        return make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=True)

    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


LENIENT = _build_converter(forbid_extra_keys=False)
"""Reads responses: unknown fields are ignored."""

STRICT = _build_converter(forbid_extra_keys=True)
"""Reads requests on the server: unknown fields are an error."""


# json.dumps builds a new encoder per call when given options; one shared instance is cheaper.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def to_wire(value: object) -> dict[str, Any]:
    """Unstructure an attrs value to plain JSON-ready data, omitting unset optionals."""
    return typing.cast("dict[str, Any]", LENIENT.unstructure(value))


def encode(value: object) -> bytes:
    """Serialise an attrs value to compact UTF-8 JSON.

    >>> encode(Amount.tokens(5))
    b'{"unit":"TOKENS","amount":5}'
    """
    return _ENCODER.encode(to_wire(value)).encode("utf-8")


def _format_exception(error: BaseException, expected: type[Any] | None) -> str:
    if isinstance(error, WireError):
        return str(error)
    return format_exception(error, expected)


def describe(error: BaseException) -> str:
    """A one-line account of a decoding failure, naming the failing path where known."""
    if isinstance(error, cattrs.BaseValidationError):
        notes = cattrs.transform_error(error, format_exception=_format_exception)
        return "; ".join(notes) if notes else str(error)
    return str(error)


def _not_json(error: ValueError) -> str:
    return f"body is not JSON: {error}"


def parse_json(body: bytes) -> Result[object, str]:
    """Parse bytes as JSON, as a value; never raises."""
    try:
        return Success(json.loads(body))
    except ValueError as error:  # UnicodeDecodeError included
        return Failure(_not_json(error))


def structure(
    data: object,
    cls: type[T],
    *,
    converter: cattrs.Converter = LENIENT,
    meta: ResponseMeta | None = None,
) -> Result[T, str]:
    """Structure parsed JSON into ``cls``; failure carries a readable reason.

    ``meta``, when given, fills the response's ``meta`` field (cheaper than
    rebuilding the frozen value afterwards).
    """
    if not isinstance(data, dict):
        return Failure(f"expected a JSON object, got {type(data).__name__}")
    if meta is not None:
        typing.cast("dict[str, object]", data)["meta"] = meta
    try:
        return Success(converter.structure(data, cls))
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as error:
        return Failure(describe(error))


def decode(
    body: bytes,
    cls: type[T],
    *,
    converter: cattrs.Converter = LENIENT,
    meta: ResponseMeta | None = None,
) -> Result[T, str]:
    """Parse and structure ``body`` into ``cls``; never raises."""
    try:
        data: object = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError included
        return Failure(_not_json(error))
    return structure(data, cls, converter=converter, meta=meta)

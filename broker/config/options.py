"""Strict validation of plugin option tables into attrs classes (cattrs underneath).

TOML already gives typed values; this only refuses what does not fit, without
cattrs' usual leniency (a string is not a list of characters, 5 is not "5").
"""

from collections.abc import Mapping
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .schema import TYPE_NAMES

T = TypeVar("T")


def _kind_of(value: Any) -> str:
    """What a value is, never what it says: options hold secrets, and errors are logged."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return TYPE_NAMES[kind]
    if isinstance(value, list):
        return "a list"
    return "a table" if isinstance(value, Mapping) else type(value).__name__


def _describe(kind: Any) -> str:
    if kind in TYPE_NAMES:
        return TYPE_NAMES[kind]
    if get_origin(kind) is list:
        return "a list"
    return "a table" if get_origin(kind) in (dict, Mapping) else str(kind)


class OptionsError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _scalar_hook(kind: type) -> Any:
    def structure(value: Any, _: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"must be {TYPE_NAMES[kind]}, got {_kind_of(value)}")
        return value

    return structure


def _type_checked(inner: Any, kind: type, name: str) -> Any:
    """``inner``, which would accept any iterable or mapping, for ``kind`` only."""

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"must be {name}, got {_kind_of(value)}")
        return inner(value, type_)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, _scalar_hook(kind))

    def is_list(cls: Any) -> bool:
        return get_origin(cls) is list

    def list_hook(cls: Any) -> Any:
        return _type_checked(list_structure_factory(cls, converter), list, "a list")

    def is_mapping(cls: Any) -> bool:
        return get_origin(cls) in (dict, Mapping)

    def mapping_hook(cls: Any) -> Any:
        return _type_checked(converter.gen_structure_mapping(cls), Mapping, "a table")

    def is_plain_union(cls: Any) -> bool:
        members = get_args(cls) if get_origin(cls) in (Union, UnionType) else ()
        return len([m for m in members if m is not type(None)]) > 1 and not any(
            attrs.has(m) for m in members
        )

    def union_hook(cls: Any) -> Any:
        members = get_args(cls)

        def structure(value: Any, _: Any) -> Any:
            if value is None and type(None) in members:
                return None
            for member in members:
                if member is type(None):
                    continue
                try:
                    return converter.structure(value, member)
                except Exception:  # this member does not fit: try the next
                    continue
            names = " or ".join(_describe(m) for m in members if m is not type(None))
            raise TypeError(f"must be {names}, got {_kind_of(value)}")

        return structure

    converter.register_structure_hook_factory(is_list, list_hook)
    converter.register_structure_hook_factory(is_mapping, mapping_hook)
    converter.register_structure_hook_factory(is_plain_union, union_hook)
    return converter


_converter = _make_converter()


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required option missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown option(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, TypeError | ValueError):
        # attrs validators put the message first and their details after it.
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        return message or "invalid value"
    return f"invalid value ({type(exc).__name__})"


def structure_options(table: Mapping[str, Any], cls: type[T], path: str) -> T:
    """``table`` as an instance of the attrs class ``cls``; OptionsError lists every problem."""
    try:
        return _converter.structure(dict(table), cls)
    except (ClassValidationError, IterableValidationError) as exc:
        raise OptionsError(
            cattrs.transform_error(exc, path=path, format_exception=_format)
        ) from None
    except (TypeError, ValueError) as exc:  # raised by the class itself (attrs validators)
        raise OptionsError([f"{_format(exc, cls)} @ {path}"]) from None

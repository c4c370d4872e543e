"""The one validator of TOML tables into attrs classes (cattrs underneath): plugin options
here, the broker's own config (`broker.config.schema`) with its per-key rules on top.

TOML already gives typed values; this only refuses what does not fit, without
cattrs' usual leniency (a string is not a list of characters, 5 is not "5"), and finds
every problem with the path to it.
"""

from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, override

T = TypeVar("T")
Hook = Callable[[Any, Any], Any]
# A field's own structure hook, or None for the type's (see `make_converter`).
FieldHook = Callable[["attrs.Attribute[Any]", cattrs.Converter], Hook | None]
# How errors name a kind of value.
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


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


class WrongType(TypeError):
    """A value of another kind than its type asks for: what was expected, and the value
    (for messages that may show it; options never do)."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"must be {expected}, got {_kind_of(value)}")
        self.expected = expected
        self.value = value


class OptionsError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _scalar_hook(kind: type) -> Any:
    def structure(value: Any, _: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise WrongType(TYPE_NAMES[kind], value)
        return value

    return structure


def _type_checked(inner: Any, kind: type, name: str) -> Any:
    """``inner``, which would accept any iterable or mapping, for ``kind`` only."""

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, kind):
            raise WrongType(name, value)
        return inner(value, type_)

    return structure


def _no_field_hooks(field: "attrs.Attribute[Any]", converter: cattrs.Converter) -> Hook | None:
    return None


def make_converter(field_hook: FieldHook = _no_field_hooks) -> cattrs.Converter:
    """A strict converter; ``field_hook`` may give any field of an attrs class a hook of
    its own (which the converter wraps with the field's path in errors)."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, _scalar_hook(kind))

    def is_list(cls: Any) -> bool:
        return get_origin(cls) is list

    def list_hook(cls: Any) -> Any:
        return _type_checked(list_structure_factory(cls, converter), list, "a list")

    def is_homogeneous_tuple(cls: Any) -> bool:
        args = get_args(cls)
        return get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis

    def tuple_hook(cls: Any) -> Any:
        as_list: Any = list[get_args(cls)[0]]  # type: ignore[misc]
        items = list_structure_factory(as_list, converter)
        return _type_checked(lambda value, _: tuple(items(value, as_list)), list, "a list")

    def attrs_hook(cls: Any) -> Any:
        overrides: dict[str, Any] = {}
        for field in attrs.fields(cls):
            hook = field_hook(field, converter)
            if hook is not None:
                overrides[field.name] = override(struct_hook=hook)
        inner = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **overrides)
        return _type_checked(inner, Mapping, "a table")

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
    converter.register_structure_hook_factory(is_homogeneous_tuple, tuple_hook)
    converter.register_structure_hook_factory(attrs.has, attrs_hook)
    return converter


_converter = make_converter()


def problems(exc: BaseException, path: str) -> list[tuple[str, BaseException]]:
    """Every failure within a structuring error, each with the path to its value
    (``.name`` for a field, ``[index]`` for an item, appended to ``path``)."""
    if not isinstance(exc, ClassValidationError | IterableValidationError):
        return [(path, exc)]
    found: list[tuple[str, BaseException]] = []
    if isinstance(exc, IterableValidationError):
        items, without = exc.group_exceptions()
        for inner, item in items:
            found += problems(inner, f"{path}[{item.index!r}]")
    else:
        fields, without = exc.group_exceptions()
        for inner, field in fields:
            found += problems(inner, f"{path}.{field.name}")
    return found + [(path, inner) for inner in without]


def _format(exc: BaseException) -> str:
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
        found = problems(exc, path)
        raise OptionsError([f"{_format(error)} @ {at}" for at, error in found]) from None
    except (TypeError, ValueError) as exc:  # raised by the class itself (attrs validators)
        raise OptionsError([f"{_format(exc)} @ {path}"]) from None

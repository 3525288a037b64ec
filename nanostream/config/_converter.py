"""The one cattrs converter that turns YAML values into typed parameters.

Strict where cattrs is lenient: ``"3"`` is not an integer, ``1`` is not
true, and a string is never a list (it is iterable, so ``patterns: "*.csv"``
would otherwise be the five patterns ``*``, ``.``, ``c``, ``s``, ``v``).
"""

from __future__ import annotations

import typing
from collections import abc
from functools import partial
from typing import Any

import attrs
import cattrs

from .._durations import Duration, duration
from .._params import describe
from ..nodes._aggregations import AggregationSpec, check_spec


@attrs.define
class NodeConfig:
    """The keys of a YAML node that are neither runtime options nor parameters."""

    name: str
    class_: str
    parents: list[str] = attrs.field(factory=list)


def _strict(kind: type, name: str, accept: tuple[type, ...]):
    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got {describe(value)}")
        if not isinstance(value, accept):
            raise TypeError(f"expected {name}, got {describe(value)}")
        return kind(value)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _strict(int, "an integer", (int,)))
    converter.register_structure_hook(float, _strict(float, "a number", (int, float)))
    converter.register_structure_hook(str, _strict(str, "a string", (str,)))
    converter.register_structure_hook(bool, _strict(bool, "true or false", (bool,)))
    converter.register_structure_hook(Duration, lambda value, _type: duration(value))
    converter.register_structure_hook(AggregationSpec, check_spec)

    def is_literal(type_: Any) -> bool:
        return typing.get_origin(type_) is typing.Literal

    def structure_literal(value: Any, type_: Any) -> Any:
        choices = typing.get_args(type_)
        if value not in choices or type(value) not in {type(c) for c in choices}:
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"expected one of {listed}, got {describe(value)}")
        return value

    converter.register_structure_hook_func(is_literal, structure_literal)
    converter.register_structure_hook_factory(
        _is_collection, partial(_strict_collection, converter)
    )
    converter.register_structure_hook_factory(_is_mapping, partial(_strict_mapping, converter))

    def structure_parents(value: Any, _type: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise TypeError(f"expected a list of node names, got {describe(value)}")
        return converter.structure(value, list[str])

    converter.register_structure_hook(
        NodeConfig,
        cattrs.gen.make_dict_structure_fn(
            NodeConfig,
            converter,
            class_=cattrs.gen.override(rename="class"),
            parents=cattrs.gen.override(struct_hook=structure_parents),
        ),
    )
    return converter


_SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    abc.Sequence,
    abc.MutableSequence,
    abc.Set,
    abc.MutableSet,
)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


def _is_collection(type_: Any) -> bool:
    return (typing.get_origin(type_) or type_) in _SEQUENCES


def _is_mapping(type_: Any) -> bool:
    return (typing.get_origin(type_) or type_) in _MAPPINGS


def _strict_collection(converter: cattrs.Converter, type_: Any) -> Any:
    """A collection parameter takes a YAML list and nothing else: a string
    is iterable too, and ``"*.csv"`` would become five patterns."""
    origin = typing.get_origin(type_) or type_
    args = typing.get_args(type_)
    kind = {tuple: tuple, set: set, abc.Set: set, abc.MutableSet: set, frozenset: frozenset}.get(
        origin, list
    )
    fixed = origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis)
    element = Any if fixed or not args else args[0]
    base = cattrs.cols.list_structure_factory(list[element], converter)

    def structure(value: Any, _type: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {describe(value)}")
        if fixed:
            if len(value) != len(args):
                raise ValueError(f"expected a list of {len(args)} values, got {len(value)}")
            return tuple(converter.structure(v, a) for v, a in zip(value, args, strict=True))
        return kind(base(list(value), list[element]))

    return structure


def _strict_mapping(converter: cattrs.Converter, type_: Any) -> Any:
    base = cattrs.cols.mapping_structure_factory(type_, converter)

    def structure(value: Any, _type: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {describe(value)}")
        return base(value, type_)

    return structure


CONVERTER = _make_converter()

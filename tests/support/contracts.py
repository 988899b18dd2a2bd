"""Comparing real JSON with the documented examples: the same names, types and nesting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OpenMap:
    """An object whose keys are data (dates, feature names: an example's "..."), each value shaped
    like ``value``."""

    value: Any


def shape(value: Any) -> Any:
    """The type skeleton of a JSON value: objects keep their keys, lists their first item."""
    if isinstance(value, OpenMap):
        return {"*": shape(value.value)}
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def assert_same_shape(actual: Any, example: Any, path: str = "$") -> None:
    """Fail with the JSON path of the first difference between ``actual`` and the example."""
    if isinstance(example, OpenMap):
        assert isinstance(actual, dict), f"{path}: expected an object, got {shape(actual)}"
        assert actual, f"{path}: expected at least one entry"
        for key, item in actual.items():
            assert_same_shape(item, example.value, f"{path}.{key}")
        return
    expected, got = shape(example), shape(actual)
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{path}: expected an object, got {got}"
        assert set(got) == set(expected), f"{path}: keys {sorted(got)} != {sorted(expected)}"
        for key in expected:
            assert_same_shape(actual[key], example[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list), f"{path}: expected an array, got {got}"
        if example and actual:
            assert_same_shape(actual[0], example[0], f"{path}[0]")
    else:
        assert got == expected, f"{path}: {got} != {expected}"

"""Declarative validation of configuration tables (numpy-free).

Every file a user writes (tolerances, model cards, ``[tool.parity]``, tap maps) is
checked at load against a schema declared as data next to its loader: a mapping of key
-> :class:`Field`. A new key is one line. A value of the wrong type, out of range, not
finite, or a key no schema knows is a :class:`ConfigError`: one line naming the file,
the dotted key and the problem (exit 2).

Numbers are strict: ``true`` is not 1, ``"5e-4"`` is not 5e-4, NaN and infinities are
refused unless a field allows them. Ranges make a budget that cannot fail unloadable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parity.errors import ParityError


class ConfigError(ParityError):
    """A configuration value is missing, of the wrong type or out of range."""


def read_config(path: Path, what: str, error: type[ParityError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML (or ``.json``) file into a table; any problem is one ``error`` line.

    ``what`` names the file's role in messages ("tolerance file", "model card", ...).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a directory, expected a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(
            f"{path}: {what} is not valid {'JSON' if is_json else 'TOML'} ({exc})"
        ) from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} must hold a table, got {_type_name(data)}")
    return data


_KINDS = ("number", "integer", "boolean", "string", "list", "table", "any")


@dataclasses.dataclass(frozen=True)
class Field:
    """What one key may hold.

    Attributes:
        kind: ``number`` (int or float, never bool), ``integer``, ``boolean``, ``string``,
            ``list``, ``table`` or ``any``.
        required: the key must be present.
        ge, gt, le, lt: inclusive / exclusive bounds of a number (or of each list item).
        choices: the allowed values.
        items: the field every list item must satisfy.
        length: allowed list lengths.
        nonempty: a list or table must have at least one item.
        keys: schema of a table with named keys (unknown keys are errors).
        values: field of every value of a table with free keys (``keys`` must be None).
        either: alternatives; the value must satisfy one (the last one's error is shown).
        pattern: a regular expression a string must match in full.
        why: appended to a range error, saying why the bound exists.
    """

    kind: str = "any"
    required: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    items: Field | None = None
    length: tuple[int, ...] | None = None
    nonempty: bool = False
    keys: Mapping[str, Field] | None = None
    values: Field | None = None
    either: tuple[Field, ...] = ()
    pattern: str | None = None
    why: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")


def number(**bounds: Any) -> Field:
    """A finite int or float within the given bounds."""
    return Field("number", **bounds)


def integer(**bounds: Any) -> Field:
    """An int (not a bool) within the given bounds."""
    return Field("integer", **bounds)


def boolean(**options: Any) -> Field:
    """``true`` or ``false``."""
    return Field("boolean", **options)


def string(**options: Any) -> Field:
    """A string, optionally one of ``choices``."""
    return Field("string", **options)


def list_of(items: Field, **options: Any) -> Field:
    """A list whose every item satisfies ``items``."""
    return Field("list", items=items, **options)


def table(keys: Mapping[str, Field] | None = None, **options: Any) -> Field:
    """A table with the named keys (or, with ``values=``, free keys)."""
    return Field("table", keys=keys, **options)


_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _problem(field: Field, value: Any) -> str | None:
    """Why ``value`` does not fit ``field``, or ``None``."""
    if field.either:
        problems = [_problem(option, value) for option in field.either]
        return None if None in problems else problems[-1]
    kind = field.kind
    if kind == "any":
        return None
    if kind in ("number", "integer"):
        wanted = (int,) if kind == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            quoted = " (write it without quotes)" if isinstance(value, str) else ""
            wanted_name = "an integer" if kind == "integer" else "a number"
            return f"must be {wanted_name}, got {_type_name(value)} {value!r}{quoted}"
        if not math.isfinite(value):
            return f"must be finite, got {value!r}"
        return _range_problem(field, value)
    expected: type = {"boolean": bool, "string": str, "list": list, "table": dict}[kind]
    if not isinstance(value, expected):
        return f"must be {_TYPE_NAMES[expected]}, got {_type_name(value)} {value!r}"
    if field.choices is not None and value not in field.choices:
        return f"must be one of {list(field.choices)}, got {value!r}"
    if isinstance(value, str) and field.pattern and not re.fullmatch(field.pattern, value):
        return f"{value!r} is not of the form {field.why or field.pattern}"
    if field.nonempty and not value:
        return f"must not be empty, got {value!r}"
    if isinstance(value, list) and field.length is not None and len(value) not in field.length:
        counts = " or ".join(str(n) for n in field.length)
        return f"must have {counts} items, got {len(value)}"
    return None


def _range_problem(field: Field, value: float) -> str | None:
    why = f" ({field.why})" if field.why else ""
    checks = (
        (field.ge, lambda b: value >= b, ">="),
        (field.gt, lambda b: value > b, ">"),
        (field.le, lambda b: value <= b, "<="),
        (field.lt, lambda b: value < b, "<"),
    )
    for bound, ok, op in checks:
        if bound is not None and not ok(bound):
            return f"must be {op} {bound:g}, got {value!r}{why}"
    if field.choices is not None and value not in field.choices:
        return f"must be one of {list(field.choices)}, got {value!r}"
    return None


def check(value: Any, field: Field, source: str | Path, key: str = "") -> Any:
    """Validate ``value`` (recursively) against ``field``; returns it unchanged.

    ``key`` is the dotted path shown in errors (``budget."*/*/*".min_cosine``).
    """
    where = f"{source}: {key or '<top level>'}"
    problem = _problem(field, value)
    if problem is not None:
        raise ConfigError(f"{where} {problem}")
    chosen = next((f for f in field.either if _problem(f, value) is None), field)
    if chosen.kind == "list" and chosen.items is not None:
        for index, item in enumerate(value):
            check(item, chosen.items, source, f"{key}[{index}]")
    if chosen.kind == "table":
        check_table(value, chosen, source, key)
    return value


def check_table(data: Mapping[str, Any], field: Field, source: str | Path, key: str = "") -> None:
    """Validate the keys of a table against ``field.keys`` or ``field.values``."""
    prefix = f"{key}." if key else ""
    if field.keys is not None:
        unknown = sorted(set(data) - set(field.keys))
        if unknown:
            where = f" in [{key}]" if key else ""
            raise ConfigError(
                f"{source}: unknown key {unknown[0]!r}{where}; known: {sorted(field.keys)}"
            )
        for name, sub in field.keys.items():
            if name in data:
                check(data[name], sub, source, prefix + _quote(name))
            elif sub.required:
                raise ConfigError(f"{source}: missing required key '{prefix}{_quote(name)}'")
    elif field.values is not None:
        for name, value in data.items():
            check(value, field.values, source, prefix + _quote(name))


def _quote(name: str) -> str:
    """A TOML bare key as is, anything else quoted."""
    bare = name.replace("_", "").replace("-", "").isalnum()
    return name if bare else f'"{name}"'

"""Request fields declared once: a dialect's table of its fields (name, JSON type, bounds, default, the
`Options` field it maps to) drives its parser, its unknown-field check and its OpenAPI schema.

    SAMPLING = Fields(
        Field("temperature", float, low=0, high=2, default=1.0, option="temperature"),
        Field("stop", STOP, limit=4, option="stop"),
        ...
    )
    values = SAMPLING.read(body)        # every field checked (type, bounds), defaults filled in
    options = SAMPLING.options(values)  # the values of the fields that map to an Options field
    schema = SAMPLING.schema()          # the same table, as a JSON schema for the OpenAPI document

Ranges are checked by `types.check_range` and stop lists parsed by `types.parse_stop`, the one range check
and the one stop-list parser that `types.parse_options` uses too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..domain.types import Options, check_range, parse_stop
from . import fieldpolicy
from . import requests as rq
from .schema import ANY_LIST, BOOL, INT, NUM, OBJ, STR, STRINGS, Schema, obj, ranged
from .schema import STOP as STOP_SCHEMA


class Stop:
    """The kind of a stop-sequence field: a string or a list of strings (`types.parse_stop`)."""


STOP = Stop
_SCHEMAS: dict[type, Schema] = {int: INT, float: NUM, bool: BOOL, str: STR, dict: OBJ, list: ANY_LIST}


@dataclass(frozen=True)
class Field:
    name: str
    kind: type  # int, float, bool, str, dict, list, or STOP
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    default: Any = None  # the value when the field is absent or null
    option: str | None = None  # the `Options` field its value goes to
    limit: int | None = None  # STOP: the most sequences allowed
    required: bool = False

    def read(self, body: dict[str, Any], prefix: str = "") -> Any:
        """The field's value, checked (an `InvalidRequest` naming `prefix` + name), or its default."""
        label = prefix + self.name
        if self.kind is STOP:
            value = body.get(self.name)
            return self.default if value is None else parse_stop(value, label, limit=self.limit)
        value = rq.field(body, self.name, self.kind, prefix=prefix, required=self.required)
        if value is None:
            return self.default
        if self.low is not None or self.high is not None:
            check_range(value, label, self.low, self.high, open_low=self.open_low, open_high=self.open_high)
        return float(value) if self.kind is float else value

    def schema(self) -> Schema:
        if self.kind is STOP:
            if self.limit is None:
                return STOP_SCHEMA
            return {"anyOf": [STR, {**STRINGS, "maxItems": self.limit}]}
        kind = _SCHEMAS[self.kind]
        if self.low is None and self.high is None:
            return kind
        return ranged(kind, self.low, self.high, open_low=self.open_low, open_high=self.open_high)


class Fields:
    """A dialect's table of fields, in the order they are checked."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields
        self.by_name = {f.name: f for f in fields}

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def __add__(self, other: Fields) -> Fields:
        return Fields(*self.fields, *other.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def check(self, body: dict[str, Any], *, prefix: str = "", also: Iterable[str] = ()) -> None:
        """Hand the fields the table does not know to the field policy (`check_fields`)."""
        check_fields(body, (*self.by_name, *also), prefix=prefix)

    def read(self, body: dict[str, Any], *, prefix: str = "") -> dict[str, Any]:
        """Every field's value (checked), or its default."""
        return {f.name: f.read(body, prefix) for f in self.fields}

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values that are set, under the name of the `Options` field each maps to."""
        return {f.option: values[f.name] for f in self.fields if f.option and values.get(f.name) is not None}

    def schema(self, *, closed: bool = False, **extra: Schema) -> Schema:
        """The fields as a JSON schema object (with `extra` properties after them); `closed` when the dialect
        refuses unknown fields."""
        properties = {**{f.name: f.schema() for f in self.fields}, **extra}
        return obj(properties, required=tuple(f.name for f in self.fields if f.required), closed=closed)


def check_fields(body: dict[str, Any], known: Iterable[str], *, prefix: str = "") -> None:
    """Hand the fields this dialect does not know to the one field policy (`fieldpolicy.unknown`: reported,
    or refused under LOCALLLM_STRICT_FIELDS=1; a typo is never dropped silently)."""
    allowed = set(known)
    unknown = [f"{prefix}{key}" for key in body if key not in allowed]
    if unknown:
        fieldpolicy.unknown(unknown, allowed)


def as_options(values: dict[str, Any], table: Fields, **fixed: Any) -> Options:
    """`Options` from a table's values, with `fixed` values (a dialect's own rules) over them."""
    return Options(**{**table.options(values), **fixed})

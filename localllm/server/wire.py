"""Wire models: a dialect's request bodies declared once, as typed `msgspec` structs, from which come the
parsing, the checks (types, ranges, counts, unknown fields) and the OpenAPI request schemas.

```
 body bytes ─▶ read(request, Model) ─┬─ up to INLINE_BYTES: decode(raw, Model) on the event loop (≤ ~20 ms)
                                     └─ larger: the body decoder process (bodydecoder.py), so that no body
                                        blocks the event loop: its answer is the checked model, re-sent as
                                        msgpack, whose every list is bounded (a few ms to read back)
 decode(raw, Model) ─▶ Model                       every check of the declaration, counts while decoding
                    └▶ InvalidRequest(field=...)   one mapping (`refusal`) of msgspec's errors onto ours
```

A dialect declares its models in its own `wire.py` on `Lenient` (or `Strict`, the same since the one field
policy: both decode whatever unknown fields a body holds). The top-level fields a model does not declare are
found by `unknown_fields` (one cheap pass over the body's keys) and handed to the policy
(`fieldpolicy.unknown`: accepted, reported in `X-Localllm-Ignored-Fields`, or refused; docs/compat.md).
Bounds come from `domain/limits.py`; ranges are written once, in the model. `docs/dialects.md` has the recipe.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import msgspec
from msgspec import inspect as mi

from ..domain.errors import InvalidRequest
from ..domain.limits import MAX_JSON_DEPTH, MAX_UNKNOWN_FIELDS, size_text
from ..domain.options import DEPRECATED_OPTIONS, Options, check_range, parse_options
from . import fieldpolicy

INLINE_BYTES = 256 << 10  # bodies up to this are decoded on the event loop (docs/request-path.md, docs/limits.md)


class Lenient(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A wire model: unknown fields are decoded past; at the top level of a body they go to the field policy
    (`unknown_fields`, `fieldpolicy.unknown`), and in the nested objects a body model names in `reported`
    (field name -> its model: TGI's `parameters`), as `parameters.typo`."""

    reported: ClassVar[Mapping[str, type[msgspec.Struct]]] = {}
    # A model of only the fields that decide how a shared path reads its body (`shared.Presence`): the field
    # policy looks at the body once it is decoded as the model it turned out to be, not at this first look.
    partial: ClassVar[bool] = False

    def check(self) -> None:
        """Refuse (`InvalidRequest`) what the field declarations cannot say and must be known before the body
        leaves the decoder: bounds on what the whole body holds (its text, all messages together), which keep
        what a large body costs the event loop small once it is read back (`bodydecoder.py`)."""


class Strict(Lenient, kw_only=True, omit_defaults=True):
    """A wire model under the same policy as `Lenient` (kept so that the dialects' declarations say which
    bodies once refused unknown fields: Anthropic's and the Responses API's, as those APIs do)."""


W = TypeVar("W", bound=msgspec.Struct)


def decode(raw: bytes, model: type[W]) -> W:
    """`raw` (a JSON body) as `model`, every check of its declaration passed, or an `InvalidRequest` naming
    the field (`refusal`). Nesting deeper than `MAX_JSON_DEPTH` is refused too, never a `RecursionError`."""
    if not raw or raw.isspace():
        raise InvalidRequest("missing request body")
    try:
        value = msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise refusal(str(exc), model, raw) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc, raw) from None
    except RecursionError:
        raise _too_deep(None) from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:  # else it cannot nest that deep: no walk
        check_depth(value)
    if isinstance(value, Lenient):
        value.check()
    return value


def read_options(raw: object, field: str = "options") -> Options:
    """A body's Ollama `options` (or `parameters`) object, checked (`parse_options`). The deprecated ones Ollama
    accepts without effect (`DEPRECATED_OPTIONS`, docs/compat.md) go to the field policy: reported in
    `X-Localllm-Ignored-Fields`, refused under LOCALLLM_STRICT_FIELDS=1."""
    if isinstance(raw, dict):
        fieldpolicy.unknown((f"{field}.{key}" for key in raw if key in DEPRECATED_OPTIONS), why="has no effect")
    return parse_options(raw, field=field)


def unknown_fields(raw: bytes, model: type[msgspec.Struct]) -> list[str]:
    """The top-level fields of `raw` (a JSON object, already decoded once as `model`) that `model` does not
    declare, in the body's order, the first `MAX_UNKNOWN_FIELDS` of them (a body of a million keys must not
    cost the event loop a million policy checks): one pass over its keys, the values skipped (`msgspec.Raw`)."""
    keys = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    return list(itertools.islice(_unknown(keys, model), MAX_UNKNOWN_FIELDS))


def _unknown(keys: dict[str, msgspec.Raw], model: type[msgspec.Struct]) -> Iterator[str]:
    known = _names(model)
    yield from (key for key in keys if key not in known)
    for name, inner in getattr(model, "reported", {}).items():
        value = keys.get(name)
        if value is None:
            continue
        try:
            nested = msgspec.json.decode(value, type=dict[str, msgspec.Raw])
        except msgspec.ValidationError:  # not an object (null): nothing in it
            continue
        yield from (f"{name}.{key}" for key in _unknown(nested, inner))


_NAMES: dict[type[msgspec.Struct], frozenset[str]] = {}


def _names(model: type[msgspec.Struct]) -> frozenset[str]:
    """The names `model` takes on the wire (its fields' encode names, its tag field)."""
    names = _NAMES.get(model)
    if names is None:
        config = model.__struct_config__
        encoded = model.__struct_encode_fields__
        names = _NAMES[model] = frozenset((*encoded, *([config.tag_field] if config.tag_field else [])))
    return names


def accepted_names(model: type[msgspec.Struct]) -> frozenset[str]:
    """What `model` declares, for a refusal's message."""
    return _names(model)


def decode_dict(body: dict[str, Any], model: type[W]) -> W:
    """`body` as `model`, by the same path as a body on the wire (tests, and bodies already decoded), its
    unknown top-level fields handed to the field policy."""
    raw = json.dumps(body).encode()
    value = decode(raw, model)
    unknown = unknown_fields(raw, model)
    if unknown:
        fieldpolicy.unknown(unknown, _names(model))
    return value


def check_text(texts: Iterable[str], bound: int, field: str, what: str) -> None:
    """Refuse a body whose `texts`, all together, are over `bound` bytes (counted as characters first, which
    are never more: a text over the bound in characters is over it in bytes)."""
    total = 0
    for text in texts:
        total += len(text)
        if total > bound:
            raise InvalidRequest(
                f"{field}: the {what} hold more than the {size_text(bound)} a prompt may have", field=field
            )


def as_model(body: W | dict[str, Any], model: type[W]) -> W:
    """`body` if it is a `model` already, else decoded into one (`decode_dict`)."""
    return body if isinstance(body, model) else decode_dict(body, model)  # type: ignore[arg-type]


def _malformed(exc: msgspec.DecodeError, raw: bytes) -> InvalidRequest:
    """A body msgspec cannot read, read again by the stdlib (on this error path only) to say why in words
    people know (line, column), or which field holds a `NaN` or an `Infinity`: the stdlib takes those, and a
    range check must never see them (they compare false with every bound)."""
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        return InvalidRequest("invalid JSON in request body: it is not valid UTF-8")
    except json.JSONDecodeError as err:
        return InvalidRequest(f"invalid JSON in request body: {err.msg} at line {err.lineno} column {err.colno}")
    except (ValueError, RecursionError):
        return InvalidRequest(f"invalid JSON in request body: {exc}")
    where = _not_finite(body)
    if where is not None:
        label, value = where
        return InvalidRequest(f"{label} must be a finite number, got {value}", field=label or None)
    return InvalidRequest(f"invalid JSON in request body: {exc}")


def _not_finite(body: Any) -> tuple[str, float] | None:
    """The path of the first NaN or infinity in a decoded body, and the value (walked without recursion)."""
    stack: list[tuple[Any, list[str]]] = [(body, [])]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return _label(parts), node
        if isinstance(node, dict):
            stack.extend((v, [*parts, str(k)]) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, [*parts, str(i)]) for i, v in reversed(list(enumerate(node))))
    return None


def _too_deep(field: str | None) -> InvalidRequest:
    where = f"{field}: " if field else "the request body "
    return InvalidRequest(f"{where}nests deeper than {MAX_JSON_DEPTH} levels", field=field)


def check_depth(value: Any, bound: int = MAX_JSON_DEPTH) -> None:
    """Refuse a decoded body nesting (objects and lists) deeper than `bound`; walked without recursion, so the
    walk itself cannot overflow."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, msgspec.Struct):
            children: Iterable[Any] = (getattr(node, f) for f in node.__struct_fields__)
        elif isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > bound:
            raise _too_deep(None)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (msgspec.Struct, dict, list)))


# -- msgspec's errors onto ours -----------------------------------------------------------------------------

_WHERE = re.compile(r"^(?P<msg>.*?)(?: - at `(?:key in )?(?P<path>[^`]*)`)?$", re.S)
_PART = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+|\.\.\.)\]")
_KINDS = {
    "str": ("a string", "str"),
    "int": ("an integer", "int"),
    "float": ("a number", "float"),
    "bool": ("a boolean", "bool"),
    "array": ("a list", "list"),
    "object": ("an object", "dict"),
    "null": ("null", "null"),
}


def refusal(message: str, model: type[msgspec.Struct], raw: bytes | None = None) -> InvalidRequest:
    """The one mapping from msgspec's validation errors onto `InvalidRequest(field=...)`: the field path as
    the dialects name it (`messages[0].role`), a message in their words. `raw`, when given, lets a range or
    count error say the value (it is read again, untyped, only on this error path)."""
    match = _WHERE.match(message)
    assert match is not None
    msg, path = match.group("msg"), match.group("path") or "$"
    key_error = " - at `key in " in message
    parts = [m.group(1) if m.group(1) is not None else m.group(2) for m in _PART.finditer(path)]
    label = _label(parts)
    kind = _type_at(mi.type_info(model), parts)
    named = re.match(r"Object (missing required|contains unknown) field `(.*)`$", msg)
    if named:
        field = _label([*parts, named.group(2)])
        if named.group(1) == "missing required":
            return InvalidRequest(f"{field} is required", field=field)
        known = sorted(f.encode_name for f in kind.fields) if isinstance(kind, mi.StructType) else []
        accepted = f" (accepted: {', '.join(known)})" if known else ""
        return InvalidRequest(f"unknown field '{field}'{accepted}", field=field)
    if key_error:
        return InvalidRequest(f"{label}: {msg[0].lower()}{msg[1:]} (a key)", field=label)
    if msg.startswith(("Invalid enum value", "Invalid value")):
        choices = _choices(kind, parts, model)
        return InvalidRequest(f"{label} must be one of {choices}", field=label)
    expected = re.match(r"Expected `([^`]*)`, got `([^`]*)`$", msg)
    if expected:
        got = _KINDS.get(expected.group(2), ("", expected.group(2)))[1]
        if not label:
            return InvalidRequest(f"request body must be a JSON object, got {got}")
        return InvalidRequest(f"{label} must be {_describe(kind, expected.group(1))}, got {got}", field=label)
    bounded = re.match(r"Expected `(\w+)`(?: of length)? ([<>]=?) ", msg)
    if bounded:
        _bounds_error(kind, label, _value_at(raw, parts))
    if msg == "Number out of range":
        return InvalidRequest(f"{label} is out of range", field=label)
    return InvalidRequest(f"{label}: {msg}" if label else msg, field=label or None)


def _label(parts: Sequence[str]) -> str:
    out = ""
    for part in parts:
        if part != "...":  # a dict's value: the dict is named
            out += f"[{part}]" if part.isdigit() else part if not out else f".{part}"
    return out


def _describe(kind: mi.Type, fallback: str) -> str:
    """What a value of `kind` is, in words ("a string or a list of strings")."""
    members = kind.types if isinstance(kind, mi.UnionType) else (kind,)
    words = [_word(t) for t in members if not isinstance(t, mi.NoneType)]
    if not all(words):
        words = [_KINDS.get(k.strip(), (k.strip(), ""))[0] for k in fallback.split("|") if k.strip() != "null"]
    return " or ".join(dict.fromkeys(words))


def _word(kind: mi.Type) -> str:
    if isinstance(kind, mi.ListType):
        item = _word(kind.item_type)
        plural = {"a string": "strings", "an integer": "integers", "a number": "numbers", "an object": "objects"}
        return f"a list of {plural[item]}" if item in plural else "a list"
    if isinstance(kind, (mi.StructType, mi.DictType)):
        return "an object"
    if isinstance(kind, mi.LiteralType):
        return "one of " + ", ".join(map(str, kind.values))
    names = {mi.StrType: "a string", mi.IntType: "an integer", mi.FloatType: "a number", mi.BoolType: "a boolean"}
    return names.get(type(kind), "")


def _type_at(kind: mi.Type, parts: Sequence[str]) -> mi.Type:
    """The type msgspec expected at `parts` (through unions, lists, dicts and structs)."""
    for part in parts:
        kind = _inner(kind, part)
    return _unwrapped(kind, None)


def _unwrapped(kind: mi.Type, part: str | None) -> mi.Type:
    """A union's member that has `part` (or the one member that is not null)."""
    if isinstance(kind, mi.UnionType):
        members = [t for t in kind.types if not isinstance(t, mi.NoneType)]
        for member in members:
            if part is None or _inner(member, part) is not _NOWHERE:
                return member if part is not None or len(members) == 1 else kind
    return kind


_NOWHERE = mi.AnyType()


def _inner(kind: mi.Type, part: str) -> mi.Type:
    kind = _unwrapped(kind, part)
    if isinstance(kind, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)) and (
        part.isdigit() or part == "..."
    ):
        return kind.item_type
    if isinstance(kind, mi.DictType):
        return kind.value_type
    if isinstance(kind, mi.StructType):
        for f in kind.fields:
            if f.encode_name == part:
                return f.type
        if kind.tag_field == part:
            return mi.LiteralType((kind.tag,))
    if isinstance(kind, mi.UnionType):
        for member in kind.types:
            found = _inner(member, part)
            if found is not _NOWHERE:
                return found
    return _NOWHERE


def _choices(kind: mi.Type, parts: Sequence[str], model: type[msgspec.Struct]) -> str:
    """The values allowed where an enum value or a tag was wrong: a literal's, an enum's, or the tags of a
    tagged union (found on the field that holds it)."""
    if parts:
        holder = _type_at(mi.type_info(model), parts[:-1])
        tags = [m.tag for m in _tagged_members(holder) if m.tag_field == parts[-1]]
        if tags:
            return ", ".join(map(str, tags))
    members = kind.types if isinstance(kind, mi.UnionType) else (kind,)
    values = [v for t in members if isinstance(t, mi.LiteralType) for v in t.values]
    values += [m.value for t in members if isinstance(t, mi.EnumType) for m in t.cls]
    objects = " or an object" if any(isinstance(t, mi.StructType) for t in members) else ""
    return ", ".join(map(str, values)) + objects


def _tagged_members(kind: mi.Type) -> list[mi.StructType]:
    if isinstance(kind, mi.StructType) and kind.tag is not None:
        return [kind]
    if isinstance(kind, mi.UnionType):
        return [t for t in kind.types if isinstance(t, mi.StructType) and t.tag is not None]
    return []


def _value_at(raw: bytes | None, parts: Sequence[str]) -> Any:
    if raw is None:
        return None
    try:
        node: Any = msgspec.json.decode(raw)
        for part in parts:
            node = node[int(part)] if isinstance(node, list) else node[part]
    except (msgspec.DecodeError, RecursionError, KeyError, IndexError, ValueError, TypeError):
        return None
    return node


def _bounds_error(kind: mi.Type, label: str, value: Any) -> None:
    """Raise the refusal of a value outside the model's bounds, in the words of the domain's checks."""
    if isinstance(kind, mi.UnionType):
        kind = next((t for t in kind.types if _fits(t, value)), kind)
    if isinstance(kind, (mi.IntType, mi.FloatType)):
        low = kind.ge if kind.ge is not None else kind.gt
        high = kind.le if kind.le is not None else kind.lt
        if isinstance(value, (int, float)):
            check_range(value, label, low, high, open_low=kind.gt is not None, open_high=kind.lt is not None)
        bounds = [f"{'>' if kind.gt is not None else '>='} {low}"] if low is not None else []
        bounds += [f"{'<' if kind.lt is not None else '<='} {high}"] if high is not None else []
        raise InvalidRequest(f"{label}: each value must be {' and '.join(bounds)}", field=label)
    if isinstance(kind, (mi.ListType, mi.DictType, mi.StrType)):
        size = len(value) if isinstance(value, (list, dict, str)) else None
        noun = "characters" if isinstance(kind, mi.StrType) else "entries" if isinstance(kind, mi.DictType) else "items"
        if kind.max_length is not None and (size is None or size > kind.max_length):
            holds = f"holds {size} {noun}, more" if size is not None else f"holds more {noun}"
            raise InvalidRequest(f"{label} {holds} than the {kind.max_length} allowed", field=label)
        if kind.min_length:
            name = label.rpartition(".")[2]
            one = name[:-1] if name.endswith("s") and name.isalpha() else "item"  # "messages": one message
            least = f"one {one}" if kind.min_length == 1 else f"{kind.min_length} {noun}"
            raise InvalidRequest(f"{label} must hold at least {least}", field=label)
    raise InvalidRequest(f"{label} is out of its bounds (see the API's schema)", field=label)


def _fits(kind: mi.Type, value: Any) -> bool:
    if isinstance(kind, mi.FloatType):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(kind, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, mi.StrType):
        return isinstance(value, str)
    if isinstance(kind, mi.ListType):
        return isinstance(value, list)
    if isinstance(kind, mi.DictType):
        return isinstance(value, dict)
    return False


# -- the OpenAPI document --------------------------------------------------------------------------------

REF = "#/components/schemas/{name}"


def request_body(model: type[msgspec.Struct]) -> dict[str, Any]:
    """An OpenAPI `requestBody` whose schema is `model`'s (in the document's components)."""
    return {"required": True, "content": {"application/json": {"schema": ref(model)}}}


def request_body_of(*models: type[msgspec.Struct]) -> dict[str, Any]:
    """An OpenAPI `requestBody` that is any one of `models` (a path several dialects share)."""
    return {"required": True, "content": {"application/json": {"schema": {"anyOf": [ref(m) for m in models]}}}}


def ref(model: type[msgspec.Struct]) -> dict[str, Any]:
    """A reference to `model`'s schema in the document's components (for a body that is one of several)."""
    return {"$ref": REF.format(name=model.__name__)}


def components(models: Iterable[Any]) -> dict[str, Any]:
    """The JSON schemas of `models` (request and reply models, or types holding them) and of every model they
    hold, by name, for the OpenAPI document."""
    _, schemas = msgspec.json.schema_components(tuple(models), ref_template=REF)
    return schemas

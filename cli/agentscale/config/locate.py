"""Pydantic's validation errors as ``file:line:col: field: message``, with a hint where one
helps (the closest known field name, the expected values of a tag)."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from agentscale.config.source import YamlDocument
from agentscale.errors import ConfigError


def translate(
    error: ValidationError, document: YamlDocument, model: type[BaseModel]
) -> list[ConfigError]:
    out = []
    for detail in error.errors():
        loc = _data_path(detail["loc"], document.data, model)
        message = detail["msg"].removeprefix("Value error, ")
        loc, message, named = _named_within(loc, message, document.data)
        field = ".".join(str(part) for part in loc)
        hint = None
        if detail["type"] == "extra_forbidden":
            known = _known_fields(model, loc[:-1], document.data)
            message = "unknown field"
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            if not hint and known:
                hint = "known fields here: " + ", ".join(sorted(known))
            location = document.locate(loc, key=True)
        elif detail["type"] == "missing":
            location = document.locate(loc[:-1], key=True)
            message = "required field is missing"
        elif detail["type"] == "union_tag_invalid":
            context = detail.get("ctx", {})
            location = document.locate(loc)
            message = (
                f"unknown {str(context.get('discriminator', 'kind')).strip(chr(39))} "
                f"{context.get('tag')!r}"
            )
            hint = f"expected one of: {context.get('expected_tags')}"
        else:
            location = document.locate(loc, key=named)
            if detail["type"] == "literal_error":
                hint = message
                message = f"got {detail.get('input')!r}"
        out.append(ConfigError(message, location=location, field=field, hint=hint))
    return out


def _named_within(
    loc: tuple[str | int, ...], message: str, data: Any
) -> tuple[tuple[str | int, ...], str, bool]:
    """A cross-field check's message that starts with the path of the field at fault below
    ``loc`` (``stall: not a field of kind stream_cut``, ``ramp.0.http.gap: ...``): the error
    moves to that field. Returns the path, the message left, and whether it moved."""
    moved = False
    while True:
        prefix, sep, rest = message.partition(": ")
        first = prefix.split(", ")[0]
        parts = tuple(int(p) if p.isdigit() else p for p in first.split("."))
        if not sep or not first or " " in first or _node(data, loc + parts) is _MISSING:
            return loc, message, moved
        loc, moved = loc + parts, True
        if first == prefix:  # one field named: the rest of the message is about it
            message = rest


_MISSING = object()


def _node(data: Any, path: tuple[str | int, ...]) -> Any:
    node = data
    for part in path:
        found = isinstance(node, dict) and part in node
        found = found or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not found:
            return _MISSING
        node = node[part]
    return node


def _data_path(
    loc: tuple[int | str, ...], data: Any, model: type[BaseModel] | None = None
) -> tuple[str | int, ...]:
    """Drop the parts of a pydantic error path that the file does not spell: the tag pydantic
    puts right after a discriminated union's field (even when, as in ``latency: {type: latency,
    latency: 5}``, it is also a key), and only there (``http: {kind: status, status: 600}``
    names the field ``status``)."""
    path: list[str | int] = []
    node = data
    current: Any = model
    for part in loc:
        tagged = model is None or _is_union(current)
        if tagged and isinstance(node, dict) and part in _tags(node):
            current = _model_in(current, node) if current is not None else None
            continue
        path.append(part)
        current = _child(current, part, node)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(path)


def _models(annotation: Any) -> list[Any]:
    """The schema classes an annotation may hold (through Annotated, Optional and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for option in typing.get_args(annotation) for m in _models(option)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _is_union(annotation: Any) -> bool:
    return len(_models(annotation)) > 1


def _child(current: Any, part: str | int, node: Any) -> Any:
    """The annotation of ``part`` inside ``current`` (None when the schema says nothing)."""
    origin = typing.get_origin(current)
    if origin is typing.Annotated:
        return _child(typing.get_args(current)[0], part, node)
    if origin is list:
        return typing.get_args(current)[0] if isinstance(part, int) else None
    if origin is dict:
        return typing.get_args(current)[1]
    if origin in (typing.Union, types.UnionType):
        chosen = _model_in(current, node)
        return _child(chosen, part, node) if chosen is not None else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        return field.annotation if field is not None else None
    return None


TAGS = ("kind", "type")  # the discriminators of the schemas' unions


def _tags(node: dict[Any, Any]) -> tuple[Any, ...]:
    """The tag values a mapping spells (only strings: ``kind: []`` is no tag, and unhashable)."""
    return tuple(v for tag in TAGS if isinstance(v := node.get(tag), str))


def _known_fields(model: type[BaseModel], loc: tuple[str | int, ...], data: Any) -> list[str]:
    """Field names (as spelled in YAML) expected at ``loc``, following the schema's types."""
    current: Any = model
    node = data
    for part in loc:
        if isinstance(part, int):  # an item of a list: same type, next node
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        node = node.get(part) if isinstance(node, dict) else None
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = _model_in(field.annotation, node)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any, node: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0], node)
    if origin is list:
        return _model_in(typing.get_args(annotation)[0], node)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            found = _model_in(option, node)
            if isinstance(found, type) and issubclass(found, BaseModel):
                tag = next((f for n, f in found.model_fields.items() if n in TAGS), None)
                if tag is None or not isinstance(node, dict):
                    return found
                if set(_tags(node)) & set(typing.get_args(tag.annotation)):
                    return found
        return None
    return annotation

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
        loc = _data_path(detail["loc"], document.data)
        field = ".".join(str(part) for part in loc)
        message = detail["msg"].removeprefix("Value error, ")
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
            location = document.locate(loc)
            if detail["type"] == "literal_error":
                hint = message
                message = f"got {detail.get('input')!r}"
        out.append(ConfigError(message, location=location, field=field, hint=hint))
    return out


def _data_path(loc: tuple[int | str, ...], data: Any) -> tuple[str | int, ...]:
    """Drop the parts of a pydantic error path that the file does not spell (union tags)."""
    path: list[str | int] = []
    node = data
    skipped: set[int] = set()
    for part in loc:
        if isinstance(node, dict) and part in _tags(node) and id(node) not in skipped:
            # A discriminated union's tag, which pydantic puts right after the union's field
            # (even when, as in ``latency: {type: latency, latency: 5}``, it is also a key).
            skipped.add(id(node))
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(path)


TAGS = ("kind", "type")  # the discriminators of the schemas' unions


def _tags(node: dict[Any, Any]) -> tuple[Any, ...]:
    return tuple(node.get(tag) for tag in TAGS if tag in node)


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

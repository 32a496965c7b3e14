"""YAML documents that remember where each value came from, for ``file:line:col`` errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from agentscale.errors import ConfigError, Location

Path_ = tuple[str | int, ...]


@dataclass
class YamlDocument:
    path: Path
    text: str
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, loc: Path_, *, key: bool = False) -> Location:
        """The position of ``loc``, or of its nearest ancestor that the file spells out."""
        table = self.keys if key else self.values
        for end in range(len(loc), -1, -1):
            prefix = loc[:end]
            if prefix in table:
                line, column = table[prefix]
                return Location(self.path, line, column)
            if not key and prefix in self.keys:
                line, column = self.keys[prefix]
                return Location(self.path, line, column)
        return Location(self.path, 1, 1)


# What a scenario or a fault profile may hold. Real files are a few KB with a few hundred
# values; the limits stop a hostile file (an alias bomb, thousands of nested brackets, a huge
# list) from eating the machine before the schema ever sees it.
MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 100_000  # values once aliases are expanded
MAX_ALIASES = 1_000
REPEAT_HINT = "write the values out rather than repeat anchors"


class TooLarge(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark: object, hint: str) -> None:
        super().__init__(problem=problem, problem_mark=cast(yaml.Mark, mark))
        self.hint = hint


def load_yaml(path: Path) -> YamlDocument:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                f"the file is {size:,} bytes; a scenario or fault profile is at most {MAX_BYTES:,}",
                location=Location(path),
                hint="keep data in the dataset (JSONL), not in the scenario",
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found", location=Location(path), hint="check the path and the working folder"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the file: {error}", location=Location(path)) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        _check_shape(text)
        node = loader.get_single_node()
        document = YamlDocument(path, text, None)
        if node is not None:
            document.data = _construct(loader, node, (), document, [0])
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        location = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        problem = error.problem or error.context or "malformed YAML"
        if isinstance(error, TooLarge):
            raise ConfigError(
                f"the file is too large to read: {problem}",
                location=location,
                hint=error.hint,
            ) from None
        raise ConfigError(
            f"invalid YAML: {problem}",
            location=location,
            hint="check indentation, colons and quotes near this position",
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML: {error}", location=Location(path)) from None
    finally:
        if loader is not None:
            loader.dispose()
    if document.data is None:
        raise ConfigError("the file is empty", location=Location(path, 1, 1))
    return document


INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers, so that ``1:30`` stays the
    text it looks like rather than becoming 90."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (INT, FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _check_shape(text: str) -> None:
    """Depth and aliases from the parser's events, before PyYAML builds anything (its composer
    recurses, so 3,000 nested brackets would be a RecursionError there)."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TooLarge(
                    f"nested more than {MAX_DEPTH} levels deep", event.start_mark, "nest less"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise TooLarge(
                    f"more than {MAX_ALIASES} aliases (*name)", event.start_mark, REPEAT_HINT
                )


def _construct(
    loader: yaml.SafeLoader, node: yaml.Node, at: Path_, doc: YamlDocument, count: list[int]
) -> Any:
    if len(at) > 2 * MAX_DEPTH:
        # Only aliases nest deeper than the text: an anchor used inside itself, or a chain.
        raise TooLarge(
            f"nested more than {2 * MAX_DEPTH} levels deep once aliases are expanded",
            node.start_mark,
            "an anchor cannot hold an alias of itself; " + REPEAT_HINT,
        )
    count[0] += 1
    if count[0] > MAX_NODES:
        # Aliases repeat what they name: a few of them can stand for billions of values.
        raise TooLarge(
            f"more than {MAX_NODES:,} values once aliases are expanded",
            node.start_mark,
            REPEAT_HINT,
        )
    doc.values[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise yaml.MarkedYAMLError(
                    problem="a mapping key must be a plain value", problem_mark=key_node.start_mark
                )
            if key in result:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                )
            child = (*at, str(key))
            doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _construct(loader, value_node, child, doc, count)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*at, i), doc, count) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise yaml.MarkedYAMLError(
            problem=f"cannot read this value ({str(error).splitlines()[0]})",
            problem_mark=node.start_mark,
        ) from None

"""The golden set: one JSON object a line with a prompt, its workflow and the expected answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentscale.errors import ConfigError, ConfigErrors, Location


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    expect: str | list[str] | None = None

    @property
    def expected(self) -> tuple[str, ...]:
        if self.expect is None:
            return ()
        return (self.expect,) if isinstance(self.expect, str) else tuple(self.expect)


class GoldenItem(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    prompt: str = Field("", description="the request's prompt (a conversation's first turn's)")
    workflow: str = "default"
    expect: str | list[str] | None = None
    id: str | None = None
    # Not "| None": a union would add a second, confusing error to each bad turn.
    turns: tuple[Turn, ...] = Field((), max_length=1000)

    @model_validator(mode="after")
    def _prompt(self) -> GoldenItem:
        if "turns" in self.model_fields_set and not self.turns:
            raise ValueError("turns is empty: a conversation needs at least one turn")
        if self.turns:
            if self.prompt or self.expect is not None:
                raise ValueError("a conversation line has turns, without prompt or expect")
        elif not self.prompt:
            raise ValueError("each line needs a prompt (or turns: [{prompt, expect}, ...])")
        return self

    def turn(self, number: int) -> Turn:
        """The prompt and expectation of turn ``number`` (from 1); a conversation shorter than
        its session starts over, a single prompt is every turn's."""
        if self.turns:
            return self.turns[(number - 1) % len(self.turns)]
        return Turn(prompt=self.prompt, expect=self.expect)

    @property
    def expected(self) -> tuple[str, ...]:
        if self.expect is None:
            return ()
        return (self.expect,) if isinstance(self.expect, str) else tuple(self.expect)

    def variables(self) -> dict[str, Any]:
        prompt = self.turns[0].prompt if self.turns else self.prompt
        return {**(self.model_extra or {}), "prompt": prompt, "workflow": self.workflow}


@dataclass(frozen=True)
class Dataset:
    path: Path
    items: tuple[GoldenItem, ...]
    lines: tuple[int, ...] = ()  # the line of each item in the file

    def by_workflow(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for index, item in enumerate(self.items):
            groups.setdefault(item.workflow, []).append(index)
        return groups


def load_dataset(path: Path) -> Dataset:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise ConfigError(
            f"cannot read the dataset: {error.strerror}", location=Location(path)
        ) from None
    items: list[GoldenItem] = []
    numbers: list[int] = []
    errors: list[ConfigError] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.lstrip().startswith(b"#"):
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            errors.append(
                ConfigError(
                    f"not valid JSON ({error.msg})",
                    location=Location(path, number, error.colno),
                    hint="each line of a JSONL golden set is one JSON object",
                )
            )
            continue
        try:
            items.append(GoldenItem.model_validate(value))
            numbers.append(number)
        except ValidationError as error:
            for detail in error.errors():
                field = ".".join(str(p) for p in detail["loc"]) or "line"
                errors.append(
                    ConfigError(detail["msg"], location=Location(path, number, 1), field=field)
                )
    if errors:
        raise ConfigErrors(errors[:20])
    if not items:
        raise ConfigError(
            "the dataset has no items",
            location=Location(path),
            hint='add lines like {"prompt": "...", "workflow": "refund", "expect": "..."}',
        )
    return Dataset(path, tuple(items), tuple(numbers))

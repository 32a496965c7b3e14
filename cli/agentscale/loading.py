"""Reading a scenario file into a checked ``Scenario``, or errors that point into the file."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from agentscale.dataset import Dataset, load_dataset
from agentscale.errors import ConfigError, ConfigErrors
from agentscale.gate import bad_direction
from agentscale.scenario import LOOPBACK_HOSTS, Scenario
from agentscale.shapes import OPEN_ONLY, Replay, parse_offsets_csv
from agentscale.template import BUILTIN_VARIABLES, env_references, template_variables
from agentscale.yamlsource import YamlDocument, load_yaml


@dataclass(frozen=True)
class LoadedScenario:
    path: Path
    document: YamlDocument
    scenario: Scenario
    dataset: Dataset
    replay_offsets: np.ndarray | None

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.folder / relative).resolve()

    @property
    def scenario_sha256(self) -> str:
        return hashlib.sha256(self.document.text.encode()).hexdigest()

    @property
    def dataset_sha256(self) -> str:
        return hashlib.sha256(self.dataset.path.read_bytes()).hexdigest()


def load_scenario(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    allow_remote: tuple[str, ...] = (),
    for_run: bool = False,
) -> LoadedScenario:
    """Parse, validate and check a scenario. ``for_run`` adds the checks a run needs
    (environment variables present, target host allowed)."""
    document, scenario = parse_document(
        path, Scenario, hint="agentscale load takes a scenario; pass a fault profile with --faults"
    )
    return _check(path, document, scenario, env or os.environ, allow_remote, for_run)


Model = TypeVar("Model", bound=BaseModel)


def parse_document(path: Path, model: type[Model], *, hint: str) -> tuple[YamlDocument, Model]:
    """Read ``path`` as a ``model`` (its ``kind`` must be the model's class name)."""
    document = load_yaml(path)
    kind = model.__name__
    if not isinstance(document.data, dict):
        raise ConfigError(f"a {kind} is a YAML mapping", location=document.locate(()))
    found = document.data.get("kind")
    if found is not None and found != kind:
        raise ConfigError(
            f"this file is a {found}, not a {kind}",
            location=document.locate(("kind",)),
            field="kind",
            hint=hint,
        )
    try:
        return document, model.model_validate(document.data)
    except ValidationError as error:
        raise ConfigErrors(_translate(error, document, model)) from None


def _translate(
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


def _check(
    path: Path,
    document: YamlDocument,
    scenario: Scenario,
    env: Mapping[str, str],
    allow_remote: tuple[str, ...],
    for_run: bool,
) -> LoadedScenario:
    errors: list[ConfigError] = []

    def error(loc: tuple[str | int, ...], message: str, hint: str | None = None) -> None:
        field = ".".join(str(p) for p in loc)
        errors.append(ConfigError(message, location=document.locate(loc), field=field, hint=hint))

    load = scenario.load
    shape = load.shape
    if load.model == "closed" and shape.kind in OPEN_ONLY:
        error(("load", "shape", "kind"), f"{shape.kind!r} schedules arrivals: open model only")
    missing, wrong = shape.unit_problems(load.model)
    unit, want = ("requests/s", "rps") if load.model == "open" else ("users", "users")
    for name in wrong:
        loc = ("load", "shape", *[int(p) if p.isdigit() else p for p in name.split(".")])
        fixed = re.sub(r"(rps|users)$", want, name)
        error(loc, f"wrong unit: the {load.model} model counts {unit}", hint=f"write {fixed}")
    for name in missing if not wrong else ():
        error(("load", "shape"), f"{name} is required by the {load.model} model ({unit})")

    for name, change in (
        scenario.gates.model_dump(exclude={"slo", "min_requests"}) if scenario.gates else {}
    ).items():
        wanted = bad_direction(name)
        if change is not None and change[wanted] is None:
            other = "max_decrease" if wanted == "max_increase" else "max_increase"
            error(
                ("gates", name),
                f"{name} regresses by going the other way",
                hint=f"write {wanted} instead of {other}",
            )

    _check_tenants(scenario, error)

    replay_offsets = None
    if isinstance(shape, Replay):
        replay_path = (path.parent / shape.file).resolve()
        try:
            replay_offsets = parse_offsets_csv(replay_path.read_text(encoding="utf-8"))
        except OSError:
            error(("load", "shape", "file"), f"replay file not found: {replay_path}")
        except ValueError as problem:
            error(("load", "shape", "file"), f"{replay_path}: {problem}")

    dataset_path = (path.parent / scenario.workload.dataset).resolve()
    dataset = None
    if not dataset_path.is_file():
        error(
            ("workload", "dataset"),
            f"dataset file not found: {dataset_path}",
            hint="paths are relative to the scenario file's folder",
        )
    else:
        dataset = load_dataset(dataset_path)
        present = dataset.by_workflow()
        for name in scenario.workload.workflows or {}:
            if name not in present:
                error(
                    ("workload", "workflows", name),
                    f"no item of the dataset has workflow {name!r}",
                    hint="workflows in the dataset: " + ", ".join(sorted(present)),
                )
        shared = set.intersection(*(set(i.variables()) for i in dataset.items))
        known = set(BUILTIN_VARIABLES) | shared
        for where, value in (("body", scenario.target.body), ("headers", scenario.target.headers)):
            for name in sorted(template_variables(value) - known):
                error(
                    ("target", where),
                    f"unknown template variable {{{{{name}}}}}",
                    hint="known: " + ", ".join(sorted(known)),
                )

    if scenario.faults is not None and not (path.parent / scenario.faults).is_file():
        error(("faults",), f"fault profile not found: {(path.parent / scenario.faults).resolve()}")

    if for_run:
        target = scenario.target
        host = target.host
        if (
            target.url != "demo"
            and host not in LOOPBACK_HOSTS
            and not (target.allow_remote or host in allow_remote)
        ):
            error(
                ("target", "url"),
                f"{host} is not a loopback address",
                hint=f"agentscale only loads 127.0.0.1/localhost unless told: "
                f"--allow-remote {host} or target.allow_remote: true",
            )
        for where, value in (("headers", target.headers), ("body", target.body)):
            for name in env_references(value):
                if name not in env:
                    error(
                        ("target", where),
                        f"environment variable {name} is not set",
                        hint=f"export {name}=... (its value is never written to the run folder)",
                    )

    if errors:
        raise ConfigErrors(errors)
    assert dataset is not None
    return LoadedScenario(path, document, scenario, dataset, replay_offsets)


def _check_tenants(scenario: Scenario, error: Any) -> None:
    tenants = scenario.tenant_specs()
    load = scenario.load
    own = [name for name, spec in tenants.items() if spec.shape is not None]
    for name in own:
        spec = tenants[name]
        assert spec.shape is not None
        if load.model == "closed":
            error(("tenants", name, "shape"), "a tenant's own shape needs the open model",
                  hint="remove it, or set load.model: open")  # fmt: skip
            continue
        if "weight" in spec.model_fields_set:
            error(("tenants", name, "weight"), "a tenant with its own shape takes no share of "
                  "load.shape", hint="remove weight, or remove shape")  # fmt: skip
        if spec.shape.kind == "replay":
            error(("tenants", name, "shape", "kind"), "a tenant's shape cannot be a replay")
        missing, wrong = spec.shape.unit_problems("open")
        for field in wrong:
            error(("tenants", name, "shape", field), "wrong unit: the open model counts "
                  "requests/s", hint=f"write {field.rsplit('_', 1)[0]}_rps")  # fmt: skip
        for field in missing if not wrong else ():
            error(("tenants", name, "shape"), f"{field} is required (requests/s)")
    if own and len(own) == len(tenants):
        error(
            ("tenants",),
            "every tenant has its own shape, so load.shape's traffic has no tenant",
            hint="leave one tenant without a shape: it takes load.shape's traffic",
        )
    canaries = [spec.canary for spec in tenants.values() if spec.canary]
    for name, spec in tenants.items():
        if spec.canary and canaries.count(spec.canary) > 1:
            error(("tenants", name, "canary"), "two tenants share this canary",
                  hint="a canary must be unique to its tenant")  # fmt: skip
    expect = scenario.expect
    if expect is None:
        return
    if expect.noisy_neighbor is not None:
        pair = expect.noisy_neighbor
        for role, name in (("victim", pair.victim), ("neighbor", pair.neighbor)):
            if name not in tenants:
                error(("expect", "noisy_neighbor", role), f"{name!r} is not a tenant",
                      hint="tenants: " + ", ".join(tenants))  # fmt: skip
        if pair.victim == pair.neighbor:
            error(("expect", "noisy_neighbor", "neighbor"), "the neighbour is the victim")
        elif pair.neighbor in tenants and tenants[pair.neighbor].shape is None:
            error(
                ("expect", "noisy_neighbor", "neighbor"),
                f"tenant {pair.neighbor!r} has no shape of its own, so it never spikes alone",
                hint=f"give tenants.{pair.neighbor} a shape, e.g. {{kind: spike, ...}}",
            )
    if expect.fairness is not None and len(tenants) < 2:
        error(("expect", "fairness"), "fairness needs two tenants or more")

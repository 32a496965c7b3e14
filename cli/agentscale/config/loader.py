"""Reading scenario and fault-profile files into checked models, or errors that point into
the file."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from agentscale.config.checks import profile_problems, scenario_problems
from agentscale.config.dataset import Dataset
from agentscale.config.faults import FaultProfile
from agentscale.config.locate import translate
from agentscale.config.scenario import Scenario
from agentscale.config.source import YamlDocument, load_yaml
from agentscale.errors import ConfigError, ConfigErrors


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
    def measured_sha256(self) -> str:
        """The scenario without its ``gates:``: what was measured, not how it is judged (a
        new tolerance does not make a baseline one of another scenario)."""
        data = self.document.data
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "gates"}
        # The standard json module: a scenario may hold integers beyond 64 bits (refused later).
        try:
            text = json.dumps(data, default=str, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):  # keys of mixed types, say
            return self.scenario_sha256
        return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()

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
    # An empty mapping is an empty environment (a test's, say), not a reason to read ours.
    environment = os.environ if env is None else env
    dataset, replay = scenario_problems(
        path, document, scenario, environment, allow_remote, for_run
    )
    return LoadedScenario(path, document, scenario, dataset, replay)


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
        raise ConfigErrors(translate(error, document, model)) from None


@dataclass(frozen=True)
class LoadedProfile:
    path: Path
    document: YamlDocument
    profile: FaultProfile


def load_fault_profile(
    path: Path,
    *,
    demo_targets: Collection[str] = (),
    duration: float | None = None,
    allow_remote: Collection[str] | None = None,
    span: tuple[str, str] = ("the run", "run longer"),
    demo_only: Collection[str] = (),
) -> LoadedProfile:
    """``demo_targets``: the dependencies the demo stack declares when the target is ``demo``
    (``demo_only`` when it is not, so that a window on one of them is told where it belongs);
    ``duration``: the run's, so that no window is planned past its end; ``allow_remote``: for
    a run, the hosts beyond loopback it may listen on or reach."""
    document, profile = parse_document(
        path, FaultProfile, hint="--faults takes a fault profile (kind: FaultProfile)"
    )
    profile_problems(document, profile, demo_targets, duration, allow_remote, span, demo_only)
    return LoadedProfile(path, document, profile)

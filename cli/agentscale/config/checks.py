"""Checks across fields and files that a schema alone cannot make: units against the load
model, tenants against their expectations, the dataset and template variables, the target's
host and environment, a fault profile against the run it is for."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from agentscale.config.dataset import Dataset, load_dataset
from agentscale.config.faults import FaultProfile
from agentscale.config.metrics import METRICS, bad_direction
from agentscale.config.scenario import Scenario, is_loopback
from agentscale.config.shapes import OPEN_ONLY, Replay, parse_offsets_csv
from agentscale.config.source import YamlDocument
from agentscale.config.template import (
    BUILTIN_VARIABLES,
    SESSION_VARIABLES,
    MissingVariable,
    env_references,
    expand_env,
    header_problem,
    template_variables,
)
from agentscale.config.traffic import levels
from agentscale.errors import ConfigError, ConfigErrors, Location

Loc = tuple[str | int, ...]
MAX_ARRIVALS = 20_000_000  # one run's schedule, planned up front (160 MB of offsets)


class Problems:
    """Errors found so far, each pointing into the document."""

    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.errors: list[ConfigError] = []

    def __call__(self, loc: Loc, message: str, hint: str | None = None) -> None:
        field = ".".join(str(p) for p in loc)
        self.errors.append(
            ConfigError(message, location=self.document.locate(loc), field=field, hint=hint)
        )

    def raise_any(self) -> None:
        if self.errors:
            raise ConfigErrors(self.errors)


def scenario_problems(
    path: Path,
    document: YamlDocument,
    scenario: Scenario,
    env: Mapping[str, str],
    allow_remote: tuple[str, ...],
    for_run: bool,
) -> tuple[Dataset, np.ndarray | None]:
    """The dataset and replay offsets the scenario names; ``ConfigErrors`` for every problem.
    ``for_run`` adds what a run needs: environment variables present, the target host allowed."""
    error = Problems(document)

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
        scenario.gates.model_dump(include=set(METRICS)) if scenario.gates else {}
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
    too_many = arrivals_problem(scenario, load.duration)
    if too_many:
        error(("load", "shape"), too_many, hint="lower the rate or shorten the run")

    replay_offsets = None
    if isinstance(shape, Replay):
        replay_path, problem = data_file(path.parent, shape.file, "replay file")
        if problem is not None:
            error(("load", "shape", "file"), problem, hint=PATH_HINT)
        else:
            try:
                replay_offsets = parse_offsets_csv(replay_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as reason:
                error(("load", "shape", "file"), f"{replay_path}: {reason}")

    dataset_path, problem = data_file(path.parent, scenario.workload.dataset, "dataset file")
    dataset = None
    if problem is not None:
        error(("workload", "dataset"), problem, hint=PATH_HINT)
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
        if scenario.success.expect == "regex":
            for item, line in zip(dataset.items, dataset.lines, strict=True):
                for pattern in item.expected:
                    try:
                        re.compile(pattern)
                    except re.error as problem:
                        error.errors.append(
                            ConfigError(
                                f"not a regular expression ({problem})",
                                location=Location(dataset.path, line, 1),
                                field="expect",
                                hint="success.expect is regex: each expect is a Python regex",
                            )
                        )
        shared = set.intersection(*(set(i.variables()) for i in dataset.items))
        known = set(BUILTIN_VARIABLES) | shared
        used = template_variables(scenario.target.body) | template_variables(
            scenario.target.headers
        )
        sessions = scenario.workload.sessions
        if sessions is not None and sessions.thread_from and "thread_id" not in used:
            error(
                ("workload", "sessions", "thread_from"),
                "the thread id is taken from answers but never sent back",
                hint='put "{{thread_id}}" in target.body or target.headers',
            )
        if sessions is not None and sessions.history == "client" and "history" not in used:
            error(
                ("workload", "sessions", "history"),
                "history: client, but the request template has no {{history}}",
                hint='e.g. target.body: {messages: "{{history}}", input: "{{prompt}}"}',
            )
        if "history" in template_variables(scenario.target.headers):
            error(
                ("target", "headers"),
                "{{history}} is a JSON list of messages: it cannot go in a header",
                hint='send it in target.body, e.g. {messages: "{{history}}"}',
            )
        conversational = sorted(used & set(SESSION_VARIABLES))
        if sessions is None and conversational:
            names = "{{" + "}}, {{".join(conversational) + "}}"
            verb = "exist" if len(conversational) > 1 else "exists"
            error(
                ("target", "body"),
                f"{names} {verb} only in conversations",
                hint="add workload.sessions (e.g. {turns: 4}) or take them out of the template",
            )
        if sessions is not None and sessions.history == "none" and "history" in used:
            error(
                ("workload", "sessions", "history"),
                "the request template sends {{history}}, but history is none (always [])",
                hint="set workload.sessions.history: client",
            )
        if sessions is None and any(item.turns for item in dataset.items):
            error(
                ("workload", "dataset"),
                "the dataset has conversation lines (turns) but workload.sessions is not set",
                hint="add workload.sessions: {} to run each line as a conversation",
            )
        for where, value in (("body", scenario.target.body), ("headers", scenario.target.headers)):
            for name in sorted(template_variables(value) - known):
                error(
                    ("target", where),
                    f"unknown template variable {{{{{name}}}}}",
                    hint="known: " + ", ".join(sorted(known)),
                )

    if scenario.faults is not None:
        _found, unreadable = data_file(path.parent, scenario.faults, "fault profile")
        if unreadable:
            error(("faults",), unreadable, hint=PATH_HINT)

    if for_run:
        target = scenario.target
        host = target.host
        if (
            target.url != "demo"
            and not is_loopback(host)
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
        for name, value in target.headers.items():
            try:
                bad_header = header_problem(expand_env(value, env))
            except MissingVariable:
                continue  # reported above
            if bad_header is not None:
                error(
                    ("target", "headers", name),
                    f"header {name}: {bad_header}",
                    hint="check the environment variables it uses (their values are not shown)",
                )

    error.raise_any()
    assert dataset is not None
    return dataset, replay_offsets


PATH_HINT = "paths are relative to the scenario file's folder"
MAX_DATA_BYTES = 512 * 1024 * 1024


def data_file(folder: Path, relative: str, what: str) -> tuple[Path, str | None]:
    """The file a scenario names, and why it cannot be read, if it cannot: missing, not a
    regular file (a FIFO or a device would block or never end), too large, or a path the
    system refuses (a NUL in it, too long)."""
    try:
        found = (folder / relative).resolve()
        if not found.exists():
            return found, f"{what} not found: {found}"
        if not found.is_file():
            return found, f"{what} is not a regular file: {found}"
        size = found.stat().st_size
    except (OSError, ValueError) as reason:
        return folder, f"{what} path cannot be used: {reason}"
    if size > MAX_DATA_BYTES:
        return found, f"{what} is {size:,} bytes; at most {MAX_DATA_BYTES:,} are read"
    return found, None


def arrivals_problem(scenario: Scenario, duration: float) -> str | None:
    """Why an open-model schedule is too large to plan in memory, if it is."""
    if scenario.load.model != "open":
        return None
    grid = np.linspace(0.0, duration, 10_001)
    expected = float(np.trapezoid(levels(scenario, grid, duration), grid))
    if expected <= MAX_ARRIVALS:
        return None
    return (
        f"this load asks for about {expected:,.0f} arrivals in {duration:g}s; "
        f"a run plans at most {MAX_ARRIVALS:,}"
    )


def _check_tenants(scenario: Scenario, error: Problems) -> None:
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


def profile_problems(
    document: YamlDocument,
    profile: FaultProfile,
    demo_targets: Collection[str],
    duration: float | None,
    allow_remote: Collection[str] | None = None,
    span: tuple[str, str] = ("the run", "run longer"),
    demo_only: Collection[str] = (),
) -> None:
    """``ConfigErrors`` for windows on unknown targets, past the run's end, or undoing each
    other, and expectations of windows that do not exist. ``allow_remote`` (for a run): a
    dependency listening or reached beyond loopback needs its host named there. ``demo_only``:
    the demo stack's dependencies when this run has no demo stack (for the hint)."""
    error = Problems(document)
    for i, dependency in enumerate(profile.dependencies if allow_remote is not None else ()):
        for where in ("listen", "upstream"):
            host = getattr(dependency, where).rsplit(":", 1)[0]
            if not is_loopback(host) and host not in (allow_remote or ()):
                what = "listens on" if where == "listen" else "reaches"
                error(
                    ("dependencies", i, where),
                    f"{dependency.name} {what} {host}, not a loopback address",
                    hint=f"agentscale stays on 127.0.0.1 unless told: --allow-remote {host}",
                )

    declared = {d.name for d in profile.dependencies}
    known = declared | set(demo_targets)
    for i, window in enumerate(profile.windows):
        if window.target not in known and window.target in demo_only:
            error(
                ("windows", i, "target"),
                f"{window.target!r} is a dependency of the demo stack, which exists only in a"
                " run whose target.url is demo",
                hint="run this profile with a demo scenario (agentscale load scenarios/smoke.yaml"
                f" --faults PROFILE), or declare {window.target} under dependencies:",
            )
        elif window.target not in known:
            error(
                ("windows", i, "target"),
                f"unknown target {window.target!r}",
                hint="known: "
                + (
                    ", ".join(sorted(known))
                    or "none; declare it under dependencies: with upstream and listen"
                ),
            )
        elif window.http is not None and window.target in declared:
            protocol = next(d.protocol for d in profile.dependencies if d.name == window.target)
            if protocol != "http":
                error(("windows", i, "http"), "the http stage needs a protocol: http dependency")
        if duration is not None and window.end > duration + 1e-9:
            error(
                ("windows", i, "for"),
                f"the window ends at {window.end:g}s, past the end of {span[0]} ({duration:g}s)",
                hint=f"shorten the window, start it earlier, or {span[1]}",
            )
        for j, other in enumerate(profile.windows[:i]):
            exclusive = window.down or window.http is not None
            same_kind = (window.down and other.down) or (window.http and other.http)
            overlap = window.at < other.end and other.at < window.end
            if exclusive and same_kind and other.target == window.target and overlap:
                error(
                    ("windows", i, "at"),
                    f"overlaps window {other.name!r} on the same target",
                    hint=f"windows {j} and {i} would undo each other",
                )
    names = {w.name: w for w in profile.windows}
    for i, expectation in enumerate(profile.expect):
        if expectation.window not in names:
            error(
                ("expect", i, "window"),
                f"no window named {expectation.window!r}",
                hint="windows: " + ", ".join(sorted(names)),
            )
        elif expectation.amplification is not None and names[expectation.window].http is None:
            error(
                ("expect", i, "amplification"),
                "amplification is counted by the HTTP stage: an http window only",
                hint="retry_amplification reads the agent's own attempts in any window",
            )
    error.raise_any()

"""Reading a fault profile, and checking it against the run it is for."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from agentscale.chaos.profile import FaultProfile
from agentscale.errors import ConfigError, ConfigErrors
from agentscale.loading import parse_document
from agentscale.yamlsource import YamlDocument


@dataclass(frozen=True)
class LoadedProfile:
    path: Path
    document: YamlDocument
    profile: FaultProfile


def load_fault_profile(
    path: Path, *, demo_targets: Collection[str] = (), duration: float | None = None
) -> LoadedProfile:
    """``demo_targets``: the dependencies the demo stack declares when the target is ``demo``;
    ``duration``: the run's, so that no window is planned past its end."""
    document, profile = parse_document(
        path, FaultProfile, hint="--faults takes a fault profile (kind: FaultProfile)"
    )
    errors: list[ConfigError] = []

    def error(loc: tuple[str | int, ...], message: str, hint: str | None = None) -> None:
        field = ".".join(str(p) for p in loc)
        errors.append(ConfigError(message, location=document.locate(loc), field=field, hint=hint))

    declared = {d.name for d in profile.dependencies}
    known = declared | set(demo_targets)
    for i, window in enumerate(profile.windows):
        if window.target not in known:
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
                f"the window ends at {window.end:g}s, past the end of the run ({duration:g}s)",
                hint="shorten the window, start it earlier, or run longer",
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
    names = {w.name for w in profile.windows}
    for i, expectation in enumerate(profile.expect):
        if expectation.window not in names:
            error(
                ("expect", i, "window"),
                f"no window named {expectation.window!r}",
                hint="windows: " + ", ".join(sorted(names)),
            )
    if errors:
        raise ConfigErrors(errors)
    return LoadedProfile(path, document, profile)

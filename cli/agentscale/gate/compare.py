"""Baseline checks: the candidate's figures against a baseline's, run-level and per step and
workflow (``analysis/gated.py`` computes the latter).

A check regresses when its change is beyond its tolerance (widened to the spread between
repeated runs) and the noise cannot explain it. The noise is the block bootstrap's: each run's
replicates, centred on its exact figure, give the standard error of the change; the one-sided
p-value of "not worse at all" goes into Holm's method over every baseline check of the run
(``gate/family.py``), so that fifty step checks do not fail a run by chance fifty times as
often as one. Tolerance and noise are separate questions: how much worse matters (the
tolerance), and whether it is worse at all (the test).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

import numpy as np

from agentscale.analysis.figures import Card, GatedFigure, figure, replicates, reported
from agentscale.analysis.gated import MIN_CALLS_KEPT as MIN_KEPT
from agentscale.config.metrics import (
    MIN_REQUESTS,
    MIN_STEP_CALLS,
    MIN_WORKFLOW_REQUESTS,
    STREAM_METRICS,
    Metric,
)
from agentscale.config.scenario import Gates
from agentscale.gate.checks import Check, new_check
from agentscale.gate.family import Z95, holm, p_beyond
from agentscale.gate.tolerance import describe, group_metric

ALPHA = 0.05
MIN_REPLICATES = 20


@dataclass
class Trial:
    """A check with what its judgement needs."""

    check: Check
    bad: float  # the change, signed so that positive is worse
    limit: float  # how much worse it may get
    se: float
    p: float = 1.0


def compare(
    baseline: list[Card],
    candidate: list[Card],
    metrics: dict[str, Metric],
    min_requests: int = MIN_REQUESTS,
    required: frozenset[str] = frozenset(),
    gates: Gates | None = None,
) -> list[Check]:
    """``baseline`` and ``candidate``: the overall scorecard of each of their runs.
    ``required``: the metrics the scenario set a tolerance for (not measured: inconclusive);
    a step or workflow the scenario named that cannot be checked is inconclusive too."""
    checks: list[Check] = []
    trials: list[Trial] = []
    base_n = min((c["requests"] for c in baseline), default=0)
    cand_n = min((c["requests"] for c in candidate), default=0)
    for name, metric in metrics.items():
        if (
            name in STREAM_METRICS
            and name not in required
            and not any(reported(c, name) for c in (*baseline, *candidate))
        ):
            continue  # neither run streamed: nothing to say about streaming
        check = new_check(
            name, "baseline", name, tolerance=describe(metric), optional=name not in required
        )
        check["scope"] = "run"
        checks.append(check)
        unreported = _unreported(baseline, candidate, name)
        if unreported:
            check["status"], check["detail"] = "not measured", unreported
            continue
        base_values = [v for c in baseline if (v := figure(c, name)) is not None]
        cand_values = [v for c in candidate if (v := figure(c, name)) is not None]
        if not base_values or not cand_values:
            check["baseline"] = median(base_values) if base_values else None
            check["candidate"] = median(cand_values) if cand_values else None
            if check["optional"]:
                check["status"] = "not measured"  # a default check: listed, never deciding
            side = "either run" if not base_values and not cand_values else (
                "the baseline" if not base_values else "the candidate")  # fmt: skip
            check["detail"] = f"no value in {side}" + (
                " (the cost is unknown there: the scorecard's notes say which requests have none)"
                if "cost" in name
                else ""
            )
            continue
        trial = _trial(
            check, metric, base_values, cand_values,
            _centred(baseline, name, _run_value(name)),
            _centred(candidate, name, _run_value(name)),
        )  # fmt: skip
        if min(base_n, cand_n) < min_requests:
            check["detail"] = f"too few requests ({min(base_n, cand_n)} < {min_requests}) to judge"
        elif trial is None:
            check["detail"] = "no bootstrap replicates to estimate the noise"
        else:
            trials.append(trial)
    groups = _groups(baseline, candidate, gates)
    for scope, label, why in _unchecked(baseline, candidate, gates, {k for k, _ in groups}):
        # A step or workflow the scenario named but the gate could not check: never a pass.
        check = new_check(f"{scope} {label}", "baseline", f"{scope} {label}", detail=why)
        check["scope"] = scope
        checks.append(check)
    for key, metric in groups:
        base_values = [c["gated"][key]["value"] for c in baseline]
        cand_values = [c["gated"][key]["value"] for c in candidate]
        found = candidate[0]["gated"][key]
        named = _named(gates, found["scope"], found["group"])
        check = new_check(key, "baseline", key, tolerance=describe(metric), optional=not named)
        check["scope"] = found["scope"]
        checks.append(check)
        trial = _trial(
            check, metric, base_values, cand_values,
            _centred(baseline, key, _group_value(key)),
            _centred(candidate, key, _group_value(key)),
        )  # fmt: skip
        if trial is not None:
            trials.append(trial)
        else:  # a tolerance the scenario set is never skipped in silence
            check["status"] = "inconclusive" if named else "not measured"
            check["detail"] = "no bootstrap replicates to estimate the noise"
    for check, trial in _amplification(baseline, candidate):
        checks.append(check)
        if trial is not None:
            trials.append(trial)
    _judge(trials, gates.alpha if gates else ALPHA)
    return _ordered(checks, trials)


AMPLIFICATION = Metric(
    True, False, 0.25, floor=0.25, description="requests the dependency got per agent request"
)
MIN_WINDOW_REQUESTS = 20


def _amplification(baseline: list[Card], candidate: list[Card]) -> list[tuple[Check, Trial | None]]:
    """Per http window both runs had: requests its dependency got per agent request, as the
    HTTP stage counted them (a retry storm multiplies it). Its noise is that of two counts."""
    if not baseline or not candidate:
        return []
    sides = (baseline, candidate)
    names = sorted(set.intersection(*(set(c.get("windows", {})) for c in (*sides[0], *sides[1]))))
    found: list[tuple[Check, Trial | None]] = []
    for name in names:
        runs = [[c["windows"][name] for c in cards] for cards in sides]
        label = f"window {name}: amplification"  # the metric too: the CI files show it
        check = new_check(label, "baseline", label, tolerance=describe(AMPLIFICATION), window=name)
        check["scope"] = "window"
        found.append((check, None))
        least = min(w["requests"] for side in runs for w in side)
        values = [[w["amplification"] for w in side] for side in runs]
        base_values = [v for v in values[0] if v is not None]
        cand_values = [v for v in values[1] if v is not None]
        if least < MIN_WINDOW_REQUESTS or not base_values or not cand_values:
            check["status"] = "not measured"
            check["detail"] = f"{least} requests in the window, {MIN_WINDOW_REQUESTS} needed"
            continue
        base, cand = median(base_values), median(cand_values)
        variance = sum(
            (w["amplification"] or 0.0) ** 2
            * (1 / max(w["dependency_requests"], 1) + 1 / w["requests"])
            / len(side)
            for side in runs
            for w in side
        )
        se = math.sqrt(variance)
        change = cand - base
        check["baseline"], check["candidate"], check["change"] = base, cand, change
        check["change_pct"] = change / base if base else None
        check["ci"] = [change - Z95 * se, change + Z95 * se]
        limit = max(AMPLIFICATION.tolerance * base, AMPLIFICATION.floor)
        found[-1] = (check, Trial(check, change, limit, se))
    return found


def _trial(
    check: Check,
    metric: Metric,
    base_values: list[float],
    cand_values: list[float],
    base_reps: np.ndarray,
    cand_reps: np.ndarray,
) -> Trial | None:
    base, cand = median(base_values), median(cand_values)
    change = cand - base
    check["baseline"], check["candidate"], check["change"] = base, cand, change
    check["change_pct"] = change / abs(base) if base else None
    if base_reps.size < MIN_REPLICATES or cand_reps.size < MIN_REPLICATES:
        return None
    se = math.sqrt(float(np.var(base_reps)) + float(np.var(cand_reps)))
    if not math.isfinite(se):
        return None
    noise = max(_spread(base_values), _spread(cand_values))
    check["ci"] = [change - Z95 * se, change + Z95 * se]
    check["noise"] = noise
    limit = max(
        metric.tolerance if metric.absolute else metric.tolerance * abs(base), metric.floor, noise
    )
    bad = change if metric.higher_is_worse else -change
    return Trial(check, bad, limit, se)


def _judge(trials: list[Trial], alpha: float) -> None:
    for trial in trials:
        trial.p = p_beyond(trial.bad, 0.0, trial.se)
        trial.check["p_value"] = trial.p
    # A figure that did not vary in either run (attempts always 1, no tool ever failed) is
    # decided outright: it cannot regress by chance, so it does not join the family and
    # dilute the level left for the checks that can (as in Tarone's method).
    noisy = [t for t in trials if t.se > 0]
    worse = {id(t) for t in trials if t.se <= 0 and t.p == 0.0}
    worse |= {id(t) for t, r in zip(noisy, holm([t.p for t in noisy], alpha), strict=True) if r}
    regressed = {id(t) for t in trials if id(t) in worse and t.bad > t.limit}
    for trial in trials:
        if id(trial) in regressed:
            trial.check["status"] = "regressed"
        elif -trial.bad > trial.limit and -trial.bad - Z95 * trial.se > 0:
            trial.check["status"] = "improved"
        else:
            trial.check["status"] = "pass"


def _ordered(checks: list[Check], trials: list[Trial]) -> list[Check]:
    """Regressions first, step and workflow ones before run-level ones, each by how far beyond
    its tolerance; then the run-level checks in their order; then the rest."""
    beyond = {id(t.check): (t.bad - t.limit) / t.limit if t.limit else math.inf for t in trials}

    def rank(check: Check) -> tuple[int, float]:
        if check["status"] == "regressed":
            return (0 if check["scope"] != "run" else 1, -beyond[id(check)])
        return (2 if check["scope"] == "run" else 3, 0.0)

    return sorted(checks, key=rank)


def _groups(
    baseline: list[Card], candidate: list[Card], gates: Gates | None
) -> list[tuple[str, Metric]]:
    """The step and workflow figures both sides have enough calls or requests for."""
    if not baseline or not candidate:
        return []
    runs = baseline + candidate
    keys = set.intersection(*(set(c.get("gated", {})) for c in runs))
    chosen = []
    for key in sorted(keys):
        found: GatedFigure = candidate[0]["gated"][key]
        least = min(c["gated"][key]["n"] for c in runs)
        if least >= _least(gates, found["scope"]):
            chosen.append((key, group_metric(found, gates)))
    return chosen


def _named(gates: Gates | None, scope: str, group: str) -> bool:
    """Whether the scenario gave this step or workflow a tolerance of its own."""
    if gates is None:
        return False
    return group in (gates.steps if scope == "step" else gates.workflows)


def _least(gates: Gates | None, scope: str) -> int:
    if scope == "step":
        return gates.min_step_calls if gates else MIN_STEP_CALLS
    return gates.min_workflow_requests if gates else MIN_WORKFLOW_REQUESTS


def _unchecked(
    baseline: list[Card], candidate: list[Card], gates: Gates | None, checked: set[str]
) -> list[tuple[str, str, str]]:
    """(scope, name or "name figure", why) of each step or workflow the scenario gave
    tolerances to, or of one of its figures, that cannot be checked: too few calls or requests
    in one of the runs, not there at all, or a figure one run lacks (no call reached the tool,
    a cost that is unknown)."""
    if gates is None or not baseline or not candidate:
        return []
    runs = baseline + candidate
    found = []
    for scope, named in (("step", gates.steps), ("workflow", gates.workflows)):
        seen = sorted({f["group"] for c in runs for f in c.get("gated", {}).values()
                       if f["scope"] == scope})  # fmt: skip
        least = _least(gates, scope)
        unit = "calls" if scope == "step" else "requests"
        for name in named:
            if name == "default":
                continue
            counts = [
                max((f["n"] for f in c.get("gated", {}).values()
                     if f["scope"] == scope and f["group"] == name), default=0)
                for c in runs
            ]  # fmt: skip
            base_n, cand_n = min(counts[: len(baseline)]), min(counts[len(baseline) :])
            if not any("gated" in c for c in baseline):
                why = "the baseline has no per-step figures (saved by an earlier agentscale)"
                found.append((scope, name, why))
            elif base_n == 0 and cand_n > 0:
                found.append((scope, name, f"the baseline has no {scope} named {name!r} "
                              f"(the candidate has {cand_n} {unit})"))  # fmt: skip
            elif max(counts) == 0:
                known = ", ".join(seen[:12]) + (", ..." if len(seen) > 12 else "")
                near = difflib.get_close_matches(name, seen, n=1)
                found.append((scope, name, f"no {scope} named {name!r} with {MIN_KEPT} {unit} "
                              f"or more in either run (gates.{scope}s names it; seen: "
                              f"{known or 'none'})"
                              + (f"; did you mean {near[0]!r}?" if near else "")))  # fmt: skip
            elif min(counts) < least:
                found.append((scope, name, f"{min(counts)} {unit} in the smaller run, "
                              f"at least {least} needed in both (gates.min_{scope}_"
                              f"{'calls' if scope == 'step' else 'requests'})"))  # fmt: skip
            else:
                found += _unchecked_figures(baseline, candidate, scope, name, least, checked)
    return found


def _unchecked_figures(
    baseline: list[Card],
    candidate: list[Card],
    scope: str,
    name: str,
    least: int,
    checked: set[str],
) -> list[tuple[str, str, str]]:
    """The figures of a named step or workflow that one run has and the other lacks (or has
    too few of): each is inconclusive, never dropped in silence."""
    keys = {k for c in baseline + candidate for k, f in c.get("gated", {}).items()
            if f["scope"] == scope and f["group"] == name}  # fmt: skip
    found = []
    for key in sorted(keys - checked):
        figure = key.rsplit(" ", 1)[1]
        base = [_calls(c, key) for c in baseline]
        cand = [_calls(c, key) for c in candidate]
        if min(base) == 0 or min(cand) == 0:
            side = "baseline" if min(base) == 0 else "candidate"
            why = (f"the {side} has no {figure} for it (no call reached the tool, or the "
                   "data behind it was not reported)")  # fmt: skip
        else:
            why = f"{min(base + cand)} in the smaller run, at least {least} needed in both"
        found.append((scope, f"{name} {figure}", why))
    return found


def _calls(card: Card, key: str) -> int:
    found = card.get("gated", {}).get(key)
    return found["n"] if found is not None else 0


def _run_value(name: str) -> Callable[[Card], float | None]:
    return lambda card: figure(card, name)


def _group_value(key: str) -> Callable[[Card], float | None]:
    return lambda card: card["gated"][key]["value"]


def _centred(cards: list[Card], name: str, value_of: Callable[[Card], float | None]) -> np.ndarray:
    """Every run's replicates, each run's centred on its exact figure: their spread holds the
    sampling noise within a run and the differences between runs (the bootstrap's quantiles
    come from histograms, so only their spread is trusted, not their centre)."""
    pooled: list[np.ndarray] = []
    for card in cards:
        reps = np.asarray(replicates(card, name), dtype=float)
        value = value_of(card)
        if reps.size and value is not None:
            pooled.append(reps - float(np.median(reps)) + value)
    return np.concatenate(pooled) if pooled else np.empty(0)


def _unreported(baseline: list[Card], candidate: list[Card], name: str) -> str | None:
    """Why a figure cannot be compared because the agent did not report its data."""
    base = any(reported(c, name) for c in baseline)
    cand = any(reported(c, name) for c in candidate)
    if base and cand:
        return None
    if not base and not cand:
        return "the agent reported no data for it in either run"
    return f"the agent reported no data for it in the {'baseline' if cand else 'candidate'}"


def _spread(values: list[float]) -> float:
    return float(max(values) - min(values)) / 2 if len(values) >= 2 else 0.0

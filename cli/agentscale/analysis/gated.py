"""What the gate compares, computed once per run with its block-bootstrap replicates: the
run-level figures, and per step and per workflow the figures a regression hides in (a tool
whose p95 doubles while the run's p95 barely moves).

Each figure is kept under a key (``latency_p95_ms``, ``step crm_lookup p95_ms``, ``workflow
refund success_rate``) in ``Card["gated"]`` with its exact value and how many calls or
requests it rests on, and its replicates in ``Card["bootstrap"]``; a baseline keeps both.
"""

from __future__ import annotations

import warnings
from typing import TypedDict

import numpy as np
import pandas as pd

from agentscale.analysis.blocks import Blocks, tidy
from agentscale.analysis.figures import GatedFigure
from agentscale.records.frames import RunFrames, StepArrays
from agentscale.telemetry.judge import FAILED_OUTCOMES

MIN_CALLS_KEPT = 20  # fewer: no step or workflow figure at all (the gate asks for more)


class GateFigures(TypedDict):
    """What the overall card keeps for the gate."""

    gated: dict[str, GatedFigure]
    bootstrap: dict[str, list[float]]
    block_s: float


def gated_figures(frames: RunFrames, seed: int) -> GateFigures:
    """The overall card's ``gated``, ``bootstrap`` and ``block_s``."""
    a = frames.arrays
    sent = frames.sent
    blocks = Blocks.of(a["offset"], frames.duration, seed, _strata(frames))
    of_request = blocks.of_request
    reps: dict[str, np.ndarray] = {}
    figures: dict[str, GatedFigure] = {}
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        reps.update(_run_level(blocks, a, sent, of_request))
        reps.update(_streamed(frames, blocks, sent, of_request))
        _steps(frames, blocks, sent, figures, reps)
        _workflows(frames, blocks, sent, figures, reps)
    return {
        "gated": figures,
        "bootstrap": {name: tidy(values) for name, values in reps.items()},
        "block_s": blocks.seconds,
    }


def _strata(frames: RunFrames) -> np.ndarray:
    """Per request: which fault windows were in force at its intended start (a bit each) and
    which traffic phase it was in, as one integer label."""
    offsets = np.nan_to_num(frames.arrays["offset"], nan=-1.0)
    label = np.zeros(offsets.size, dtype=np.int64)
    for bit, (_name, start, end) in enumerate(frames.windows[:40]):
        label |= ((offsets >= start) & (offsets < end)).astype(np.int64) << bit
    phase = frames.requests["phase"]
    codes = phase.cat.codes if phase.dtype == "category" else pd.factorize(phase)[0]
    return label * 1024 + np.asarray(codes, dtype=np.int64) + 1


def _run_level(
    blocks: Blocks, a: dict[str, np.ndarray], sent: np.ndarray, of_request: np.ndarray
) -> dict[str, np.ndarray]:
    where = of_request[sent]

    def column(name: str) -> np.ndarray:
        values: np.ndarray = a[name][sent].astype(float, copy=False)  # a copy already
        return values

    latency, success = column("latency_ms"), column("success")
    calls, retries = column("tool_calls"), column("retries")
    cost, expect = column("cost_usd"), column("expect")
    calls_with_attempts = np.where(np.isnan(retries), np.nan, calls)
    p50, p95, p99 = blocks.quantiles(latency, where, (50, 95, 99))
    reps = {
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "success_rate": blocks.mean(success, where),
        "tool_calls_per_request": blocks.mean(calls, where),
        "retries_per_tool_call": blocks.ratio(
            blocks.sums(retries, where), blocks.sums(calls_with_attempts, where)
        ),
        "input_tokens_mean": blocks.mean(column("input_tokens"), where),
        "output_tokens_mean": blocks.mean(column("output_tokens"), where),
    }
    if not np.isnan(expect).all():
        reps["expected_answer_rate"] = blocks.mean(expect, where)
    if cost.size and not np.isnan(cost).any():
        reps["cost_per_request_usd"] = blocks.mean(cost, where)
        reps["cost_per_success_usd"] = blocks.ratio(
            blocks.sums(cost, where), blocks.sums(success, where)
        )
    return reps


def _streamed(
    frames: RunFrames, blocks: Blocks, sent: np.ndarray, of_request: np.ndarray
) -> dict[str, np.ndarray]:
    """Replicates of the streamed answers' figures: time to first content event, and the
    gaps between events (each gap in the block of its request)."""
    ttft = frames.arrays["ttft_ms"]
    if frames.gaps is None and np.isnan(ttft[sent]).all():
        return {}
    reps = {"ttft_p95_ms": blocks.quantile(ttft[sent].astype(float), of_request[sent], 95)}
    if frames.gaps is not None:
        owner, values = frames.gaps
        kept = sent[owner]
        reps["inter_event_p95_ms"] = blocks.quantile(values[kept], of_request[owner[kept]], 95)
    return reps


def _steps(
    frames: RunFrames,
    blocks: Blocks,
    sent: np.ndarray,
    figures: dict[str, GatedFigure],
    reps: dict[str, np.ndarray],
) -> None:
    s = frames.step_arrays
    if not s.req.size:
        return
    keep = sent[s.req]
    if not keep.any():
        return
    everything = bool(keep.all())
    kinds = s.code_of("kind")
    failed_codes = [s.code("outcome", value) for value in FAILED_OUTCOMES]
    hit = s.code("cache", "hit")
    labels = s.names_of("name")
    for code, name in enumerate(labels):
        rows = _named(s, code)
        if not everything:
            rows = rows[keep[rows]]
        if rows.size < MIN_CALLS_KEPT:
            continue
        kind = s.categories["kind"][kinds[rows[0]]] if kinds[rows[0]] >= 0 else "nan"
        where = blocks.of_request[s.req[rows]]
        latency = s.latency[rows]
        known = latency[~np.isnan(latency)]
        if known.size >= MIN_CALLS_KEPT:
            _keep(figures, reps, "step", str(name), kind, "p95_ms",
                  float(np.percentile(known, 95)), int(known.size),
                  blocks.quantile(latency, where, 95))  # fmt: skip
        if kind == "tool":
            # A cache hit never reached the tool: it has no attempts and cannot fail there.
            called = rows[s.code_of("cache")[rows] != hit]
            where = blocks.of_request[s.req[called]]
            outcome = s.code_of("outcome")[called]
            failed = np.isin(outcome, failed_codes).astype(float)
            failed[outcome < 0] = np.nan
            if not np.isnan(failed).all():
                _keep(figures, reps, "step", str(name), kind, "error_rate",
                      float(np.nanmean(failed)), int((~np.isnan(failed)).sum()),
                      blocks.mean(failed, where))  # fmt: skip
            attempts = s.attempts[called].astype(float)
            if not np.isnan(attempts).all():
                _keep(figures, reps, "step", str(name), kind, "attempts_per_call",
                      float(np.nanmean(attempts)), int((~np.isnan(attempts)).sum()),
                      blocks.mean(attempts, where))  # fmt: skip
        if kind == "llm":
            # A call with a count missing: unknown, not 0.
            tokens = s.subset("input_tokens", rows) + s.subset("output_tokens", rows)
            known_calls = int((~np.isnan(tokens)).sum())
            if known_calls:
                _keep(figures, reps, "step", str(name), kind, "tokens_per_call",
                      float(np.nanmean(tokens)), known_calls,
                      blocks.mean(tokens, where))  # fmt: skip


def _named(s: StepArrays, code: int) -> np.ndarray:
    """The rows of the steps named ``code``, of any kind (or none), ascending: slices of the
    steps' (kind, name) order, which is made once for the whole scorecard, never a sort of
    millions of rows per figure."""
    order, bounds = s.order, s.pair_bounds
    names = max(len(s.names_of("name")), 1)
    # bounds[0]: the steps without a kind or a name, which are in no pair.
    unpaired = order[bounds[0] : bounds[1]]
    parts = [unpaired[s.code_of("name")[unpaired] == code]]
    for kind in range(len(s.names_of("kind"))):
        pair = kind * names + code
        if pair + 2 < len(bounds):  # the bounds end with the last pair that occurs
            parts.append(order[bounds[1 + pair] : bounds[2 + pair]])
    found = [part for part in parts if part.size]
    rows: np.ndarray
    if len(found) == 1:
        rows = found[0]  # one run of the stable order: ascending already
        return rows
    rows = np.sort(np.concatenate(found)) if found else unpaired[:0]
    return rows


def _workflows(
    frames: RunFrames,
    blocks: Blocks,
    sent: np.ndarray,
    figures: dict[str, GatedFigure],
    reps: dict[str, np.ndarray],
) -> None:
    a = frames.arrays
    workflow = frames.requests["workflow"]
    codes = pd.Categorical(workflow if workflow.dtype == "category" else workflow.astype("string"))
    if len(codes.categories) < 2:
        return  # one workflow is the run itself: the run-level checks cover it
    for code, name in enumerate(codes.categories):
        mask = (codes.codes == code) & sent
        count = int(mask.sum())
        if count < MIN_CALLS_KEPT:
            continue
        where = blocks.of_request[mask]
        latency = a["latency_ms"][mask].astype(float)
        success = a["success"][mask].astype(float)
        cost = a["cost_usd"][mask].astype(float)
        _keep(figures, reps, "workflow", str(name), None, "success_rate",
              float(success.mean()), count, blocks.mean(success, where))  # fmt: skip
        known = latency[~np.isnan(latency)]
        if known.size:
            _keep(figures, reps, "workflow", str(name), None, "latency_p95_ms",
                  float(np.percentile(known, 95)), int(known.size),
                  blocks.quantile(latency, where, 95))  # fmt: skip
        if not np.isnan(cost).any() and success.sum() > 0:
            _keep(figures, reps, "workflow", str(name), None, "cost_per_success_usd",
                  float(cost.sum() / success.sum()), count,
                  blocks.ratio(blocks.sums(cost, where), blocks.sums(success, where)))  # fmt: skip


def _keep(
    figures: dict[str, GatedFigure],
    reps: dict[str, np.ndarray],
    scope: str,
    group: str,
    kind: str | None,
    figure: str,
    value: float,
    n: int,
    replicates: np.ndarray,
) -> None:
    key = f"{scope} {group} {figure}"
    figures[key] = {"scope": scope, "group": group, "kind": kind, "figure": figure,
                    "value": value, "n": n}  # fmt: skip
    reps[key] = replicates

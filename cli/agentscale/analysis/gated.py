"""What the gate compares, computed once per run with its block-bootstrap replicates: the
run-level figures, and per step and per workflow the figures a regression hides in (a tool
whose p95 doubles while the run's p95 barely moves).

Each figure is kept under a key (``latency_p95_ms``, ``step crm_lookup p95_ms``, ``workflow
refund success_rate``) in ``Card["gated"]`` with its exact value and how many calls or
requests it rests on, and its replicates in ``Card["bootstrap"]``; a baseline keeps both.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from agentscale.analysis.blocks import Blocks, tidy
from agentscale.analysis.figures import Card, GatedFigure
from agentscale.records.frames import RunFrames
from agentscale.telemetry.judge import FAILED_OUTCOMES

MIN_CALLS_KEPT = 20  # fewer: no step or workflow figure at all (the gate asks for more)


def gated_figures(frames: RunFrames, overall: Card, seed: int) -> None:
    """Fill ``overall["gated"]``, ``overall["bootstrap"]`` and ``overall["block_s"]``."""
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
    overall["gated"] = figures
    overall["bootstrap"] = {name: tidy(values) for name, values in reps.items()}
    overall["block_s"] = blocks.seconds


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
        values: np.ndarray = a[name][sent].astype(float)
        return values

    latency, success = column("latency_ms"), column("success")
    calls, retries = column("tool_calls"), column("retries")
    cost, expect = column("cost_usd"), column("expect")
    calls_with_attempts = np.where(np.isnan(retries), np.nan, calls)
    reps = {
        "latency_p50_ms": blocks.quantile(latency, where, 50),
        "latency_p95_ms": blocks.quantile(latency, where, 95),
        "latency_p99_ms": blocks.quantile(latency, where, 99),
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
    # Categorical codes, never strings: these columns have millions of rows. Only the name
    # and the latency are taken for every step; a tool's or a model's own columns only for
    # its rows.
    names = s.code_of("name")
    chosen = None if keep.all() else np.flatnonzero(keep)  # no copy when all were sent
    if chosen is not None:
        if not chosen.size:
            return
        names = names[chosen]
    kinds = s.code_of("kind")
    failed_codes = [s.code("outcome", value) for value in FAILED_OUTCOMES]
    hit = s.code("cache", "hit")
    # One sort, then a slice per name: a pass over every step per name would be quadratic.
    order = np.argsort(names, kind="stable")
    labels = s.names_of("name")
    bounds = np.searchsorted(names[order], np.arange(len(labels) + 1))
    for code, name in enumerate(labels):
        rows = order[bounds[code] : bounds[code + 1]]
        if rows.size < MIN_CALLS_KEPT:
            continue
        if chosen is not None:
            rows = chosen[rows]
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

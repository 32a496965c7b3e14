"""Everything the report shows, gathered once from a run (in memory after ``agentscale load``,
from its folder for ``agentscale report``): typed, so the templates read named fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from agentscale.analysis.build import build_scorecard
from agentscale.analysis.diagnosis import Diagnosis, diagnose
from agentscale.analysis.figures import Card, Scorecard
from agentscale.config.loader import parse_document
from agentscale.config.scenario import Price, Scenario
from agentscale.gate import baseline as baselines
from agentscale.gate.baseline import Baseline
from agentscale.gate.checks import Verdict
from agentscale.jsondata import JsonObject
from agentscale.records.frames import RunFrames, epoch_seconds, fault_windows, load_frames
from agentscale.records.runfolder import RunInfo, read_json, read_run
from agentscale.records.writer import read_events

MAX_TENANT_LINES = 8  # the busiest tenants; a chart of fifty lines says nothing


class TenantSeries(TypedDict):
    sent: list[float]
    p95: list[float | None]


class Series(TypedDict, total=False):
    """Per-bucket traffic, latency percentiles and errors (about 120 buckets a run)."""

    x: list[float]
    width: float
    duration: float
    offered: list[float]
    sent: list[float]
    in_flight: list[int]
    latency: dict[str, list[float | None]]
    errors: dict[str, list[float]]
    tenants: dict[str, TenantSeries]


@dataclass
class ReportData:
    run: RunInfo
    card: Scorecard
    verdict: Verdict | None
    baseline: Card | None  # the baseline's first run's overall scorecard
    baseline_name: str | None
    series: Series
    windows: list[tuple[str, float, float]]
    samples: list[tuple[str, str, str]]  # request id, error class, what the agent answered
    diagnosis: Diagnosis
    fault_events: list[JsonObject]
    waterfalls: list[Waterfall] = field(default_factory=list)


@dataclass(frozen=True)
class Bar:
    label: str
    kind: str
    start_ms: float  # from the request's send
    duration_ms: float
    failed: bool


@dataclass(frozen=True)
class Waterfall:
    """One request's steps on its own time line, with the faults that were around it."""

    title: str
    service_ms: float
    bars: list[Bar]
    windows: list[tuple[str, float, float]]  # fault windows in force, ms from the send
    injected: list[float]  # faults the stage injected into this request's calls, ms


def gather(
    run_dir: Path,
    baseline_path: Path | None = None,
    *,
    frames: RunFrames | None = None,
    info: RunInfo | None = None,
    card: Scorecard | None = None,
    verdict: Verdict | None = None,
    scenario: Scenario | None = None,
    baseline: Baseline | None = None,
) -> ReportData:
    """What the report of ``run_dir`` shows; whatever is given is not read again."""
    if frames is None:
        frames = load_frames(run_dir)
    info = info or read_run(run_dir)
    if scenario is None:
        scenario = scenario_as_run(run_dir)
    if card is None:
        card_path = run_dir / "scorecard.json"
        card = (
            read_json(card_path)
            if card_path.is_file()
            else build_scorecard(frames, scenario, run_dir, info.get("seed", 0))
        )
    if verdict is None:
        # An earlier run of a --repeat has no verdict of its own: run.json names the folder
        # of the verdict that judged it.
        judged = info.get("verdict") or {}
        for folder in (run_dir, Path(str(judged.get("verdict_file") or run_dir))):
            if (folder / "verdict.json").is_file():
                verdict = read_json(folder / "verdict.json")
                break
    if baseline_path is None and verdict and verdict.get("baseline_file"):
        candidate = Path(str(verdict["baseline_file"]))
        baseline_path = candidate if candidate.is_file() else None
    found = baseline or (baselines.load(baseline_path) if baseline_path else None)
    events = read_events(run_dir / "events.jsonl")
    return ReportData(
        run=info,
        card=card,
        verdict=verdict,
        baseline=found["runs"][0]["scorecard"] if found else None,
        baseline_name=found["name"] if found else None,
        series=time_series(frames.requests, info),
        windows=fault_windows(info),
        samples=_samples(frames.requests),
        diagnosis=diagnose(card["overall"], _prices(scenario)),
        fault_events=[e for e in events if str(e.get("type", "")).startswith("fault_")],
        waterfalls=waterfalls(frames),
    )


SLOWEST = 5


def waterfalls(frames: RunFrames, slowest: int = SLOWEST) -> list[Waterfall]:
    """The slowest requests, and a median one beside them, whose steps say when they ran."""
    steps = frames.steps
    if steps.empty or "start_ms" not in steps or steps["start_ms"].isna().all():
        return []
    a = frames.arrays
    timed = np.zeros(len(frames.requests), dtype=bool)
    timed[steps.loc[steps["start_ms"].notna(), "req"].to_numpy()] = True
    candidates = np.flatnonzero(frames.sent & timed & ~np.isnan(a["service_ms"]))
    if not candidates.size:
        return []
    order = candidates[np.argsort(a["latency_ms"][candidates], kind="stable")]
    chosen = [(int(i), "slowest") for i in order[::-1][:slowest]]
    median = int(order[order.size // 2])
    if median not in {i for i, _ in chosen}:
        chosen.append((median, "median"))
    return [_waterfall(frames, position, why) for position, why in chosen]


def _waterfall(frames: RunFrames, position: int, why: str) -> Waterfall:
    requests, a = frames.requests, frames.arrays
    rid = str(requests["request_id"].iat[position])
    sent = float(epoch_seconds(requests["sent_at"])[position])
    service = float(a["service_ms"][position])
    mine = frames.steps[frames.steps["req"] == position].sort_values("start_ms", na_position="last")
    bars = [
        Bar(
            f"{name}", str(kind), float(start), float(duration if duration == duration else 0.0),
            outcome in ("error", "timeout", "short_circuited"),
        )
        for name, kind, start, duration, outcome in zip(
            mine["name"], mine["kind"], mine["start_ms"], mine["latency_ms"], mine["outcome"],
            strict=True,
        )
        if start == start
    ]  # fmt: skip
    offset = sent - frames.started_at
    windows = [
        (name, (lo - offset) * 1000, (hi - offset) * 1000)
        for name, lo, hi in frames.windows
        if lo < offset + service / 1000 and hi > offset
    ]
    injected: list[float] = []
    found = frames.injected
    if found is not None and not found.empty:
        trace = requests["trace_id"].iat[position] if "trace_id" in requests else None
        ours = (found["request_id"] == rid) | (found["trace_id"] == trace)
        at = epoch_seconds(found.loc[ours, "at"])
        injected = [float(t - sent) * 1000 for t in at]
    latency = float(a["latency_ms"][position])
    title = f"{rid} ({why}): {latency:,.0f} ms from the intended start, {service:,.0f} ms served"
    return Waterfall(title, service, bars, windows, injected)


def scenario_as_run(run_dir: Path) -> Scenario | None:
    """The scenario as it ran (its copy in the run folder), if there is one."""
    path = run_dir / "scenario.yaml"
    if not path.is_file():
        return None
    return parse_document(path, Scenario, hint="")[1]


def time_series(requests: pd.DataFrame, run: RunInfo) -> Series:
    """Per-bucket traffic, latency percentiles and errors (about 120 buckets a run)."""
    actual = run.get("actual")
    duration = float((actual["load_seconds"] if actual else 0) or run["planned"]["duration_s"])
    width = max(1.0, round(duration / 120))
    if requests.empty:
        return {"x": [], "width": width, "duration": duration}
    start = requests["intended_start"].min()
    offset = (requests["intended_start"] - start).dt.total_seconds().to_numpy()
    sent_offset = (requests["sent_at"] - start).dt.total_seconds().to_numpy()
    bucket = np.floor(offset / width).astype(int)
    count = int(np.ceil(duration / width))
    buckets = np.arange(count)
    dropped = requests["dropped"].to_numpy(dtype=bool)
    latency = requests["latency_ms"].to_numpy(dtype=float, na_value=np.nan)
    service = requests["service_ms"].to_numpy(dtype=float, na_value=np.nan) / 1000
    offered = np.bincount(bucket.clip(0, count - 1), minlength=count) / width
    sent = np.bincount(bucket[~dropped].clip(0, count - 1), minlength=count) / width
    in_flight = [
        int(np.sum((sent_offset <= t) & (sent_offset + service > t))) for t in buckets * width
    ]
    percentiles: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    for b in buckets:
        values = latency[(bucket == b) & ~np.isnan(latency)]
        for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            percentiles[key].append(float(np.percentile(values, q)) if values.size else None)
    errors: dict[str, list[float]] = {}
    classes = requests["error_class"].astype("string").fillna("")
    for name in sorted(set(classes) - {""}):
        mask = (classes == name).to_numpy()
        errors[str(name)] = (
            np.bincount(bucket[mask].clip(0, count - 1), minlength=count) / width
        ).tolist()
    return {
        "x": (buckets * width).tolist(),
        "width": width,
        "duration": duration,
        "offered": offered.tolist(),
        "sent": sent.tolist(),
        "in_flight": in_flight,
        "latency": percentiles,
        "errors": errors,
        "tenants": _tenant_series(requests, bucket.clip(0, count - 1), count, width, latency),
    }


def _tenant_series(
    requests: pd.DataFrame, bucket: np.ndarray, count: int, width: float, latency: np.ndarray
) -> dict[str, TenantSeries]:
    """Sent requests/s and p95 per tenant and bucket (one grouped pass, not a loop a tenant)."""
    tenants = requests["tenant"].astype("string").fillna("")
    if tenants.nunique() < 2:
        return {}
    busiest = tenants.value_counts().index[:MAX_TENANT_LINES]
    frame = pd.DataFrame({"tenant": tenants, "bucket": bucket, "latency": latency})
    frame = frame[frame["tenant"].isin(busiest) & ~requests["dropped"].to_numpy(dtype=bool)]
    grouped = frame.groupby(["tenant", "bucket"])["latency"]
    rate = grouped.size().unstack(fill_value=0).reindex(columns=range(count), fill_value=0)
    p95 = grouped.quantile(0.95).unstack().reindex(columns=range(count))
    out: dict[str, TenantSeries] = {}
    for name in busiest:
        if name not in rate.index:
            continue
        out[str(name)] = {
            "sent": (rate.loc[name] / width).tolist(),
            "p95": [None if pd.isna(v) else float(v) for v in p95.loc[name]],
        }
    return out


def _samples(requests: pd.DataFrame, per_class: int = 3) -> list[tuple[str, str, str]]:
    failed = (
        requests[requests["output_excerpt"].notna()]
        if "output_excerpt" in requests
        else requests.iloc[:0]
    )
    out = []
    for error_class, group in failed.groupby("error_class", observed=True):
        for _, row in group.head(per_class).iterrows():
            out.append((str(row["request_id"]), str(error_class), str(row["output_excerpt"])))
    return out


def _prices(scenario: Scenario | None) -> Mapping[str, Price] | None:
    return (scenario.pricing or None) if scenario is not None else None

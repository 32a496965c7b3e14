"""The run report: one self-contained HTML file (no script, no network), or the same evidence
as Markdown (``md``) or an architecture decision record (``adr``). Verdict first."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agentscale import baseline as baselines
from agentscale import report_tenants
from agentscale.charts import bar_pairs, line_chart
from agentscale.diagnosis import Diagnosis, diagnose
from agentscale.formats import fmt_pct, fmt_usd, fmt_value
from agentscale.records import read_events
from agentscale.runfolder import read_json
from agentscale.verdictfiles import LABEL, describe


def check_detail(check: dict[str, Any]) -> str:
    """What a check found, without repeating its name."""
    if check["kind"] == "baseline":
        return describe(check)
    return f"measured {fmt_value(check.get('value'))}, expected {check.get('expected')}"


@dataclass
class ReportData:
    run: dict[str, Any]
    card: dict[str, Any]
    verdict: dict[str, Any] | None
    baseline: dict[str, Any] | None  # the baseline's first run's overall scorecard
    baseline_name: str | None
    series: dict[str, Any]
    windows: list[tuple[str, float, float]]
    samples: list[tuple[str, str, str]]  # request id, error class, what the agent answered
    diagnosis: Diagnosis
    fault_events: list[dict[str, Any]]


def gather(run_dir: Path, baseline_path: Path | None = None) -> ReportData:
    from agentscale.judging import build_scorecard

    run = read_json(run_dir / "run.json")
    card = (
        read_json(run_dir / "scorecard.json")
        if (run_dir / "scorecard.json").is_file()
        else build_scorecard(run_dir)[0]
    )
    verdict = read_json(run_dir / "verdict.json") if (run_dir / "verdict.json").is_file() else None
    if baseline_path is None and verdict and verdict.get("baseline_file"):
        candidate = Path(verdict["baseline_file"])
        baseline_path = candidate if candidate.is_file() else None
    found = baselines.load(baseline_path) if baseline_path else None
    requests = pd.read_parquet(run_dir / "requests.parquet")
    windows = [
        (str(n), float(a), float(b)) for n, a, b in (run.get("faults") or {}).get("windows", [])
    ]
    events = read_events(run_dir / "events.jsonl")
    return ReportData(
        run=run,
        card=card,
        verdict=verdict,
        baseline=found["runs"][0]["scorecard"] if found else None,
        baseline_name=found["name"] if found else None,
        series=time_series(requests, run),
        windows=windows,
        samples=_samples(requests),
        diagnosis=diagnose(card["overall"], _prices(run_dir)),
        fault_events=[e for e in events if str(e.get("type", "")).startswith("fault_")],
    )


def time_series(requests: pd.DataFrame, run: dict[str, Any]) -> dict[str, Any]:
    """Per-bucket traffic, latency percentiles and errors (about 120 buckets a run)."""
    duration = float((run.get("actual") or {}).get("load_seconds") or run["planned"]["duration_s"])
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
    classes = requests["error_class"].fillna("")
    for name in sorted(set(classes) - {""}):
        mask = (classes == name).to_numpy()
        errors[name] = (
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


MAX_TENANT_LINES = 8  # the busiest tenants; a chart of fifty lines says nothing


def _tenant_series(
    requests: pd.DataFrame, bucket: np.ndarray, count: int, width: float, latency: np.ndarray
) -> dict[str, dict[str, list[float | None]]]:
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
    out = {}
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
    for error_class, group in failed.groupby("error_class"):
        for _, row in group.head(per_class).iterrows():
            out.append((str(row["request_id"]), str(error_class), str(row["output_excerpt"])))
    return out


def _prices(run_dir: Path) -> dict[str, Any] | None:
    from agentscale.loading import parse_document
    from agentscale.scenario import Scenario

    path = run_dir / "scenario.yaml"
    if not path.is_file():
        return None
    scenario = parse_document(path, Scenario, hint="")[1]
    return {name: price.model_dump() for name, price in scenario.pricing.items()} or None


KEY_FIGURES = (
    ("requests", "requests", fmt_value),
    ("success rate", "success_rate", fmt_pct),
    ("expected answers", "expected_answer_rate", fmt_pct),
    ("p50 latency (ms)", "latency_p50_ms", fmt_value),
    ("p95 latency (ms)", "latency_p95_ms", fmt_value),
    ("p99 latency (ms)", "latency_p99_ms", fmt_value),
    ("throughput (req/s)", "throughput_rps", fmt_value),
    ("input tokens / request", "input_tokens_mean", fmt_value),
    ("output tokens / request", "output_tokens_mean", fmt_value),
    ("tool calls / request", "tool_calls_per_request", fmt_value),
    ("retries / tool call", "retries_per_tool_call", fmt_value),
    ("cost / request", "cost_per_request_usd", fmt_usd),
    ("cost / success", "cost_per_success_usd", fmt_usd),
    ("cache hit rate", "cache_hit_rate", fmt_pct),
    ("degraded share", "degraded_share", fmt_pct),
    ("circuit opens", "circuit_opens", fmt_value),
    ("fallbacks", "fallbacks", fmt_value),
    ("budget exhaustions", "budget_exhausted", fmt_value),
    ("dropped arrivals", "dropped", fmt_value),
)


def key_rows(data: ReportData) -> list[tuple[str, str, str]]:
    overall, base = data.card["overall"], data.baseline or {}
    return [
        (label, fmt(base.get(key)) if data.baseline else "", fmt(overall.get(key)))
        for label, key, fmt in KEY_FIGURES
    ]


def method_rows(data: ReportData) -> list[tuple[str, str]]:
    run = data.run
    load = run.get("load", {})
    env = run.get("environment", {})
    rows = [
        ("scenario", f"{run['scenario']['name']} ({run['scenario']['sha256'][:12]})"),
        (
            "dataset",
            f"{run['dataset']['file']} ({run['dataset']['sha256'][:12]}, "
            f"{run['dataset']['items']} items)",
        ),
        (
            "load",
            f"{load.get('model')} model, {load.get('shape')}, {load.get('duration')} s, "
            f"max concurrency {load.get('max_concurrency')}",
        ),
        ("seed", str(run.get("seed"))),
        ("target", f"{run['target']['method']} {run['target']['url']}"),
        (
            "environment",
            f"{env.get('cpu')}, {env.get('cpu_count')} cores, fingerprint {env.get('fingerprint')}",
        ),
        ("versions", ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())),
    ]
    if run.get("demo"):
        rows.append(
            (
                "demo stack",
                f"profile {run['demo']['profile']}, time scale {run['demo']['time_scale']}",
            )
        )
    if run.get("faults"):
        rows.append(("faults", f"{run['faults'].get('profile')} ({run['faults'].get('file')})"))
    rows.append(
        (
            "reproduce",
            f"agentscale load {run['scenario']['file']} --seed {run.get('seed')}"
            + (f" --faults {run['faults']['file']}" if run.get("faults") else ""),
        )
    )
    return rows


# --- HTML --------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:980px;
color:#111827;padding:0 16px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #e5e7eb;padding-bottom:4px}table{border-collapse:collapse;width:100%;
margin:6px 0}th,td{border-bottom:1px solid #f3f4f6;padding:4px 8px;text-align:left;
vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.badge{display:
inline-block;padding:4px 12px;border-radius:6px;font-weight:700;color:#fff}.pass{background:#059669}
.fail{background:#dc2626}.inconclusive,.invalid,.interrupted{background:#d97706}.muted{color:#6b7280}
.s-regressed,.s-failed{color:#dc2626;font-weight:600}.s-improved,.s-pass{color:#059669}
.s-inconclusive{color:#d97706}svg.chart{width:100%;height:auto}svg text{font:11px system-ui,
sans-serif;fill:#374151}.ytick{text-anchor:end}.xtick{text-anchor:middle}.ylabel{text-anchor:end}
.grid{stroke:#e5e7eb}.win{fill:#92400e}.lever{background:#eff6ff;border-left:4px solid #2563eb;
padding:8px 12px}code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
"""


def html(data: ReportData) -> str:
    run, overall = data.run, data.card["overall"]
    verdict = data.verdict or {
        "result": run.get("verdict", {}).get("result", "pass"),
        "exit_code": run.get("exit_code"),
        "checks": [],
        "invalid_reasons": [],
    }
    result = verdict["result"]
    e = escape
    # A data: icon, so that a browser does not ask the network for /favicon.ico either.
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<link rel='icon' href='data:,'>",
        f"<title>agentscale: {e(run['scenario']['name'])} {e(run['run_id'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(run['scenario']['name'])} <span class='muted'>{e(run['run_id'])}</span></h1>",
        f"<p><span class='badge {e(result)}'>{e(LABEL.get(result, result.upper()))}</span> "
        f"exit code {e(str(verdict.get('exit_code')))}"
        + (
            f" · against baseline <code>{e(data.baseline_name)}</code>"
            if data.baseline_name
            else ""
        )
        + "</p>",
    ]
    for line in report_tenants.leak_lines(data.card.get("tenants")):
        out.append(f"<p class='s-failed'><b>{e(line)}</b></p>")
    for reason in verdict.get("invalid_reasons", []):
        out.append(f"<p class='s-failed'>invalid: {e(reason)}</p>")
    if verdict.get("checks"):
        out.append("<h2>Checks</h2><table><tr><th>check</th><th>detail</th><th>status</th></tr>")
        for check in verdict["checks"]:
            out.append(
                f"<tr><td>{e(check['name'])}</td><td>{e(check_detail(check))}</td>"
                f"<td class='s-{e(check['status'])}'>{e(check['status'])}</td></tr>"
            )
        out.append("</table>")
    out.append(
        "<h2>Key figures</h2><table><tr><th>figure</th>"
        + ("<th class='n'>baseline</th>" if data.baseline else "")
        + "<th class='n'>this run</th></tr>"
    )
    for label, base, value in key_rows(data):
        out.append(
            f"<tr><td>{e(label)}</td>"
            + (f"<td class='n'>{e(base)}</td>" if data.baseline else "")
            + f"<td class='n'>{e(value)}</td></tr>"
        )
    out.append("</table>")
    out.append(
        f"<h2>Bottleneck diagnosis</h2><p class='lever'><b>Pull first: "
        f"{e(data.diagnosis.lever)}</b><br>{e(data.diagnosis.why)}</p><ul>"
        + "".join(f"<li>{e(item)}</li>" for item in data.diagnosis.evidence)
        + "</ul>"
    )
    s = data.series
    if s.get("x"):
        unit = "users" if run["load"].get("model") == "closed" else "requests/s"
        out.append(
            "<h2>Traffic</h2>"
            + line_chart(
                s["x"],
                {"offered (target)": s["offered"], "sent": s["sent"], "in flight": s["in_flight"]},
                unit=unit,
                windows=data.windows,
                x_max=s["duration"],
            )
        )
        out.append(
            "<h2>Latency over time (from the intended start)</h2>"
            + line_chart(s["x"], s["latency"], unit="ms", windows=data.windows, x_max=s["duration"])
        )
        tenants = s.get("tenants") or {}
        if len(tenants) >= 2:
            out.append(
                "<h2>Per tenant over time</h2><h3>Sent (requests/s)</h3>"
                + line_chart(
                    s["x"], {n: t["sent"] for n, t in tenants.items()}, unit="requests/s",
                    windows=data.windows, x_max=s["duration"],
                )
                + "<h3>p95 latency (ms)</h3>"
                + line_chart(
                    s["x"], {n: t["p95"] for n, t in tenants.items()}, unit="ms",
                    windows=data.windows, x_max=s["duration"],
                )
            )  # fmt: skip
        if s["errors"]:
            out.append(
                "<h2>Errors by class over time</h2>"
                + line_chart(
                    s["x"],
                    s["errors"],
                    unit="errors/s",
                    windows=data.windows,
                    x_max=s["duration"],
                    stacked=True,
                )
            )
    steps = overall.get("steps", {})
    if steps:
        base_steps = (data.baseline or {}).get("steps", {})
        rows = sorted(
            ((n, st["p95_ms"], base_steps.get(n, {}).get("p95_ms")) for n, st in steps.items()),
            key=lambda r: -(r[1] or 0),
        )
        out.append("<h2>p95 by step</h2>" + bar_pairs(rows, "ms"))
        shares = overall.get("slowest_5pct_share", {})
        out.append(
            "<table><tr><th>step</th><th>kind</th><th class='n'>calls</th><th class='n'>"
            "p95 ms</th><th class='n'>share of the slowest 5%</th></tr>"
        )
        for name, _p95, _b in rows:
            st = steps[name]
            out.append(
                f"<tr><td>{e(name)}</td><td>{e(st['kind'])}</td><td class='n'>"
                f"{st['count']:,}</td><td class='n'>{fmt_value(st['p95_ms'])}</td><td class='n'>"
                f"{fmt_pct(shares.get(name))}</td></tr>"
            )
        out.append("</table>")
    tools = overall.get("tools", {})
    if tools:
        out.append(
            "<h2>Tool calls and retries</h2><table><tr><th>tool</th><th class='n'>calls"
            "</th><th class='n'>retries / call</th><th>outcomes</th><th>retry reasons</th>"
            "</tr>"
        )
        for name, tool in tools.items():
            out.append(
                f"<tr><td>{e(name)}</td><td class='n'>{tool['calls']:,}</td><td class='n'>"
                f"{tool['retries_per_call']:.2f}</td><td>{e(str(tool['outcomes']))}</td>"
                f"<td>{e(str(tool['retry_reasons']))}</td></tr>"
            )
        out.append("</table>")
    out.append(_group_table("Per tenant", data.card.get("by_tenant", {})))
    out.append(report_tenants.html(data.card.get("tenants")))
    out.append(_group_table("Per workflow", data.card.get("by_workflow", {})))
    out.append(_group_table("Per traffic phase", data.card.get("by_phase", {})))
    if data.windows:
        out.append("<h2>Resilience per fault window</h2>")
        for name, start, end in data.windows:
            spans = data.card.get("by_window", {}).get(name, {})
            out.append(_group_table(f"{name} ({start:g}s to {end:g}s)", spans, level=3))
        if data.fault_events:
            out.append(
                "<table><tr><th>event</th><th>window</th><th class='n'>planned</th>"
                "<th class='n'>actual</th><th>result</th></tr>"
            )
            for ev in data.fault_events:
                out.append(
                    f"<tr><td>{e(str(ev['type']))}</td><td>{e(str(ev.get('window')))}</td>"
                    f"<td class='n'>{ev.get('planned_at')}s</td><td class='n'>"
                    f"{ev.get('actual_at')}s</td><td>{e(str(ev.get('result')))}</td></tr>"
                )
            out.append("</table>")
    guards = overall.get("guardrails")
    if guards:
        out.append(
            f"<h2>Guardrails</h2><p>blocks by rule: {e(str(guards['blocks']))}; "
            f"redactions: {e(str(guards['redactions']))}</p>"
        )
    if data.samples:
        out.append(
            "<h2>What failed requests answered</h2><table><tr><th>request</th>"
            "<th>error class</th><th>answer (excerpt)</th></tr>"
        )
        for request_id, error_class, text in data.samples:
            out.append(
                f"<tr><td>{e(request_id)}</td><td>{e(error_class)}</td><td>{e(text)}</td></tr>"
            )
        out.append("</table>")
    out.append("<h2>Measurement method</h2><table>")
    for label, value in method_rows(data):
        out.append(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>")
    out.append(
        "</table><p class='muted'>Made by agentscale. Percentiles are exact, from the "
        "records; latency counts from each request's intended start.</p></body></html>"
    )
    return "\n".join(out)


def _group_table(title: str, groups: dict[str, Any], level: int = 2) -> str:
    if not groups:
        return ""
    e = escape
    rows = [
        f"<h{level}>{e(title)}</h{level}><table><tr><th>group</th><th class='n'>requests</th>"
        "<th class='n'>success</th><th class='n'>p95 ms</th><th class='n'>retries / call</th>"
        "<th class='n'>cost / success</th><th class='n'>degraded</th></tr>"
    ]
    for name, c in groups.items():
        rows.append(
            f"<tr><td>{e(name)}</td><td class='n'>{c['requests']:,}</td><td class='n'>"
            f"{fmt_pct(c['success_rate'])}</td><td class='n'>{fmt_value(c['latency_p95_ms'])}</td>"
            f"<td class='n'>{fmt_value(c['retries_per_tool_call'])}</td><td class='n'>"
            f"{fmt_usd(c['cost_per_success_usd'])}</td><td class='n'>"
            f"{fmt_pct(c['degraded_share'])}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)

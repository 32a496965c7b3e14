"""The report's evidence as sections of tables, charts and text: built once, rendered as HTML
(``html``) or Markdown (``markdown``), so both formats always carry the same evidence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from markupsafe import Markup

from agentscale.analysis.figures import Card, ConversationFigures, shown
from agentscale.formatting import change, num, pct, usd
from agentscale.gate.checks import Check
from agentscale.gate.cifiles import UNGATED_HINT, describe, headline
from agentscale.records.runfolder import RunInfo
from agentscale.report import tenants
from agentscale.report.charts import bar_pairs, line_chart, waterfall
from agentscale.report.data import ReportData


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: frozenset[int] = frozenset()  # columns aligned right
    status: int | None = None  # a column of check statuses (coloured in HTML)


@dataclass
class Chart:
    svg: Markup
    title: str | None = None


@dataclass
class Section:
    title: str
    level: int = 2
    text: list[str] = field(default_factory=list)
    lever: tuple[str, str] | None = None  # the diagnosis: what to pull, and why
    bullets: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def result_of(data: ReportData) -> tuple[str, int | None]:
    if data.verdict is not None:
        return data.verdict["result"], data.verdict["exit_code"]
    return data.run.get("verdict", {}).get("result", "pass"), data.run.get("exit_code")


def label(data: ReportData) -> str:
    result = result_of(data)[0]
    return headline(result, data.verdict.get("gated", True) if data.verdict else True)


def alerts(data: ReportData) -> list[str]:
    """What a reader must see before anything else: leaks, why the run is invalid, what was
    not gated, and how the baseline differs from this run."""
    lines = tenants.leak_lines(data.card.get("tenants"))
    verdict = data.verdict
    if verdict is None:
        return lines
    lines += [f"invalid: {reason}" for reason in verdict["invalid_reasons"]]
    runs = verdict.get("candidate_runs", [])
    if len(runs) > 1:
        lines.append(
            f"The gate judged {len(runs)} runs together (--repeat): this report shows the "
            + (
                "figures of the last of them"
                if data.run.get("run_id") == verdict.get("run_id")
                else f"figures of one of them; the CI files are beside the last, {runs[-1]}"
            )
            + ", and the verdict pools them all."
        )
    if not verdict.get("gated", True) and verdict["result"] == "pass":
        lines.append(f"Nothing was gated: {UNGATED_HINT}.")
    lines += [f"warning: {warning}" for warning in verdict["warnings"]]
    return lines


def check_detail(check: Check) -> str:
    """What a check found, without repeating its name."""
    if check["kind"] == "baseline":
        return describe(check).removeprefix(f"{check['metric']}: ")
    found = f"measured {num(check['value'])}, expected {check['expected']}"
    return found + (f"; {check['detail']}" if check["detail"] else "")


KEY_FIGURES: tuple[tuple[str, str, Callable[[float | None], str]], ...] = (
    ("requests", "requests", num),
    ("success rate", "success_rate", pct),
    ("expected answers", "expected_answer_rate", pct),
    ("p50 latency (ms)", "latency_p50_ms", num),
    ("p95 latency (ms)", "latency_p95_ms", num),
    ("p99 latency (ms)", "latency_p99_ms", num),
    ("throughput (req/s)", "throughput_rps", num),
    ("input tokens / request", "input_tokens_mean", num),
    ("output tokens / request", "output_tokens_mean", num),
    ("tool calls / request", "tool_calls_per_request", num),
    ("retries / tool call", "retries_per_tool_call", num),
    ("cost / request", "cost_per_request_usd", usd),
    ("cost / success", "cost_per_success_usd", usd),
    ("cache hit rate", "cache_hit_rate", pct),
    ("degraded share", "degraded_share", pct),
    ("circuit opens", "circuit_opens", num),
    ("fallbacks", "fallbacks", num),
    ("budget exhaustions", "budget_exhausted", num),
    ("dropped arrivals", "dropped", num),
    ("TTFT p95 ms (streamed)", "ttft_p95_ms", num),
    ("gap between events p95 ms", "inter_event_p95_ms", num),
)
STREAM_FIGURES = frozenset({"ttft_p95_ms", "inter_event_p95_ms"})  # shown where answers streamed


def key_figures(data: ReportData) -> Table:
    overall, base = data.card["overall"], data.baseline
    streamed = any(c.get("coverage", {}).get("stream") for c in (overall, base) if c is not None)
    figures = [f for f in KEY_FIGURES if streamed or f[1] not in STREAM_FIGURES]
    if base is not None:
        rows = [
            [name, shown(base, key, fmt), shown(overall, key, fmt)] for name, key, fmt in figures
        ]
        return Table(["figure", "baseline", "this run"], rows, frozenset({1, 2}))
    rows = [[name, shown(overall, key, fmt)] for name, key, fmt in figures]
    return Table(["figure", "this run"], rows, frozenset({1}))


def method_rows(data: ReportData) -> list[list[str]]:
    run = data.run
    load = run.get("load", {})
    rows = run_rows(run)
    rows.insert(
        2,
        [
            "load",
            f"{load.get('model')} model, {_shape(load.get('shape'))}, {load.get('duration')} s, "
            f"max concurrency {load.get('max_concurrency')}",
        ],
    )
    faults = run.get("faults")
    rows.append(
        [
            "reproduce",
            f"agentscale load {run['scenario']['file']} --seed {run.get('seed')}"
            f" --duration {load.get('duration')}s"
            + (f" --workers {run['workers']}" if run.get("workers") else "")
            + (f" --faults {faults.get('file')}" if faults else ""),
        ]
    )
    return rows


def run_rows(run: RunInfo) -> list[list[str]]:
    """What any run folder says of how it was measured: scenario, dataset, seed, target,
    environment, versions, demo stack, faults."""
    env = run.get("environment", {})
    scenario = run["scenario"]
    measured = scenario.get("measured_sha256")
    rows = [
        [
            "scenario",
            # The gate matches baselines by the hash without gates:, so the report shows it too.
            f"{scenario['name']} (file {scenario['sha256'][:12]}"
            + (
                f"; without its gates:, as baselines match it, {measured[:12]})"
                if measured and measured != scenario["sha256"]
                else ")"
            ),
        ],
        [
            "dataset",
            f"{run['dataset']['file']} ({run['dataset']['sha256'][:12]}, "
            f"{run['dataset']['items']} items)",
        ],
        ["seed", str(run.get("seed"))],
        ["target", f"{run['target']['method']} {run['target']['url']}"],
        [
            "environment",
            f"{env.get('cpu')}, {env.get('cpu_count')} cores, fingerprint {env.get('fingerprint')}",
        ],
        ["versions", ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())],
    ]
    demo = run.get("demo")
    if demo:
        rows.append(
            ["demo stack", f"profile {demo.get('profile')}, time scale {demo.get('time_scale')}"]
        )
    faults = run.get("faults")
    if faults:
        rows.append(["faults", f"{faults.get('profile')} ({faults.get('file')})"])
    return rows


def _shape(shape: object) -> str:
    """``constant: rps 10`` rather than a Python dict."""
    if not isinstance(shape, dict):
        return str(shape)
    fields = ", ".join(f"{k} {v}" for k, v in shape.items() if k != "kind" and v is not None)
    return f"{shape.get('kind')}: {fields}" if fields else str(shape.get("kind"))


def _checks(data: ReportData) -> list[Section]:
    checks = data.verdict["checks"] if data.verdict else []
    if not checks:
        return []
    rows = [[c["name"], check_detail(c), c["status"]] for c in checks]
    return [Section("Checks", tables=[Table(["check", "detail", "status"], rows, status=2)])]


def _record_notes(data: ReportData) -> list[Section]:
    """What the records could not hold as the agent sent them, and what was done about it."""
    warned = data.card.get("trace_warnings")
    notes = list(data.card.get("notes", []))
    bullets = list(warned["examples"]) if warned else []
    if warned:
        notes.insert(
            0,
            f"{warned['requests']:,} request(s) sent trace fields that could not be used as "
            "they were (each is listed in the request's trace_warnings column):",
        )
    return [Section("Notes on the records", text=notes, bullets=bullets)] if notes else []


def _diagnosis(data: ReportData) -> Section:
    d = data.diagnosis
    return Section("Bottleneck diagnosis", lever=(d.lever, d.why), bullets=list(d.evidence))


def _traffic(data: ReportData) -> list[Section]:
    s = data.series
    x = s.get("x") or []
    if not x:
        return []
    duration, windows = s["duration"], data.windows
    unit = "users" if data.run.get("load", {}).get("model") == "closed" else "requests/s"
    sections = [
        Section(
            "Traffic",
            text=["Offered (the shape's target), sent and in flight, per time bucket."],
            charts=[
                Chart(
                    line_chart(
                        x,
                        {
                            "offered (target)": list(s["offered"]),
                            "sent": list(s["sent"]),
                            "in flight": [float(v) for v in s["in_flight"]],
                        },
                        unit=unit,
                        windows=windows,
                        x_max=duration,
                    )
                )
            ],
        ),
        Section(
            "Latency over time (from the intended start)",
            charts=[Chart(line_chart(x, s["latency"], unit="ms", windows=windows, x_max=duration))],
        ),
    ]
    per_tenant = s.get("tenants") or {}
    if len(per_tenant) >= 2:
        sent = {n: list(t["sent"]) for n, t in per_tenant.items()}
        p95 = {n: t["p95"] for n, t in per_tenant.items()}
        sections.append(
            Section(
                "Per tenant over time",
                charts=[
                    Chart(
                        line_chart(x, sent, unit="requests/s", windows=windows, x_max=duration),
                        "Sent (requests/s)",
                    ),
                    Chart(
                        line_chart(x, p95, unit="ms", windows=windows, x_max=duration),
                        "p95 latency (ms)",
                    ),
                ],
            )
        )
    errors = s.get("errors") or {}
    if errors:
        chart = line_chart(
            x, dict(errors.items()), unit="errors/s", windows=windows, x_max=duration, stacked=True
        )
        sections.append(Section("Errors by class over time", charts=[Chart(chart)]))
    return sections


def steps(data: ReportData) -> list[Section]:
    overall = data.card["overall"]
    steps = overall["steps"]
    if not steps:
        return []
    base_steps = data.baseline["steps"] if data.baseline else {}
    # The verdict's p95 check of each step, where the gate made one.
    checked = {
        c["metric"][len("step ") : -len(" p95_ms")]: c
        for c in (data.verdict["checks"] if data.verdict else [])
        if c.get("scope") == "step" and c["metric"].endswith(" p95_ms")
    }
    shares = overall["slowest_5pct_share"]
    order = sorted(steps, key=lambda n: -(steps[n]["p95_ms"] or 0))
    rows: list[list[str]] = []
    notes: list[tuple[str, float | None, float | None, str]] = []
    for name in order:
        check = checked.get(name)
        base = base_steps[name]["p95_ms"] if name in base_steps else None
        now = steps[name]["p95_ms"]
        shift = now - base if now is not None and base is not None else None
        rows.append(
            [
                name,
                steps[name]["kind"],
                num(steps[name]["count"]),
                num(now),
                num(base),
                change(shift, shift / base if shift is not None and base else None),
                pct(shares.get(name)),
                check["status"]
                if check
                else (
                    "not checked"
                    if data.baseline and steps[name]["kind"] != "unattributed"
                    else "-"
                ),
            ]
        )
        notes.append(
            (name, now, base, " ".join(filter(None, [rows[-1][5] if shift is not None else "",
                                                     check["status"] if check else ""])))
        )  # fmt: skip
    bars = bar_pairs(notes, "ms")
    table = Table(
        ["step", "kind", "calls", "p95 ms", "baseline p95 ms", "change", "share of the slowest 5%",
         "check"],
        rows,
        frozenset({2, 3, 4, 5, 6}),
        status=7,
    )  # fmt: skip
    text = (
        [
            "check: the gate's p95 check of the step (not checked: too few calls in either run; "
            "time no step accounts for is not a step and shows -)."
        ]
        if data.baseline
        else []
    )
    return [Section("p95 by step", text=text, charts=[Chart(bars)], tables=[table])]


def _waterfalls(data: ReportData) -> list[Section]:
    if not data.waterfalls:
        return []
    charts = [
        Chart(
            waterfall(
                w.service_ms,
                [(b.label, b.kind, b.start_ms, b.duration_ms, b.failed) for b in w.bars],
                w.windows,
                w.injected,
            ),
            w.title,
        )
        for w in data.waterfalls
    ]
    text = [
        "Each step on the request's own time line, from its send: LLM purple, tools blue, "
        "retrieval green, guardrails amber, failed steps red; fault windows shaded, faults the "
        "HTTP stage injected into this request's calls as red dashes."
    ]
    return [Section("Slowest requests, step by step", text=text, charts=charts)]


def _tools(data: ReportData) -> list[Section]:
    tools = data.card["overall"]["tools"]
    if not tools:
        return []
    rows = [
        [
            name,
            num(tool["calls"]),
            "not reported"
            if tool["retries_per_call"] is None
            else f"{tool['retries_per_call']:.2f}",
            ", ".join(f"{k} {v}" for k, v in tool["outcomes"].items()) or "-",
            ", ".join(f"{k} {v}" for k, v in tool["retry_reasons"].items()) or "-",
        ]
        for name, tool in tools.items()
    ]
    header = ["tool", "calls", "retries / call", "outcomes", "retry reasons"]
    return [Section("Tool calls and retries", tables=[Table(header, rows, frozenset({1, 2}))])]


GROUP_HEADER = ["group", "requests", "success", "p95 ms", "retries / call", "cost / success",
                "degraded"]  # fmt: skip


def group_table(groups: dict[str, Card]) -> Table:
    rows = [
        [
            name,
            num(c["requests"]),
            pct(c["success_rate"]),
            num(c["latency_p95_ms"]),
            shown(c, "retries_per_tool_call", num),
            shown(c, "cost_per_success_usd", usd),
            shown(c, "degraded_share", pct),
        ]
        for name, c in groups.items()
    ]
    return Table(GROUP_HEADER, rows, frozenset(range(1, 7)))


def _groups(title: str, groups: dict[str, Card]) -> list[Section]:
    return [Section(title, tables=[group_table(groups)])] if groups else []


def _tenants(data: ReportData) -> list[Section]:
    out = _groups("Per tenant", data.card["by_tenant"])
    for title, note, (header, *rows) in tenants.sections(data.card.get("tenants")):
        table = Table(header, rows, frozenset(range(1, len(header))))
        out.append(Section(title, level=3, text=[note] if note else [], tables=[table]))
    return out


def resilience(data: ReportData) -> list[Section]:
    if not data.windows:
        return []
    overall = data.card["overall"]
    sections = [
        Section(
            "Resilience per fault window",
            text=[
                f"Circuit opens {shown(overall, 'circuit_opens', num)}, fallbacks "
                f"{shown(overall, 'fallbacks', num)}, degraded share "
                f"{shown(overall, 'degraded_share', pct)}, budget exhaustions "
                f"{shown(overall, 'budget_exhausted', num)}."
            ],
        )
    ]
    for name, start, end in data.windows:
        spans = data.card["by_window"].get(name, {})
        if spans:
            sections.append(
                Section(
                    f"{name} ({start:g}s to {end:g}s)",
                    level=3,
                    text=_window_notes(spans),
                    tables=[group_table(spans)],
                )
            )
    if data.fault_events:
        rows = [
            [
                str(ev.get("type")),
                str(ev.get("window")),
                f"{ev.get('planned_at')}s",
                f"{ev.get('actual_at')}s",
                str(ev.get("result")),
            ]
            for ev in data.fault_events
        ]
        table = Table(["event", "window", "planned", "actual", "result"], rows, frozenset({2, 3}))
        sections.append(Section("Fault timeline", level=3, tables=[table]))
    return sections


def _window_notes(spans: dict[str, Card]) -> list[str]:
    notes = []
    during = spans.get("during")
    if during is not None and "faults_injected" in during:
        failed = during["requests"] - during["successes"]
        notes.append(
            f"The HTTP fault stage injected {during['faults_injected']:,} fault(s); "
            f"{failed:,} request(s) failed; {during.get('fault_hits', 0):,} request(s) met an "
            "injected fault (their fault_hit column names it)."
        )
    if during is not None and "dependency_requests" in during:
        amplification = during.get("amplification")
        per = f"{amplification:.2f}" if amplification is not None else "not measured"
        limited = during.get("rate_limited", 0)
        refused = f", {limited:,} of them refused with 429 by the rate limit" if limited else ""
        notes.append(
            f"The dependency got {during['dependency_requests']:,} request(s) while the window "
            f"was in place: {per} per agent request sent in it (amplification){refused}."
        )
    for when in ("before", "after"):
        if when not in spans:
            notes.append(
                f"No clean time {when} this window (another window is in force there): "
                "nothing to compare it with."
            )
    return notes


def _guardrails(data: ReportData) -> list[Section]:
    guards = data.card["overall"]["guardrails"]
    if not guards:
        return []
    rows = [["block", rule, num(n)] for rule, n in guards["blocks"].items()]
    rows += [["redact", rule, num(n)] for rule, n in guards["redactions"].items()]
    table = Table(["action", "rule", "count"], rows, frozenset({2}))
    return [Section("Guardrails", tables=[table])]


STREAM_HEADER = ["group", "streamed", "TTFB p95 ms", "TTFT p50 ms", "TTFT p95 ms", "gap p95 ms",
                 "gap max ms", "events / answer"]  # fmt: skip


def _stream_row(name: str, card: Card) -> list[str]:
    return [
        name,
        num(card.get("coverage", {}).get("stream", 0)),
        num(card.get("ttfb_p95_ms")),
        num(card.get("ttft_p50_ms")),
        num(card.get("ttft_p95_ms")),
        num(card.get("inter_event_p95_ms")),
        num(card.get("inter_event_max_ms")),
        num(card.get("stream_events_mean"), 3),
    ]


def _streaming(data: ReportData) -> list[Section]:
    """Time to the first content event and the gaps between events, where answers streamed."""
    card = data.card
    if not card["overall"].get("coverage", {}).get("stream"):
        return []
    rows = [_stream_row("all", card["overall"])]
    for title, groups in (("workflow", card["by_workflow"]), ("phase", card["by_phase"])):
        rows += [_stream_row(f"{title} {n}", c) for n, c in groups.items()]
    for window, spans in card["by_window"].items():
        rows += [_stream_row(f"{window} {when}", c) for when, c in spans.items()]
    text = [
        "TTFT: from each request's intended start to its first content event (the open model's "
        "queueing included; an answer whose text came only in its final event: that event). "
        "Gaps: between consecutive content events of one answer, pooled. A stream "
        "that ended without its final event counts as stream_cut, one silent for longer than "
        "target.stream_idle_timeout as stream_stall (see Errors)."
    ]
    table = Table(STREAM_HEADER, rows, frozenset(range(1, 8)))
    return [Section("Streamed answers", text=text, tables=[table])]


def _conversations(data: ReportData) -> list[Section]:
    talks = data.card.get("conversations")
    if not talks:
        return []
    rows = [
        [
            num(t["turn"]), num(t["requests"]), pct(t["success_rate"]), num(t["latency_p95_ms"]),
            num(t["ttft_p95_ms"]), num(t["input_tokens_mean"]), num(t["output_tokens_mean"]),
            usd(t["cost_per_turn_usd"]),
            num(t["limits_hit"]) if t["limits_hit"] is not None else "not reported",
        ]
        for t in talks["by_turn"]
    ]  # fmt: skip
    slope = talks["input_tokens_per_turn"]
    if talks["first_limit_turn"] is not None:
        limit = f"first limit hit at turn {talks['first_limit_turn']} ({talks['limit']})"
    elif all(t["limits_hit"] is None for t in talks["by_turn"]):
        limit = "limits not reported (no budget events and no steps)"
    else:
        limit = "no budget or context limit hit"
    bullets = [
        f"{num(talks['sessions'])} sessions: {num(talks['complete'])} complete, "
        f"{num(talks['truncated'])} truncated, {num(talks['dropped'])} dropped; "
        f"{num(talks['successful'])} succeeded at every turn "
        f"({pct(talks['success_rate'])} of those not dropped)",
        "cost per successful conversation: "
        + (
            usd(talks["cost_per_successful_conversation_usd"])
            if talks["successful"]
            else "none (no conversation succeeded)"
        ),
        "input tokens change by "
        + (f"{round(slope):+,} a turn" if slope is not None else _no_slope(talks))
        + f"; {limit}",
    ]
    table = Table(
        ["turn", "turns sent", "success", "p95 ms", "TTFT p95 ms", "tokens in", "tokens out",
         "cost / turn", "limits hit"],
        rows,
        frozenset(range(0, 9)) - {2},
    )  # fmt: skip
    return [Section("Conversations by turn", bullets=bullets, tables=[table])]


def _no_slope(talks: ConversationFigures) -> str:
    if len(talks["by_turn"]) < 2:
        return "(one turn number only: no slope)"
    return "(not reported)"


def _samples(data: ReportData) -> list[Section]:
    if not data.samples:
        return []
    rows = [list(sample) for sample in data.samples]
    table = Table(["request", "error class", "answer (excerpt)"], rows)
    return [Section("What failed requests answered", tables=[table])]


def sections(data: ReportData) -> list[Section]:
    """Every section after the verdict, in the report's order."""
    return [
        *_checks(data),
        Section("Key figures", tables=[key_figures(data)]),
        *_record_notes(data),
        _diagnosis(data),
        *_traffic(data),
        *steps(data),
        *_streaming(data),
        *_conversations(data),
        *_waterfalls(data),
        *_tools(data),
        *_tenants(data),
        *_groups("Per workflow", data.card["by_workflow"]),
        *_groups("Per traffic phase", data.card["by_phase"]),
        *resilience(data),
        *_guardrails(data),
        *_samples(data),
        Section("Measurement method", tables=[Table(["", ""], method_rows(data))]),
    ]

"""Everything agentscale shows in a terminal: the only module that imports rich."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentscale import stops
from agentscale.analysis.figures import NOT_REPORTED, Card, ConversationFigures, Scorecard, shown
from agentscale.errors import AgentscaleError
from agentscale.formatting import fixed, num, pct, plain, usd
from agentscale.gate.checks import Verdict
from agentscale.gate.cifiles import GROUPS, UNGATED_HINT, describe, headline
from agentscale.records.runfolder import RunVerdict

if TYPE_CHECKING:  # pandas stays out of commands that never score a run
    from agentscale.analysis.summary import Summary

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
if not out.is_terminal:
    out.width = 120  # CI logs: room for the tables, rather than 80 columns of ellipses


def _row(table: Table, *cells: object) -> None:
    """A table row whose text is shown as it is: a step, window or tenant name comes from the
    agent or the scenario, and ``[/x]`` in it is neither markup nor an error."""
    table.add_row(*(c if isinstance(c, Text) else Text(plain(str(c))) for c in cells))


def print_error(error: AgentscaleError) -> None:
    # soft_wrap: a file:line:col message must stay on one line for editors and CI to parse it.
    err.print(Text("error: ", style="bold red") + Text(error.render()), soft_wrap=True)


def print_warning(message: str) -> None:
    err.print(Text("warning: ", style="bold yellow") + Text(plain(message)), soft_wrap=True)


def print_line(message: str = "", style: str | None = None) -> None:
    out.print(Text(message, style=style or ""), soft_wrap=True)


def print_plain(text: str) -> None:
    """Machine-readable output (JSON Schema): no wrapping, no markup."""
    out.out(text, highlight=False)


class LiveView:
    """The run as it goes: elapsed/total, target vs achieved, in flight, p95, errors, dropped.

    A terminal gets a table redrawn in place; a log (CI) a line every ``every`` seconds.
    """

    def __init__(self, title: str, every: float = 5.0) -> None:
        self.title = title
        self.every = every
        self.last_line = 0.0
        self.live: Live | None = None
        self.latest: dict[str, Any] | None = None

    def __enter__(self) -> LiveView:
        if out.is_terminal:
            self.live = Live(self._table(), console=out, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, value, traceback)

    def update(self, message: dict[str, Any]) -> None:
        if message.get("type") != "progress":
            return
        self.latest = message
        if self.live is not None:
            self.live.update(self._table())
        elif time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            out.print(Text(plain(self._line(message))), soft_wrap=True)

    def _line(self, m: dict[str, Any]) -> str:
        unit = _target_unit(m)
        over = m["elapsed"] - m["duration"]  # draining: the load is over, answers still come
        clock = f"{m['duration']:.0f}/{m['duration']:.0f}s +{over:.0f}s" if over >= 0.5 else (
            f"{m['elapsed']:.0f}/{m['duration']:.0f}s")  # fmt: skip
        return (
            f"[{clock}] {m.get('phase', '')}"
            f" · target {fixed(m['target'])} {unit}"
            f" · achieved {fixed(m['achieved'])} rps · in flight {m['in_flight']}"
            + (f" · sessions open {m['sessions']}" if m.get("sessions") is not None else "")
            + f" · p95 ~{fixed(m['p95_ms'], 0, ' ms')} · errors {m['errors']}"
            f" · dropped {m['dropped']}"
            + (f" · workers {m['workers']}" if "workers" in m else "")
            + (f" ({m['workers_lost']} lost)" if m.get("workers_lost") else "")
        )

    def _table(self) -> Table:
        table = Table(title=self.title, show_header=True, title_justify="left")
        for column in (
            "elapsed",
            "phase",
            "target",
            "achieved",
            "in flight",
            "p95 so far ~",
            "errors",
            "dropped",
            "done",
            "cpu",
        ):
            table.add_column(column, justify="right", overflow="fold")
        m = self.latest
        if m is None:
            _row(table, "starting", *["-"] * 9)
            return table
        unit = " " + _target_unit(m)
        _row(
            table,
            f"{m['elapsed']:.0f}s / {m['duration']:.0f}s",
            str(m.get("phase", "-")),
            fixed(m["target"], 1, unit),
            fixed(m["achieved"], 1, " rps"),
            str(m["in_flight"]),
            fixed(m["p95_ms"], 0, " ms"),
            str(m["errors"]),
            str(m["dropped"]),
            f"{m['completed']:,}",
            fixed(m.get("cpu"), 0, "%"),
        )
        return table


def _target_unit(m: dict[str, Any]) -> str:
    """What the target level counts: arrivals (sessions, in conversations) or users; the
    achieved rate always counts requests (turns)."""
    if m["model"] != "open":
        return "users"
    return "sessions/s" if m.get("sessions") is not None else "rps"


def print_summary(summary: Summary, run_dir: str, verdict: RunVerdict) -> None:
    table = Table(title="run summary (exact, from the records)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("arrivals planned / requests sent", f"{summary.planned:,} / {summary.sent:,}"),
        ("successes", f"{summary.successes:,} ({pct(summary.success_rate, 2)})"),
        ("achieved rate", fixed(summary.achieved_rps, 2, " rps")),
        ("dropped arrivals", fixed(summary.dropped)),
        ("latency p50 / p95 / p99 (from intended start)", _triple(summary.latency_ms)),
        ("service p50 / p95 / p99 (from actual send)", _triple(summary.service_ms)),
        ("scheduling lag p50 / p99", _triple(summary.lag_ms, ("p50", "p99"))),
        (
            "tokens in / out (mean)",
            f"{fixed(summary.input_tokens_mean)} / {fixed(summary.output_tokens_mean)}"
            if summary.input_tokens_mean is not None or summary.output_tokens_mean is not None
            else NOT_REPORTED,
        ),
        (
            "tool calls per request (mean)",
            fixed(summary.tool_calls_mean, 2)
            if summary.tool_calls_mean is not None
            else NOT_REPORTED,
        ),
        (
            "cost per success",
            usd(summary.cost_per_success_usd)
            if summary.cost_usd is not None or not summary.sent
            else NOT_REPORTED
            if summary.input_tokens_mean is None
            else "unknown",
        ),
    ]
    for name, value in rows:
        _row(table, name, value)
    for error_class, count in sorted(summary.errors.items(), key=lambda kv: -kv[1]):
        _row(table, f"errors: {error_class}", f"{count:,}")
    out.print(table)
    label = {"pass": "valid"}.get(verdict["result"], verdict["result"])
    out.print(Text(f"measurement: {label}", style="bold" if label == "valid" else "bold yellow"))
    for reason in verdict.get("reasons", []):
        out.print(Text(f"  - {reason}"), soft_wrap=True)
    out.print(Text(f"run folder: {run_dir}"), soft_wrap=True)


def _triple(
    values: Mapping[str, float | None], keys: tuple[str, ...] = ("p50", "p95", "p99")
) -> str:
    return " / ".join(fixed(values.get(key), 1) for key in keys) + " ms"


def print_scorecard(card: Scorecard) -> None:
    """The bottleneck scorecard: the run, then where time, tools and money went."""
    overall = card["overall"]
    table = Table(title="bottleneck scorecard", title_justify="left")
    columns = (
        "group",
        "requests",
        "success",
        "p95 ms",
        "tools/req",
        "retries/call",
        "tokens in",
        "$/success",
        "degraded",
    )
    for column in columns:
        # Figures are never cut: on a narrow terminal the group names wrap instead.
        if column == "group":
            table.add_column(column, overflow="fold", min_width=8)
        else:
            table.add_column(column, justify="right", no_wrap=True, min_width=len(column))

    def row(name: str, c: Card) -> None:
        _row(
            table,
            name,
            fixed(c["requests"]),
            pct(c["success_rate"], 2),
            fixed(c["latency_p95_ms"], 0),
            shown(c, "tool_calls_per_request", lambda v: fixed(v, 2)),
            shown(c, "retries_per_tool_call", lambda v: fixed(v, 2)),
            shown(c, "input_tokens_mean", lambda v: fixed(v, 0)),
            shown(c, "cost_per_success_usd", usd),
            shown(c, "degraded_share", lambda v: pct(v, 2)),
        )

    row("all", overall)
    for groups, label in (
        (card["by_workflow"], "workflow"),
        (card["by_tenant"], "tenant"),
        (card["by_phase"], "phase"),
    ):
        for name, c in sorted(groups.items()):
            row(f"{label} {name}", c)
    for window, spans in card["by_window"].items():
        for when, c in spans.items():
            row(f"{window} {when}", c)
    out.print(table)
    steps = Table(title="steps: p95 and share of the slowest 5%", title_justify="left")
    for column in ("step", "kind", "calls", "p95 ms", "share of slowest 5%", "retries/call"):
        steps.add_column(column, justify="left" if column in ("step", "kind") else "right")
    share = overall["slowest_5pct_share"]
    for name, step in sorted(overall["steps"].items(), key=lambda kv: -(kv[1]["p95_ms"] or 0)):
        tool = overall["tools"].get(name)
        _row(steps,
            name,
            step["kind"],
            fixed(step["count"]),
            fixed(step["p95_ms"], 0),
            pct(share.get(name), 2),
            "-" if not tool else (
                NOT_REPORTED if tool["retries_per_call"] is None
                else fixed(tool["retries_per_call"], 2)),
        )  # fmt: skip
    if overall["steps"]:
        out.print(steps)
    if overall.get("coverage", {}).get("stream"):

        def ms(name: str, digits: int) -> str:
            value = overall.get(name)
            return f"{fixed(value, digits)} ms" if isinstance(value, float) else NOT_REPORTED

        print_line(
            f"streamed answers: {fixed(overall['coverage']['stream'])}; TTFT p50 "
            f"{ms('ttft_p50_ms', 0)}, p95 {ms('ttft_p95_ms', 0)}; gap between content events "
            f"p95 {ms('inter_event_p95_ms', 1)}, max {ms('inter_event_max_ms', 1)}"
        )
    for window, found in overall.get("windows", {}).items():
        amplification = found["amplification"]
        print_line(
            f"window {window}: its dependency got {fixed(found['dependency_requests'])} "
            f"request(s), {fixed(amplification, 2) if amplification is not None else '-'} per "
            f"agent request (amplification)"
            + (  # only a rate limit refuses
                f", {fixed(found['rate_limited'])} refused with 429"
                if found.get("kind") == "rate_limit" or found["rate_limited"]
                else ""
            )
        )
    talks = card.get("conversations")
    if talks:
        _print_turns(talks)
    warned = card.get("trace_warnings")
    if warned:
        print_warning(
            f"{warned['requests']:,} request(s) sent trace fields that could not be used "
            "(trace_warnings column): " + "; ".join(warned["examples"][:3])
        )
    for note in card.get("notes", []):
        print_warning(note)


TURN_ROWS = 20  # turns shown in the terminal; the report has every one


def _print_turns(talks: ConversationFigures) -> None:
    turns = Table(title="conversations by turn", title_justify="left")
    for column in ("turn", "sent", "success", "p95 ms", "TTFT p95 ms", "tokens in", "$/turn",
                   "limits"):  # fmt: skip
        turns.add_column(column, justify="right")
    rows = talks["by_turn"]
    if len(rows) > TURN_ROWS:  # the first and the last turns; the report has them all
        rows = [*rows[: TURN_ROWS // 2], *rows[-TURN_ROWS // 2 :]]
    for t in rows:
        _row(turns,
            fixed(t["turn"]), fixed(t["requests"]), pct(t["success_rate"], 2),
            fixed(t["latency_p95_ms"], 0), fixed(t["ttft_p95_ms"], 0),
            fixed(t["input_tokens_mean"], 0), usd(t["cost_per_turn_usd"]),
            fixed(t["limits_hit"]) if t["limits_hit"] is not None else NOT_REPORTED,
        )  # fmt: skip
    out.print(turns)
    slope = talks["input_tokens_per_turn"]
    limit = talks["first_limit_turn"]
    cost = (
        usd(talks["cost_per_successful_conversation_usd"])
        if talks["successful"]
        else "none (no conversation succeeded)"
    )
    print_line(
        f"sessions: {talks['sessions']:,} ({talks['complete']:,} complete, "
        f"{talks['truncated']:,} truncated, {talks['dropped']:,} dropped); "
        f"{talks['successful']:,} succeeded at every turn; cost per successful conversation "
        f"{cost}; input tokens "
        + (
            f"{round(slope):+,} a turn"
            if slope is not None
            else ("one turn number only" if len(talks["by_turn"]) < 2 else NOT_REPORTED)
        )
        + (f"; first limit at turn {limit} ({talks['limit']})" if limit is not None else "")
    )


def print_runs(cards: list[Card]) -> None:
    """With ``--repeat``: each run's headline figures, since the gate judged them together."""
    table = Table(title=f"the {len(cards)} runs, judged together", title_justify="left")
    for column in ("run", "requests", "success", "p95 ms", "tools/req", "$/success"):
        table.add_column(column, justify="left" if column == "run" else "right", no_wrap=True)
    for i, c in enumerate(cards):
        _row(
            table,
            str(i + 1),
            fixed(c["requests"]),
            pct(c["success_rate"], 2),
            fixed(c["latency_p95_ms"], 0),
            shown(c, "tool_calls_per_request", lambda v: fixed(v, 2)),
            shown(c, "cost_per_success_usd", usd),
        )
    out.print(table)


def print_verdict(verdict: Verdict, run_dir: str) -> None:
    everything = verdict["checks"]
    # Step and workflow regressions first, one line each: they are what a run-level table hides.
    for c in everything:
        if c["status"] == "regressed" and c.get("scope") in ("step", "workflow"):
            text = describe(c).removesuffix(": regressed")
            out.print(Text(plain(f"regressed: {text}"), style="red"), soft_wrap=True)
    # Passing step and workflow checks are many (a few per step): counted, listed in the files.
    passed = [c for c in everything if c.get("scope") in GROUPS and c["status"] == "pass"]
    checks = [c for c in everything if not (c.get("scope") in GROUPS and c["status"] == "pass")]
    if checks:
        table = Table(title="checks", title_justify="left")
        for column in ("check", "baseline", "candidate", "change", "95% CI", "tolerance", "status"):
            table.add_column(column, justify="left" if column in ("check", "status") else "right")
        for c in checks:
            style = {
                "regressed": "red",
                "failed": "red",
                "improved": "green",
                "pass": "green",
                "inconclusive": "yellow",
                "not measured": "yellow",
            }.get(c["status"], "")
            if c["kind"] == "baseline":
                ci = c.get("ci")
                _row(
                    table,
                    Text(plain(c["name"])),  # a step's name is the agent's text: never markup
                    num(c["baseline"]),
                    num(c["candidate"]),
                    num(c["change"]),
                    f"[{num(ci[0])}, {num(ci[1])}]" if ci else "-",
                    c["tolerance"] or "",
                    Text(c["status"], style=style),
                )
            else:
                _row(
                    table,
                    c["name"],
                    "",
                    num(c["value"]),
                    "",
                    "",
                    c["expected"] or "",
                    Text(c["status"], style=style),
                )
        out.print(table)
    if passed:
        out.print(Text(f"{len(passed)} step and workflow checks passed (summary.md lists them)"))
    for c in checks:
        if c["detail"] and c["status"] in ("inconclusive", "not measured"):
            out.print(Text(plain(f"  {c['name']}: {c['status']}, {c['detail']}")), soft_wrap=True)
    for warning in verdict.get("warnings", []):
        print_warning(warning)
    gated = verdict.get("gated", True)
    style = {"pass": "bold green", "fail": "bold red"}.get(verdict["result"], "bold yellow")
    if not gated and verdict["result"] == "pass":
        style = "bold"
    result = headline(verdict["result"], gated).lower()
    out.print(Text(f"verdict: {result} (exit {verdict['exit_code']})", style=style))
    stops.announced.append(True)
    if not gated and verdict["result"] == "pass":
        out.print(Text(f"  {UNGATED_HINT}"), soft_wrap=True)
    for reason in verdict.get("invalid_reasons", []):
        out.print(Text(f"  - {reason}"), soft_wrap=True)
    out.print(Text(f"verdict.json, junit.xml, summary.md in {run_dir}"), soft_wrap=True)

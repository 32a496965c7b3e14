"""Everything agentscale shows in a terminal: the only module that imports rich."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentscale.errors import AgentscaleError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
if not out.is_terminal:
    out.width = 120  # CI logs: room for the tables, rather than 80 columns of ellipses


def print_error(error: AgentscaleError) -> None:
    # soft_wrap: a file:line:col message must stay on one line for editors and CI to parse it.
    err.print(Text("error: ", style="bold red") + Text(error.render()), soft_wrap=True)


def print_warning(message: str) -> None:
    err.print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)


def print_line(message: str = "", style: str | None = None) -> None:
    out.print(Text(message, style=style or ""), soft_wrap=True)


def print_plain(text: str) -> None:
    """Machine-readable output (JSON Schema): no wrapping, no markup."""
    out.out(text, highlight=False)


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}"


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
            out.print(self._line(message), soft_wrap=True)

    def _line(self, m: dict[str, Any]) -> str:
        unit = "rps" if m["model"] == "open" else "users"
        return (
            f"[{m['elapsed']:.0f}/{m['duration']:.0f}s] {m.get('phase', '')}"
            f" · target {_fmt(m['target'])} {unit}"
            f" · achieved {_fmt(m['achieved'])} rps · in flight {m['in_flight']}"
            f" · p95 {_fmt(m['p95_ms'], ' ms', 0)} · errors {m['errors']}"
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
            "p95 so far",
            "errors",
            "dropped",
            "done",
            "cpu",
        ):
            table.add_column(column, justify="right")
        m = self.latest
        if m is None:
            table.add_row("starting", *["-"] * 9)
            return table
        unit = " rps" if m["model"] == "open" else " users"
        table.add_row(
            f"{m['elapsed']:.0f}s / {m['duration']:.0f}s",
            str(m.get("phase", "-")),
            _fmt(m["target"], unit),
            _fmt(m["achieved"], " rps"),
            str(m["in_flight"]),
            _fmt(m["p95_ms"], " ms", 0),
            str(m["errors"]),
            str(m["dropped"]),
            f"{m['completed']:,}",
            _fmt(m.get("cpu"), "%", 0),
        )
        return table


def print_summary(summary: dict[str, Any], run_dir: str, verdict: dict[str, Any]) -> None:
    table = Table(title="run summary (exact, from the records)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("arrivals planned / requests sent", f"{summary['planned']:,} / {summary['sent']:,}"),
        ("successes", f"{summary['successes']:,} ({_fmt_rate(summary['success_rate'])})"),
        ("achieved rate", _fmt(summary["achieved_rps"], " rps", 2)),
        ("dropped arrivals", _fmt(summary["dropped"])),
        ("latency p50 / p95 / p99 (from intended start)", _triple(summary["latency_ms"])),
        ("service p50 / p95 / p99 (from actual send)", _triple(summary["service_ms"])),
        ("scheduling lag p50 / p99", _triple(summary["lag_ms"], ("p50", "p99"))),
        (
            "tokens in / out (mean)",
            f"{_fmt(summary['input_tokens_mean'])} / {_fmt(summary['output_tokens_mean'])}",
        ),
        ("tool calls per request (mean)", _fmt(summary["tool_calls_mean"], "", 2)),
        ("cost per success", _usd(summary["cost_per_success_usd"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for error_class, count in sorted(summary["errors"].items(), key=lambda kv: -kv[1]):
        table.add_row(f"errors: {error_class}", f"{count:,}")
    out.print(table)
    label = {"pass": "valid"}.get(verdict["result"], verdict["result"])
    out.print(Text(f"measurement: {label}", style="bold" if label == "valid" else "bold yellow"))
    for reason in verdict.get("reasons", []):
        out.print(Text(f"  - {reason}"), soft_wrap=True)
    out.print(Text(f"run folder: {run_dir}"), soft_wrap=True)


def _fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def _triple(values: dict[str, float | None], keys: tuple[str, ...] = ("p50", "p95", "p99")) -> str:
    return " / ".join(_fmt(values.get(key), "", 1) for key in keys) + " ms"


def print_scorecard(card: dict[str, Any]) -> None:
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
        table.add_column(column, justify="left" if column == "group" else "right", no_wrap=True)

    def row(name: str, c: dict[str, Any]) -> None:
        table.add_row(
            name,
            _fmt(c["requests"]),
            _fmt_rate(c["success_rate"]),
            _fmt(c["latency_p95_ms"], "", 0),
            _fmt(c["tool_calls_per_request"], "", 2),
            _fmt(c["retries_per_tool_call"], "", 2),
            _fmt(c["input_tokens_mean"], "", 0),
            _usd(c["cost_per_success_usd"]),
            _fmt_rate(c["degraded_share"]),
        )

    row("all", overall)
    for key, label in (("by_workflow", "workflow"), ("by_tenant", "tenant"), ("by_phase", "phase")):
        for name, c in sorted(card.get(key, {}).items()):
            row(f"{label} {name}", c)
    for window, spans in card.get("by_window", {}).items():
        for when, c in spans.items():
            row(f"{window} {when}", c)
    out.print(table)
    steps = Table(title="steps: p95 and share of the slowest 5%", title_justify="left")
    for column in ("step", "kind", "calls", "p95 ms", "share of slowest 5%", "retries/call"):
        steps.add_column(column, justify="left" if column in ("step", "kind") else "right")
    share = overall.get("slowest_5pct_share", {})
    for name, step in sorted(
        overall.get("steps", {}).items(), key=lambda kv: -(kv[1]["p95_ms"] or 0)
    ):
        tool = overall.get("tools", {}).get(name, {})
        steps.add_row(
            name,
            step["kind"],
            _fmt(step["count"]),
            _fmt(step["p95_ms"], "", 0),
            _fmt_rate(share.get(name)),
            _fmt(tool.get("retries_per_call"), "", 2),
        )
    if overall.get("steps"):
        out.print(steps)


def print_verdict(verdict: dict[str, Any], run_dir: str) -> None:
    checks = verdict["checks"]
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
            }.get(c["status"], "")
            if c["kind"] == "baseline":
                ci = c.get("ci")
                table.add_row(
                    c["name"],
                    _short(c["baseline"]),
                    _short(c["candidate"]),
                    _short(c["change"]),
                    f"[{_short(ci[0])}, {_short(ci[1])}]" if ci else "-",
                    c["tolerance"],
                    Text(c["status"], style=style),
                )
            else:
                table.add_row(
                    c["name"],
                    "",
                    _short(c.get("value")),
                    "",
                    "",
                    c.get("expected", ""),
                    Text(c["status"], style=style),
                )
        out.print(table)
    for c in checks:
        if c.get("detail") and c["status"] == "inconclusive":
            out.print(Text(f"  {c['name']}: {c['detail']}"), soft_wrap=True)
    for warning in verdict.get("warnings", []):
        print_warning(warning)
    style = {"pass": "bold green", "fail": "bold red"}.get(verdict["result"], "bold yellow")
    out.print(Text(f"verdict: {verdict['result']} (exit {verdict['exit_code']})", style=style))
    for reason in verdict.get("invalid_reasons", []):
        out.print(Text(f"  - {reason}"), soft_wrap=True)
    out.print(Text(f"verdict.json, junit.xml, summary.md in {run_dir}"), soft_wrap=True)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == float("inf"):
            return "never"
        return f"{value:.4g}"
    return str(value)

"""Writing a report file for a run folder (the CLI's and `load`'s way to the report)."""

from __future__ import annotations

from pathlib import Path

from agentscale.errors import ConfigError, Location

NAMES = {"html": "report.html", "md": "report.md", "adr": "adr.md"}


def write_report(run_dir: Path, kind: str, baseline: Path | None, out: Path | None) -> Path:
    from agentscale.report import gather, html
    from agentscale.report_markdown import adr, markdown

    if not (run_dir / "run.json").is_file():
        raise ConfigError(
            "not a run folder (no run.json)",
            location=Location(run_dir),
            hint="pass a folder that agentscale load wrote",
        )
    data = gather(run_dir, baseline)
    text = {"html": html, "md": markdown, "adr": adr}[kind](data)
    path = out or run_dir / NAMES[kind]
    path.write_text(text, encoding="utf-8")
    return path

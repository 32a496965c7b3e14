"""Writing a report file for a run folder."""

from __future__ import annotations

from pathlib import Path

from agentscale.report.data import ReportData, gather
from agentscale.report.html import html
from agentscale.report.markdown import adr, markdown

NAMES = {"html": "report.html", "md": "report.md", "adr": "adr.md"}
RENDER = {"html": html, "md": markdown, "adr": adr}


def write_report(
    run_dir: Path,
    kind: str,
    baseline: Path | None = None,
    out: Path | None = None,
    data: ReportData | None = None,
) -> Path:
    """Render ``kind`` (html, md or adr) of ``run_dir``'s report; ``data`` if already gathered."""
    data = data or gather(run_dir, baseline)
    path = out or run_dir / NAMES[kind]
    path.write_text(RENDER[kind](data), encoding="utf-8")
    return path

"""The report as one self-contained HTML file: a Jinja2 template with autoescape on (anything
the agent returned is text, never markup), inline CSS and inline SVG charts, no script."""

from __future__ import annotations

from functools import cache

import jinja2
from markupsafe import Markup

from agentscale.records.runfolder import RunInfo
from agentscale.report.data import ReportData
from agentscale.report.sections import Section, alerts, label, result_of, sections


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("agentscale.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )


def html(data: ReportData) -> str:
    result, exit_code = result_of(data)
    return page(
        data.run,
        # A pass with nothing gated is not shown green: nothing was held to a standard.
        result="ungated" if label(data).endswith("(nothing gated)") else result,
        label=label(data),
        exit_code=exit_code,
        baseline_name=data.baseline_name,
        alerts=alerts(data),
        sections=sections(data),
    )


def page(
    run: RunInfo,
    *,
    result: str,
    label: str,
    exit_code: int | None,
    baseline_name: str | None,
    alerts: list[str],
    sections: list[Section],
) -> str:
    """One report page: the verdict's badge, what must be seen first, then the sections."""
    environment = _environment()
    css = environment.loader.get_source(environment, "report.css")[0]  # type: ignore[union-attr]
    return environment.get_template("report.html.j2").render(
        run=run,
        css=Markup(css),
        result=result,
        label=label,
        exit_code=exit_code,
        baseline_name=baseline_name,
        alerts=alerts,
        sections=sections,
    )

"""The end of ``agentscale load`` and ``agentscale compare``: the scorecard and the verdict in
the terminal, and the HTML report beside them."""

from __future__ import annotations

from pathlib import Path

from agentscale import console
from agentscale.gate.baseline import Baseline
from agentscale.gate.checks import Verdict
from agentscale.gate.verdict import Candidate
from agentscale.report.data import gather
from agentscale.report.write import write_report


def present(
    candidate: Candidate, verdict: Verdict, baseline: Baseline | None, out_dir: Path | None = None
) -> int:
    """Show what the last run found and return the verdict's exit code; the report goes in
    ``out_dir`` (a compare's folder) or the run's own."""
    assert candidate.card is not None, "judge() scores every candidate"
    folder = out_dir or candidate.run_dir
    console.print_scorecard(candidate.card)
    console.print_verdict(verdict, str(folder))
    data = gather(
        candidate.run_dir,
        frames=candidate.frames,
        info=candidate.info,
        card=candidate.card,
        verdict=verdict,
        scenario=candidate.scenario,
        baseline=baseline,
    )
    report = write_report(candidate.run_dir, "html", out=folder / "report.html", data=data)
    console.print_line(f"report: {report}")
    return verdict["exit_code"]

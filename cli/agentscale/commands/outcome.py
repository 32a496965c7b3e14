"""The end of ``agentscale load`` and ``agentscale compare``: the scorecard and the verdict in
the terminal, and the HTML report beside them."""

from __future__ import annotations

from agentscale import console
from agentscale.gate.baseline import Baseline
from agentscale.gate.checks import Verdict
from agentscale.gate.verdict import Candidate
from agentscale.report.data import gather
from agentscale.report.write import write_report


def present(candidate: Candidate, verdict: Verdict, baseline: Baseline | None) -> int:
    """Show what the last run found and return the verdict's exit code."""
    assert candidate.card is not None, "judge() scores every candidate"
    console.print_scorecard(candidate.card)
    console.print_verdict(verdict, str(candidate.run_dir))
    data = gather(
        candidate.run_dir,
        frames=candidate.frames,
        info=candidate.info,
        card=candidate.card,
        verdict=verdict,
        scenario=candidate.scenario,
        baseline=baseline,
    )
    console.print_line(f"report: {write_report(candidate.run_dir, 'html', data=data)}")
    return verdict["exit_code"]

"""The end of ``agentscale load`` and ``agentscale compare``: the scorecard and the verdict in
the terminal, and the HTML report beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentscale import console
from agentscale.gate.baseline import Baseline
from agentscale.gate.checks import Verdict
from agentscale.gate.verdict import Candidate
from agentscale.report.data import gather
from agentscale.report.write import write_report


def present(
    candidate: Candidate,
    verdict: Verdict,
    baseline: Baseline | None,
    out_dir: Path | None = None,
    earlier: Sequence[Candidate] = (),
) -> int:
    """Show what the last run found and return the verdict's exit code; the report goes in
    ``out_dir`` (a compare's folder) or the run's own. The ``earlier`` runs of a ``--repeat``
    were judged with it: each gets a report of its own figures in its own folder."""
    assert candidate.card is not None, "judge() scores every candidate"
    folder = out_dir or candidate.run_dir
    console.print_scorecard(candidate.card)
    if earlier:
        console.print_runs([c.card["overall"] for c in [*earlier, candidate] if c.card])
    console.print_verdict(verdict, str(folder))
    for run in earlier:
        _report(run, verdict, baseline, run.run_dir)
    console.print_line(f"report: {_report(candidate, verdict, baseline, folder)}")
    return verdict["exit_code"]


def _report(
    candidate: Candidate, verdict: Verdict, baseline: Baseline | None, folder: Path
) -> Path:
    data = gather(
        candidate.run_dir,
        frames=candidate.frames,
        info=candidate.info,
        card=candidate.card,
        verdict=verdict,
        scenario=candidate.scenario,
        baseline=baseline,
    )
    return write_report(candidate.run_dir, "html", out=folder / "report.html", data=data)

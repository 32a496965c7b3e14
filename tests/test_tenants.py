"""Tenants: per-tenant traffic, fairness, the noisy neighbour, the leakage probe, budgets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from agentscale.analysis.tenants import jain_index
from agentscale.config.loader import parse_document
from agentscale.config.scenario import Scenario
from agentscale.config.traffic import SHARED, arrivals, canaries, own_shapes
from conftest import ROOT, agentscale, only_run, scenario_dict, write_scenario


def test_jain_index_on_known_cases():
    assert jain_index([0.9, 0.9, 0.9]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)  # one tenant has it all: 1/n
    assert jain_index([1.0, 2.0]) == pytest.approx(9 / 10)  # (1+2)^2 / (2 * (1+4))
    assert jain_index([100.0, 100.0, 400.0]) == pytest.approx(600**2 / (3 * 180_000))
    assert jain_index([0.5]) is None and jain_index([0.0, 0.0]) is None


def _scenario(tmp_path: Path, **changes) -> Scenario:
    path = write_scenario(tmp_path, scenario_dict("http://127.0.0.1:9/agent", **changes))
    return parse_document(path, Scenario, hint="")[1]


def test_a_tenant_with_its_own_shape_spikes_alone_on_top_of_the_shared_traffic(tmp_path):
    spike = {"kind": "spike", "base_rps": 1, "peak_rps": 30, "every": "20s", "spike_for": "5s",
             "first_at": "10s"}  # fmt: skip
    scenario = _scenario(
        tmp_path,
        tenants={"acme": 1, "globex": 1, "initech": {"shape": spike}},
        load__shape={"kind": "constant", "rps": 10},
    )
    offsets, who = arrivals(scenario, 20.0, seed=3)
    assert np.all(np.diff(offsets) >= 0)  # one schedule, in time order
    assert own_shapes(scenario) == ["initech"]
    shared, initech = offsets[who == SHARED], offsets[who == 0]
    assert len(shared) == 200  # 10 requests/s for 20 s, whatever initech does
    assert len(initech) == 15 * 1 + 5 * 30
    in_spike = (initech >= 10) & (initech < 15)
    assert in_spike.sum() == 150  # the burst is initech's alone
    assert ((shared >= 10) & (shared < 15)).sum() == 50
    marks = canaries(scenario)
    assert set(marks) == {"acme", "globex", "initech"} and len(set(marks.values())) == 3
    assert canaries(scenario) != marks  # fresh per run


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"tenants": {"acme": 1, "b": {"shape": {"kind": "constant", "users": 3}}},
             "load__model": "closed", "load__shape": {"kind": "constant", "users": 3}},
            "tenants.b.shape",
            "a tenant's own shape needs the open model",
        ),
        (
            {"tenants": {"acme": 1, "b": {"weight": 2, "shape": {"kind": "constant", "rps": 3}}}},
            "tenants.b.weight",
            "takes no share of load.shape",
        ),
        (
            {"expect": {"noisy_neighbor": {"victim": "acme", "neighbor": "nobody"}}},
            "expect.noisy_neighbor.neighbor",
            "'nobody' is not a tenant",
        ),
        (
            {"expect": {"noisy_neighbor": {"victim": "acme", "neighbor": "globex"}}},
            "expect.noisy_neighbor.neighbor",
            "has no shape of its own",
        ),
        (
            {"tenants": {"acme": {"canary": "same-marker"}, "b": {"canary": "same-marker"}}},
            "tenants.acme.canary",
            "two tenants share this canary",
        ),
    ],
)  # fmt: skip
def test_bad_tenant_settings_are_usage_errors_at_their_line(tmp_path, changes, field, message):
    path = write_scenario(tmp_path, scenario_dict("http://127.0.0.1:9/agent", **changes))
    result = agentscale("validate", str(path))
    assert result.code == 2, result.output
    assert f"{path}:" in result.output and field in result.output and message in result.output
    assert "Traceback" not in result.output


def _shipped(folder: Path, name: str, **demo) -> dict:
    """A shipped example scenario, copied with its datasets, its demo options changed."""
    if not (folder / "datasets").exists():
        shutil.copytree(ROOT / "scenarios" / "datasets", folder / "datasets")
    document = yaml.safe_load((ROOT / "scenarios" / name).read_text())
    document["target"]["demo"].update(demo)
    return document


def _run(folder: Path, document: dict, out: str, timeout: float = 180) -> tuple[int, Path, str]:
    path = folder / f"{out}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = agentscale("load", str(path), "--out", str(folder / out), timeout=timeout)
    return result.code, only_run(folder / out), result.output


def test_the_leakage_probe_finds_a_real_cache_scope_bug_and_nothing_without_it(tmp_path):
    outcomes = {}
    for bug in (True, False):
        document = _shipped(tmp_path, "noisy_neighbor.yaml", time_scale=0.0, cache_scope_bug=bug)
        document["load"]["duration"] = "8s"
        document["expect"] = {}  # the probe alone
        outcomes[bug] = _run(tmp_path, document, f"bug-{bug}")
    code, run_dir, output = outcomes[True]
    assert code == 1, output
    verdict = json.loads((run_dir / "verdict.json").read_text())
    first = verdict["checks"][0]
    assert first["kind"] == "security" and first["status"] == "failed" and first["value"] > 0
    requests = pd.read_parquet(run_dir / "requests.parquet")
    leaked = requests[requests["leaked_from"].notna()]
    assert len(leaked) == first["value"]
    assert (leaked["leaked_from"] != leaked["tenant"]).all()
    card = json.loads((run_dir / "scorecard.json").read_text())["tenants"]["leakage"]
    assert card["probed"] and card["leaks"] == len(leaked)
    pair = card["pairs"][0]
    planted = json.loads((run_dir / "run.json").read_text())["tenants"]
    assert planted[pair["canary_of"]]["canary"] in pair["excerpt"]  # the evidence, quoted
    html = (run_dir / "report.html").read_text()
    assert html.index("SECURITY: cross-tenant leak") < html.index("<h2>Checks</h2>")
    chart = html[html.index("<h2>Per tenant over time</h2>") :]
    assert all(f">{name}<" in chart[:20_000] for name in ("acme", "globex", "initech"))
    markdown = agentscale("report", str(run_dir), "--format", "md")
    assert markdown.code == 0, markdown.output
    text = (run_dir / "report.md").read_text()
    assert text.index("SECURITY: cross-tenant leak") < text.index("## Key figures")
    assert "### Fairness and isolation" in text and "carried one" in text

    code, run_dir, output = outcomes[False]
    assert code == 0, output
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["checks"][0]["kind"] == "security"
    assert verdict["checks"][0]["status"] == "pass" and verdict["checks"][0]["value"] == 0
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert requests["leaked_from"].isna().all() and len(requests) > 40


def test_per_tenant_bulkheads_protect_the_victim_and_without_them_it_suffers(tmp_path):
    results = {}
    for bulkheads in (True, False):
        document = _shipped(tmp_path, "noisy_neighbor.yaml", bulkheads=bulkheads)
        document["tenants"]["initech"]["shape"]["first_at"] = "12s"
        document["load"]["duration"] = "22s"  # before: 0-12 s; initech's burst: 12-22 s
        results[bulkheads] = _run(tmp_path, document, f"bulkheads-{bulkheads}")
    checks = {}
    for bulkheads, (_code, run_dir, _output) in results.items():
        verdict = json.loads((run_dir / "verdict.json").read_text())
        checks[bulkheads] = {c["name"]: c for c in verdict["checks"]}
    p95 = "noisy neighbour: acme while initech spikes: p95 increase"
    success = "noisy neighbour: acme while initech spikes: success rate drop"
    code, run_dir, output = results[True]
    assert code == 0, output
    assert checks[True][p95]["status"] == "pass" and checks[True][success]["status"] == "pass"
    tenants = json.loads((run_dir / "scorecard.json").read_text())["tenants"]
    assert tenants["noisy_neighbor"]["during"]["requests"] >= 20
    # The neighbour, not the victim, pays for the burst: its excess is shed.
    by_tenant = json.loads((run_dir / "scorecard.json").read_text())["by_tenant"]
    assert by_tenant["initech"]["errors"].get("http_429", 0) > 0
    assert by_tenant["acme"]["success_rate"] >= 0.98
    code, run_dir, output = results[False]
    assert code == 1, output
    assert checks[False][p95]["status"] == "failed"
    assert checks[False][p95]["value"] > 3 * max(checks[True][p95]["value"], 0.1)


def test_budget_pressure_degrades_gracefully(tmp_path):
    document = _shipped(tmp_path, "budget_pressure.yaml", time_scale=0.2)
    document["load"]["duration"] = "20s"
    code, run_dir, output = _run(tmp_path, document, "budgets")
    assert code == 0, output
    verdict = json.loads((run_dir / "verdict.json").read_text())
    budget_checks = [c for c in verdict["checks"] if c["kind"] == "budgets"]
    assert len(budget_checks) == 5 and all(c["status"] == "pass" for c in budget_checks)
    requests = pd.read_parquet(run_dir / "requests.parquet")
    hit = requests[requests["budget_exhausted"] > 0]
    assert len(hit) > 20 and (hit["status"] == "degraded").all()
    steps = pd.read_parquet(run_dir / "steps.parquet")
    calls = steps[steps["kind"].isin(["llm", "tool", "retrieval"])].groupby("request_id").size()
    assert calls.max() <= 6  # the runaway loops stop at the step budget


def test_the_readme_tenant_example_is_a_valid_scenario_part(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Tenants") :]
    snippet = yaml.safe_load(section[section.index("```yaml") + 7 : section.index("```\n", 10)])
    document = _shipped(tmp_path, "noisy_neighbor.yaml")
    document.update(snippet)
    path = tmp_path / "readme.yaml"
    path.write_text(yaml.safe_dump(document))
    result = agentscale("validate", str(path))
    assert result.code == 0, result.output

"""Faults on a real toxiproxy-server and the HTTP stage, in windows, always rolled back."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.error
import urllib.request
from statistics import median

import pandas as pd
import psutil
import pytest
import yaml

from agentscale.chaos.server import free_port
from chaoskit import (
    apply_in_background,
    crm_503,
    demo_scenario,
    echo_dependency,
    events_in,
    get,
    is_helper,
    orphaned_helpers,
    ours,
    profile,
    retry_get,
    start_load,
    start_toxiproxy,
    stopped,
    wait_for_event,
)
from conftest import ROOT, agentscale, only_run


def test_latency_toxic_adds_the_configured_delay_and_is_removed(tmp_path, server, toxiproxy):
    dependency, listen = echo_dependency(server)
    path = profile(
        tmp_path,
        dependency,
        [
            {
                "name": "slow",
                "target": "echo",
                "at": "1s",
                "for": "5s",
                "toxic": {"type": "latency", "latency": 300},
            }
        ],
    )
    baseline = median(get(server.url("/plain"))[1] for _ in range(8))
    process, out = apply_in_background(tmp_path, path, toxiproxy)
    applied = wait_for_event(out, "fault_applied", "slow")
    slowed = median(get(f"http://{listen}/plain")[1] for _ in range(6))
    assert slowed - baseline == pytest.approx(300, rel=0.2)
    assert process.wait(timeout=20) == 0, process.stderr.read() if process.stderr else ""
    removed = wait_for_event(out, "fault_removed", "slow")
    assert applied["late_ms"] < 250 and removed["late_ms"] < 250  # on the plan's clock
    assert removed["actual_at"] - applied["actual_at"] == pytest.approx(5, abs=0.25)
    assert ours(toxiproxy) == {}


def test_timeout_toxic_times_the_client_out_and_down_refuses(tmp_path, server, toxiproxy):
    dependency, listen = echo_dependency(server)
    path = profile(
        tmp_path,
        dependency,
        [
            {
                "name": "hang",
                "target": "echo",
                "at": "1s",
                "for": "3s",
                # Toxiproxy 2.12 closes a new connection at once with a downstream timeout
                # toxic; upstream, the request is dropped and the client hangs.
                "toxic": {"type": "timeout", "timeout": 0, "stream": "upstream"},
            },
            {"name": "gone", "target": "echo", "at": "5s", "for": "3s", "down": True},
        ],
    )
    process, out = apply_in_background(tmp_path, path, toxiproxy)
    wait_for_event(out, "fault_applied", "hang")
    with pytest.raises((TimeoutError, urllib.error.URLError)) as hung:
        get(f"http://{listen}/plain", timeout=1)
    assert "timed out" in str(hung.value)
    wait_for_event(out, "fault_applied", "gone")
    with pytest.raises(urllib.error.URLError) as refused:
        get(f"http://{listen}/plain")
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    assert process.wait(timeout=20) == 0
    assert get(f"http://127.0.0.1:{server.port}/plain")[0] == 200
    assert ours(toxiproxy) == {}


def test_http_stage_fails_the_configured_share_and_ctrl_c_undoes_it(tmp_path, server, toxiproxy):
    dependency, listen = echo_dependency(server, protocol="http")
    path = profile(
        tmp_path,
        dependency,
        [
            {
                "name": "flaky",
                "target": "echo",
                "at": "1s",
                "for": "60s",
                "http": {"status": 503, "rate": 0.25, "retry_after": 1},
            }
        ],
    )
    process, out = apply_in_background(tmp_path, path, toxiproxy)
    wait_for_event(out, "fault_applied", "flaky")
    codes = [get(f"http://{listen}/plain")[0] for _ in range(400)]
    share = codes.count(503) / len(codes)
    assert 0.18 <= share <= 0.32, share
    assert set(codes) == {200, 503}
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 130
    assert ours(toxiproxy) == {}
    with pytest.raises(urllib.error.URLError):  # the stage is gone too
        get(f"http://{listen}/plain", timeout=2)


def test_an_http_dependency_refuses_while_down_and_answers_after(tmp_path, server, toxiproxy):
    dependency, listen = echo_dependency(server, protocol="http")
    path = profile(
        tmp_path,
        dependency,
        [{"name": "gone", "target": "echo", "at": "1s", "for": "2s", "down": True}],
    )
    process, out = apply_in_background(tmp_path, path, toxiproxy, "--for", "5s")
    assert retry_get(f"http://{listen}/plain") == 200
    wait_for_event(out, "fault_applied", "gone")
    with pytest.raises(urllib.error.URLError) as refused:
        get(f"http://{listen}/plain")
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    wait_for_event(out, "fault_removed", "gone")
    assert get(f"http://{listen}/plain")[0] == 200  # back, through the stage, after the window
    assert process.wait(timeout=20) == 0


def test_demo_under_503s_retries_and_opens_breakers_in_the_window_only(tmp_path):
    """With agentscale's own toxiproxy-server, started and stopped by the run."""
    orphans_before = orphaned_helpers()
    result = agentscale(
        "load",
        str(demo_scenario(tmp_path)),
        "--faults",
        str(crm_503(tmp_path)),
        "--out",
        str(tmp_path / "r"),
    )
    assert result.code == 0, result.output
    run_dir = only_run(tmp_path / "r")
    requests = pd.read_parquet(run_dir / "requests.parquet")
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    applied = next(e for e in events if e["type"] == "fault_applied")
    removed = next(e for e in events if e["type"] == "fault_removed")
    assert applied["late_ms"] < 250 and removed["late_ms"] < 250
    started = requests["intended_start"].min()
    offset = (requests["sent_at"] - started).dt.total_seconds()
    # Answered before the fault came: a request sent just before it may meet it at its tool.
    answered = offset + requests["latency_ms"] / 1000
    before_window = requests[answered < applied["actual_at"] - 0.1]
    in_window = requests[requests["faults"].apply(lambda f: "crm_503" in list(f))]
    assert len(before_window) > 50 and len(in_window) > 80
    assert before_window["retries"].sum() == 0 and before_window["circuit_opens"].sum() == 0
    # Every CRM call fails in the window: the first ones are retried, then the breaker opens
    # and the agent falls back (a degraded answer) instead of calling the tool.
    assert in_window["retries"].sum() >= 1 and in_window["circuit_opens"].sum() >= 1
    assert in_window["fallbacks"].sum() >= len(in_window) // 2
    assert (in_window["status"] == "degraded").any()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["faults"]["profile"] == "test" and info["verdict"]["result"] == "pass"
    # The stage, the demo stack and toxiproxy-server ran as children of `agentscale load`,
    # which has exited: any left running would now be an orphan.
    assert orphaned_helpers() <= orphans_before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_leaves_no_fault_behind(tmp_path, toxiproxy, signum):
    faults = profile(
        tmp_path,
        None,
        [
            {
                "name": "crm_slow",
                "target": "crm_lookup",
                "at": "1s",
                "for": "30s",
                "toxic": {"type": "latency", "latency": 200},
            },
            {"name": "kb_down", "target": "kb_search", "at": "1s", "for": "30s", "down": True},
        ],
        name="two.yaml",
    )
    process, run_dir = start_load(
        tmp_path, toxiproxy, at="2s", seconds="30s", duration=40, faults=faults
    )
    wait_for_event(run_dir, "fault_applied", count=2, timeout=30)
    during = ours(toxiproxy)
    assert any(p["toxics"] for p in during.values())  # the latency toxic is in place
    assert any(not p["enabled"] for p in during.values())  # and the knowledge base is down
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stdout + stderr
    assert ours(toxiproxy) == {}
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_after_kill_9_the_next_run_starts_clean(tmp_path, toxiproxy):
    process, run_dir = start_load(tmp_path, toxiproxy, at="1s", seconds="30s", duration=40)
    wait_for_event(run_dir, "fault_applied", timeout=30)
    children = psutil.Process(process.pid).children(recursive=True)
    helpers = [c for c in children if is_helper(c)]
    assert len(helpers) == 2  # this run's demo stack and HTTP fault stage
    for pid in [process.pid, *(c.pid for c in children if not is_helper(c))]:
        os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=10)
    left = ours(toxiproxy)
    assert left  # a kill -9 cannot clean up after itself...
    assert stopped(helpers, timeout=5)  # ...but its demo stack and HTTP stage notice and stop
    scenario = demo_scenario(tmp_path / "next", seconds=2)
    result = agentscale("load", str(scenario), "--out", str(tmp_path / "r2"))
    assert result.code == 0, result.output
    assert "left by an earlier run" in result.stderr
    assert ours(toxiproxy) == {}  # ...and the next run removes what it left
    assert "marked run" in result.stderr  # ...and says the killed run ended
    killed = json.loads((run_dir / "run.json").read_text())
    assert killed["status"] == "failed" and "was killed" in killed["verdict"]["reasons"][0]


def test_chaos_reset_removes_a_killed_runs_proxies(tmp_path, toxiproxy):
    process, run_dir = start_load(tmp_path, toxiproxy, at="1s", seconds="30s", duration=40)
    wait_for_event(run_dir, "fault_applied", timeout=30)
    for pid in [process.pid, *(c.pid for c in psutil.Process(process.pid).children())]:
        os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=10)
    assert ours(toxiproxy)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    result = agentscale("chaos", "reset")
    assert result.code == 0 and "removed proxy" in result.stdout
    assert ours(toxiproxy) == {}
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


BAD = [
    ({"type": "latency", "latency": 100, "speed": 3}, "windows.0.toxic.speed", "unknown field"),
    ({"type": "lag", "latency": 100}, "windows.0.toxic", "unknown type 'lag'"),
    ({"type": "latency", "latency": -5}, "windows.0.toxic.latency", "greater than or equal to 0"),
    ({"type": "latency", "latncy": 5}, "windows.0.toxic.latncy", "did you mean 'latency'"),
]


@pytest.mark.parametrize(("toxic", "field", "words"), BAD)
def test_a_bad_toxic_exits_2_with_file_line_and_field(tmp_path, toxic, field, words):
    path = profile(
        tmp_path,
        None,
        [{"name": "w", "target": "crm_lookup", "at": "1s", "for": "2s", "toxic": toxic}],
    )
    result = agentscale("validate", str(path))
    assert result.code == 2 and "Traceback" not in result.output
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: {re.escape(field)}: ", result.stderr), (
        result.stderr
    )
    assert words in result.stderr


def test_unknown_target_and_a_window_past_the_end_exit_2(tmp_path):
    path = profile(
        tmp_path,
        None,
        [
            {"name": "late", "target": "crm_lookup", "at": "10s", "for": "30s", "down": True},
            {"name": "who", "target": "payroll", "at": "1s", "for": "2s", "down": True},
        ],
    )
    result = agentscale("load", str(demo_scenario(tmp_path, seconds=20)), "--faults", str(path))
    assert result.code == 2 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert any(
        f"{path}:" in ln and "windows.0.for: " in ln and "past the end of the run (20s)" in ln
        for ln in lines
    ), result.stderr
    assert any(
        f"{path}:" in ln and "windows.1.target: unknown target 'payroll'" in ln for ln in lines
    ), result.stderr
    assert not (tmp_path / "reports").exists()


def test_a_demo_profile_outside_a_demo_run_says_where_it_belongs(tmp_path):
    demo_profile = ROOT / "fault_profiles" / "tool_5xx.yaml"
    result = agentscale("chaos", "apply", str(demo_profile), "--out", str(tmp_path / "r"))
    assert result.code == 2 and "Traceback" not in result.output
    assert f"{demo_profile}:9:29: windows.0.target: 'crm_lookup' is a dependency of the demo" in (
        result.stderr
    )
    assert "agentscale load scenarios/smoke.yaml --faults PROFILE" in result.stderr
    assert not (tmp_path / "r").exists()


def test_schema_fault_profile_and_example_profiles_fit_spiky_burst():
    result = agentscale("schema", "fault-profile")
    assert result.code == 0
    assert json.loads(result.stdout)["title"] == "agentscale FaultProfile"
    scenario = yaml.safe_load((ROOT / "scenarios" / "spiky_burst.yaml").read_text())
    for path in sorted((ROOT / "fault_profiles").glob("*.yaml")):
        assert agentscale("validate", str(path)).code == 0, path
        for window in yaml.safe_load(path.read_text())["windows"]:
            assert window["target"] in {"llm", "kb_search", "crm_lookup", "billing", "logs_read"}
    assert scenario["load"]["duration"] == "2m"


def test_doctor_finds_toxiproxy_server():
    result = agentscale("doctor")
    assert "toxiproxy-server at" in result.stdout and "starts on 127.0.0.1" in result.stdout
    assert result.code == 0, result.output


def test_listen_ports_are_below_32768(server):
    port = free_port(below=32768)
    assert port < 32768
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free, as promised


TOXICS = [
    {"type": "latency", "latency": 100, "jitter": 10},
    {"type": "bandwidth", "rate": 64},
    {"type": "slow_close", "delay": 200},
    {"type": "timeout", "timeout": 500, "stream": "upstream"},
    {"type": "reset_peer", "timeout": 100},
    {"type": "slicer", "average_size": 64, "size_variation": 16, "delay": 10},
    {"type": "limit_data", "bytes": 1024, "toxicity": 0.5},
]


@pytest.mark.parametrize("toxic", TOXICS, ids=[t["type"] for t in TOXICS])
def test_every_toxic_type_lands_on_the_server_with_its_attributes(
    tmp_path, server, toxiproxy, toxic
):
    from agentscale.chaos.rig import FaultRig
    from agentscale.config.loader import load_fault_profile

    dependency, _listen = echo_dependency(server)
    path = profile(
        tmp_path,
        dependency,
        [{"name": "w", "target": "echo", "at": "0s", "for": "1s", "toxic": toxic}],
    )
    window = load_fault_profile(path).profile.windows[0]
    rig = FaultRig(load_fault_profile(path).profile, tmp_path, toxiproxy.url)
    rig.prepare()
    rig.connect()
    try:
        rig.apply(window, window.toxic)
        shown = toxiproxy.proxy(rig.proxy_name("echo"))["toxics"][0]
        assert shown["type"] == toxic["type"]
        assert shown["stream"] == toxic.get("stream", "downstream")
        assert shown["toxicity"] == toxic.get("toxicity", 1.0)
        expected = {k: v for k, v in toxic.items() if k not in ("type", "stream", "toxicity")}
        assert {k: shown["attributes"].get(k) for k in expected} == expected
    finally:
        assert rig.close() == []
    assert ours(toxiproxy) == {}


def test_a_fault_that_cannot_be_applied_makes_the_run_invalid(tmp_path, server):
    doomed, api = start_toxiproxy()
    slow = profile(
        tmp_path,
        None,
        [
            {
                "name": "crm_slow",
                "target": "crm_lookup",
                "at": "4s",
                "for": "3s",
                "toxic": {"type": "latency", "latency": 100},
            }
        ],
        name="slow.yaml",
    )
    process, run_dir = start_load(tmp_path, api, at="4s", seconds="3s", duration=10, faults=slow)
    # Once the load runs (its proxies are in place), and 4 s before the window is due: a
    # fixed 1.5 s after the start could fall in the setup on a loaded machine, which fails
    # the run otherwise (exit 3, no verdict: the proxies could not be made).
    wait_for_event(tmp_path / "r", "run_started", timeout=60)
    doomed.kill()  # the server is gone before the window is due
    doomed.wait()
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 3, stdout + stderr
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["result"] == "invalid"
    assert any("could not be applied" in r for r in verdict["invalid_reasons"])
    failed = [e for e in events_in(run_dir) if e["type"] == "fault_applied"]
    assert failed and failed[0]["result"].startswith("error")


def test_a_ramp_step_changes_the_toxic_mid_window(tmp_path, server, toxiproxy):
    dependency, _listen = echo_dependency(server)
    path = profile(
        tmp_path,
        dependency,
        [
            {
                "name": "slow",
                "target": "echo",
                "at": "0s",
                "for": "3s",
                "toxic": {"type": "latency", "latency": 100},
                "ramp": [{"at": "1s", "toxic": {"latency": 400}}],
            }
        ],
    )
    process, out = apply_in_background(tmp_path, path, toxiproxy)
    wait_for_event(out, "fault_applied", "slow")
    first = toxiproxy.proxies()
    updated = wait_for_event(out, "fault_updated", "slow")
    assert updated["result"] == "ok" and updated["planned_at"] == 1.0
    now = ours(toxiproxy)
    assert [t["attributes"]["latency"] for p in now.values() for t in p["toxics"]] == [400]
    assert any(t["attributes"]["latency"] == 100 for p in first.values() for t in p["toxics"])
    assert process.wait(timeout=20) == 0
    assert ours(toxiproxy) == {}


def test_chaos_list_and_status_show_profiles_and_what_is_in_place(tmp_path, toxiproxy):
    listed = agentscale("chaos", "list", str(ROOT / "fault_profiles"))
    assert listed.code == 0 and "crm_503: crm_lookup http 503 at rate 0.6 at 40s" in listed.stdout
    idle = agentscale("chaos", "status")
    assert idle.code == 0 and "no faults made by agentscale" in idle.stdout
    process, run_dir = start_load(tmp_path, toxiproxy, at="1s", seconds="20s", duration=30)
    wait_for_event(run_dir, "fault_applied", timeout=30)
    status = agentscale("chaos", "status")
    assert status.code == 0 and "proxy(ies) made by agentscale" in status.stdout
    assert "crm_lookup" in status.stdout
    # The HTTP window is the stage's, not Toxiproxy's: status asks the stage too.
    assert "crm_lookup: http 503 at rate 1 (window crm_503)" in status.stdout, status.stdout
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)

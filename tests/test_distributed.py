"""Locust master/worker mode: ``--workers N`` here, ``agentscale worker`` from elsewhere."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from agentscale.records.writer import read_events
from conftest import ROOT, agentscale, only_run, scenario_dict, spawn, write_scenario


def _events(run_dir, kind):
    return [e for e in read_events(run_dir / "events.jsonl") if e["type"] == kind]


def test_two_local_workers_split_the_open_schedule_exactly(server, tmp_path):
    document = scenario_dict(
        server.url("/agent"), load__shape={"kind": "constant", "rps": 300}, load__duration="10s"
    )
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--workers", "2", "--out", str(tmp_path / "out"))
    assert result.code == 0, result.output
    run_dir = only_run(tmp_path / "out")
    run = json.loads((run_dir / "run.json").read_text())
    summary = run["summary"]
    assert abs(summary["achieved_rps"] / 300 - 1) <= 0.03, summary
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert requests["request_id"].is_unique
    assert len(requests) == summary["planned"] == 3000  # no arrival twice, none lost
    seqs = requests["request_id"].astype(int)
    assert sorted(seqs) == list(range(3000))
    # Each worker took every other arrival: the split is exact, not approximate.
    started = {e["worker"]: e["share"] for e in _events(run_dir, "worker_started")}
    assert started == {0: [0, 2], 1: [1, 2]}
    ended = _events(run_dir, "run_ended")[0]
    assert ended["records"] == len(requests) == ended["completed"] + ended["dropped"]
    assert ended["workers"] == 2 and ended["workers_lost"] == []
    assert (run_dir / "worker-0.log").exists() and (run_dir / "worker-1.log").exists()
    assert not _worker_processes()  # the workers are gone


def _worker_processes(tmpdir: Path | None = None) -> list[psutil.Process]:
    """agentscale's workers on this machine; with ``tmpdir``, only those of the run started
    with that TMPDIR (another test file's run may have workers of its own at the same time)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "worker" in cmdline and "--master" in cmdline and "agentscale" in " ".join(cmdline):
            if tmpdir is not None:
                try:
                    if process.environ().get("TMPDIR") != str(tmpdir):
                        continue
                except psutil.Error:
                    continue
            found.append(process)
    return found


def _kill_a_worker_after(seconds: float, tmpdir: Path, out: Path) -> threading.Thread:
    """Kill one of the run's two workers ``seconds`` after the load started (its
    ``run_started`` event): mid-load however long the workers took to join on a loaded
    machine."""

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = _worker_processes(tmpdir)
            started = any("run_started" in e.read_text() for e in out.glob("*/*/events.jsonl"))
            if len(workers) == 2 and started:
                time.sleep(seconds)
                workers[0].kill()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_a_local_worker_that_dies_before_joining_fails_the_run_at_once(server, tmp_path):
    """Not after the minute the master waits for workers to join: its own child has exited."""
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent"), load__duration="5s"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    killed: list[float] = []

    def kill_the_first() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = _worker_processes(scratch)
            if workers:  # as soon as it exists: long before it can have joined
                workers[0].kill()
                killed.append(time.monotonic())
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_first, daemon=True)
    killer.start()
    began = time.monotonic()
    result = agentscale("load", str(path), "--workers", "2", "--out", str(tmp_path / "out"),
                        env={"TMPDIR": str(scratch)})  # fmt: skip
    killer.join()
    assert result.code == 3, result.output
    assert "before it joined the master" in result.output
    # Not the join timeout (60 s), nor 10 s for the other worker, which never joined either,
    # to leave on a quit message it cannot get.
    assert killed and time.monotonic() - killed[0] < 8, time.monotonic() - began


def test_a_worker_that_dies_mid_run_makes_it_invalid_unless_the_scenario_says_continue(
    server, tmp_path
):
    for policy, expected in (("invalid", 3), ("continue", 0)):
        document = scenario_dict(
            server.url("/agent"),
            load__shape={"kind": "constant", "rps": 50},
            load__duration="8s",
            load__on_worker_loss=policy,
            gates={"min_requests": 10},
        )
        path = write_scenario(tmp_path, document, name=f"{policy}.yaml")
        out = tmp_path / policy
        scratch = tmp_path / f"tmp-{policy}"  # the run's temporary files, the killed worker's too
        scratch.mkdir()
        killer = _kill_a_worker_after(1.5, scratch, out)
        result = agentscale(
            "load", str(path), "--workers", "2", "--out", str(out), env={"TMPDIR": str(scratch)}
        )
        killer.join()
        assert result.code == expected, result.output
        assert list(scratch.iterdir()) == []
        run_dir = only_run(out)
        lost = _events(run_dir, "worker_lost")
        assert len(lost) == 1 and "exit" in lost[0]["reason"]
        assert "lost at" in result.output and "share of the load is missing" in result.output
        verdict = json.loads((run_dir / "run.json").read_text())["verdict"]
        if policy == "invalid":
            assert verdict["result"] == "invalid"
            assert any("worker" in reason for reason in verdict["reasons"])
        requests = pd.read_parquet(run_dir / "requests.parquet")
        assert requests["request_id"].is_unique and 100 < len(requests) < 400


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_worker_started_elsewhere_joins_with_agentscale_worker(server, tmp_path):
    port = _free_port()
    document = scenario_dict(
        server.url("/agent"), load__shape={"kind": "constant", "rps": 100}, load__duration="4s"
    )
    path = write_scenario(tmp_path, document)
    remote = spawn("worker", "--master", f"127.0.0.1:{port}")
    try:
        result = agentscale(
            "load", str(path), "--workers", "1", "--remote-workers", "1",
            "--master-bind", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"),
        )  # fmt: skip
        assert result.code == 0, result.output
        assert f"master at 127.0.0.1:{port}: waiting for 2 worker(s)" in result.output
        assert remote.wait(timeout=30) == 0  # the master's quit ends it
    finally:
        if remote.poll() is None:
            remote.kill()
    run_dir = only_run(tmp_path / "out")
    assert _events(run_dir, "workers_joined")[0]["workers"] == 2
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert len(requests) == 400 and requests["request_id"].is_unique


def test_remote_workers_need_a_reachable_master_address(tmp_path, server):
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent")))
    result = agentscale("load", str(path), "--remote-workers", "1")
    assert result.code == 2 and "--master-bind" in result.output
    result = agentscale("worker", "--master", "nowhere")
    assert result.code == 2 and "is not HOST:PORT" in result.output


def test_faults_stay_on_the_master_and_on_the_load_clock(tmp_path):
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    profile = tmp_path / "crm.yaml"
    profile.write_text(
        "apiVersion: agentscale/v1\nkind: FaultProfile\nname: crm-503\nwindows:\n"
        "  - {name: crm_503, target: crm_lookup, at: 4s, for: 4s, http: {status: 503, rate: 1.0}}\n"
    )
    scenario = tmp_path / "scenarios" / "smoke.yaml"
    scenario.write_text(scenario.read_text().replace("time_scale: 1.0", "time_scale: 0.0"))
    result = agentscale(
        "load", str(scenario), "--faults", str(profile), "--duration", "12s",
        "--workers", "2", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.code == 0, result.output
    run_dir = only_run(tmp_path / "out")
    applied = _events(run_dir, "fault_applied")[0]
    assert applied["planned_at"] == 4.0 and applied["late_ms"] < 250
    requests = pd.read_parquet(run_dir / "requests.parquet")
    offsets = (requests["sent_at"] - requests["intended_start"].min()).dt.total_seconds()
    marked = requests["faults"].apply(lambda names: "crm_503" in list(names))
    assert marked.any() and offsets[marked].between(3.9, 8.1).all()  # both workers, one clock
    steps = pd.read_parquet(run_dir / "steps.parquet")
    called = steps[(steps["name"] == "crm_lookup") & (steps["cache"] != "hit")]
    crm = called.merge(requests[["request_id"]].assign(marked=marked), on="request_id")
    assert crm[crm["marked"]]["error"].notna().mean() > 0.8  # the 503s landed in the window
    assert crm[~crm["marked"] & crm["error"].isna()].shape[0] > 0


def test_closed_model_users_are_spread_over_the_workers(server, tmp_path):
    document = scenario_dict(
        server.url("/agent"),
        load__model="closed",
        load__shape={"kind": "stages", "stages": [{"for": "3s", "users": 2},
                                                  {"for": "3s", "users": 6}]},
        load__duration="6s",
        load__think_time="20ms",
    )  # fmt: skip
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--workers", "2", "--out", str(tmp_path / "out"))
    assert result.code == 0, result.output
    run_dir = only_run(tmp_path / "out")
    assert [e["users"] for e in _events(run_dir, "users_changed")][-1] == 6
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert requests["request_id"].is_unique
    seqs = requests["request_id"].astype(int)
    assert (seqs % 2 == 0).any() and (seqs % 2 == 1).any()  # both workers sent
    offsets = (requests["intended_start"] - requests["intended_start"].min()).dt.total_seconds()
    # No user sends before the common start, and the load stops at its duration.
    assert offsets.max() < 6.5
    early, late = (offsets < 2.5).sum() / 2.5, (offsets > 3.5).sum() / 2.5
    assert late > 2 * early  # three times the users: well over twice the rate

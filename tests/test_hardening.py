"""The failure paths a hostile tester found: each is reproduced here, and must never end in a
silent pass, a lost record or a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from agentscale.chaos import state
from agentscale.chaos.rig import FaultRig
from agentscale.chaos.scheduler import FaultScheduler
from agentscale.config.faults import FaultProfile, Latency
from agentscale.records.writer import EventLog, read_events
from chaoskit import echo_dependency, ours, profile, wait_for_event
from conftest import (
    AGENTSCALE,
    agentscale,
    only_run,
    scenario_dict,
    spawn,
    start_server,
    write_scenario,
)


def _requests(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "requests.parquet")


# --- 1. a fault the server refuses ---------------------------------------------------------
def test_validate_refuses_toxic_values_toxiproxy_cannot_take(tmp_path):
    path = profile(
        tmp_path,
        None,
        [{"name": "w", "target": "crm_lookup", "at": "1s", "for": "2s",
          "toxic": {"type": "latency", "latency": 99999999999999999999}}],
    )  # fmt: skip
    result = agentscale("validate", str(path))
    assert result.code == 2 and "Traceback" not in result.output
    assert f"{path}:" in result.stderr and "windows.0.toxic.latency" in result.stderr
    assert "86400000" in result.stderr  # the bound, stated


def test_a_change_the_server_refuses_is_named_and_later_windows_still_happen(
    tmp_path, toxiproxy, server
):
    """What validation cannot know (here a value slipped past it) the server refuses with HTTP
    400: the scheduler names the window, goes on, and the next window still lands."""
    dependency, _ = echo_dependency(server)
    document = {
        "apiVersion": "agentscale/v1", "kind": "FaultProfile", "name": "refused",
        "dependencies": [dependency],
        "windows": [
            {"name": "first", "target": "echo", "at": 0.2, "for": 0.3,
             "toxic": {"type": "latency", "latency": 10}},
            {"name": "second", "target": "echo", "at": 0.6, "for": 0.3,
             "toxic": {"type": "latency", "latency": 20}},
        ],
    }  # fmt: skip
    found = FaultProfile.model_validate(document)
    first = found.windows[0]
    broken = Latency.model_construct(type="latency", latency=2**70, jitter=0)  # past any check
    windows = [first.model_copy(update={"toxic": broken}), found.windows[1]]
    found = found.model_copy(update={"windows": windows})
    rig = FaultRig(found, tmp_path, toxiproxy.url)
    rig.prepare()
    rig.connect()
    scheduler = FaultScheduler(rig, found, EventLog(tmp_path / "events.jsonl", time.time()))
    try:
        scheduler.start(time.time())
        wait_for_event(tmp_path, "fault_applied", "second", timeout=10)
    finally:
        scheduler.stop()
        assert rig.close() == []
    assert len(scheduler.failures) == 1
    assert "window first could not be applied:" in scheduler.failures[0]
    events = read_events(tmp_path / "events.jsonl")
    applied = {e["window"]: e["result"] for e in events if e["type"] == "fault_applied"}
    assert applied["first"].startswith("error") and applied["second"] == "ok"
    assert ours(toxiproxy) == {}


# --- 2. bad traces ---------------------------------------------------------------------------
def test_bad_trace_fields_become_named_warnings_and_no_record_is_lost(tmp_path, server):
    document = scenario_dict(server.url("/badtrace"), load__duration="2s", success__expect="none")
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
    assert result.code == 0, result.output
    assert "no request was sent" not in result.output and "Traceback" not in result.output
    run = only_run(tmp_path / "r")
    requests = _requests(run)
    sent = requests[~requests["dropped"]]
    assert len(sent) >= 35 and sent["success"].all()  # every answer recorded, none lost
    warnings = " | ".join(sent["trace_warnings"].dropna())
    for expected in (
        "steps[0]: not an object (str), skipped",
        "steps[0].input_tokens: 1.18059e+21 is beyond 1e+08",
        "steps[0].output_tokens: a number sent as a string ('12')",
        "steps[0].input_tokens: negative (-50)",
        "steps[0].latency_ms: negative (-3)",
        "longer than the request",
        "steps[0].attempts: not a number ('three')",
        "steps: not a list (dict)",
        "events: not a list (str)",
    ):
        assert expected in warnings, expected
    assert (sent["cost_usd"].dropna() >= 0).all() and (sent["input_tokens"].dropna() < 1e8).all()
    # A model call whose input count was refused: that total and the cost are unknown, not 0.
    refused = sent["trace_warnings"].fillna("").str.contains("input_tokens")
    assert refused.any() and sent.loc[refused, ["input_tokens", "cost_usd"]].isna().all().all()
    steps = pd.read_parquet(run / "steps.parquet")
    assert steps["latency_ms"].max() < 10_000_000  # cut to the request's own length
    card = json.loads((run / "scorecard.json").read_text())
    assert card["trace_warnings"]["requests"] == int(sent["trace_warnings"].notna().sum())
    assert "could not be used" in (run / "report.html").read_text()


def test_a_hundred_thousand_step_names_are_folded_not_quadratic(tmp_path):
    from agentscale.analysis.scorecard import scorecard
    from agentscale.records.frames import OTHER, read_frames
    from agentscale.records.writer import REQUEST_COLUMNS, STEP_COLUMNS, PartWriter

    n, per = 20_000, 5
    requests = PartWriter(tmp_path / "requests.parquet", REQUEST_COLUMNS)
    steps = PartWriter(tmp_path / "steps.parquet", STEP_COLUMNS)
    empty = {name: None for name, _ in REQUEST_COLUMNS}
    rows = []
    for i in range(n):
        row = {**empty, "request_id": f"r{i}", "workflow": "w", "tenant": "t", "phase": "p",
               "intended_start": 1.0 + i / 1000, "sent_at": 1.0 + i / 1000, "latency_ms": 5.0,
               "success": True, "dropped": False, "faults": []}  # fmt: skip
        rows.append(tuple(row[name] for name, _ in REQUEST_COLUMNS))
    requests.write(rows)
    step_rows = [
        (
            f"r{i}",
            j,
            "tool",
            "tool",
            f"tool-{i * per + j}",
            1.0,
            1,
            "ok",
            *[None] * (len(STEP_COLUMNS) - 8),
        )
        for i in range(n)
        for j in range(per)
    ]
    steps.write(step_rows)
    began = time.perf_counter()
    frames = read_frames(tmp_path, 0.0, 20.0, [])
    card = scorecard(frames)
    took = time.perf_counter() - began
    assert took < 30, took
    assert set(card["overall"]["steps"]) >= {OTHER} and len(card["overall"]["steps"]) <= 101
    assert card["notes"] and "100,000 distinct tool step names" in card["notes"][0]


# --- 3. signals, in-flight requests, a whole-request timeout ---------------------------------
def test_a_dripping_answer_times_out_at_the_target_timeout(tmp_path, server):
    document = scenario_dict(
        server.url("/drip"), target__timeout="2s", load__duration="2s",
        load__shape={"kind": "constant", "rps": 3},
    )  # fmt: skip
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
    requests = _requests(only_run(tmp_path / "r"))
    sent = requests[~requests["dropped"]]
    assert len(sent) >= 4 and (sent["error_class"] == "timeout").all(), result.output
    assert sent["service_ms"].max() < 3000  # not the 10 s the drip would take


def test_ctrl_c_is_quick_records_in_flight_requests_as_cancelled_and_removes_faults(
    tmp_path, server, toxiproxy
):
    faults = profile(
        tmp_path,
        echo_dependency(server)[0],
        [{"name": "slow", "target": "echo", "at": "0s", "for": "50s",
          "toxic": {"type": "latency", "latency": 50}}],
    )  # fmt: skip
    document = scenario_dict(
        server.url("/slow?ms=20000"), target__timeout="30s", load__duration="60s",
        load__shape={"kind": "constant", "rps": 5},
    )  # fmt: skip
    path = write_scenario(tmp_path, document)
    process = spawn("load", str(path), "--faults", str(faults), "--toxiproxy-url",
                    toxiproxy.url, "--out", str(tmp_path / "r"))  # fmt: skip
    wait_for_event(tmp_path / "r", "fault_applied", timeout=30)
    time.sleep(2)  # about ten requests in flight, each waiting 20 s for its answer
    stopped = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    took = time.monotonic() - stopped
    assert process.returncode == 130, stdout + stderr
    assert took < 8, took  # the engine's grace is 2 s; the rest is clean-up and the report
    assert "verdict: interrupted (exit 130)" in stdout
    assert "stopped by a signal" not in stderr  # the verdict said it already
    run = only_run(tmp_path / "r")
    requests = _requests(run)
    assert (requests["error_class"] == "cancelled").sum() >= 5
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    removed = [e for e in read_events(run / "events.jsonl") if e["type"] == "fault_removed"]
    assert removed and removed[0]["result"] == "ok" and "stopped" in removed[0]["note"]
    assert ours(toxiproxy) == {} and state.entries() == []


def test_sigterm_then_sigkill_ten_seconds_later_leaves_nothing_behind(tmp_path, server):
    """What `docker stop` does, to a run with its own toxiproxy-server and HTTP stage."""
    document = scenario_dict(
        server.url("/slow?ms=20000"), target__timeout="30s", load__duration="60s",
        load__shape={"kind": "constant", "rps": 5},
    )  # fmt: skip
    faults = profile(
        tmp_path,
        echo_dependency(server, "http")[0],
        [{"name": "e503", "target": "echo", "at": "0s", "for": "50s",
          "http": {"status": 503, "rate": 0.5}}],
    )  # fmt: skip
    path = write_scenario(tmp_path, document)
    process = spawn("load", str(path), "--faults", str(faults), "--out", str(tmp_path / "r"))
    wait_for_event(tmp_path / "r", "fault_applied", timeout=30)
    family = [process.pid, *(c.pid for c in psutil.Process(process.pid).children(recursive=True))]
    assert len(family) >= 4  # the CLI, its engine, toxiproxy-server and the HTTP stage
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in family):
        time.sleep(0.1)
    assert not [pid for pid in family if _alive(pid)]
    assert state.entries() == []
    run = only_run(tmp_path / "r")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler: agentscale's own, installed before its
    imports (the interpreter installs none for SIGTERM, so this is not Python's)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


@pytest.mark.parametrize(("delay", "again"), [(0.0, None), (1.2, None), (1.0, 0.2)])
def test_a_signal_in_the_first_second_exits_130_without_a_traceback(tmp_path, server, delay, again):
    """From the moment agentscale can take a signal: before that the interpreter itself is
    still starting (on a loaded machine, for more than 0.3 s) and the default action applies.
    ``again``: a second Ctrl-C that long after the first, while the CLI shuts down (it used to
    meet the default action the interpreter puts back then, and die by SIGINT)."""
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent"), load__duration="20s"))
    process = spawn("load", str(path), "--out", str(tmp_path / "r"))
    deadline = time.monotonic() + 20
    while not _catches_sigterm(process.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    if again is not None:
        time.sleep(again)
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    for info in (tmp_path / "r").glob("*/*/run.json"):
        assert json.loads(info.read_text())["status"] != "running"
        assert "Traceback" not in (info.parent / "engine.log").read_text()


def _marked(mark: str) -> list[psutil.Process]:
    """The live processes started with AGENTSCALE_TEST_MARK=mark in their environment."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("AGENTSCALE_TEST_MARK") == mark and _alive(process.pid):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_the_spare_engine_never_outlives_its_cli(tmp_path, server):
    """`load` starts the engine's interpreter before it needs it (its imports overlap the
    CLI's): a refused run kills it, and a CLI killed with -9 leaves it to leave by itself."""
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent"), load__duration="30s"))
    mark = f"spare-{os.getpid()}-{time.monotonic_ns()}"
    environment = {**os.environ, "AGENTSCALE_TEST_MARK": mark}
    refused = subprocess.run(
        [*AGENTSCALE, "load", str(path), "--baseline", str(tmp_path / "none.json")],
        capture_output=True, text=True, env=environment, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert _marked(mark) == []

    cli = subprocess.Popen(
        [*AGENTSCALE, "load", str(path), "--out", str(tmp_path / "r")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        spares = [p for p in _marked(mark) if "--spare" in p.cmdline()]
        if spares:
            break
        time.sleep(0.02)
    assert spares, "no spare engine was started"
    cli.kill()
    cli.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _marked(mark):
        time.sleep(0.1)
    assert _marked(mark) == []


def test_an_engine_whose_cli_was_killed_keeps_its_records_and_leaves_quietly(tmp_path, server):
    """kill -9 of the CLI mid-run: the engine's next progress line meets a closed pipe. It
    used to die of that BrokenPipeError (two tracebacks in engine.log); it stops the run."""
    document = scenario_dict(server.url("/agent"), load__duration="30s")
    process = spawn("load", str(write_scenario(tmp_path, document)), "--out", str(tmp_path / "r"))
    wait_for_event(tmp_path / "r", "run_started", timeout=30)
    time.sleep(1.5)
    engines = psutil.Process(process.pid).children()
    process.kill()
    process.communicate(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(e.pid) for e in engines):
        time.sleep(0.1)
    assert not [e for e in engines if _alive(e.pid)]
    run = only_run(tmp_path / "r")
    assert "Traceback" not in (run / "engine.log").read_text()
    kinds = [e["type"] for e in read_events(run / "events.jsonl")]
    assert "parent_gone" in kinds and "run_ended" in kinds
    parts = list((run / "requests.parquet").glob("*.parquet"))
    assert parts and sum(len(pd.read_parquet(p)) for p in parts) >= 20


def _cli_after(
    code: str, folder: Path, *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``agentscale ARGV`` (``version`` if none) run by ``agentscale.cli.main`` after
    ``code``, in a process of its own started with ``-m`` as `agentscale` is: the places
    where a stop lands that no timing can aim at."""
    script = f"import sys\nfrom agentscale import cli\n{code}\n"
    script += f"sys.argv = ['agentscale', *{list(argv or ['version'])!r}]\ncli.main()\n"
    (folder / "stopped_cli.py").write_text(script)
    environment = {
        **os.environ,
        "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run([sys.executable, "-m", "stopped_cli"], capture_output=True, text=True,
                          timeout=timeout, env=environment)  # fmt: skip


def test_a_stop_that_landed_in_generated_code_still_exits_130(tmp_path):
    """dataclasses and pydantic build classes with exec(): a Ctrl-C that lands in one, caught,
    left CPython's mark of an unhandled KeyboardInterrupt, and the CLI died of SIGINT (-2)."""
    landed = textwrap.dedent("""
        cli.STOPPED.append(2)
        try:
            exec("raise KeyboardInterrupt")
        except KeyboardInterrupt:
            pass
    """)
    done = _cli_after(landed, tmp_path)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr


def test_a_stop_while_the_records_are_scored_says_so_and_keeps_them(tmp_path, server):
    """The load had ended and every record was written: a Ctrl-C then used to exit 130 with
    nothing printed, and run.json gave "KeyboardInterrupt" as the reason."""
    stop_in_scoring = textwrap.dedent("""
        from agentscale.commands import execute
        def finish(*args, **kwargs):
            cli.STOPPED.append(2)  # what the Ctrl-C handler does before it raises
            raise KeyboardInterrupt
        execute.finish = finish
    """)
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent"), load__duration="2s"))
    out = tmp_path / "r"
    done = _cli_after(stop_in_scoring, tmp_path, "load", str(path), "--out", str(out), timeout=90)
    assert done.returncode == 130, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "interrupted: stopped while the records were scored" in done.stdout
    assert done.stderr.endswith("stopped by a signal (exit 130)\n")
    run = only_run(out)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["exit_code"] == 130
    assert f"agentscale report {run}" in info["verdict"]["reasons"][0]
    assert len(_requests(run)) == 40  # every record of the ended load is there


def test_a_stop_lost_in_a_finalizer_prints_nothing_and_stops_the_launch(tmp_path):
    """Raised inside __del__, a KeyboardInterrupt cannot propagate: no "Exception ignored"
    traceback, and the engine is not started for a run the user asked to stop."""
    lost = textwrap.dedent("""
        class Finalized:
            def __del__(self):
                cli.STOPPED.append(2)
                raise KeyboardInterrupt
        Finalized()
    """)
    done = _cli_after(lost, tmp_path)
    assert done.returncode == 130 and done.stderr == "stopped by a signal (exit 130)\n"
    from agentscale import stops
    from agentscale.engine.launcher import launch

    stops.requested.append(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            launch(None, lambda _message: None)  # type: ignore[arg-type]
    finally:
        stops.requested.clear()


# --- 4. error classes from the real client ---------------------------------------------------
@pytest.mark.parametrize(
    ("route", "expected"),
    [("/hang", "timeout"), ("/close", "connection_reset"), ("/cut", "incomplete_response")],
)
def test_error_classes_come_from_what_the_client_really_raised(tmp_path, server, route, expected):
    document = scenario_dict(
        server.url(route), target__timeout="1s", load__duration="2s",
        load__shape={"kind": "constant", "rps": 5},
    )  # fmt: skip
    path = write_scenario(tmp_path, document)
    agentscale("load", str(path), "--out", str(tmp_path / "r"))
    requests = _requests(only_run(tmp_path / "r"))
    classes = set(requests.loc[~requests["dropped"], "error_class"])
    assert classes == {expected}, classes


# --- 5. a target that dies mid-run -----------------------------------------------------------
@pytest.mark.parametrize("on_loss", ["invalid", "continue"])
def test_a_target_that_dies_mid_run_is_named(tmp_path, on_loss):
    target = start_server()
    document = scenario_dict(target.url("/agent"), load__duration="10s")
    document["load"]["on_target_loss"] = on_loss
    path = write_scenario(tmp_path, document)
    process = spawn("load", str(path), "--out", str(tmp_path / "r"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the load's own start, however slow the machine
        if any("run_started" in p.read_text() for p in (tmp_path / "r").glob("*/*/events.jsonl")):
            break
        time.sleep(0.05)
    time.sleep(2.5)
    target.process.kill()
    target.process.wait()
    stdout, stderr = process.communicate(timeout=60)
    run = only_run(tmp_path / "r")
    lost = [e for e in read_events(run / "events.jsonl") if e["type"] == "target_lost"]
    assert len(lost) == 1 and 1 < lost[0]["at"] < 6 and lost[0]["until"] is None
    if on_loss == "invalid":
        assert process.returncode == 3, stdout + stderr
        assert "the target stopped answering" in stdout
        assert "the target stopped answering" in (run / "summary.md").read_text()
        assert "the target stopped answering" in (run / "report.html").read_text()
    else:
        assert process.returncode == 0, stdout + stderr
        assert "the target stopped answering" in stderr  # a warning, still said


def test_a_run_where_nothing_succeeded_never_passes(tmp_path, server):
    document = scenario_dict(server.url("/status/500"), load__duration="2s")
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
    assert result.code == 1, result.output
    html = (only_run(tmp_path / "r") / "report.html").read_text()
    assert "class='badge fail'" in html and "at least one request succeeded" in html


# --- 6. the YAML loader ----------------------------------------------------------------------
def test_hostile_yaml_is_refused_at_its_line_quickly_and_in_little_memory(tmp_path):
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    files = {
        "bomb.yaml": "\n".join(bomb),
        "deep.yaml": "a: " + "[" * 3000 + "]" * 3000,
        "big.yaml": "items:\n" + "- x\n" * 400_000,
        "aliases.yaml": "a: &a 1\nb: [" + ", ".join(["*a"] * 2000) + "]\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from agentscale.cli import run
            code = run(["validate", *sys.argv[1:]])
            # VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked parent.
            status = open("/proc/self/status").read().split("VmHWM:")[1]
            print(f"peak {status.split()[0]} code {code}")
        """), *(str(tmp_path / name) for name in files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert time.perf_counter() - began < 15
    assert "Traceback" not in done.stderr and "code 2" in done.stdout
    peak_kb = int(done.stdout.split()[1])
    assert peak_kb < 400_000, peak_kb
    for name, words in (
        ("bomb.yaml", "values once aliases are expanded"),
        ("deep.yaml", "nested more than 64 levels deep"),
        ("big.yaml", "bytes; a scenario or fault profile is at most"),
        ("aliases.yaml", "more than 1000 aliases"),
    ):
        line = next(ln for ln in done.stderr.splitlines() if name in ln)
        assert words in line, line
    assert f"{tmp_path / 'deep.yaml'}:1:" in done.stderr


# --- 7. what load cannot run, validate refuses ------------------------------------------------
HOSTILE_SCENARIOS = {
    "duration_inf": ("load__duration", float("inf"), "load.duration"),
    "duration_nan": ("load__duration", float("nan"), "load.duration"),
    "duration_huge": ("load__duration", 1e12, "load.duration"),
    "rps_inf": ("load__shape", {"kind": "constant", "rps": float("inf")}, "load.shape"),
    "rps_huge": ("load__shape", {"kind": "constant", "rps": 1e12}, "load.shape"),
    "ramp_huge": ("load__shape", {"kind": "ramp", "from_rps": 1, "to_rps": 1e9}, "load.shape"),
    "ramp_many": ("load__shape", {"kind": "ramp", "from_rps": 1, "to_rps": 40_000}, "load.shape"),
    "seed_30_digits": ("seed", 10**30, "seed"),
    "seed_negative": ("seed", -1, "seed"),
    "no_tenants": ("tenants", {}, "tenants"),
    "header_crlf": ("target__headers", {"X-A": "a\r\nInjected: yes"}, "target.headers"),
    "header_name": ("target__headers", {"Bad Name": "x"}, "target.headers"),
}


def test_validate_refuses_what_load_cannot_run(tmp_path, server):
    paths = {}
    for name, (field, value, _) in HOSTILE_SCENARIOS.items():
        document = scenario_dict(server.url("/agent"), **{field: value})
        if name == "ramp_many":
            document["load"]["duration"] = "20m"
        paths[name] = write_scenario(tmp_path, document, f"{name}.yaml")
    nan_window = profile(
        tmp_path, None,
        [{"name": "w", "target": "crm_lookup", "at": float("nan"), "for": "1s",
          "toxic": {"type": "latency", "latency": 10}}],
        name="nan_window.yaml",
    )  # fmt: skip
    bad_ramp = profile(
        tmp_path, None,
        [{"name": "w", "target": "crm_lookup", "at": "1s", "for": "10s",
          "toxic": {"type": "latency", "latency": 10},
          "ramp": [{"at": "2s", "toxic": {"latency": -5}}]}],
        name="bad_ramp.yaml",
    )  # fmt: skip
    result = agentscale("validate", *map(str, paths.values()), str(nan_window), str(bad_ramp))
    assert result.code == 2 and "Traceback" not in result.output
    assert "ok:" not in result.stdout, result.stdout
    for name, (_, _, field) in HOSTILE_SCENARIOS.items():
        line = next(ln for ln in result.stderr.splitlines() if f"{name}.yaml:" in ln)
        assert f": {field}" in line, line
    assert "nan_window.yaml:" in result.stderr and "windows.0.at" in result.stderr
    ramp = next(ln for ln in result.stderr.splitlines() if "bad_ramp.yaml:" in ln)
    assert "windows.0.ramp.0.toxic.latency: Input should be greater than or equal to 0" in ramp


# --- 8. chaos control with scope -------------------------------------------------------------
def test_reset_keeps_records_whose_toxiproxy_does_not_answer_and_never_trusts_a_reused_pid(
    tmp_path,
):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state.record(
            {
                "owner": 999_999_999,  # gone
                "owner_started": 1.0,
                "toxiproxy_url": "http://127.0.0.1:9",  # nothing answers there
                "managed_pid": None,
                # A pid that is alive, but not the process that started at that time.
                "stage_pid": stranger.pid,
                "stage_started": 1.0,
                "proxies": ["agentscale-999999999-crm"],
                "ports": [],
            }
        )
        result = agentscale("chaos", "reset")
        assert result.code == 1, result.output  # something is left: the command says so
        assert "kept for the next try" in result.stderr
        assert stranger.poll() is None  # an unrelated process is never signalled
        assert "could not reach http://127.0.0.1:9" in result.stdout
        assert [e["owner"] for e in state.entries()] == [999_999_999]  # kept for a next try
    finally:
        stranger.kill()
        stranger.wait()


def test_two_runs_reserving_ports_at_once_never_share_one(tmp_path):
    script = textwrap.dedent("""
        import json, os, time
        from agentscale.chaos import state
        from agentscale.chaos.server import free_port
        ports = state.reserve_ports(
            os.getpid(), 30, lambda taken: free_port(below=32768, avoid=taken)
        )
        print(json.dumps(ports), flush=True)
        time.sleep(3)
    """)
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    found = [json.loads(p.stdout.readline()) for p in processes]
    for process in processes:
        process.wait(timeout=10)
    assert all(len(ports) == 30 for ports in found)
    assert len({p for ports in found for p in ports}) == 90


# --- 9. nothing beyond loopback by surprise --------------------------------------------------
def test_listening_or_reaching_beyond_loopback_needs_an_explicit_allow(tmp_path, server):
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent"), load__duration="1s"))
    wide = profile(
        tmp_path,
        {"name": "crm", "upstream": f"127.0.0.1:{server.port}", "listen": "0.0.0.0:21002"},
        [{"name": "w", "target": "crm", "at": "0s", "for": "1s", "down": True}],
        name="wide.yaml",
    )
    result = agentscale("load", str(path), "--faults", str(wide), "--out", str(tmp_path / "r"))
    assert result.code == 2 and "0.0.0.0, not a loopback address" in result.stderr
    assert f"{wide}:" in result.stderr and "--allow-remote 0.0.0.0" in result.stderr
    narrow = profile(
        tmp_path,
        echo_dependency(server)[0],
        [{"name": "w", "target": "echo", "at": "0s", "for": "1s", "down": True}],
        name="narrow.yaml",
    )
    remote = agentscale("load", str(path), "--toxiproxy-url", "http://10.9.9.9:8474",
                        "--faults", str(narrow))  # fmt: skip
    assert remote.code == 2 and "--toxiproxy-url" in remote.stderr
    assert not (tmp_path / "r").exists()


# --- 10. secrets an agent echoes back --------------------------------------------------------
def test_secrets_the_target_echoes_are_redacted_everywhere(tmp_path, server):
    secret = "tok-" + os.urandom(8).hex()
    document = scenario_dict(server.url("/echo_headers"), load__duration="2s")
    document["target"]["headers"] = {"Authorization": "Bearer ${AGENT_TOKEN}"}
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"),
                        env={"AGENT_TOKEN": secret})  # fmt: skip
    assert secret not in result.output
    run = only_run(tmp_path / "r")
    agentscale("report", str(run), "--format", "md")
    for file in run.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
    requests = _requests(run)
    assert requests["output_excerpt"].str.contains(r"\[redacted\]").any()
    assert yaml.safe_load((run / "scenario.yaml").read_text())["target"]["headers"] == {
        "Authorization": "Bearer ${AGENT_TOKEN}"
    }

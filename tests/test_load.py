"""Real Locust runs against a real HTTP server on 127.0.0.1: both models, the records, exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import psutil
import pytest

from conftest import AGENTSCALE, agentscale, only_run, scenario_dict, write_scenario


def run(tmp_path, document, *args, timeout=120):
    path = write_scenario(tmp_path, document)
    out = tmp_path / "reports"
    result = agentscale("load", str(path), "--out", str(out), *args, timeout=timeout)
    return result, only_run(out)


def frames(run_dir):
    return (
        pd.read_parquet(run_dir / "requests.parquet"),
        pd.read_parquet(run_dir / "steps.parquet"),
        json.loads((run_dir / "run.json").read_text()),
    )


def test_open_model_keeps_its_rate_through_stalls_and_sees_them(tmp_path, server):
    """The target stalls 1 s every 5 s: arrivals keep coming and p99 shows the stall."""
    document = scenario_dict(
        server.url("/stall"), load__shape={"kind": "constant", "rps": 50}, load__duration="20s"
    )
    result, run_dir = run(tmp_path, document)
    assert result.code == 0, result.output
    requests, _, info = frames(run_dir)
    sent = requests[~requests["dropped"]]
    span = (sent["sent_at"].max() - sent["sent_at"].min()).total_seconds()
    achieved = (len(sent) - 1) / span
    assert achieved == pytest.approx(50, rel=0.03)
    assert info["summary"]["achieved_rps"] == pytest.approx(50, rel=0.03)
    assert requests["latency_ms"].quantile(0.99) >= 900
    # The stall is in the latency from the intended start, not hidden in slower arrivals.
    assert requests["lag_ms"].quantile(0.99) < 50
    assert info["verdict"]["result"] == "pass"


def test_a_trace_fills_tokens_steps_and_tool_calls(tmp_path, server):
    result, run_dir = run(tmp_path, scenario_dict(server.url("/agent")), "--duration", "2s")
    assert result.code == 0, result.output
    requests, steps, info = frames(run_dir)
    assert len(requests) == 40
    assert (requests["input_tokens"] > 0).all() and (requests["tool_calls"] == 1).all()
    assert (requests["retries"] == 1).all() and requests["success"].all()
    assert requests["expect_ok"].all() and (requests["cost_usd"] > 0).all()
    assert set(steps["kind"]) == {"llm", "retrieval", "tool"}
    assert len(steps) == 4 * len(requests)
    assert set(steps["request_id"]) == set(requests["request_id"])
    assert requests["request_id"].is_unique
    assert set(requests["tenant"]) == {"acme", "globex"}
    assert info["summary"]["cost_per_success_usd"] > 0


def test_no_trace_still_has_latency_status_and_success(tmp_path, server):
    document = scenario_dict(server.url("/plain"), success={"expect": "none"})
    result, run_dir = run(tmp_path, document, "--duration", "2s")
    assert result.code == 0, result.output
    requests, steps, _ = frames(run_dir)
    assert len(requests) == 40 and len(steps) == 0
    assert requests["success"].all() and (requests["status_code"] == 200).all()
    assert requests["latency_ms"].notna().all() and requests["input_tokens"].isna().all()


def test_http_errors_are_classified_and_fail(tmp_path, server):
    _result, run_dir = run(tmp_path, scenario_dict(server.url("/status/503")), "--duration", "1s")
    requests, _, info = frames(run_dir)
    assert set(requests["error_class"]) == {"http_5xx"} and not requests["success"].any()
    assert info["summary"]["success_rate"] == 0


def test_an_error_answer_in_latin_1_is_a_5xx_not_a_defect_of_ours(tmp_path, server):
    """Locust's session decoded an error answer as UTF-8 for its debug log: a latin-1 body
    lost its status and made the run invalid (agentscale_error)."""
    result, run_dir = run(tmp_path, scenario_dict(server.url("/latin1_error")),
                          "--duration", "1s")  # fmt: skip
    requests, _, _ = frames(run_dir)
    assert set(requests["error_class"]) == {"http_5xx"}, result.output
    assert (requests["status_code"] == 500).all() and result.code == 1, result.output


def test_closed_model_follows_the_users_of_the_shape(tmp_path, server):
    shape = {"kind": "stages", "stages": [{"for": "2s", "users": 2}, {"for": "2s", "users": 6}]}
    document = scenario_dict(
        server.url("/slow?ms=50"), load__model="closed", load__shape=shape, load__duration="4s"
    )
    result, run_dir = run(tmp_path, document)
    assert result.code == 0, result.output
    requests, _, _ = frames(run_dir)
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["users"] for e in events if e["type"] == "users_changed"] == [2, 6]
    by_stage = requests.groupby("phase").size()
    # Each user sends about one request per 50 ms: three times the users, about three times more.
    assert by_stage["stage-2"] / by_stage["stage-1"] == pytest.approx(3, rel=0.35)
    # No user begins a request once the load is over (some did in the run loop's last 50 ms).
    assert set(by_stage.index) == {"stage-1", "stage-2"}, by_stage
    # A closed model sends when a user is free: there is no lag to hide.
    assert requests["lag_ms"].quantile(0.99) < 1 and requests["lag_ms"].max() < 50


def test_the_target_timeout_is_per_request_however_long_a_user_has_been_busy(tmp_path, server):
    """One user (two slots when open), answers of 300 ms, a timeout of 1 s: a dozen requests add
    up to more than the timeout per user, and none of them may time out (a timer re-armed with
    what was left of it did)."""
    for model, shape in (("closed", {"kind": "constant", "users": 1}),
                         ("open", {"kind": "constant", "rps": 3})):  # fmt: skip
        document = scenario_dict(
            server.url("/slow?ms=300"),
            target__timeout="1s",
            load__model=model,
            load__shape=shape,
            load__duration="4s",
            # Two slots: 300 ms answers arrive every 333 ms, so one slot dropped an arrival whenever
            # a loaded machine held an answer past 333 ms; each slot still serves 1.8 s in all.
            load__max_concurrency=2 if model == "open" else None,
        )
        (tmp_path / model).mkdir()
        result, run_dir = run(tmp_path / model, document)
        requests, _, _ = frames(run_dir)
        sent = requests[~requests["dropped"]]
        assert len(sent) >= 10 and sent["service_ms"].sum() > 3_000, (model, len(sent))
        assert sent["error_class"].isna().all(), (model, sent["error_class"].value_counts())
        assert result.code == 0, result.output


def test_each_user_keeps_the_cookie_its_target_set_and_sends_it_back(tmp_path, server):
    """A sticky load balancer's cookie: set on a user's first answer, carried by every later
    request of that user (the engine's direct road hands such a user to Locust's session)."""
    document = scenario_dict(
        server.url("/cookie"),
        success={"expect": "none"},
        load__model="closed",
        load__shape={"kind": "constant", "users": 3},
        load__duration="2s",
    )
    result, run_dir = run(tmp_path, document)
    assert result.code == 0, result.output
    with urllib.request.urlopen(server.url("/cookie/seen"), timeout=10) as answer:
        seen = json.loads(answer.read())
    sent = len(frames(run_dir)[0])
    assert sum(seen.values()) == sent > 20
    assert seen.pop("") == 3  # each user's first request, and none after it
    assert len(seen) == 3 and min(seen.values()) > 3, seen  # a cookie each, each sent again


def test_arrivals_without_a_free_slot_are_dropped_and_make_the_run_invalid(tmp_path, server):
    document = scenario_dict(
        server.url("/slow?ms=500"),
        load__max_concurrency=3,
        load__shape={"kind": "constant", "rps": 20},
        load__duration="2s",
    )
    result, run_dir = run(tmp_path, document)
    assert result.code == 3, result.output
    requests, _, info = frames(run_dir)
    dropped = requests[requests["dropped"]]
    assert len(requests) == 40 and len(dropped) > 20
    assert dropped["latency_ms"].isna().all() and (dropped["error_class"] == "dropped").all()
    assert info["verdict"]["result"] == "invalid"
    assert "dropped" in info["verdict"]["reasons"][0] and "dropped" in result.stdout


def test_an_unreachable_target_makes_the_run_invalid(tmp_path):
    result, run_dir = run(tmp_path, scenario_dict("http://127.0.0.1:9/agent"), "--duration", "1s")
    assert result.code == 3, result.output
    assert "unreachable" in result.stdout
    requests, _, _ = frames(run_dir)
    assert set(requests["error_class"]) == {"connection_refused"}


def test_secrets_from_the_environment_reach_the_target_but_no_file(tmp_path, server):
    secret = "s3cr3t-token-value"
    document = scenario_dict(
        server.url("/agent"), target__headers={"Authorization": "Bearer ${AS_TEST_TOKEN}"}
    )
    path = write_scenario(tmp_path, document)
    result = agentscale(
        "load",
        str(path),
        "--out",
        str(tmp_path / "reports"),
        "--duration",
        "1s",
        env={"AS_TEST_TOKEN": secret},
    )
    assert result.code == 0, result.output
    run_dir = only_run(tmp_path / "reports")
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
    assert secret not in result.output


def start(tmp_path, document):
    path = write_scenario(tmp_path, document)
    out = tmp_path / "reports"
    process = subprocess.Popen(
        [*AGENTSCALE, "load", str(path), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = list(out.glob("*/*/events.jsonl"))
        if runs and "run_started" in runs[0].read_text():
            return process, runs[0].parent
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the run did not start")


def test_ctrl_c_stops_cleanly_with_130_and_keeps_the_records(tmp_path, server):
    document = scenario_dict(server.url("/agent"), load__duration="60s")
    process, run_dir = start(tmp_path, document)
    time.sleep(2.5)
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stdout + stderr
    assert time.monotonic() - began < 10
    assert "Traceback" not in stdout + stderr
    requests, _, info = frames(run_dir)
    assert info["status"] == "interrupted" and info["verdict"]["result"] == "interrupted"
    assert 30 <= len(requests) <= 80  # about 2.5 s at 20 requests/s, all kept


def test_ctrl_c_during_the_drain_gives_the_requests_in_flight_2_s_not_the_timeout(tmp_path, server):
    """The load is over and its answers take 20 s (timeout 30 s): a Ctrl-C while the engine
    waits for them stops it about 2 s later, the requests still out recorded as cancelled."""
    document = scenario_dict(
        server.url("/slow?ms=20000"), target__timeout="30s", load__duration="2s"
    )
    process, run_dir = start(tmp_path, document)
    time.sleep(3.5)  # the arrivals are over; the engine is draining
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert time.monotonic() - began < 8
    requests, _, info = frames(run_dir)
    assert info["status"] == "interrupted"
    assert len(requests) >= 30 and requests["request_id"].is_unique
    assert (requests["error_class"] == "cancelled").all(), requests["error_class"].value_counts()
    # Sent, though none completed: never "no request was sent" (what the CI files said).
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert any(
        f"no request completed: {len(requests)} were still in flight" in reason
        for reason in verdict["invalid_reasons"]
    ), verdict["invalid_reasons"]
    summary = (run_dir / "summary.md").read_text()
    assert f"| cancelled (in flight at the stop) | {len(requests)} |" in summary, summary


def test_sigterm_also_stops_cleanly(tmp_path, server):
    process, run_dir = start(tmp_path, scenario_dict(server.url("/agent"), load__duration="60s"))
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert frames(run_dir)[2]["status"] == "interrupted"


def test_after_kill_9_the_records_up_to_about_the_last_second_are_readable(tmp_path, server):
    process, run_dir = start(tmp_path, scenario_dict(server.url("/agent"), load__duration="60s"))
    time.sleep(4.0)
    engine = psutil.Process(process.pid).children()
    started = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])["started_at"]
    killed_at = time.time()
    for victim in [process.pid, *(child.pid for child in engine)]:
        os.kill(victim, signal.SIGKILL)
    process.communicate(timeout=10)
    requests = pd.read_parquet(run_dir / "requests.parquet")
    expected = (killed_at - started) * 20
    assert expected - 20 * 1.5 <= len(requests) <= expected + 1
    assert requests["latency_ms"].notna().all()


def test_other_response_shapes_are_mapped_with_jmespath(tmp_path, server):
    telemetry = {
        "output": "choices[0].message.content",
        "input_tokens": "usage.prompt_tokens",
        "output_tokens": "usage.completion_tokens",
        "model": "model",
    }
    document = scenario_dict(server.url("/openai"), telemetry=telemetry)
    result, run_dir = run(tmp_path, document, "--duration", "1s")
    assert result.code == 0, result.output
    requests, _, _ = frames(run_dir)
    assert (requests["input_tokens"] == 42).all() and (requests["output_tokens"] == 7).all()
    assert requests["expect_ok"].all()  # the mapped output holds the prompt's expected answer
    assert requests["cost_usd"].round(12).eq(round((42 * 0.15 + 7 * 0.6) / 1e6, 12)).all()


def test_the_cli_process_never_imports_locust(tmp_path, server):
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent")))
    code = (
        "import sys; from agentscale.cli import run;"
        f"rc = run(['load', {str(path)!r}, '--duration', '1s', '--out', {str(tmp_path)!r}]);"
        "print('RESULT', rc, 'locust' in sys.modules, 'gevent' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "RESULT 0 False False" in done.stdout, done.stdout + done.stderr

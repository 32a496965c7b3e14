"""The HTTP stage's LLM-provider faults on the wire: a real stage between a client and a real
local server, each kind's bytes checked as a client sees them."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import pandas as pd
import pytest
import yaml

from agentscale.chaos.kinds import RateLimit, request_tokens
from agentscale.chaos.rig import FaultRig
from agentscale.config.faults import HttpFault
from agentscale.config.loader import load_fault_profile
from chaoskit import (
    apply_in_background,
    echo_dependency,
    events_in,
    ours,
    profile,
    wait_for_event,
)
from conftest import ROOT, agentscale, only_run

PROMPT = {"messages": [{"role": "user", "content": "x" * 40}], "input": "hello"}  # 14 tokens


@contextlib.contextmanager
def stage(tmp_path: Path, server, toxiproxy) -> Iterator[tuple[FaultRig, str]]:
    """A rig with the echo server behind the HTTP stage; yields it and the address to call."""
    dependency, listen = echo_dependency(server, protocol="http")
    path = profile(tmp_path, dependency, [])
    rig = FaultRig(load_fault_profile(path).profile, tmp_path, toxiproxy.url)
    rig.prepare()
    try:
        rig.connect()
        yield rig, listen
    finally:
        assert rig.close() == []


def put(rig: FaultRig, name: str, **fault) -> object:
    """Put an http fault of a window named ``name`` on the echo dependency."""
    from agentscale.config.faults import Window

    window = Window.model_validate(
        {"name": name, "target": "echo", "at": 0, "for": 60, "http": fault}
    )
    rig.apply(window, window.http)
    return window


def call(listen: str, path: str, body: dict | None = None, headers=None):
    """(status, headers, body bytes, error) of one POST; error: how the body ended badly."""
    host, port = listen.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", path, body=json.dumps(body or PROMPT), headers=headers or {})
    response = connection.getresponse()
    error = None
    try:
        data = response.read()
    except http.client.IncompleteRead as cut:
        data, error = cut.partial, "incomplete"
    connection.close()
    return response.status, dict(response.getheaders()), data, error


def timed_events(listen: str, path: str = "/sse") -> tuple[list[tuple[float, bytes]], str | None]:
    """The data lines of a streamed answer with when each arrived (from the request)."""
    host, port = listen.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    began = time.perf_counter()
    connection.request("POST", path, body=json.dumps(PROMPT))
    response = connection.getresponse()
    events, error, rest = [], None, b""
    try:  # read1: readline would take a connection closed mid-body for the body's end
        while chunk := response.read1(65536):
            *lines, rest = (rest + chunk).split(b"\n")
            at = time.perf_counter() - began
            events += [(at, line[5:].strip()) for line in lines if line.startswith(b"data:")]
    except http.client.IncompleteRead:
        error = "incomplete"
    connection.close()
    return events, error


def test_rate_limit_answers_429_after_exactly_the_quota(tmp_path, server, toxiproxy):
    with stage(tmp_path, server, toxiproxy) as (rig, listen):
        window = put(rig, "rpm", kind="rate_limit", requests_per_minute=5)
        answers = [call(listen, "/openai") for _ in range(7)]
        assert [a[0] for a in answers] == [200] * 5 + [429] * 2
        ok, refused = answers[4][1], answers[5][1]
        assert ok["x-ratelimit-limit-requests"] == "5"
        assert ok["x-ratelimit-remaining-requests"] == "0"
        assert int(refused["Retry-After"]) >= 11  # a token comes back every 12 s
        assert 11_000 <= int(refused["retry-after-ms"]) <= 12_000
        assert refused["x-ratelimit-reset-requests"].endswith("s")
        assert json.loads(answers[5][2])["error"]["code"] == "rate_limit_exceeded"
        rig.remove(window)
        assert call(listen, "/openai")[0] == 200  # answering as before, once removed
        assert rig.traffic["rpm"] == {
            "dependency": "echo", "kind": "rate_limit", "requests": 7, "injected": 2,
            "rate_limited": 2,
        }  # fmt: skip


def test_rate_limit_counts_tokens_of_prompts_and_answers_per_tenant(tmp_path, server, toxiproxy):
    # Each call reserves 14 tokens (40 characters and one message) and its answer's usage says
    # 49 in all: 100 tokens a minute hold two calls per tenant, not seven.
    assert request_tokens(json.dumps(PROMPT).encode()) == 14
    with stage(tmp_path, server, toxiproxy) as (rig, listen):
        put(rig, "tpm", kind="rate_limit", tokens_per_minute=100, per_header="X-Tenant-Id")
        first = [call(listen, "/openai", headers={"X-Tenant-Id": "a"})[0] for _ in range(3)]
        other = [call(listen, "/openai", headers={"X-Tenant-Id": "b"})[0] for _ in range(3)]
        assert first == other == [200, 200, 429]
        refused = call(listen, "/openai", headers={"X-Tenant-Id": "a"})
        assert json.loads(refused[2])["error"]["type"] == "tokens"
        assert int(refused[1]["x-ratelimit-remaining-tokens"]) < 14


def test_a_token_bucket_refills_over_the_minute():
    now = [0.0]
    limit = RateLimit(60, None, clock=lambda: now[0])
    assert all(limit.admit("", 0).allowed for _ in range(60))
    refused = limit.admit("", 0)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
    now[0] = 1.0
    assert limit.admit("", 0).allowed and not limit.admit("", 0).allowed


def test_stream_cut_closes_after_n_events_and_stall_and_slow_stream_hold_them(
    tmp_path, server, toxiproxy
):
    with stage(tmp_path, server, toxiproxy) as (rig, listen):
        window = put(rig, "cut", kind="stream_cut", after_events=3)
        events, error = timed_events(listen)
        assert len(events) == 3 and error == "incomplete"
        rig.remove(window)

        window = put(rig, "cut_bytes", kind="stream_cut", after_bytes=10)
        status, _, body, error = call(listen, "/openai")
        assert (status, len(body), error) == (200, 10, "incomplete")
        rig.remove(window)

        window = put(rig, "stall", kind="stream_stall", after_events=2, stall="600ms")
        events, error = timed_events(listen)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
        assert error is None and len(events) == 11  # ten deltas and the final answer
        assert gaps[1] >= 0.6 and max(gaps[:1] + gaps[2:]) < 0.3
        rig.remove(window)

        window = put(rig, "slow", kind="slow_stream", gap="150ms")
        events, error = timed_events(listen)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
        assert error is None and len(events) == 11
        assert abs(median(gaps) - 0.15) <= 0.015, gaps  # stretched to D within 10%
        assert min(gaps) >= 0.15 * 0.9
        rig.remove(window)

        window = put(rig, "held", kind="stream_stall", after_events=1, stall="60s")
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(timed_events, listen)
            time.sleep(0.6)
            rig.remove(window)  # the window's end lets a held answer go
            events, error = reading.result(timeout=10)
        assert error is None and len(events) == 11 and events[-1][0] < 5

        events, error = timed_events(listen)  # as before once removed: a gap of 20 ms
        assert error is None and len(events) == 11 and events[-1][0] < 0.6
    injected = pd.read_parquet(tmp_path / "faults_injected.parquet")
    assert sorted(set(injected["fault"])) == ["slow_stream", "stream_cut", "stream_stall"]
    assert len(injected) == 5 and set(injected["status"]) == {200}


def test_a_large_plain_body_flows_through_stream_kinds_whole_and_at_speed(
    tmp_path, server, toxiproxy
):
    with stage(tmp_path, server, toxiproxy) as (rig, listen):
        # Nothing to act on: a plain body has no second event to hold or slow, and 70 MiB is
        # beyond what corrupt reads whole. Each flows as it came, at about the direct speed.
        for kind, fields, path in (
            ("stream_stall", {"after_events": 1, "stall": "5s"}, "/big?mb=40"),
            ("slow_stream", {"gap": "5s"}, "/big?mb=40"),
            ("corrupt", {}, "/big?mb=70"),
        ):
            began = time.perf_counter()
            expected = call(f"127.0.0.1:{server.port}", path)[2]
            alone = time.perf_counter() - began
            window = put(rig, kind, kind=kind, **fields)
            began = time.perf_counter()
            status, _, body, error = call(listen, path)
            took = time.perf_counter() - began
            rig.remove(window)
            assert (status, error) == (200, None) and body == expected, kind
            assert took < 10 * alone + 1.0, (kind, took, alone)
            assert rig.traffic[kind]["injected"] == 0
    parts = list((tmp_path / "faults_injected.parquet").glob("part-*.parquet"))
    assert not parts or pd.read_parquet(tmp_path / "faults_injected.parquet").empty


def test_corrupt_empty_and_error_body_answer_200_with_a_broken_body(tmp_path, server, toxiproxy):
    with stage(tmp_path, server, toxiproxy) as (rig, listen):
        for how in ("invalid_json", "truncate"):
            window = put(rig, how, kind="corrupt", corruption=how)
            status, _, body, error = call(listen, "/openai")
            assert status == 200 and error is None and body
            with pytest.raises(json.JSONDecodeError):
                json.loads(body)
            rig.remove(window)
        window = put(rig, "schema", kind="corrupt", corruption="wrong_schema")
        status, _, body, _ = call(listen, "/openai")
        assert status == 200 and "choices" not in json.loads(body)
        events, error = timed_events(listen)  # a stream: one event's data no longer parses
        broken = [e for _, e in events if not _parses(e)]
        assert error is None and len(events) == 11 and len(broken) == 0
        assert "delta" not in json.loads(events[0][1])
        rig.remove(window)

        window = put(rig, "void", kind="empty")
        assert call(listen, "/openai")[:3:2] == (200, b"")
        rig.remove(window)

        window = put(rig, "oops", kind="error_body", rate=0.5)
        answers = [call(listen, "/openai") for _ in range(200)]
        errors = [a for a in answers if b'"error"' in a[2]]
        assert all(a[0] == 200 for a in answers)
        assert 0.35 <= len(errors) / 200 <= 0.65
        assert json.loads(errors[0][2])["error"]["type"] == "server_error"
        streamed = call(listen, "/openai", {**PROMPT, "stream": True})
        while b'"error"' not in streamed[2]:  # the draw is per request
            streamed = call(listen, "/openai", {**PROMPT, "stream": True})
        assert streamed[1]["Content-Type"].startswith("text/event-stream")
        assert json.loads(streamed[2].removeprefix(b"data: "))["error"]["code"]
        rig.remove(window)
        assert rig.traffic["oops"]["injected"] == len(errors) + 1


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except json.JSONDecodeError:
        return False
    return True


def test_a_field_of_another_kind_is_refused_with_its_place(tmp_path):
    with pytest.raises(ValueError, match="gap: not a field of kind stream_cut"):
        HttpFault(kind="stream_cut", after_events=1, gap=1)
    path = profile(
        tmp_path,
        None,
        [{"name": "w", "target": "llm", "at": "1s", "for": "5s",
          "http": {"kind": "rate_limit", "requests_per_minute": 60, "rate": 0.5}}],
    )  # fmt: skip
    result = agentscale("validate", str(path))
    assert result.code == 2
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if "rate:" in t)
    assert f"p.yaml:{line}:" in result.stderr  # at the stray field itself
    assert "windows.0.http.rate: not a field of kind rate_limit" in result.stderr
    clash = profile(
        tmp_path,
        None,
        [{"name": "w", "target": "llm", "at": "1s", "for": "5s",
          "http": {"kind": "status", "status": 600}}],
    )  # fmt: skip
    result = agentscale("validate", str(clash))  # the kind's value is also a field's name
    assert "windows.0.http.status: Input should be less than or equal to 599" in result.stderr
    listed = profile(
        tmp_path,
        None,
        [{"name": "w", "target": "llm", "at": "1s", "for": "5s", "http": {"kind": []}}],
    )
    result = agentscale("validate", str(listed))  # a tag that is no string (found by the fuzz)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "windows.0.http.kind" in result.stderr


def test_chaos_apply_rate_limits_without_load_and_undoes_it(tmp_path, server, toxiproxy):
    dependency, listen = echo_dependency(server, protocol="http")
    path = profile(
        tmp_path,
        dependency,
        [{"name": "quota", "target": "echo", "at": "1s", "for": "60s",
          "http": {"kind": "rate_limit", "requests_per_minute": 3}}],
    )  # fmt: skip
    process, out = apply_in_background(tmp_path, path, toxiproxy)
    wait_for_event(out, "fault_applied", "quota")
    codes = [call(listen, "/plain")[0] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 130
    said = process.stdout.read()
    assert (
        "quota: echo got 5 request(s) in the window; 2 fault(s) injected "
        "(2 of them refused with 429)" in said
    )
    listed = agentscale("chaos", "list", str(path.parent))
    assert "quota: echo rate_limit 3 requests/min (429) at 1s for 60s" in listed.stdout
    assert ours(toxiproxy) == {}
    assert call(f"127.0.0.1:{server.port}", "/plain")[0] == 200


def test_naive_retry_storm_under_the_llm_quota_fails_the_gate_on_amplification(tmp_path):
    """The shipped llm_rate_limit.yaml (its window moved into a 13 s run at 20 requests/s, so
    that the quota's first full bucket is a small part of the window): the resilient demo
    meets its expectations; the naive one, gated with the resilient run as its baseline,
    fails on the amplification check, which names the window."""
    found = yaml.safe_load((ROOT / "fault_profiles" / "llm_rate_limit.yaml").read_text())
    found["windows"][0].update({"at": "2s", "for": "9s"})
    faults = tmp_path / "quota.yaml"
    faults.write_text(yaml.safe_dump(found, sort_keys=False))
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    text = (ROOT / "scenarios" / "smoke.yaml").read_text()
    text = text.replace("duration: 20s", "duration: 13s").replace("rps: 10", "rps: 20")
    for profile_ in ("resilient", "naive"):
        path = tmp_path / "scenarios" / f"{profile_}.yaml"
        path.write_text(text.replace("profile: resilient", f"profile: {profile_}"))

    def run(profile_: str, *extra: str):
        out = tmp_path / profile_
        scenario = str(tmp_path / "scenarios" / f"{profile_}.yaml")
        result = agentscale("load", scenario, "--faults", str(faults), "--out", str(out), *extra)
        folder = only_run(out)
        scorecard = json.loads((folder / "scorecard.json").read_text())
        return result, folder, scorecard["by_window"]["llm_quota"]["during"]

    calm, calm_dir, calm_window = run("resilient")
    assert calm.code == 0, calm.output
    agentscale("baseline", "save", str(calm_dir), "--name", "calm", "--dir", str(tmp_path))
    storm, storm_dir, storm_window = run("naive", "--baseline", str(tmp_path / "calm.json"),
                                         "--force")  # fmt: skip
    assert storm.code == 1, storm.output
    assert storm_window["amplification"] >= 3 * calm_window["amplification"]
    assert storm_window["rate_limited"] > calm_window["rate_limited"]
    checks = json.loads((storm_dir / "verdict.json").read_text())["checks"]
    named = {c["name"]: c for c in checks}
    assert named["window llm_quota: amplification"]["status"] == "regressed"
    assert named["llm_quota: amplification <= 2"]["status"] == "failed"
    summary = (storm_dir / "summary.md").read_text()
    assert "| window llm_quota: amplification |" in summary
    assert "window llm_quota: its dependency got" in storm.output
    removed = [e for e in events_in(storm_dir) if e["type"] == "fault_removed"]
    assert removed[0]["rate_limited"] == storm_window["rate_limited"]


def test_the_resilient_demo_checks_answers_and_waits_its_turn_after_a_429():
    from agentscale.demo.outputs import ClientLimiter, output_problem

    assert output_problem("crm_lookup", {"error": {"code": "server_error"}})
    assert output_problem("crm_lookup", {"data": {}, "schema": "unexpected"}) == (
        "missing item, status, email"
    )
    assert output_problem("kb_search", {"results": [{"text": "a"}]}) is None
    assert output_problem("logs_read", "") == "empty log output"
    now = [0.0]
    limiter = ClientLimiter(0.5, clock=lambda: now[0])
    assert limiter.reserve() == 0.0  # no 429 yet: no pacing
    limiter.learn({"x-ratelimit-limit-requests": "120", "retry-after-ms": "300"}, 429)
    assert limiter.reserve() == pytest.approx(0.3)  # the first waits out the hold
    assert limiter.reserve() is None  # the next turn is 0.5 s later: too far, no call
    now[0] = 0.3
    assert limiter.reserve() == pytest.approx(0.5)  # now it is near enough to wait for
    limiter.learn({}, 200)  # the quota is gone from the answers: calls go at once again
    assert limiter.reserve() == 0.0

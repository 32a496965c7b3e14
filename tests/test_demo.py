"""The reference agent stack, run as `agentscale load` runs it, with real broken dependencies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agentscale.config.scenario import DemoOptions
from agentscale.demo.process import DemoProcess
from conftest import ROOT, spawn, start_server

GOLDEN = [
    json.loads(line)
    for line in (ROOT / "scenarios" / "datasets" / "support_golden.jsonl").read_text().splitlines()
]


@contextmanager
def stack(tmp_path, profile="resilient", **kw: Any) -> Iterator[DemoProcess]:
    with DemoProcess(profile, 0.0, tmp_path / f"demo-{profile}.log", **kw) as demo:
        yield demo


@contextmanager
def broken_dependency(status: int = 503) -> Iterator[str]:
    server = start_server("--fail-with", str(status))
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


def ask(demo: DemoProcess, text: str, tenant: str = "acme") -> dict[str, Any]:
    body = json.dumps({"tenant_id": tenant, "input": text}).encode()
    request = urllib.request.Request(
        demo.agent_url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def steps_named(reply: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [s for s in reply["trace"]["steps"] if s["name"] == name]


def events(reply: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in reply["trace"]["events"] if e["type"] == kind]


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_healthy_stack_answers_the_golden_set(tmp_path, tenant):
    with stack(tmp_path) as demo:
        for item in GOLDEN:
            reply = ask(demo, item["prompt"], tenant)
            assert reply["status"] == "ok", (item, reply)
            for expected in item["expect"]:
                assert expected.lower() in reply["output"].lower(), (item, reply["output"])
            kinds = {s["kind"] for s in reply["trace"]["steps"]}
            assert {"llm", "retrieval"} <= kinds


def test_trace_contract_steps_carry_tokens_models_and_attempts(tmp_path):
    with stack(tmp_path) as demo:
        reply = ask(demo, "Please refund order 1182, it arrived broken")
    llm = [s for s in reply["trace"]["steps"] if s["kind"] == "llm"]
    # Small model for classification and extraction, large for reasoning and the answer.
    assert {s["name"]: s["model"] for s in llm} == {
        "classify": "mock-small",
        "extract": "mock-small",
        "plan": "mock-large",
        "answer": "mock-large",
    }
    assert all(s["input_tokens"] > 0 and s["output_tokens"] > 0 for s in llm)
    assert steps_named(reply, "answer")[0]["ttft_ms"] >= 0  # streamed
    billing = steps_named(reply, "billing")[0]
    assert billing["kind"] == "tool" and billing["attempts"] == 1 and billing["outcome"] == "ok"
    retrieval = steps_named(reply, "kb_search")[0]
    assert retrieval["top_k"] == 3 and retrieval["chunk_tokens"] > 0


def test_breaker_opens_after_repeated_failures_and_then_short_circuits(tmp_path):
    with broken_dependency() as broken, stack(tmp_path, routes={"crm_lookup": broken}) as demo:
        replies = [ask(demo, "Where is order 4410?") for _ in range(4)]
    first, second = replies[0], replies[1]
    assert steps_named(first, "crm_lookup")[0]["attempts"] == 3  # bounded retries
    assert steps_named(first, "crm_lookup")[0]["error"] == "HTTP 503"
    opened = [r for r in replies if events(r, "circuit_open")]
    assert len(opened) == 1 and opened[0] is second  # 5 consecutive failures open it
    for later in replies[2:]:
        crm = steps_named(later, "crm_lookup")[0]
        assert crm["outcome"] == "short_circuited" and crm["attempts"] == 0
    # Each failed lookup is answered explicitly: degraded, with a fallback event.
    for reply in replies:
        assert reply["status"] == "degraded"
        assert events(reply, "fallback")[0]["target"] == "crm_lookup"


def test_retrieval_down_falls_back_to_keyword_search_and_says_so(tmp_path):
    with broken_dependency() as broken, stack(tmp_path, routes={"kb_search": broken}) as demo:
        reply = ask(demo, "Login latency above 4s on the mobile app")
    assert reply["status"] == "degraded"
    assert events(reply, "fallback") == [
        {"type": "fallback", "target": "kb_search", "mode": "keyword"}
    ]
    assert steps_named(reply, "kb_keyword_fallback")
    assert "session store" in reply["output"]  # still a useful answer


def test_the_cache_never_serves_one_tenants_entry_to_another(tmp_path):
    with stack(tmp_path) as demo:
        acme = ask(demo, "Where is order 4410?", "acme")
        globex = ask(demo, "Where is order 4410?", "globex")
        acme_again = ask(demo, "Where is order 4410?", "acme")
    assert "in transit" in acme["output"] and "delivered" in globex["output"]
    assert steps_named(globex, "crm_lookup")[0]["cache"] == "miss"
    assert steps_named(acme_again, "crm_lookup")[0]["cache"] == "hit"
    assert acme_again["output"] == acme["output"]


def test_a_cache_key_without_the_tenant_leaks_and_the_check_above_would_see_it(tmp_path):
    with stack(tmp_path, options=DemoOptions(cache_scope_bug=True)) as demo:
        ask(demo, "Where is order 4410?", "acme")
        globex = ask(demo, "Where is order 4410?", "globex")
    assert "in transit" in globex["output"]  # acme's order, served to globex
    assert steps_named(globex, "crm_lookup")[0]["cache"] == "hit"


def test_a_budget_stops_a_runaway_loop(tmp_path):
    with stack(tmp_path) as resilient:
        bounded = ask(resilient, "keep digging into refund policy details")
    with stack(tmp_path, "naive") as naive:
        unbounded = ask(naive, "keep digging into refund policy details")
    assert events(bounded, "budget_exhausted") == [{"type": "budget_exhausted", "budget": "steps"}]
    assert bounded["status"] == "degraded" and "budget" in bounded["output"]
    dependency_steps = [s for s in bounded["trace"]["steps"] if s["kind"] != "guardrail"]
    assert len(dependency_steps) <= 14  # the resilient profile's max_steps
    assert len(unbounded["trace"]["steps"]) > 3 * len(dependency_steps)


def test_naive_makes_more_tool_attempts_than_resilient_while_a_tool_fails(tmp_path):
    attempts = {}
    with broken_dependency() as broken:
        for profile in ("resilient", "naive"):
            with stack(tmp_path, profile, routes={"crm_lookup": broken}) as demo:
                replies = [ask(demo, "Where is order 4410?") for _ in range(10)]
            attempts[profile] = sum(
                s["attempts"] for r in replies for s in steps_named(r, "crm_lookup")
            )
            if profile == "naive":
                assert all(r["status"] == "error" for r in replies)  # no fallback either
    assert attempts["naive"] == 50  # five immediate attempts, every time
    assert attempts["resilient"] <= 6  # two bounded tries, then the breaker holds
    assert attempts["naive"] > 5 * attempts["resilient"]


def test_billing_needs_an_idempotency_key_and_replays_retries(tmp_path):
    with stack(tmp_path) as demo:
        billing = demo.description["services"]["billing"]
        url = f"http://{billing}/refunds"
        body = json.dumps({"order_id": "1182", "amount": 49.9}).encode()

        def post(headers):
            request = urllib.request.Request(url, data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        assert post({})[0] == 400
        first = post({"Idempotency-Key": "k1"})
        again = post({"Idempotency-Key": "k1"})
    assert first[0] == 201 and again[0] == 200
    assert again[1]["refund_id"] == first[1]["refund_id"] and again[1]["replayed"]


def test_mock_llm_streams_sse_with_usage_and_its_latency_follows_the_time_scale(tmp_path):
    import time

    body = json.dumps(
        {
            "model": "mock-small",
            "stream": True,
            "messages": [
                {"role": "system", "content": "task: classify"},
                {"role": "user", "content": "I want a refund"},
            ],
        }
    ).encode()
    timings = {}
    for scale in (0.0, 2.0):
        with DemoProcess("resilient", scale, tmp_path / "llm.log") as demo:
            url = f"http://{demo.description['services']['llm']}/v1/chat/completions"
            started = time.perf_counter()
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
                lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("data: ")]
            timings[scale] = time.perf_counter() - started
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "refund"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert chunks[-1]["usage"]["prompt_tokens"] > 0
    assert timings[2.0] >= 0.16  # 2 x (80 ms to first token + 2 x 4 ms)
    assert timings[0.0] < timings[2.0]


def test_load_against_demo_starts_the_stack_records_the_trace_and_stops_it(tmp_path):
    import shutil

    import pandas as pd
    import psutil

    from conftest import agentscale, only_run

    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    scenario = tmp_path / "scenarios" / "smoke.yaml"
    text = scenario.read_text().replace("time_scale: 1.0", "time_scale: 0.1")
    scenario.write_text(text)
    before = {p.pid for p in psutil.process_iter(["cmdline"]) if _is_demo(p)}
    result = agentscale("load", str(scenario), "--duration", "3s", "--out", str(tmp_path / "r"))
    assert result.code == 0, result.output
    run_dir = only_run(tmp_path / "r")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["demo"]["profile"] == "resilient" and set(info["demo"]["routes"]) == {
        "llm",
        "kb_search",
        "crm_lookup",
        "billing",
        "logs_read",
    }
    requests = pd.read_parquet(run_dir / "requests.parquet")
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert len(requests) == 30 and requests["success"].all() and requests["expect_ok"].all()
    assert set(steps["kind"]) >= {"llm", "retrieval", "tool"} and requests["cost_usd"].gt(0).all()
    after = {p.pid for p in psutil.process_iter(["cmdline"]) if _is_demo(p)}
    assert after <= before  # the stack it started is gone


def test_demo_profile_can_be_overridden_from_the_environment(tmp_path):
    import shutil

    from conftest import agentscale, only_run

    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    scenario = tmp_path / "scenarios" / "smoke.yaml"
    scenario.write_text(scenario.read_text().replace("time_scale: 1.0", "time_scale: 0"))
    result = agentscale(
        "load",
        str(scenario),
        "--duration",
        "1s",
        "--out",
        str(tmp_path / "r"),
        env={"AGENTSCALE_DEMO_PROFILE": "naive"},
    )
    assert result.code == 0, result.output
    info = json.loads((only_run(tmp_path / "r") / "run.json").read_text())
    assert info["demo"]["profile"] == "naive"


def test_demo_serve_runs_in_the_foreground_until_ctrl_c(tmp_path):
    import signal

    process = spawn("demo", "serve", "--port", "0", "--time-scale", "0")
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("agent: POST http://127.0.0.1:"), first
    url = first.split()[2]
    body = json.dumps({"tenant_id": "acme", "input": "Where is order 4410?"}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
        assert "order 4410" in json.loads(response.read())["output"].lower()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0 and "Traceback" not in stderr


def _is_demo(process) -> bool:
    try:
        return "agentscale.demo" in " ".join(process.info["cmdline"] or [])
    except Exception:
        return False

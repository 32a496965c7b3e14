"""[sessions]: streamed answers (SSE, NDJSON) timed event by event, and multi-turn
conversations that carry their thread, against real servers (the test target, the demo)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from agentscale.config.dataset import load_dataset
from agentscale.config.scenario import Sessions as SessionsConfig
from agentscale.config.template import RequestTemplate
from agentscale.engine.plan import PlannedRequest
from agentscale.engine.session import Sessions
from agentscale.errors import ConfigErrors
from agentscale.telemetry.body import Trace
from agentscale.telemetry.stream import kind_of, read_stream
from conftest import ROOT, agentscale, only_run, scenario_dict, write_scenario

# --- framing and timing, from made-up chunks ---------------------------------------------------


def test_sse_events_are_framed_across_chunks_and_timed_by_arrival():
    chunks = [
        (1.0, b": keep-alive\n\n"),
        (1.2, b'data: {"delta": "Hel'),  # an event split over two chunks counts when complete
        (1.25, b'lo "}\r\n\r\ndata: {"delta": "world"}\n\n'),
        (
            1.3,
            b"event: done\ndata: " + json.dumps({"output": "Hello world", "status": "ok"}).encode(),
        ),
        (1.4, b"\n\n"),
    ]
    read = read_stream("sse", chunks)
    assert read.events == 2 and read.final
    assert read.ttft == 1.25  # the first event was complete only with the second chunk
    # Gaps are between content events: two in one chunk are 0 apart; the final one is not one.
    assert read.gaps_ms == pytest.approx([0.0])
    assert json.loads(read.document or b"{}")["output"] == "Hello world"
    assert "".join(read.text) == "Hello world"


def test_openai_chunks_end_with_done_and_the_last_json_event_carries_the_usage():
    def chunk(text: str) -> bytes:
        return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode()

    usage = json.dumps({"choices": [{"delta": {}}], "usage": {"prompt_tokens": 9}}).encode()
    role = json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]}).encode()
    chunks = [(0.05, b"data: " + role + b"\n\n"), (0.1, chunk("a") + b"\n\n"),
              (0.2, chunk("b") + b"\n\n"), (0.3, b"data: " + usage + b"\n\n"),
              (0.35, b"data: [DONE]\n\n")]  # fmt: skip
    read = read_stream("sse", chunks)
    # The role chunk and the usage chunk carry no text: the first token came at 0.1 s.
    assert read.final and read.events == 2 and read.ttft == 0.1 and "".join(read.text) == "ab"
    assert read.gaps_ms == pytest.approx([100.0])
    assert json.loads(read.document or b"{}")["usage"] == {"prompt_tokens": 9}
    cut = read_stream("sse", chunks[:3])
    assert not cut.final  # no [DONE], no final event: the exchange records stream_cut


def test_ndjson_lines_with_a_final_line_without_newline():
    chunks = [
        (0.5, b'{"token": "x"}\n{"token": "y"}\n'),
        (0.7, b'{"type": "done", "status": "ok"}'),
    ]
    read = read_stream("ndjson", chunks)
    assert read.events == 2 and read.final and read.ttft == 0.5
    assert kind_of("text/event-stream; charset=utf-8") == "sse"
    assert kind_of("application/x-ndjson") == "ndjson"
    assert kind_of("application/json") is None


def test_history_goes_into_the_body_as_json_and_is_cut_to_its_budget():
    template = RequestTemplate({"input": "{{prompt}}", "messages": "{{history}}"}, {}, {})
    config = SessionsConfig(history="client", history_max_tokens=30, thread_from="thread.id")
    sessions = Sessions(config, "run1")
    talk = sessions.start(PlannedRequest("0000001", "acme", "w", 0, 1), random.Random(1))
    for turn, answer in enumerate(["first answer", "second answer " * 8, "third"], start=1):
        talk.turn = turn
        trace = Trace(output=answer)
        trace.body = {"thread": {"id": "t-9"}}
        sessions.learn(talk, trace)
        sessions.after(talk, trace, f"question {turn}")
    body = json.loads(template.fill_body({"prompt": "q", **_history(template, talk.history_json)}))
    assert isinstance(body["messages"], list)  # a JSON list, not a string holding one
    assert body["messages"][-1] == {"role": "assistant", "content": "third"}
    assert all("first answer" not in m["content"] for m in body["messages"])  # over budget
    assert talk.thread_id == "t-9" and talk.session_id == "run1-0000001"


def _history(template: RequestTemplate, history: str) -> dict[str, str]:
    escaped: dict[str, str] = {}
    template.fill_history(escaped, history)
    return escaped


def test_a_conversation_line_has_turns_instead_of_a_prompt(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"workflow": "w", "turns": [{"prompt": "a", "expect": "x"}, {"prompt": "b"}]}\n'
    )
    item = load_dataset(good).items[0]
    assert item.turn(2).prompt == "b" and item.turn(3).prompt == "a"  # a short one starts over
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "turns": [{"prompt": "b"}]}\n{"workflow": "w"}\n')
    with pytest.raises(ConfigErrors) as raised:
        load_dataset(bad)
    assert [e.location.line for e in raised.value.errors] == [1, 2]


# --- streamed answers from a real server on a known clock --------------------------------------


def _stream_scenario(tmp_path: Path, url: str, rps: int, seconds: str) -> Path:
    golden = tmp_path / "golden.jsonl"
    lines = [{"prompt": f"question {i}", "workflow": "ask"} for i in range(8)]
    lines += [
        {"prompt": "please stall", "workflow": "stall"},
        {"prompt": "please cut", "workflow": "cut"},
    ]
    golden.write_text("".join(json.dumps(line) + "\n" for line in lines))
    document = scenario_dict(
        url,
        target__stream_idle_timeout="0.5s",
        load__shape={"kind": "constant", "rps": rps},
        load__duration=seconds,
        workload__workflows={"ask": 8, "stall": 1, "cut": 1},
        success={"expect": "none"},
    )
    return write_scenario(tmp_path, document)


def test_sse_ttft_and_gaps_match_the_servers_clock_and_stalls_and_cuts_are_named(tmp_path, server):
    path = _stream_scenario(tmp_path, server.url("/sse"), rps=20, seconds="4s")
    out = tmp_path / "reports"
    result = agentscale("load", str(path), "--out", str(out), timeout=120)
    run_dir = only_run(out)
    requests = pd.read_parquet(run_dir / "requests.parquet")
    asked = requests[requests["workflow"] == "ask"]
    assert len(asked) >= 40 and asked["success"].all(), result.output
    # The server sends the first event 200 ms after the request, then one every 20 ms. Its
    # own sleeps run late on a loaded machine too: the median came out 205.1 ms in a full
    # suite on two busy cores, so 10 ms (the ndjson test's bound) is the noise allowed.
    assert abs(asked["ttft_ms"].median() - 200.0) < 10.0
    gaps = np.concatenate(asked["event_gaps_ms"].to_list())
    # The server's 20 ms sleeps overshoot too (p95 26.7 ms on a VM with 15% steal): the
    # median is held close, the tail within a bound that a mismeasured gap would still break.
    assert abs(np.median(gaps) - 20.0) < 3.0
    assert abs(np.percentile(gaps, 95) - 20.0) < 10.0
    assert (asked["stream_events"] == 10).all()
    assert set(requests.loc[requests["workflow"] == "stall", "error_class"]) == {"stream_stall"}
    assert set(requests.loc[requests["workflow"] == "cut", "error_class"]) == {"stream_cut"}
    # A stalled stream is given up after the idle timeout (0.5 s), not the target's 5 s.
    stalled = requests[requests["workflow"] == "stall"]
    assert (stalled["latency_ms"] < 2000).all()
    # Five events came before the stall or the cut: their bytes are counted (they read 0).
    broken = requests[requests["workflow"].isin(["stall", "cut"])]
    assert (broken["response_bytes"] > 0).all(), broken["response_bytes"]
    card = json.loads((run_dir / "scorecard.json").read_text())
    ask = card["by_workflow"]["ask"]
    assert abs(ask["ttft_p50_ms"] - 200.0) < 10.0 and abs(ask["inter_event_p95_ms"] - 20.0) < 10.0
    assert card["overall"]["coverage"]["stream"] == len(requests[~requests["dropped"]])
    assert "Streamed answers" in (run_dir / "report.html").read_text()
    # The trace came in the final event: steps and tokens as from a plain answer.
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert set(asked["request_id"]) <= set(steps["request_id"])
    assert asked["input_tokens"].notna().all()


def test_ndjson_streams_are_read_and_a_cut_one_is_an_error(tmp_path, server):
    path = _stream_scenario(tmp_path, server.url("/ndjson"), rps=10, seconds="2s")
    out = tmp_path / "reports"
    agentscale("load", str(path), "--out", str(out), timeout=120)
    requests = pd.read_parquet(only_run(out) / "requests.parquet")
    asked = requests[requests["workflow"] == "ask"]
    assert asked["success"].all() and abs(asked["ttft_ms"].median() - 200.0) < 10.0
    assert set(requests.loc[requests["workflow"] == "cut", "error_class"]) <= {"stream_cut"}


# --- conversations against the demo ------------------------------------------------------------


@pytest.mark.parametrize("profile", ["naive"])
def test_four_turn_sessions_carry_the_thread_and_grow_their_context(tmp_path, profile):
    data = tmp_path / "datasets"
    data.mkdir()
    shutil.copy(ROOT / "scenarios" / "datasets" / "support_conversations.jsonl", data)
    document = yaml.safe_load((ROOT / "scenarios" / "conversations.yaml").read_text())
    document["target"]["demo"].update(profile=profile, time_scale=0.1)
    document["workload"]["workflows"] = {"order_status": 1, "refund": 1}
    document["workload"]["sessions"].update(turns=4, think_time="0.1s")
    document["load"] = {"model": "open", "shape": {"kind": "constant", "rps": 6},
                        "duration": "4s", "max_concurrency": 3}  # fmt: skip
    path = tmp_path / "conversations.yaml"
    path.write_text(yaml.safe_dump(document))
    out = tmp_path / "reports"
    result = agentscale("load", str(path), "--out", str(out), timeout=180)
    run_dir = only_run(out)
    requests = pd.read_parquet(run_dir / "requests.parquet")
    sent = requests[~requests["dropped"]]
    assert len(sent) and sent["success"].mean() > 0.9, result.output
    for _, turns in sent.groupby("session_id"):
        turns = turns.sort_values("turn")
        assert turns["turn"].tolist() == list(range(1, len(turns) + 1))
        later = turns[turns["turn"] > 1]["thread_id"]
        # Every turn after the first carries the id the first answer gave.
        assert later.notna().all() and later.nunique() <= 1
    # Turns begun after the 4 s of load (the sessions' drain) are in no phase of the shape.
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    began = next(e["started_at"] for e in events if e["type"] == "run_started")
    late = sent["intended_start"].map(lambda t: t.timestamp()) - began >= 4.0
    assert late.any() and (sent.loc[late, "phase"] == "draining").all()
    assert (sent.loc[~late & (sent["turn"] == 1), "phase"] == "steady").all()
    carried = sent[sent["turn"] > 1].groupby("session_id")["thread_id"].first()
    assert carried.is_unique  # each session its own thread
    card = json.loads((run_dir / "scorecard.json").read_text())
    talks = card["conversations"]
    assert [t["turn"] for t in talks["by_turn"]] == [1, 2, 3, 4]
    tokens = [t["input_tokens_mean"] for t in talks["by_turn"]]
    assert tokens == sorted(tokens) and tokens[-1] > tokens[0] * 1.3  # the thread grows
    assert talks["input_tokens_per_turn"] > 0
    # A tiny in-flight cap (3 sessions): arrivals that found it full are dropped sessions.
    dropped = requests[requests["dropped"]]
    assert talks["dropped"] == len(dropped) > 0 and (dropped["turn"] == 1).all()
    assert talks["complete"] + talks["truncated"] + talks["dropped"] == talks["sessions"]
    assert talks["cost_per_successful_conversation_usd"] > 0
    assert "conversations by turn" in result.stdout
    assert "sessions dropped" in result.stdout  # the drop share counts sessions, not turns
    assert "Conversations by turn" in (run_dir / "report.html").read_text()


def test_a_long_line_in_tiny_chunks_and_a_crlf_split_across_chunks():
    line = b'data: {"delta": "' + b"x" * 200_000 + b'"}'
    chunks = [(i * 1e-6, line[i : i + 1]) for i in range(len(line))]  # one byte a chunk
    chunks += [(1.0, b"\r"), (1.1, b"\ndata: more\r"), (1.2, b"\n\r\n")]
    read = read_stream("sse", chunks)
    # One event: the two data lines belong together (a CRLF split is one line break).
    assert read.events == 1 and read.ttft == 1.2
    assert read.text[0].startswith('{"delta"') and read.text[0].endswith("\nmore")


def test_lines_ended_by_cr_alone_are_events_when_they_come():
    """SSE allows CR, LF and CRLF: a stream in CR alone was read as cut (its final event never
    dispatched), and each event was timed by the chunk after it."""
    done = b"event: done\rdata: " + json.dumps({"status": "ok", "output": "fin"}).encode()
    chunks = [(0.1, b'data: {"delta": "a"}\r\r'), (0.2, b'data: {"delta": "b"}\r\r'),
              (0.3, done + b"\r\r")]  # fmt: skip
    read = read_stream("sse", chunks)
    assert read.final and read.events == 2 and read.ttft == 0.1, read
    assert json.loads(read.document or b"{}")["output"] == "fin"


def test_a_byte_order_mark_split_over_chunks_and_a_cr_inside_an_ndjson_line():
    """The mark in two chunks lost the first event (its first line read as a field named
    "\\xbb\\xbfdata"); a CR is JSON whitespace in NDJSON, not the end of a line."""
    chunks = [(0.1, b"\xef"), (0.2, b'\xbb\xbfdata: {"delta": "a"}\n\n'),
              (0.3, b'data: {"delta": "b"}\n\n'), (0.4, b"data: [DONE]\n\n")]  # fmt: skip
    read = read_stream("sse", chunks)
    assert read.final and read.events == 2 and read.ttft == 0.2 and "".join(read.text) == "ab"
    lines = [(0.1, b'{"delta":\r "a"}\r\n'), (0.2, b'{"type": "done", "status": "ok"}\n')]
    read = read_stream("ndjson", lines)
    assert read.final and read.events == 1 and "".join(read.text) == "a"


def test_an_slo_on_a_figure_that_does_not_exist_is_refused_by_name(tmp_path, server):
    from agentscale.analysis.figures import Card
    from agentscale.config.metrics import SLO_FIGURES

    assert set(Card.__annotations__) >= SLO_FIGURES
    document = scenario_dict(server.url("/sse"), gates={"slo": {"ttft_p59_ms": "< 1"}})
    result = agentscale("validate", str(write_scenario(tmp_path, document)))
    assert result.code == 2 and "did you mean ttft_p95_ms" in result.output


def test_the_final_event_ends_the_answer_and_what_follows_is_ignored():
    done = b"event: done\ndata: " + json.dumps({"status": "ok", "output": "fin"}).encode()
    chunks = [(0.1, b'data: {"delta": "a"}\n\n'), (0.2, done + b"\n\n"),
              (0.3, b'data: {"delta": "late", "usage": {"x": 1}}\n\n')]  # fmt: skip
    read = read_stream("sse", chunks)
    assert read.final and read.events == 1 and json.loads(read.document or b"{}")["output"] == "fin"
    empty = read_stream("sse", [(0.1, b"\xef\xbb\xbfdata: x\n\n"), (0.2, b"event: done\n\n")])
    assert empty.final and empty.text == ["x"]  # a BOM is not data; an empty done ends it
    # A final event Python's json reads but strict JSON does not is still the trace's.
    lenient = read_stream("sse", [(0.1, b'data:  {"status": "error", "n": NaN}\n\n')])
    assert lenient.final and b"NaN" in (lenient.document or b"")

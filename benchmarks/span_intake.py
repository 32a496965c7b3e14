"""How fast agentscale takes in an agent's spans, and what the receiver costs the load engine.

1. decode + join, in this process, on one core: OTLP protobuf batches (512 spans each, GenAI
   attributes, the wire format the OpenTelemetry SDK's OTLP/HTTP exporter sends) decoded,
   written to spans.parquet as the receiver does, read back and joined to their requests.
2. the receiver process over HTTP: batches POSTed back to back with keep-alive; spans/s it
   acknowledged.
3. the engine's ratio to bare Locust (as benchmarks/overhead.py, generator pinned to core 0,
   nginx to the last core) with the receiver off, on and idle, and on while a feeder (on
   nginx's core) sends it SPAN_RATE spans/s.

BENCH_SPANS (default 200,000), BENCH_SECONDS, BENCH_ROUNDS, BENCH_SPAN_RATE (5,000).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from agentscale.analysis.spanjoin import join_spans
from agentscale.chaos.server import free_port
from agentscale.records.frames import RunFrames, read_spans
from agentscale.records.writer import SPAN_COLUMNS, PartWriter
from agentscale.telemetry.context import trace_id
from agentscale.telemetry.spans import decode_protobuf
from bench_scenario import write_scenario
from fast_target import last_core, nginx, pin
from overhead import bare
from results import record

SPANS = int(os.environ.get("BENCH_SPANS", "200000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SPAN_RATE = int(os.environ.get("BENCH_SPAN_RATE", "5000"))
USERS = int(os.environ.get("BENCH_USERS", "20"))
BATCH = 512
PER_REQUEST = 4  # an agent span's children: two LLM calls and two tool calls
NONCE = "00000000000000ab"


def _attribute(key: str, value: str | int) -> KeyValue:
    any_value = (
        AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
    )
    return KeyValue(key=key, value=any_value)


def batches(count: int, started: float) -> list[bytes]:
    """``count`` spans of ``count / PER_REQUEST`` requests, as OTLP export bodies."""
    out, spans = [], []
    for i in range(count):
        seq, step = divmod(i, PER_REQUEST)
        start = int((started + seq * 0.001 + step * 0.01) * 1e9)
        if step % 2 == 0:
            name, attributes = (
                "chat mock-small",
                [
                    _attribute("gen_ai.operation.name", "chat"),
                    _attribute("gen_ai.response.model", "mock-small"),
                    _attribute("gen_ai.usage.input_tokens", 420 + step),
                    _attribute("gen_ai.usage.output_tokens", 60),
                ],
            )
        else:
            name, attributes = (
                "execute_tool crm_lookup",
                [
                    _attribute("gen_ai.operation.name", "execute_tool"),
                    _attribute("gen_ai.tool.name", "crm_lookup"),
                ],
            )
        spans.append(
            Span(trace_id=bytes.fromhex(trace_id(NONCE, seq)), span_id=os.urandom(8),
                 name=name, kind=3, start_time_unix_nano=start,
                 end_time_unix_nano=start + 8_000_000, attributes=attributes)
        )  # fmt: skip
        if len(spans) == BATCH or i == count - 1:
            request = ExportTraceServiceRequest(
                resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
            )
            out.append(request.SerializeToString())
            spans = []
    return out


def decode_and_join(work: Path) -> None:
    started = time.time()
    bodies = batches(SPANS, started)
    begin = time.perf_counter()
    writer = PartWriter(work / "spans.parquet", SPAN_COLUMNS)
    for body in bodies:
        for row in decode_protobuf(body):
            writer.rows.append(
                (row.trace_id, row.span_id, row.parent_span_id, row.name, row.kind, row.start,
                 row.end, row.status_code, row.status_message, row.attributes, row.service)
            )  # fmt: skip
        if len(writer.rows) >= 20_000:
            writer.flush()
    writer.flush()
    decoded = time.perf_counter()
    requests = SPANS // PER_REQUEST
    frame = pd.DataFrame(
        {
            "request_id": [f"{i:07d}" for i in range(requests)],
            "sent_at": pd.to_datetime(started + np.arange(requests) * 0.001, unit="s", utc=True),
            "service_ms": 50.0,
            **{
                name: pd.Series([None] * requests, dtype="Int64")
                for name in (
                    "input_tokens",
                    "output_tokens",
                    "cached_input_tokens",
                    "tool_calls",
                    "retries",
                )
            },
            "cost_usd": np.nan,
            "unattributed_ms": np.nan,
            "steps_source": pd.Series([None] * requests, dtype="string"),
        }
    )
    frames = RunFrames(frame, pd.DataFrame(), started, 60.0, [])
    spans = read_spans(work)
    assert spans is not None
    joined = join_spans(frames, spans, NONCE)
    done = time.perf_counter()
    assert joined.requests == requests and joined.unknown == 0, joined
    print(f"decode + write:  {SPANS / (decoded - begin):>10,.0f} spans/s "
          f"({SPANS:,} spans in {decoded - begin:.2f} s)")  # fmt: skip
    print(f"read + join:     {SPANS / (done - decoded):>10,.0f} spans/s ({done - decoded:.2f} s)")
    print(f"all of it:       {SPANS / (done - begin):>10,.0f} spans/s, one core (goal >= 20,000)")
    rate = SPANS / (done - begin)
    record("span_intake", "decode + write + join: spans/s", rate, ">= 20000", rate >= 20_000)


def start_receiver(work: Path, core: int | None = None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "agentscale.records.otlp", "--out", str(work)]
    process = subprocess.Popen(
        pin(core, command) if core is not None else command, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, f"http://{json.loads(process.stdout.readline())['listen']}/v1/traces"


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def receiver_over_http(work: Path) -> None:
    bodies = batches(min(SPANS, 100_000), time.time())
    process, url = start_receiver(work)
    try:
        begin = time.perf_counter()
        for body in bodies:
            post(url, body)
        took = time.perf_counter() - begin
    finally:
        process.terminate()
        process.wait(timeout=10)
    count = min(SPANS, 100_000)
    print(f"receiver (HTTP): {count / took:>10,.0f} spans/s acknowledged ({count:,} spans, "
          f"{len(bodies)} POSTs of {BATCH}, sender and receiver sharing the machine)")  # fmt: skip


def engine_rate(url: str, work: Path, otlp: str | None) -> float:
    load = {"model": "closed", "shape": {"kind": "constant", "users": USERS},
            "duration": f"{SECONDS}s"}  # fmt: skip
    scenario = write_scenario(work / "bench.yaml", "bench-spans", url, load)
    if otlp is not None:
        import yaml

        document = yaml.safe_load(scenario.read_text())
        document["telemetry"] = {"otlp": {"listen": otlp, "grace": "1s"}}
        scenario.write_text(yaml.safe_dump(document))
    out = work / "runs"
    subprocess.run(
        pin(0, [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out)]),
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads((max(out.glob("*/*")) / "run.json").read_text())
    return float(info["summary"]["sent"]) / SECONDS


def feeder(url: str, stop: threading.Event, sent: list[int]) -> None:
    """SPAN_RATE spans/s in batches of 512, paced, from nginx's core."""
    os.sched_setaffinity(0, {last_core()})
    bodies = batches(BATCH * 50, time.time())
    interval = BATCH / SPAN_RATE
    next_at = time.monotonic()
    k = 0
    while not stop.is_set():
        try:
            post(url, bodies[k % len(bodies)])
            sent[0] += BATCH
        except OSError:
            time.sleep(0.05)  # the receiver is not up yet, or already gone
        k += 1
        next_at += interval
        time.sleep(max(next_at - time.monotonic(), 0))


def overhead_with_receiver() -> None:
    rates: dict[str, list[float]] = {"bare": [], "off": [], "idle": [], "fed": []}
    sent = [0]
    with nginx(core=last_core()) as url, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            base = Path(tmp) / str(round_)
            for name in rates:
                work = base / name
                work.mkdir(parents=True)
                if name == "bare":
                    rates[name].append(bare(url, work))
                    continue
                listen = f"127.0.0.1:{free_port()}"
                stop = threading.Event()
                thread = threading.Thread(
                    target=feeder, args=(f"http://{listen}/v1/traces", stop, sent), daemon=True
                )
                if name == "fed":
                    thread.start()
                try:
                    rates[name].append(engine_rate(url, work, None if name == "off" else listen))
                finally:
                    stop.set()
                    if name == "fed":
                        thread.join(timeout=15)
            print(f"round {round_ + 1}: " + " · ".join(
                f"{n} {r[-1]:,.0f} rps" for n, r in rates.items()), flush=True)  # fmt: skip
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"\n{USERS} users, {SECONDS} s, median of {ROUNDS}; nginx and the feeder on core "
          f"{last_core()}, Locust and agentscale (engine and receiver) on core 0")  # fmt: skip
    for name, label in (("off", "receiver off"), ("idle", "receiver on, idle"),
                        ("fed", f"receiver on, fed {SPAN_RATE:,} spans/s")):  # fmt: skip
        print(f"ratio agentscale / bare, {label + ':':<34} {median[name] / median['bare']:.2f} "
              f"({median[name]:,.0f} vs {median['bare']:,.0f} rps)")  # fmt: skip
        record("span_intake", f"agentscale / bare Locust, {label}", median[name] / median["bare"],
               "-", None)  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.sched_setaffinity(0, {0})
        decode_and_join(Path(tmp))
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        receiver_over_http(Path(tmp))
    if os.environ.get("BENCH_SKIP_OVERHEAD") != "1":
        overhead_with_receiver()


if __name__ == "__main__":
    main()

"""The engine's own road to the target (engine/wire.py): the request head it builds, and a
kept-alive connection the target closed while it was idle, against a real socket server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pandas as pd
import pytest

from conftest import agentscale, only_run, scenario_dict, write_scenario

REPLY = json.dumps({"output": "Answer: ok", "status": "ok"}).encode()


class Recorder:
    """An HTTP/1.1 server on 127.0.0.1 that keeps every request head it reads and, with
    ``drop_idle``, closes each connection after one answer (as a server whose keep-alive
    timeout is shorter than the client's pause does), without saying so in the answer. With
    ``stall_first``, the first connection is held open and never read."""

    def __init__(self, drop_idle: bool, stall_first: bool = False) -> None:
        self.drop_idle, self.stall_first = drop_idle, stall_first
        self.held: socket.socket | None = None  # the stalled connection, kept open
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            if self.stall_first and self.connections == 1:
                self.held = conn  # never read: the client's send fills the socket and waits
                continue
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            conn.settimeout(10)
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.heads.append(head)
                self.bodies.append(buffer[:length])
                buffer = buffer[length:]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
                )
                if self.drop_idle:
                    return

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stopped.set()
        if self.held is not None:
            self.held.close()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture(params=[False, True], ids=["kept", "dropped-when-idle"])
def recorder(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    running = Recorder(drop_idle=request.param)
    yield running
    running.close()


def _fields(head: bytes) -> tuple[str, dict[str, str], list[str]]:
    start, *lines = head.decode("latin-1").split("\r\n")
    pairs = [line.partition(":")[::2] for line in lines]
    return start, {name.lower(): value.strip() for name, value in pairs}, [n for n, _ in pairs]


def test_the_head_carries_what_the_target_needs_and_idle_drops_cost_no_request(tmp_path, recorder):
    document = scenario_dict(
        recorder.url("/agent?v=2"),
        load__model="closed",
        load__shape={"kind": "constant", "users": 2},
        load__duration="2s",
        load__think_time="50ms",
        success={"expect": "none"},
    )
    document["target"]["headers"] = {"X-Tenant": "{{tenant}}", "User-Agent": "agentscale-test"}
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
    run = only_run(tmp_path / "r")
    requests = pd.read_parquet(run / "requests.parquet")
    # A connection the target closed while idle is noticed before the next request goes out:
    # every request is answered, none is lost to the dropped connection.
    assert len(requests) >= 20 and requests["success"].all(), requests["error_class"].unique()
    assert result.code == 0, result.output
    if recorder.drop_idle:
        assert recorder.connections == len(recorder.heads)
    else:
        assert recorder.connections <= 2
    for head, body in zip(recorder.heads, recorder.bodies, strict=True):
        start, fields, names = _fields(head)
        assert start == "POST /agent?v=2 HTTP/1.1"
        assert fields["host"] == f"127.0.0.1:{recorder.port}"
        assert int(fields["content-length"]) == len(body) and json.loads(body)["input"]
        assert fields["content-type"] == "application/json"
        assert fields["accept-encoding"] == "gzip, deflate, br"
        assert fields["x-tenant"] in {"acme", "globex"}
        assert fields["traceparent"].startswith("00-") and "baggage" in fields
        # The scenario's User-Agent replaces the client's own: one of each name, never two.
        assert fields["user-agent"] == "agentscale-test"
        assert len({n.lower() for n in names}) == len(names)


def test_a_header_value_a_dataset_line_breaks_is_refused_and_the_run_is_invalid(tmp_path):
    recorder = Recorder(drop_idle=False)
    try:
        document = scenario_dict(recorder.url("/agent"), load__duration="1s",
                                 workload__dataset="lines.jsonl")  # fmt: skip
        document["target"]["headers"] = {"X-Prompt": "{{prompt}}"}
        (tmp_path / "lines.jsonl").write_text(
            json.dumps({"id": "a", "prompt": "one line"}) + "\n"
            + json.dumps({"id": "b", "prompt": "two\r\nX-Injected: yes"}) + "\n"
        )  # fmt: skip
        path = write_scenario(tmp_path, document)
        result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
        requests = pd.read_parquet(only_run(tmp_path / "r") / "requests.parquet")
    finally:
        recorder.close()
    refused = requests[requests["error_class"] == "agentscale_error"]
    assert len(refused) > 0 and result.code == 3, result.output
    # The line break never reached the target as a header of its own.
    assert recorder.heads and not any(b"X-Injected" in head for head in recorder.heads)


def test_a_request_whose_send_times_out_frees_its_connection_for_the_next(tmp_path):
    """The target never reads the first connection: the first request's send fills the socket
    and its timeout fires mid-send. The user's next requests go out on a new connection (its
    one pooled connection was never given back before, and every later request timed out)."""
    recorder = Recorder(drop_idle=False, stall_first=True)
    try:
        document = scenario_dict(
            recorder.url("/agent"),
            target__timeout="1s",
            workload__dataset="big.jsonl",
            load__model="closed",
            load__shape={"kind": "constant", "users": 1},
            load__duration="3s",
            success={"expect": "none"},
        )
        (tmp_path / "big.jsonl").write_text(json.dumps({"id": "a", "prompt": "x" * (12 << 20)}))
        path = write_scenario(tmp_path, document)
        result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
        assert "Traceback" not in result.output, result.output
        requests = pd.read_parquet(only_run(tmp_path / "r") / "requests.parquet")
    finally:
        recorder.close()
    classes = requests.sort_values("sent_at")["error_class"].tolist()
    assert classes[0] == "timeout", classes
    assert len(classes) >= 3 and requests["success"].sum() >= 2, classes

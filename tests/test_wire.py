"""The engine's own road to the target (engine/wire.py, engine/plain.py): the request head it
builds, the answers it reads (plain ones itself, any other through the client's parser), and a
kept-alive connection the target closed while it was idle, against a real socket server."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from agentscale.engine.plain import plain
from conftest import agentscale, only_run, scenario_dict, write_scenario

REPLY = json.dumps({"output": "Answer: ok", "status": "ok"}).encode()
PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(REPLY),
    REPLY,
)
# An answer: the pieces the server sends (50 ms apart; a number: that many seconds' pause
# instead), and whether it then closes.
Canned = tuple[list[bytes | float], bool]


class Recorder:
    """An HTTP/1.1 server on 127.0.0.1 that keeps every request head it reads and, with
    ``drop_idle``, closes each connection after one answer (as a server whose keep-alive
    timeout is shorter than the client's pause does), without saying so in the answer. With
    ``stall_first``, the first connection is held open and never read. ``answers``: the n-th
    request gets the n-th of them (round the list), instead of a plain answer."""

    def __init__(
        self, drop_idle: bool, stall_first: bool = False, answers: list[Canned] | None = None
    ) -> None:
        self.drop_idle, self.stall_first = drop_idle, stall_first
        self.answers = answers or [([PLAIN], drop_idle)]
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
                pieces, close = self.answers[len(self.heads) % len(self.answers)]
                self.heads.append(head)
                self.bodies.append(buffer[:length])
                buffer = buffer[length:]
                for i, piece in enumerate(pieces):
                    if isinstance(piece, float):
                        time.sleep(piece)
                        continue
                    if i and not isinstance(pieces[i - 1], float):
                        time.sleep(0.05)
                    try:
                        conn.sendall(piece)
                    except OSError:  # the client gave up on this answer
                        return
                if close:
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


def _closed(url: str, users: int, duration: str, **more: Any) -> dict[str, Any]:
    """A closed-model scenario of ``users`` against ``url``, every answer a success."""
    return scenario_dict(
        url,
        load__model="closed",
        load__shape={"kind": "constant", "users": users},
        load__duration=duration,
        success={"expect": "none"},
        **more,
    )


def test_the_head_carries_what_the_target_needs_and_idle_drops_cost_no_request(tmp_path, recorder):
    document = _closed(recorder.url("/agent?v=2"), 2, "2s", load__think_time="50ms")
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
        document["target"]["headers"] = {"X-Prompt": "${WIRE_SECRET}|{{prompt}}"}
        (tmp_path / "lines.jsonl").write_text(
            json.dumps({"id": "a", "prompt": "one line"}) + "\n"
            + json.dumps({"id": "b", "prompt": "two\r\nX-Injected: yes"}) + "\n"
        )  # fmt: skip
        path = write_scenario(tmp_path, document)
        result = agentscale("load", str(path), "--out", str(tmp_path / "r"),
                            env={"WIRE_SECRET": "s3cr3t-wire-42"})  # fmt: skip
        run_dir = only_run(tmp_path / "r")
        requests = pd.read_parquet(run_dir / "requests.parquet")
    finally:
        recorder.close()
    refused = requests[requests["error_class"] == "agentscale_error"]
    assert len(refused) > 0 and result.code == 3, result.output
    # Why, without the value: it holds the secret (the client's message quoted it whole).
    assert refused["trace_warnings"].str.contains("X-Prompt: character 19").all()
    for part in (run_dir / "requests.parquet").iterdir():
        assert b"s3cr3t-wire-42" not in part.read_bytes()
    # The line break never reached the target as a header of its own.
    assert recorder.heads and not any(b"X-Injected" in head for head in recorder.heads)


def test_a_request_whose_send_times_out_frees_its_connection_for_the_next(tmp_path):
    """The target never reads the first connection: the first request's send fills the socket
    and its timeout fires mid-send. The user's next requests go out on a new connection (its
    one pooled connection was never given back before, and every later request timed out)."""
    recorder = Recorder(drop_idle=False, stall_first=True)
    try:
        document = _closed(recorder.url("/agent"), 1, "3s", target__timeout="1s",
                           workload__dataset="big.jsonl")  # fmt: skip
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


def _answer(status: bytes, fields: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + fields + b"\r\n" + body


ZIPPED = gzip.compress(REPLY)
TWICE = gzip.compress(ZIPPED)
# (answer, status, error class, bytes read, whether the target closes the connection after it)
FORMS: list[tuple[Canned, int | None, str | None, int, bool]] = [
    (([PLAIN], False), 200, None, len(REPLY), False),
    (([_answer(b"200", b"Content-Length: %d\r\n" % len(REPLY), REPLY)], False),
     200, None, len(REPLY), False),  # no reason phrase
    (([_answer(b"200 OK", b"CONTENT-LENGTH: %d\r\nConnection: close\r\n" % len(REPLY), REPLY)],
      True), 200, None, len(REPLY), True),
    (([_answer(b"200 OK", b"Transfer-Encoding: chunked\r\n",
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(REPLY), REPLY))], False),
     200, None, len(REPLY), False),
    (([_answer(b"200 OK", b"Content-Length: %d\r\n" % len(REPLY), REPLY[:10]), REPLY[10:]],
      False), 200, None, len(REPLY), False),  # the body in two reads
    (([_answer(b"200 OK", b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(ZIPPED),
               ZIPPED)], False), 200, None, len(REPLY), False),
    (([_answer(b"500 Internal Server Error", b"Content-Length: 4\r\n", b"oops")], False),
     500, "http_5xx", 4, False),
    (([_answer(b"204 No Content", b"", b"")], False), 200 + 4, None, 0, False),
    (([_answer(b"200 OK", b"Content-Length: 100\r\n", REPLY[:10])], True),
     200, "incomplete_response", 0, True),  # cut off, then closed (what came is not kept)
    (([PLAIN + b"\r\n"], False), 200, None, len(REPLY), False),  # a stray CRLF past it
    (([_answer(b"\xb200 OK", b"Content-Length: %d\r\n" % len(REPLY), REPLY)], False),
     None, "bad_response", 0, True),  # "²00": no status (and the connection is given up)
    (([_answer(b"103 Early Hints", b"Link: </style.css>\r\n", b"") + PLAIN], False),
     200, None, len(REPLY), False),  # an interim answer, then the answer
    (([PLAIN + _answer(b"500 Internal Server Error", b"Content-Length: 4\r\n", b"oops")], False),
     200, None, len(REPLY), True),  # an answer after it: not its own (and the connection closed)
    (([_answer(b"101 Switching Protocols", b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
               b"")], False), None, "bad_response", 0, True),  # no longer HTTP: never reused
    (([_answer(b"200 OK", b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(ZIPPED),
               ZIPPED[:10] + bytes(len(ZIPPED) - 10))], False),
     200, "bad_response", 0, False),  # the whole length, but not gzip: read, and not an answer
    (([_answer(b"200 OK", b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % (len(ZIPPED) - 8),
               ZIPPED[:-8])], False), 200, "bad_response", 0, False),  # gzip short of its end
    (([_answer(b"304 Not Modified", b"Content-Length: 40\r\n", b"")], False),
     304, "http_304", 0, False),  # the length of a body a 304 never has: complete, not cut off
    (([_answer(b"200 OK", b"Content-Encoding: gzip, gzip\r\nContent-Length: %d\r\n"
               % len(TWICE), TWICE)], False), 200, None, len(REPLY), False),  # codings stacked
    (([_answer(b"200 OK", b"Content-Encoding: zstd\r\nContent-Length: %d\r\n" % len(REPLY),
               REPLY)], False), 200, "bad_response", 0, False),  # one it never asked for
    (([_answer(b"200 OK", b"Content-Type: application/json\r\nContent-Type: application/json;"
               b" charset=utf-8\r\nContent-Length: %d\r\n" % len(REPLY), REPLY)], False),
     200, None, len(REPLY), False),  # a field that is one value, sent twice: the last counts
    (([_answer(b"200 OK", b"Transfer-Encoding: gzip, chunked\r\n",
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(ZIPPED), ZIPPED))], False),
     200, "bad_response", 0, False),  # a transfer coding it cannot undo: not read as the body
    (([PLAIN[:20]], True), None, "connection_reset", 0, True),  # closed in the middle of a head
    (([b"HTTP/1.1 100 Continue\r\n\r\n"], True), None, "connection_reset", 0, True),
    (([_answer(b"200 OK", b"X-Big: " + b"a" * (2 << 20) + b"\r\nContent-Length: %d\r\n"
               % len(REPLY), REPLY)], False),
     None, "answer_too_large", 0, True),  # a head beyond 1 MiB: refused, never parsed to its end
    (([_answer(b"200 OK", b"X-Big: " + b"a" * ((1 << 20) - 46 - len(b"%d" % len(REPLY)))
               + b"\r\nContent-Length: %d\r\n" % len(REPLY), REPLY)], False),
     200, None, len(REPLY), False),  # a head of exactly 1 MiB: read
    (([_answer(b"200 OK", b"Set-Cookie: sid=s3cr3t; Path=/\r\nContent-Length: %d\r\n" % len(REPLY),
               REPLY)], False), 200, None, len(REPLY), False),
]  # fmt: skip


def test_every_form_of_answer_is_read_as_the_client_reads_it(tmp_path):
    """Each request gets the next of FORMS: the plain answers the engine reads itself and the
    others (chunked, in two reads, compressed, bodyless, cut off, followed by stray bytes or by
    another answer, with a broken status, after an interim answer, switching protocols, with a
    broken gzip body, a field twice, closed mid-head, a head of megabytes, with a cookie)
    the client's parser reads; each is recorded as it was
    answered, and a connection is used again only when the answer left it clean. From the
    cookie on, the forms come again through Locust's session: recorded alike."""
    recorder = Recorder(drop_idle=False, answers=[form[0] for form in FORMS])
    try:
        document = _closed(recorder.url("/agent"), 1, "2s", load__think_time="0s")
        path = write_scenario(tmp_path, document)
        agentscale("load", str(path), "--out", str(tmp_path / "r"))
        requests = pd.read_parquet(only_run(tmp_path / "r") / "requests.parquet")
    finally:
        recorder.close()
    requests = requests.sort_values("sent_at").reset_index(drop=True)
    assert len(requests) >= 2 * len(FORMS), len(requests)  # every form twice at least
    expected_connections = 1
    for n, row in requests.iterrows():
        _, status, error_class, size, closes = FORMS[n % len(FORMS)]
        error = None if pd.isna(row["error_class"]) else row["error_class"]
        code = None if pd.isna(row["status_code"]) else row["status_code"]
        seen = (code, error, row["response_bytes"])
        assert seen == (status, error_class, size), (n, seen)
        if closes and n + 1 < len(requests):
            expected_connections += 1
    # Cookies: from the first Set-Cookie on, every request carries the cookie back.
    cookie_at = len(FORMS) - 1
    assert not any(b"s3cr3t" in head for head in recorder.heads[: cookie_at + 1])
    assert all(b"Cookie: sid=s3cr3t" in head for head in recorder.heads[cookie_at + 1 :])
    assert recorder.connections == expected_connections


@pytest.mark.parametrize(
    ("data", "method", "found"),
    [
        (PLAIN, "POST", (200, len(REPLY), True)),
        (FORMS[1][0][0][0], "POST", (200, len(REPLY), True)),
        (FORMS[2][0][0][0], "GET", (200, len(REPLY), False)),  # Connection: close
        (FORMS[5][0][0][0], "POST", (200, len(ZIPPED), True)),  # still compressed: the reader's
        (FORMS[6][0][0][0], "POST", (500, 4, True)),
        (PLAIN, "HEAD", None),  # a HEAD answer has no body, whatever its Content-Length says
        (FORMS[3][0][0][0], "POST", None),  # chunked
        (FORMS[4][0][0][0], "POST", None),  # the rest of the body still to come
        (FORMS[7][0][0][0], "POST", None),  # 204
        (FORMS[9][0][0][0], "POST", None),  # bytes past the body
        (FORMS[-1][0][0][0], "POST", None),  # a cookie: the cookie jar reads the client's
        (PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"), "POST", None),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + PLAIN, "POST", None),
        (PLAIN.replace(b"Content-Type", b"Content-Length: 40\r\nContent-Type"), "POST", None),
        (PLAIN.replace(b"Content-Type:", b"Content-Type :"), "POST", None),
        (PLAIN.replace(b"application/json", b"application/\r\n json"), "POST", None),  # folded
        (PLAIN.replace(b"application/json", b"application/\x00json"), "POST", None),
        (PLAIN.replace(b"\r\nContent-Type", b"\nContent-Type"), "POST", None),  # a bare LF
        (PLAIN.replace(b"Content-Length: 40", b"Content-Length: +40"), "POST", None),
        (PLAIN[: PLAIN.index(b"\r\n\r\n")], "POST", None),  # the head not complete yet
        (PLAIN.replace(b"200", b"\xb200"), "POST", None),  # "²00" is no status (nor an error)
        (PLAIN.replace(b": 40", b": " + b"0" * 4400 + b"40"), "POST", None),  # (int() raises)
        (PLAIN.replace(b"Content-Type", b"Proxy-Connection: close\r\nContent-Type"), "POST", None),
        (
            PLAIN.replace(b"Content-Type", b"Connection: Keep-Alive, CLOSE\r\nContent-Type"),
            "POST",
            (200, len(REPLY), False),
        ),
        (
            PLAIN.replace(b"Content-Type", b"Connection: x-closed\r\nContent-Type"),
            "POST",
            (200, len(REPLY), True),
        ),
    ],
)
def test_only_an_answer_wholly_understood_is_read_without_the_clients_parser(data, method, found):
    answer = plain(data, method)
    if found is None:
        assert answer is None
        return
    assert answer is not None
    read, keep = answer
    assert (read.status_code, len(read._body_buffer), keep) == found
    assert read.message_complete and read._sock is None
    assert read._headers_index["content-length"] == str(found[1])


def test_a_timeout_after_an_interim_answer_never_hands_the_late_answer_to_the_next(tmp_path):
    """A 100 Continue, then nothing until the timeout has fired, then a late 500: the
    connection is given up with the request, so the next request gets its own answer (the
    late 500 was recorded as the next request's, a 200 as a success). On both roads: the
    cookie of the third answer sends the rest through Locust's session."""
    late = ([b"HTTP/1.1 100 Continue\r\n\r\n", 1.6,
             _answer(b"500 Late", b"Content-Length: 0\r\n", b"")], False)  # fmt: skip
    cookie = _answer(b"200 OK", b"Set-Cookie: sid=1\r\nContent-Length: %d\r\n" % len(REPLY), REPLY)
    recorder = Recorder(drop_idle=False, answers=[late, ([PLAIN], False), ([cookie], False)])
    try:
        document = _closed(recorder.url("/agent"), 1, "5s", load__think_time="0s",
                           target__timeout="1s")  # fmt: skip
        path = write_scenario(tmp_path, document)
        result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
        requests = pd.read_parquet(only_run(tmp_path / "r") / "requests.parquet")
    finally:
        recorder.close()
    seen = requests.sort_values("sent_at")[["status_code", "error_class"]]
    classes = [None if pd.isna(e) else e for e in seen["error_class"]]
    assert len(classes) >= 6 and "Traceback" not in result.output, (classes, result.output)
    # Every third request timed out; every other got the 200 the target sent it.
    assert classes == [("timeout" if n % 3 == 0 else None) for n in range(len(classes))], classes
    assert recorder.heads[3:] and all(b"Cookie: sid=1" in head for head in recorder.heads[3:])

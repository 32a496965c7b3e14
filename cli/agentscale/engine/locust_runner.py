"""The adapter to Locust: the only module that imports locust.

It builds the user class whose task is the engine's ``work`` (``loop``), runs a run on a local
runner, or as Locust's master (``coordinator``) with workers; ``run_worker`` is the worker's
side of ``agentscale worker``: it takes its share from the master and sends its records back
as Locust messages.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import brotli  # type: ignore[import-untyped]
import gevent
import jmespath
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.exception import StopUser
from locust.log import setup_logging
from locust.runners import STATE_MISSING, MasterRunner

from agentscale.config.loader import LoadedScenario, load_scenario
from agentscale.engine.coordinator import Coordinator, worker_setup
from agentscale.engine.loop import SPAWN_RATE, Engine, Finished
from agentscale.engine.outputs import LocalOutput, WorkerOutput
from agentscale.engine.spec import WORKER_DIR_ENV, EngineSpec, staged
from agentscale.engine.wire import Wire, adopt, single
from agentscale.errors import EXIT_OK, AgentscaleError
from agentscale.telemetry.judge import (
    AnswerTooLarge,
    BadBody,
    IncompleteResponse,
    StreamCut,
    StreamStall,
)
from agentscale.telemetry.stream import Framer, StreamKind, kind_of

MAX_ANSWER_BYTES = 64 << 20  # one answer, decoded: beyond it the answer is an error


class _NoSpawnRateWarning(logging.Filter):
    """The shape, not Locust's ramp, sets how many users run: the spawn rate is high on purpose
    and Locust's warning about it would be the only line of a healthy run's engine.log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


logging.getLogger("locust.runners").addFilter(_NoSpawnRateWarning())


class Holder:
    """Where a user class finds its engine: on a worker the class exists before the engine."""

    engine: Engine | None = None


def user_class(holder: Holder) -> type[FastHttpUser]:
    adopt()

    class AgentUser(FastHttpUser):
        max_retries = 0
        concurrency = 1
        stats_name = "/"

        def on_start(self) -> None:
            client = self.client
            name = self.stats_name
            timeout = self.network_timeout
            streamed = self.stream_mode  # type: ignore[attr-defined]
            idle = self.stream_idle  # type: ignore[attr-defined]
            ends = self.stream_end  # type: ignore[attr-defined]
            clock = time.perf_counter

            def slow(method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
                # Locust's session, once the target set a cookie (wire.py).
                # geventhttpclient sends bytes as they are; Locust's hint says str only.
                # A redirect is an answer, never followed: it could lead beyond loopback.
                return client.request(
                    method,
                    path,
                    data=body,  # type: ignore[arg-type]
                    headers=headers,
                    name=name,
                    allow_redirects=False,
                    stream=True,
                )

            wire = Wire(client, slow)

            def send(
                method: str, path: str, body: bytes | None, headers: dict[str, str]
            ) -> tuple[int, bytes, BaseException | None, Arrived | None]:
                started = clock()
                deadline = started + timeout
                response = None
                content = b""
                arrived: Arrived | None = None
                # The target's timeout bounds the whole exchange: the client's own is per
                # socket read, so an answer dripping one byte at a time would never end (and
                # the reader checks the clock itself: a socket that never blocks never lets
                # this timeout fire).
                # A new timer each time: a libev timer stopped and started again counts down
                # only what was left of it, so one timer a user made the timeout a budget
                # for all of that user's requests.
                timer = gevent.Timeout.start_new(timeout)
                try:
                    response = wire.request(method, path, body, headers)
                    kind = _stream_kind(streamed, response)
                    try:
                        if kind is None:
                            content = _read_whole(response, deadline, clock)
                        else:
                            announced = single(response.headers, "content-type") or ""
                            arrived = Arrived(Framer(kind, ends), clock(), announced)
                            content = _read_stream(response, arrived, idle, deadline, clock)
                    except TimeoutError:
                        _close(response)
                        if arrived is not None:
                            content = b"".join(piece for _, piece in arrived.chunks)
                        late = TimeoutError(f"no complete answer within {timeout:g}s")
                        return response.status_code or 0, content, late, arrived
                    except Exception as error:  # a body cut off mid-read, a stall, too big
                        _close(response)
                        problem: BaseException = error
                        if arrived is not None:  # what came before the cut or the stall
                            content = b"".join(piece for _, piece in arrived.chunks)
                        if isinstance(error, AnswerTooLarge | BadBody):
                            pass
                        elif arrived is not None and not isinstance(error, StreamStall | StreamCut):
                            problem = StreamCut(f"{type(error).__name__} mid-stream")
                        elif arrived is None and response.status_code:
                            # The headers came, the body broke off.
                            problem = IncompleteResponse(
                                f"the connection ended mid-body ({type(error).__name__})"
                            )
                        return response.status_code or 0, content, problem, arrived
                except gevent.Timeout as fired:
                    if fired is not timer:
                        raise
                finally:
                    timer.cancel()
                if response is None or clock() - started >= timeout:
                    _close(response)
                    late = TimeoutError(f"no complete answer within {timeout:g}s")
                    code = response.status_code or 0 if response is not None else 0
                    return code, content, late, arrived
                code = response.status_code or 0
                if not code:
                    return 0, b"", getattr(response, "error", None) or ConnectionError(), None
                if arrived is not None:
                    return code, content, None, arrived
                if method == "HEAD" or code in (204, 304):
                    return code, content, None, None  # no body, whatever the length says
                return code, content, incomplete(response.headers, content), None

            self.send = send

        @task
        def work(self) -> None:
            engine = holder.engine
            assert engine is not None
            try:
                if engine.load.model == "open":
                    # An open-model user waits on the arrival queue: Locust's wait between
                    # tasks (a sleep(0), a hub round trip per request) would only add lag.
                    while True:
                        engine.work(self.send)
                else:
                    engine.work(self.send)
            except Finished:
                raise StopUser() from None

    return AgentUser


class Arrived:
    """What a streamed answer's chunks were and when each arrived (``Exchange`` reads it)."""

    __slots__ = ("chunks", "content_type", "framer", "headers_at", "kind")

    def __init__(self, framer: Framer, headers_at: float, content_type: str | None = None) -> None:
        self.kind, self.framer, self.headers_at = framer.kind, framer, headers_at
        self.chunks: list[tuple[float, bytes]] = []
        self.content_type = content_type


def _stream_kind(mode: str, response: Any) -> StreamKind | None:
    """How to read this answer: as a stream of the configured kind, or detected from its
    Content-Type (``auto``), or whole (None). An answer outside 2xx is read whole: it is an
    error answer, whatever it calls itself."""
    if mode == "none" or response is None or not 200 <= (response.status_code or 0) < 300:
        return None
    announced = kind_of(single(response.headers, "content-type"))
    if mode == "auto":
        return announced
    return "sse" if mode == "sse" else "ndjson"


class _Decoder:
    """Incremental decompression for a Content-Encoding (agentscale, through Locust, asks for
    gzip, deflate and br); a body that is not what its encoding says is a BadBody."""

    __slots__ = ("encoding", "fed", "finished", "process")

    def __init__(self, encoding: str) -> None:
        self.encoding, self.fed = encoding, False
        if encoding == "br":
            brotli_stream = brotli.Decompressor()
            self.process = brotli_stream.process
            self.finished: Callable[[], bool] = brotli_stream.is_finished
        else:
            inflater = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
            self.process = inflater.decompress
            self.finished = lambda: inflater.eof

    def __call__(self, piece: bytes) -> bytes:
        self.fed = True
        try:
            return self.process(piece)  # type: ignore[no-any-return]
        except (zlib.error, brotli.error) as problem:
            raise BadBody(f"the body is not valid {self.encoding} ({problem})") from None

    def end(self) -> None:
        """At the end of the body: a compressed stream cut short is no whole answer (an empty
        body is only empty)."""
        if self.fed and not self.finished():
            raise BadBody(f"the body ends before its {self.encoding} stream does")


class _Stacked:
    """Codings applied one after the other (``Content-Encoding: gzip, br``): undone in the
    reverse order."""

    __slots__ = ("decoders",)

    def __init__(self, decoders: list[_Decoder]) -> None:
        self.decoders = decoders

    def __call__(self, piece: bytes) -> bytes:
        for decode in self.decoders:
            piece = decode(piece)
        return piece

    def end(self) -> None:
        for decode in self.decoders:
            decode.end()


READABLE = frozenset(("gzip", "x-gzip", "deflate", "br"))


# The client's parser undoes chunked alone: a body in another transfer coding (gzip, chunked)
# would be read as its coded bytes.
_TRANSFER_CODED = "an answer in a transfer coding agentscale cannot read (besides chunked)"


def _decoder(response: Any) -> _Decoder | _Stacked | None:
    headers = response.headers
    if getattr(response._response, "transfer_coded", False):
        raise BadBody(_TRANSFER_CODED)
    encoding = (headers.get("content-encoding") if headers is not None else "") or ""
    if isinstance(encoding, list):  # the field twice: one list of codings, as HTTP reads it
        encoding = ", ".join(encoding)
    codings = [c.strip() for c in encoding.lower().split(",") if c.strip() not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in READABLE:
        return _Decoder(codings[0])
    if len(codings) <= 3 and READABLE.issuperset(codings):
        return _Stacked([_Decoder(c) for c in reversed(codings)])
    # A complete answer agentscale cannot read (it asked for gzip, deflate and br): a bad
    # answer, not one cut short.
    raise BadBody(f"an answer in an encoding agentscale cannot read ({encoding.strip()[:40]})")


def _chunks(
    response: Any, deadline: float, clock: Callable[[], float], wait: float | None = None
) -> Iterator[bytes]:
    """The answer's body as it comes off the socket, decoded, never more than MAX_ANSWER_BYTES;
    past ``deadline`` a TimeoutError, after ``wait`` seconds without a byte a StreamStall.

    geventhttpclient's public ``read(n)`` waits for n bytes, which would merge events that
    arrived apart; the chunks come from the parser's buffer and the socket directly instead.
    """
    raw = getattr(response, "_response", None)
    cached = getattr(response, "_cached_content", None)  # read already (an error status)
    if raw is None or cached is not None:  # nothing left to read from the socket
        content = cached if cached is not None else (response.content or b"")
        if len(content) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"an answer beyond {MAX_ANSWER_BYTES >> 20} MiB")
        if content:
            yield content
        return
    decode = _decoder(response)
    size = 0
    while True:
        buffered = raw._body_buffer
        if buffered:
            piece = bytes(buffered)
            del buffered[:]
            if decode is not None:
                piece = decode(piece)
            size += len(piece)
            if size > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"an answer beyond {MAX_ANSWER_BYTES >> 20} MiB")
            if piece:
                yield piece
            continue
        if raw.message_complete:
            if decode is not None:
                decode.end()
            return
        if clock() >= deadline:
            raise TimeoutError()
        sock = raw._sock
        if sock is None:
            raise StreamCut("the connection closed before the end of the answer")
        data = None
        with gevent.Timeout(max(min(wait or 3600.0, deadline - clock()), 0.0), False):
            data = sock.recv(raw.block_size)
        if data is None:
            if clock() >= deadline:
                raise TimeoutError()
            raise StreamStall(f"nothing for {wait:g}s")
        raw.feed(data)
        if not data and not raw.message_complete:
            raise StreamCut("the connection closed before the end of the answer")


def _read_whole(response: Any, deadline: float, clock: Callable[[], float]) -> bytes:
    raw = getattr(response, "_response", None)
    if (
        raw is not None
        and raw.message_complete
        and getattr(response, "_cached_content", None) is None
        and (response.headers is None or not response.headers.get("content-encoding"))
    ):
        # The common case: the whole answer came with its headers (the hot path).
        if raw.transfer_coded:
            raise BadBody(_TRANSFER_CODED)
        body = bytes(raw._body_buffer)
        del raw._body_buffer[:]
        if len(body) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"an answer beyond {MAX_ANSWER_BYTES >> 20} MiB")
        return body
    return b"".join(_chunks(response, deadline, clock))


def _read_stream(
    response: Any,
    arrived: Arrived,
    idle: float,
    deadline: float,
    clock: Callable[[], float],
) -> bytes:
    """Every chunk timed and framed as it arrives; the answer is complete at its final event
    (what the target sends after it, keep-alive comments included, is not waited for)."""
    chunks, framer = arrived.chunks, arrived.framer
    try:
        for piece in _chunks(response, deadline, clock, idle):
            at = clock()
            chunks.append((at, piece))
            if framer.feed(at, piece):
                _close(response)
                break
    finally:
        framer.close(chunks[-1][0] if chunks else clock())
    return b"".join(piece for _, piece in chunks)


def _abandon(raw: Any) -> None:
    """An answer given up (or left) before its end: its connection is closed, never reused."""
    pool, sock = getattr(raw, "_pool", None), getattr(raw, "_sock", None)
    raw._sock = raw._pool = None
    if sock is not None:
        if pool is not None:
            pool.release_socket(sock)
        else:
            sock.close()


def _close(response: Any) -> None:
    raw = getattr(response, "_response", None) if response is not None else None
    if raw is not None and getattr(raw, "_sock", None) is not None and not raw.message_complete:
        _abandon(raw)


def incomplete(headers: Any, content: bytes) -> BaseException | None:
    """An answer shorter than its Content-Length: the connection ended mid-body (never asked
    of a 204 or 304 or an answer to HEAD, whose length is that of a body they never have)."""
    declared = single(headers, "content-length")
    encoded = headers.get("content-encoding") if headers is not None else None
    if declared is None or encoded not in (None, "identity"):
        return None
    if not (declared.isascii() and declared.isdigit()):  # ("²" is a digit to isdigit)
        return None
    if len(content) >= int(declared):
        return None
    return IncompleteResponse(f"{len(content):,} of {int(declared):,} bytes before the end")


def configure(user: type[FastHttpUser], loaded: LoadedScenario, target_url: str) -> None:
    """Point the users at the target: before any is spawned (they read it at start)."""
    target, load = loaded.scenario.target, loaded.scenario.load
    url = urlsplit(target_url)
    user.host = f"{url.scheme}://{url.netloc}"
    user.network_timeout = user.connection_timeout = target.timeout
    user.wait_time = constant(load.think_time if load.model == "closed" else 0)
    user.stats_name = url.path or "/"  # type: ignore[attr-defined]
    user.stream_mode = target.stream  # type: ignore[attr-defined]
    user.stream_idle = target.stream_idle_timeout  # type: ignore[attr-defined]
    user.stream_end = (  # type: ignore[attr-defined]
        jmespath.compile(target.stream_end) if target.stream_end else None
    )


def run(spec: EngineSpec) -> int:
    loaded = staged(
        load_scenario(spec.scenario_path, allow_remote=spec.allow_remote, for_run=True), spec
    )
    holder = Holder()
    user = user_class(holder)
    configure(user, loaded, spec.target_url or loaded.scenario.target.url)
    # The engine drains requests in flight itself; when it stops the users, they stop at once
    # (what is still in flight is recorded as cancelled).
    environment = Environment(user_classes=[user], stop_timeout=0)
    if spec.workers + spec.remote_workers > 0:
        setup_logging("INFO")  # type: ignore[no-untyped-call]  # engine.log: who joined, left
        host, port = spec.master_bind
        master = environment.create_master_runner(host, port)
        return Coordinator(spec, loaded, LocustMaster(master, host)).run()
    runner = environment.create_local_runner()
    _without_locust_stats(environment)
    holder.engine = Engine(spec, loaded, LocalOutput(spec, time.time()), runner)
    return holder.engine.run()


def _without_locust_stats(environment: Environment) -> None:
    """agentscale records every request itself: Locust's own per-request statistics (a
    histogram update per request, and on a worker their reports to the master) are work
    nobody reads, in the hot path. The runner registered its listener last; it goes."""
    handlers = environment.events.request._handlers  # no public way to list them
    for handler in list(handlers):
        if getattr(handler, "__qualname__", "").endswith("on_request"):
            environment.events.request.remove_listener(handler)  # type: ignore[no-untyped-call]


class LocustMaster:
    """The coordinator's adapter to Locust's master runner."""

    def __init__(self, runner: MasterRunner, host: str) -> None:
        self.runner = runner
        self.address = (host, int(runner.server.port))

    def send(self, kind: str, data: dict[str, Any], worker: str | None = None) -> None:
        self.runner.send_message(kind, data, client_id=worker)

    def on(self, kind: str, handler: Callable[[str, dict[str, Any]], None]) -> None:
        def listener(environment: Environment, msg: Any, **_kw: Any) -> None:
            handler(str(msg.node_id), msg.data or {})

        self.runner.register_message(kind, listener)

    def connected(self) -> list[str]:
        """Workers whose heartbeats arrive, whatever Locust is doing with their users."""
        return [c.id for c in self.runner.clients.all if c.state != STATE_MISSING]

    def start_users(self, count: int) -> None:
        self.runner.start(count, spawn_rate=SPAWN_RATE)

    def user_count(self) -> int:
        return int(self.runner.user_count)

    def quit(self) -> None:
        self.runner.quit()


PARENT_ENV = "AGENTSCALE_PARENT_PID"  # set for a worker the engine started on this machine


def _quit_when_orphaned(runner: Any, parent: int) -> None:
    """A local worker leaves with the engine that started it, not a minute later."""
    while os.getppid() == parent:
        gevent.sleep(0.5)
    runner.quit()


def run_worker(master_host: str, master_port: int) -> int:
    """``agentscale worker``: join a master, take a share of its run, and send the records back.
    Returns when the master says quit, or when it has been silent for a minute."""
    setup_logging("INFO")  # type: ignore[no-untyped-call]  # a worker log says why it left
    holder = Holder()
    user = user_class(holder)
    environment = Environment(user_classes=[user])
    runner = environment.create_worker_runner(master_host, master_port)
    _without_locust_stats(environment)
    given = os.environ.get(WORKER_DIR_ENV)  # a local worker: its master removes it
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="agentscale-worker-"))

    def on_setup(environment: Environment, msg: Any, **_kw: Any) -> None:
        try:
            spec, loaded = worker_setup(msg.data, folder)
            configure(user, loaded, spec.target_url or loaded.scenario.target.url)
            share = (int(msg.data["index"]), int(msg.data["count"]))
            local = msg.data.get("local_dir")
            output = WorkerOutput(runner, spec, Path(local) if local else None, share[0])
            holder.engine = Engine(spec, loaded, output, runner, share)
        except AgentscaleError as error:
            runner.send_message("as_failed", {"error": error.render()})
            return
        gevent.spawn(holder.engine.run)
        runner.send_message("as_ready", {"pid": os.getpid(), "host": socket.gethostname()})

    def on_go(environment: Environment, msg: Any, **_kw: Any) -> None:
        if holder.engine is not None:
            gevent.spawn(holder.engine.begin, float(msg.data["start"]))

    def on_stop(environment: Environment, msg: Any, **_kw: Any) -> None:
        if holder.engine is not None:
            holder.engine.stop(interrupted=bool(msg.data.get("interrupted")))

    runner.register_message("as_setup", on_setup)
    runner.register_message("as_go", on_go)
    runner.register_message("as_stop", on_stop)
    # Who it is: a worker on the master's machine writes its records into the run folder.
    runner.send_message("as_hello", {"pid": os.getpid(), "host": socket.gethostname()})
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        gevent.spawn(_quit_when_orphaned, runner, int(parent))
    try:
        runner.greenlet.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return EXIT_OK

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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.exception import StopUser
from locust.log import setup_logging
from locust.runners import STATE_MISSING, MasterRunner

from agentscale.config.loader import LoadedScenario, load_scenario
from agentscale.engine.coordinator import Coordinator, worker_setup
from agentscale.engine.loop import SPAWN_RATE, Engine, Finished
from agentscale.engine.outputs import LocalOutput, WorkerOutput
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_OK, AgentscaleError
from agentscale.telemetry.judge import IncompleteResponse, StreamCut, StreamStall
from agentscale.telemetry.stream import kind_of


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
            clock = time.perf_counter

            def send(
                method: str, path: str, body: bytes | None, headers: dict[str, str]
            ) -> tuple[int, bytes, BaseException | None, Arrived | None]:
                started = clock()
                response = None
                content = b""
                arrived: Arrived | None = None
                # The target's timeout bounds the whole exchange: the client's own is per
                # socket read, so an answer dripping one byte at a time would never end.
                with gevent.Timeout(timeout, False):
                    # geventhttpclient sends bytes as they are; Locust's hint says str only.
                    # A redirect is an answer, never followed: it could lead beyond loopback.
                    response = client.request(
                        method,
                        path,
                        data=body,  # type: ignore[arg-type]
                        headers=headers,
                        name=name,
                        allow_redirects=False,
                        stream=streamed != "none",
                    )
                    kind = _stream_kind(streamed, response)
                    try:
                        if kind is None:
                            content = response.content or b""
                        else:
                            answered = response.headers
                            announced = str(answered.get("content-type") or "") if answered else ""
                            arrived = Arrived(kind, clock(), [], announced)
                            content = _read_stream(response, arrived, idle, clock)
                    except Exception as error:  # a body cut off mid-read, or a stall
                        problem: BaseException = error
                        if arrived is not None and not isinstance(error, StreamStall | StreamCut):
                            problem = StreamCut(f"{type(error).__name__} mid-stream")
                        elif arrived is None and response.status_code:
                            # The headers came, the body broke off: read whole, as before.
                            problem = IncompleteResponse(
                                f"the connection ended mid-body ({type(error).__name__})"
                            )
                        return response.status_code or 0, content, problem, arrived
                if response is None or clock() - started >= timeout:
                    _close(response)
                    late = TimeoutError(f"no complete answer within {timeout:g}s")
                    return 0, content, late, arrived
                code = response.status_code or 0
                if not code:
                    return 0, b"", getattr(response, "error", None) or ConnectionError(), None
                if arrived is not None:
                    return code, content, None, arrived
                return code, content, incomplete(response.headers, content), None

            self.send = send

        @task
        def work(self) -> None:
            assert holder.engine is not None
            try:
                holder.engine.work(self.send)
            except Finished:
                raise StopUser() from None

    return AgentUser


class Arrived:
    """What a streamed answer's chunks were and when each arrived (``Exchange`` reads it)."""

    __slots__ = ("chunks", "content_type", "headers_at", "kind")

    def __init__(
        self,
        kind: str,
        headers_at: float,
        chunks: list[tuple[float, bytes]],
        content_type: str | None = None,
    ) -> None:
        self.kind, self.headers_at, self.chunks = kind, headers_at, chunks
        self.content_type = content_type


def _stream_kind(mode: str, response: Any) -> str | None:
    """How to read this answer: as a stream of the configured kind, or detected from its
    Content-Type (``auto``), or whole (None)."""
    if mode == "none" or response is None or not response.status_code:
        return None
    announced = kind_of(response.headers.get("content-type") if response.headers else None)
    if mode == "auto":
        return announced
    # An error answer (4xx/5xx) that is plainly not a stream is read whole, as any other.
    if not 200 <= response.status_code < 300 and announced is None:
        return None
    return mode


def _read_stream(response: Any, arrived: Arrived, idle: float, clock: Callable[[], float]) -> bytes:
    """Every chunk as it comes off the socket, timed; ``idle`` seconds without one is a stall.

    geventhttpclient's public ``read(n)`` waits for n bytes, which would merge events that
    arrived apart; the chunks come from the parser's buffer and the socket directly instead.
    """
    raw = getattr(response, "_response", None)
    chunks = arrived.chunks
    if raw is None:  # nothing to stream from (a bodyless answer)
        content = response.content or b""
        if content:
            chunks.append((clock(), content))
        return content
    pieces: list[bytes] = []
    try:
        while True:
            buffered = raw._body_buffer
            if buffered:
                piece = bytes(buffered)
                del buffered[:]
                now = clock()
                chunks.append((now, piece))
                pieces.append(piece)
                continue
            if raw.message_complete:
                break
            sock = raw._sock
            if sock is None:
                raise StreamCut("the connection closed before the end of the answer")
            data = None
            with gevent.Timeout(idle, False):
                data = sock.recv(raw.block_size)
            if data is None:
                raise StreamStall(f"nothing for {idle:g}s after {len(chunks)} chunks")
            raw.feed(data)
            if not data and not raw.message_complete:
                raise StreamCut("the connection closed before the end of the answer")
    except BaseException:
        _abandon(raw)
        raise
    return b"".join(pieces)


def _abandon(raw: Any) -> None:
    """A stream given up mid-way: its connection is closed, never reused."""
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
    """An answer shorter than its Content-Length: the connection ended mid-body."""
    declared = headers.get("content-length") if headers else None
    encoded = headers.get("content-encoding") if headers else None
    if declared is None or encoded not in (None, "identity") or not declared.isdigit():
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


def run(spec: EngineSpec) -> int:
    loaded = load_scenario(spec.scenario_path, allow_remote=spec.allow_remote, for_run=True)
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
    holder.engine = Engine(spec, loaded, LocalOutput(spec.run_dir, time.time()), runner)
    return holder.engine.run()


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
    folder = Path(tempfile.mkdtemp(prefix="agentscale-worker-"))

    def on_setup(environment: Environment, msg: Any, **_kw: Any) -> None:
        try:
            spec, loaded = worker_setup(msg.data, folder)
            configure(user, loaded, spec.target_url or loaded.scenario.target.url)
            share = (int(msg.data["index"]), int(msg.data["count"]))
            holder.engine = Engine(spec, loaded, WorkerOutput(runner), runner, share)
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
    runner.send_message("as_hello", {})
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        gevent.spawn(_quit_when_orphaned, runner, int(parent))
    try:
        runner.greenlet.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return EXIT_OK

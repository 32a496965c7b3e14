"""The load engine on Locust: the only module that imports locust.

Open model: one scheduler greenlet puts intended send times on a queue that ``max_concurrency``
users take from; an arrival that finds every slot taken is recorded as dropped. Latency is
measured from the intended time, so a stalled target shows in the numbers instead of slowing
the arrivals (no coordinated omission). Closed model: a controller follows the shape's user
count; each user sends, waits ``think_time``, and sends again.

Distributed (``--workers``): Locust's master runner spreads the users; each worker runs an
``Engine`` over its share of the schedule (every n-th arrival) and sends its records to the
master as Locust messages; ``coordinator`` is the master's side.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.queue
import numpy as np
import orjson
import psutil
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.exception import StopUser
from locust.log import setup_logging
from locust.runners import STATE_MISSING, MasterRunner, Runner, WorkerRunner

from agentscale.engine.coordinator import Coordinator, worker_setup
from agentscale.engine.exchange import Clock, Exchange
from agentscale.engine.plan import Planner
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK, AgentscaleError
from agentscale.judge import Judge
from agentscale.loading import LoadedScenario, load_scenario
from agentscale.pricing import PriceBook
from agentscale.records import REQUEST_COLUMNS, STEP_COLUMNS, EventLog, PartWriter, RowBuffer
from agentscale.template import RequestTemplate
from agentscale.tenancy import arrivals, levels, own_shapes, shared_weights
from agentscale.trace import TraceReader

SPAWN_RATE = 10_000.0  # users/s: the shape, not Locust's ramp, decides how many run


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

            def send(
                method: str, path: str, body: bytes | None, headers: dict[str, str]
            ) -> tuple[int, bytes, BaseException | None]:
                # geventhttpclient sends bytes as they are; Locust's hint says str only.
                response = client.request(
                    method,
                    path,
                    data=body,  # type: ignore[arg-type]
                    headers=headers,
                    name=name,
                )
                code = response.status_code or 0
                try:
                    content = response.content or b""
                except Exception as error:  # a body cut off mid-read
                    return 0, b"", error
                return code, content, None if code else getattr(response, "error", None)

            self.send = send

        @task
        def work(self) -> None:
            assert holder.engine is not None
            holder.engine.work(self.send)

    return AgentUser


def configure(user: type[FastHttpUser], loaded: LoadedScenario, target_url: str) -> None:
    """Point the users at the target: before any is spawned (they read it at start)."""
    target, load = loaded.scenario.target, loaded.scenario.load
    url = urlsplit(target_url)
    user.host = f"{url.scheme}://{url.netloc}"
    user.network_timeout = user.connection_timeout = target.timeout
    user.wait_time = constant(load.think_time if load.model == "closed" else 0)
    user.stats_name = url.path or "/"  # type: ignore[attr-defined]


class LocalOutput:
    """A run on its own: records to the run folder, progress to the CLI on stdout."""

    def __init__(self, run_dir: Path, wall0: float) -> None:
        self.events: EventLog | WorkerEvents = EventLog(run_dir / "events.jsonl", wall0)
        self.requests = PartWriter(run_dir / "requests.parquet", REQUEST_COLUMNS)
        self.steps = PartWriter(run_dir / "steps.parquet", STEP_COLUMNS)

    def flush(self) -> None:
        """Write the records in a native thread: encoding parquet there keeps the arrival
        scheduler on time (it releases the GIL while it works)."""
        requests, steps = self.requests.take(), self.steps.take()
        gevent.get_hub().threadpool.apply(self.write, (requests, steps))

    def write(self, requests: list[Any], steps: list[Any]) -> None:
        self.requests.write(requests)
        self.steps.write(steps)

    def close(self) -> None:
        self.write(self.requests.take(), self.steps.take())

    def emit(self, kind: str, **fields: Any) -> None:
        sys.stdout.write(orjson.dumps({"type": kind, **fields}).decode() + "\n")
        sys.stdout.flush()


class WorkerEvents:
    def __init__(self, runner: WorkerRunner) -> None:
        self.runner = runner

    def write(self, kind: str, **fields: Any) -> None:
        self.runner.send_message("as_event", {"kind": kind, "fields": fields})

    def close(self) -> None:
        pass


class WorkerOutput:
    """A worker: records, events and progress go to the master as Locust messages."""

    def __init__(self, runner: WorkerRunner) -> None:
        self.runner = runner
        self.events: EventLog | WorkerEvents = WorkerEvents(runner)
        self.requests, self.steps = RowBuffer(), RowBuffer()

    def flush(self) -> None:
        requests, steps = self.requests.take(), self.steps.take()
        if requests or steps:
            self.runner.send_message("as_rows", {"requests": requests, "steps": steps})

    def close(self) -> None:
        self.flush()

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self.runner.send_message("as_progress", fields)


Output = LocalOutput | WorkerOutput


class Engine:
    def __init__(
        self,
        spec: EngineSpec,
        loaded: LoadedScenario,
        output: Output,
        runner: Runner,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self.spec = spec
        self.loaded = loaded
        scenario = loaded.scenario
        self.load = scenario.load
        self.duration = spec.duration
        self.clock = Clock()
        self.output = output
        self.events = output.events
        self.requests, self.steps = output.requests, output.steps
        self.share = share  # (k, n): this engine sends arrivals k, k + n, k + 2n, ...
        self.worker = isinstance(output, WorkerOutput)
        self.go = gevent.event.Event()
        target = scenario.target
        self.target_url = spec.target_url or target.url
        url = urlsplit(self.target_url)
        self.start = self.clock.now()
        shape = self.load.shape
        self.exchange = Exchange(
            method=target.method,
            path=(url.path or "/") + (f"?{url.query}" if url.query else ""),
            template=RequestTemplate(target.body, target.headers, os.environ),
            dataset=loaded.dataset,
            planner=Planner(
                loaded.dataset,
                shared_weights(scenario),
                scenario.workload.workflows,
                spec.seed + 7919 * share[0],  # each worker its own stream of the same mix
            ),
            reader=TraceReader(scenario.telemetry),
            judge=Judge(scenario.success),
            prices=PriceBook(scenario.pricing),
            requests=self.requests,
            steps=self.steps,
            clock=self.clock,
            phase=lambda offset: shape.phase(offset, self.duration),
            start=self.start,
            windows=list(spec.windows),
            canaries=spec.canaries,
        )
        self.queue: gevent.queue.Queue[tuple[int, float, str | None] | None] = gevent.queue.Queue()
        self.outstanding = 0
        self.stopping = False
        self.records_closed = gevent.event.Event()
        self.interrupted = False
        self.seq = 0
        self.planned = 0
        self.cpu: list[float] = []
        self.runner = runner
        self.load_ended = 0.0

    # --- the users' side -------------------------------------------------------------------
    def work(self, send: Any) -> None:
        if self.load.model == "open":
            arrival = self.queue.get()
            if arrival is None:
                raise StopUser()
            seq, intended, tenant = arrival
            try:
                self.exchange.perform(send, seq, intended, tenant)
            finally:
                self.outstanding -= 1
            return
        if self.worker and not self.go.is_set():
            self.go.wait()  # a worker's users may spawn before the common start
        if self.stopping:
            raise StopUser()
        k, n = self.share
        seq, intended = k + n * self.seq, self.clock.now()
        self.seq += 1
        self.exchange.perform(send, seq, intended)

    # --- the clock's side ------------------------------------------------------------------
    def schedule_open(self) -> None:
        scenario = self.loaded.scenario
        offsets, who = arrivals(
            scenario, self.duration, seed=self.spec.seed, replay_offsets=self.loaded.replay_offsets
        )
        names: list[str | None] = list(own_shapes(scenario))
        names.append(None)  # SHARED (-1) indexes the last entry: the planner draws the tenant
        senders = [names[i] for i in who.tolist()]
        k, n = self.share
        mine = range(k, len(offsets), n)  # every n-th arrival: the shares add up exactly
        self.planned = len(mine)
        self.events.write("arrivals_planned", count=self.planned, duration=self.duration)
        cap = self.load.max_concurrency if not self.worker else self.runner.user_count
        now = self.clock.now
        all_offsets = offsets.tolist()
        for seq in mine:
            offset = all_offsets[seq]
            if self.stopping:
                break
            intended = self.start + offset
            delay = intended - now()
            if delay > 0:
                gevent.sleep(delay)
            else:
                gevent.sleep(0)  # behind schedule: let the users take what is queued
            if self.outstanding >= cap:
                self.exchange.record_dropped(seq, intended, senders[seq])
                continue
            self.outstanding += 1
            self.queue.put((seq, intended, senders[seq]))

    def control_closed(self) -> None:
        shape, current = self.load.shape, -1
        while not self.stopping:
            elapsed = self.clock.now() - self.start
            if elapsed >= self.duration:
                break
            users = max(round(shape.level(elapsed, self.duration)), 0)
            if users != current:
                self.runner.start(users, spawn_rate=SPAWN_RATE)
                self.events.write(
                    "users_changed", users=users, phase=shape.phase(elapsed, self.duration)
                )
                current = users
            gevent.sleep(0.1)

    def watch_phases(self) -> None:
        if self.share[0] != 0:
            return  # one worker's phase events stand for the run's
        shape, phase = self.load.shape, None
        gevent.sleep(max(self.start - self.clock.now(), 0.0))
        while not self.stopping:
            elapsed = self.clock.now() - self.start
            current = shape.phase(elapsed, self.duration)
            if current != phase:
                self.events.write("phase", phase=current, at=round(elapsed, 3))
                phase = current
            gevent.sleep(0.05)

    def flush_records(self) -> None:
        while not self.records_closed.is_set():
            self.records_closed.wait(self.spec.flush_every)
            self.output.flush()

    def report_progress(self) -> None:
        process = psutil.Process()
        process.cpu_percent()
        last_sent, last_time = 0, self.clock.now()
        while True:
            gevent.sleep(self.spec.progress_every)
            now = self.clock.now()
            exchange = self.exchange
            elapsed = now - self.start
            cpu = process.cpu_percent()
            self.cpu.append(cpu)
            rate = (exchange.sent - last_sent) / max(now - last_time, 1e-6)
            last_sent, last_time = exchange.sent, now
            p95 = exchange.live.percentile(95)
            at = np.array([min(elapsed, self.duration)])
            level = float(levels(self.loaded.scenario, at, self.duration)[0])
            self.emit(
                "progress",
                elapsed=round(elapsed, 2),
                duration=self.duration,
                model=self.load.model,
                phase=(
                    self.load.shape.phase(elapsed, self.duration)
                    if elapsed < self.duration
                    else "draining"
                ),
                target=round(level, 2),
                achieved=round(rate, 2),
                in_flight=len(exchange.in_flight),
                users=self.runner.user_count,
                sent=exchange.sent,
                completed=exchange.completed,
                errors=exchange.failed,
                dropped=exchange.dropped,
                p95_ms=round(p95, 1) if p95 is not None else None,
                cpu=cpu,
            )

    def watch_parent(self) -> None:
        parent = self.spec.parent_pid
        while parent is not None:
            gevent.sleep(0.5)
            if os.getppid() != parent:
                self.events.write("parent_gone")
                self.stop(interrupted=True)
                return

    def emit(self, kind: str, **fields: Any) -> None:
        self.output.emit(kind, **fields)

    def stop(self, *, interrupted: bool = False) -> None:
        if interrupted and not self.interrupted:
            self.interrupted = True
            self.events.write("interrupted")
        self.stopping = True

    # --- the run ---------------------------------------------------------------------------
    def begin(self, start_wall: float) -> None:
        """A worker's go: the common start, as a wall time, on this machine's clock."""
        self.start = self.exchange.start = self.clock.now() + (start_wall - time.time())
        gevent.sleep(max(self.start - self.clock.now(), 0.0))  # no user sends before it
        self.go.set()

    def run(self) -> int:
        # Row buffers hold many small tuples between flushes; the default gen-0 threshold of 700
        # makes the cyclic collector walk them thousands of times a second. Nothing in the hot
        # path makes cycles, so collect rarely, and never rescan what start-up built.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
        # The record writer's thread holds the GIL while it converts rows; hand it back often.
        sys.setswitchinterval(0.0005)
        flusher = gevent.spawn(self.flush_records)
        helpers = [gevent.spawn(self.report_progress)]
        model = self.load.model
        if self.worker:
            self.go.wait()  # the master's go message sets the start
            self.events.write("worker_started", users=self.runner.user_count, share=self.share)
        else:
            for signum in (signal.SIGINT, signal.SIGTERM):
                gevent.signal_handler(signum, self.stop, interrupted=True)
            helpers.append(gevent.spawn(self.watch_parent))
            if model == "open":
                users = self.load.max_concurrency
                self.runner.start(users, spawn_rate=SPAWN_RATE)
                with gevent.Timeout(30, False):
                    while self.runner.user_count < users:
                        gevent.sleep(0.01)
            self.start = self.exchange.start = self.clock.now()
            self.go.set()
            self.events.write(
                "run_started", model=model, duration=self.duration, seed=self.spec.seed,
                started_at=self.clock.wall(self.start), users=self.runner.user_count,
            )  # fmt: skip
            self.emit("started", started_at=self.clock.wall(self.start), duration=self.duration)
        helpers.append(gevent.spawn(self.watch_phases))
        if model == "open":
            driver = gevent.spawn(self.schedule_open)
        elif self.worker:  # the master sets the users; the clock only has to run out here
            driver = gevent.spawn(
                gevent.sleep, max(self.start + self.duration - self.clock.now(), 0)
            )
        else:
            driver = gevent.spawn(self.control_closed)
        deadline = self.start + self.duration
        while not driver.dead and not self.stopping:
            gevent.sleep(min(0.05, max(deadline - self.clock.now(), 0.001)))
        if not driver.dead:
            driver.join(timeout=1)
        scheduled_end = self.clock.now()
        self.stopping = True
        self._drain()
        cancelled = self.exchange.record_cancelled()
        gevent.killall(helpers, timeout=2)
        self.records_closed.set()
        flusher.join()  # a write under way finishes; then the rest is written here
        self.output.close()
        if self.worker:
            self.runner.send_message("as_done", {
                "planned": self.planned, "completed": self.exchange.completed,
                "dropped": self.exchange.dropped, "cancelled": cancelled,
                "load_ended_at": self.clock.wall(scheduled_end),
                "unpriced": sorted(self.exchange.prices.unpriced),
                "price_sources": self.exchange.prices.sources, "cpu": self.cpu,
            })  # fmt: skip
            return EXIT_OK
        self.events.write(
            "run_ended",
            ended_at=self.clock.wall(self.clock.now()),
            load_ended_at=self.clock.wall(scheduled_end),
            planned=self.planned,
            completed=self.exchange.completed,
            dropped=self.exchange.dropped,
            cancelled=cancelled,
            unpriced_models=sorted(self.exchange.prices.unpriced),
            price_sources=self.exchange.prices.sources,
            cpu_max=max(self.cpu, default=None),
            cpu_mean=float(np.mean(self.cpu)) if self.cpu else None,
            interrupted=self.interrupted,
        )
        self.events.close()
        self.emit("ended", interrupted=self.interrupted)
        return EXIT_INTERRUPTED if self.interrupted else EXIT_OK

    def _drain(self) -> None:
        """Let requests in flight finish: up to the target timeout, or 2 s when interrupted."""
        grace = 2.0 if self.interrupted else self.loaded.scenario.target.timeout + 1.0
        with gevent.Timeout(grace, False):
            while self.exchange.in_flight or (self.load.model == "open" and self.outstanding > 0):
                if self.load.model == "open" and not self.exchange.in_flight and self.queue.qsize():
                    break  # queued but never taken: nothing is waiting on them
                gevent.sleep(0.02)
        if self.load.model == "open":
            for _ in range(self.runner.user_count):
                self.queue.put(None)
        if not self.worker:  # a worker's users belong to the master, which stops them
            self.runner.quit()


def run(spec: EngineSpec) -> int:
    loaded = load_scenario(spec.scenario_path, allow_remote=spec.allow_remote, for_run=True)
    holder = Holder()
    user = user_class(holder)
    configure(user, loaded, spec.target_url or loaded.scenario.target.url)
    environment = Environment(user_classes=[user], stop_timeout=loaded.scenario.target.timeout)
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
    try:
        runner.greenlet.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return EXIT_OK

"""The load engine on Locust: the only module that imports locust.

Open model: one scheduler greenlet puts intended send times on a queue that ``max_concurrency``
users take from; an arrival that finds every slot taken is recorded as dropped. Latency is
measured from the intended time, so a stalled target shows in the numbers instead of slowing
the arrivals (no coordinated omission). Closed model: a controller follows the shape's user
count; each user sends, waits ``think_time``, and sends again.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
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

from agentscale.engine.exchange import Clock, Exchange
from agentscale.engine.plan import Planner
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK
from agentscale.judge import Judge
from agentscale.loading import LoadedScenario, load_scenario
from agentscale.pricing import PriceBook
from agentscale.records import REQUEST_COLUMNS, STEP_COLUMNS, EventLog, PartWriter
from agentscale.template import RequestTemplate
from agentscale.tenancy import arrivals, levels, own_shapes, shared_weights
from agentscale.trace import TraceReader

SPAWN_RATE = 10_000.0  # users/s: the shape, not Locust's ramp, decides how many run


class Engine:
    def __init__(self, spec: EngineSpec, loaded: LoadedScenario) -> None:
        self.spec = spec
        self.loaded = loaded
        scenario = loaded.scenario
        self.load = scenario.load
        self.duration = spec.duration
        self.clock = Clock()
        run_dir = spec.run_dir
        self.events = EventLog(run_dir / "events.jsonl", self.clock.wall0)
        self.requests = PartWriter(run_dir / "requests.parquet", REQUEST_COLUMNS)
        self.steps = PartWriter(run_dir / "steps.parquet", STEP_COLUMNS)
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
                loaded.dataset, shared_weights(scenario), scenario.workload.workflows, spec.seed
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
        self.user_class = self._user_class(f"{url.scheme}://{url.netloc}", target.timeout)
        self.environment = Environment(user_classes=[self.user_class], stop_timeout=target.timeout)
        self.runner = self.environment.create_local_runner()

    def _user_class(self, host: str, timeout: float) -> type[FastHttpUser]:
        engine = self
        stats_name = urlsplit(self.target_url).path or "/"

        class AgentUser(FastHttpUser):
            wait_time = constant(self.load.think_time if self.load.model == "closed" else 0)
            network_timeout = timeout
            connection_timeout = timeout
            max_retries = 0
            concurrency = 1

            def on_start(self) -> None:
                client = self.client

                def send(
                    method: str, path: str, body: bytes | None, headers: dict[str, str]
                ) -> tuple[int, bytes, BaseException | None]:
                    # geventhttpclient sends bytes as they are; Locust's hint says str only.
                    response = client.request(
                        method,
                        path,
                        data=body,  # type: ignore[arg-type]
                        headers=headers,
                        name=stats_name,
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
                engine.work(self.send)

        AgentUser.host = host
        return AgentUser

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
        if self.stopping:
            raise StopUser()
        seq, intended = self.seq, self.clock.now()
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
        self.planned = len(offsets)
        self.events.write("arrivals_planned", count=len(offsets), duration=self.duration)
        cap = self.load.max_concurrency
        now = self.clock.now
        for seq, offset in enumerate(offsets.tolist()):
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
        shape, phase = self.load.shape, None
        while not self.stopping:
            elapsed = self.clock.now() - self.start
            current = shape.phase(elapsed, self.duration)
            if current != phase:
                self.events.write("phase", phase=current, at=round(elapsed, 3))
                phase = current
            gevent.sleep(0.05)

    def flush_records(self) -> None:
        """Write the records about every second, in a native thread: encoding parquet there
        keeps the arrival scheduler on time (it releases the GIL while it works)."""
        pool = gevent.get_hub().threadpool
        while not self.records_closed.is_set():
            self.records_closed.wait(self.spec.flush_every)
            requests, steps = self.requests.take(), self.steps.take()
            pool.apply(self._write, (requests, steps))

    def _write(self, requests: list[Any], steps: list[Any]) -> None:
        self.requests.write(requests)
        self.steps.write(steps)

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
        sys.stdout.write(orjson.dumps({"type": kind, **fields}).decode() + "\n")
        sys.stdout.flush()

    def stop(self, *, interrupted: bool = False) -> None:
        if interrupted and not self.interrupted:
            self.interrupted = True
            self.events.write("interrupted")
        self.stopping = True

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        # Row buffers hold many small tuples between flushes; the default gen-0 threshold of 700
        # makes the cyclic collector walk them thousands of times a second. Nothing in the hot
        # path makes cycles, so collect rarely, and never rescan what start-up built.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
        # The record writer's thread holds the GIL while it converts rows; hand it back often.
        sys.setswitchinterval(0.0005)
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, self.stop, interrupted=True)
        flusher = gevent.spawn(self.flush_records)
        helpers = [gevent.spawn(self.report_progress), gevent.spawn(self.watch_parent)]
        model = self.load.model
        if model == "open":
            users = self.load.max_concurrency
            self.runner.start(users, spawn_rate=SPAWN_RATE)
            with gevent.Timeout(30, False):
                while self.runner.user_count < users:
                    gevent.sleep(0.01)
        self.start = self.exchange.start = self.clock.now()
        self.events.write(
            "run_started", model=model, duration=self.duration, seed=self.spec.seed,
            started_at=self.clock.wall(self.start), users=self.runner.user_count,
        )  # fmt: skip
        self.emit("started", started_at=self.clock.wall(self.start), duration=self.duration)
        helpers.append(gevent.spawn(self.watch_phases))
        driver = gevent.spawn(self.schedule_open if model == "open" else self.control_closed)
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
        self._write(self.requests.take(), self.steps.take())
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
        self.runner.quit()


def run(spec: EngineSpec) -> int:
    loaded = load_scenario(spec.scenario_path, allow_remote=spec.allow_remote, for_run=True)
    return Engine(spec, loaded).run()

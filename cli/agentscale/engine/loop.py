"""The load engine's loop: arrivals on the clock, users taking them, records flushed.

Open model: one scheduler greenlet puts intended send times on a queue that ``max_concurrency``
users take from; an arrival that finds every slot taken is recorded as dropped. Latency is
measured from the intended time, so a stalled target shows in the numbers instead of slowing
the arrivals (no coordinated omission). Closed model: a controller follows the shape's user
count; each user sends, waits ``think_time``, and sends again. A worker runs the same loop over
its share of the schedule (every n-th arrival) and on the master's start time.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import numpy as np
import psutil

from agentscale.config.loader import LoadedScenario
from agentscale.config.template import RequestTemplate
from agentscale.config.traffic import arrivals, level_now, own_shapes, shared_weights
from agentscale.engine import early
from agentscale.engine.exchange import Clock, Exchange
from agentscale.engine.handoff import Handoff
from agentscale.engine.outputs import Output, RunnerPort, WorkerOutput
from agentscale.engine.pace import TrailingRate
from agentscale.engine.plan import Planner
from agentscale.engine.session import Sessions
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK
from agentscale.telemetry.body import TraceReader
from agentscale.telemetry.judge import Judge
from agentscale.telemetry.pricing import PriceBook

SPAWN_RATE = 10_000.0  # users/s: the shape, not Locust's ramp, decides how many run
BURST = 16  # arrivals the scheduler hands over at once when it is behind schedule


class Finished(Exception):
    """A user's work is over: the adapter turns it into Locust's StopUser."""


class Engine:
    def __init__(
        self,
        spec: EngineSpec,
        loaded: LoadedScenario,
        output: Output,
        runner: RunnerPort,
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
                spec.seed,  # per arrival number: the same mix on any number of workers
            ),
            reader=TraceReader(scenario.telemetry),
            judge=Judge(scenario.success),
            prices=PriceBook(scenario.pricing),
            requests=self.requests,
            steps=self.steps,
            clock=self.clock,
            # A turn a conversation begins after the load ended (``sessions.drain``) is in
            # no phase of the shape: a spike shape would name it after a spike never run.
            phase=lambda offset: (
                shape.phase(offset, self.duration) if offset < self.duration else "draining"
            ),
            start=self.start,
            windows=list(spec.windows),
            canaries=spec.canaries,
            trace_nonce=spec.trace_nonce if spec.propagate else None,
            sessions=Sessions(
                scenario.workload.sessions, spec.trace_nonce[:8], loaded.dataset.items
            ),
            seed=spec.seed + 104729 * share[0],
        )
        self.conversations = scenario.workload.sessions is not None
        self.queue: Handoff[tuple[int, float, str | None] | None] = Handoff()
        self.outstanding = 0
        self.stopping = False
        self.sessions_closed = False
        self.turns_over = gevent.event.Event()  # set once conversations may begin no turn
        self.records_closed = gevent.event.Event()
        self.interrupted = False
        self.interrupted_at = 0.0  # when it was, on the engine's clock
        self.seq = 0
        self.planned = 0
        self.cpu: list[float] = []
        self.runner = runner

    # --- the users' side -------------------------------------------------------------------
    def work(self, send: Any) -> None:
        if self.load.model == "open":
            arrival = self.queue.get()
            if arrival is None:
                raise Finished()
            seq, intended, tenant = arrival
            try:
                if self.conversations:
                    self.exchange.converse(
                        send, seq, intended, tenant, self.think, self.is_stopping
                    )
                else:
                    self.exchange.perform(send, seq, intended, tenant)
            finally:
                self.outstanding -= 1
            return
        if self.worker and not self.go.is_set():
            self.go.wait()  # a worker's users may spawn before the common start
        intended = self.clock.now()
        # The clock, not only the flag: the run loop notices the end up to 50 ms late, and a
        # user back from its think time then began a request (or a conversation) after the
        # load had ended, in no phase of it.
        if self.stopping or intended >= self.start + self.duration:
            raise Finished()  # (a conversation under way finishes first: is_stopping)
        k, n = self.share
        seq = self.spec.seq_base + k + n * self.seq
        self.seq += 1
        if self.conversations:
            self.exchange.converse(send, seq, intended, None, self.think, self.is_stopping)
        else:
            self.exchange.perform(send, seq, intended)

    def is_stopping(self) -> bool:
        """Whether a conversation must stop before its next turn: the run was interrupted, or
        the drain gave up waiting (a load that merely ended lets sessions under way finish)."""
        return self.interrupted or self.sessions_closed

    def think(self, seconds: float) -> None:
        """A conversation's pause between turns, cut short when no more turns may begin."""
        self.turns_over.wait(seconds)

    def close_sessions(self) -> None:
        self.sessions_closed = True
        self.turns_over.set()

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
        base = self.spec.seq_base  # a capacity stage's arrivals follow the stages before it
        self.planned = len(mine)
        self.events.write("arrivals_planned", count=self.planned, duration=self.duration)
        cap = self.load.max_concurrency if not self.worker else self.runner.user_count
        now = self.clock.now
        all_offsets = offsets.tolist()
        burst = 0
        for seq in mine:
            offset = all_offsets[seq]
            if self.stopping:
                break
            intended = self.start + offset
            delay = intended - now()
            if delay > 0:
                gevent.sleep(delay)
                burst = 0
            elif burst >= BURST:
                # Behind schedule: let the users take what is queued, but only every BURST
                # arrivals; a yield per arrival hands the hub a whole round of ready users
                # each time, and the schedule falls further behind.
                gevent.sleep(0)
                burst = 0
            else:
                burst += 1
            if self.outstanding >= cap:
                self.exchange.record_dropped(base + seq, intended, senders[seq])
                continue
            self.outstanding += 1
            self.queue.put((base + seq, intended, senders[seq]))

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
        pace = TrailingRate(start=self.clock.now())
        while True:
            gevent.sleep(self.spec.progress_every)
            now = self.clock.now()
            exchange = self.exchange
            elapsed = now - self.start
            cpu = process.cpu_percent()
            self.cpu.append(cpu)
            rate = pace.add(now, exchange.sent)
            p95 = exchange.live.percentile(95)
            draining = elapsed >= self.duration
            self.emit(
                "progress",
                elapsed=round(elapsed, 2),
                duration=self.duration,
                model=self.load.model,
                phase="draining" if draining else self.load.shape.phase(elapsed, self.duration),
                target=level_now(self.loaded.scenario, elapsed, self.duration),
                achieved=round(rate, 2),
                in_flight=len(exchange.in_flight),
                users=self.runner.user_count,
                sent=exchange.sent,
                completed=exchange.completed,
                errors=exchange.failed,
                dropped=exchange.dropped,
                p95_ms=round(p95, 1) if p95 is not None else None,
                cpu=cpu,
                sessions=exchange.open_sessions if self.conversations else None,
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
            self.interrupted_at = self.clock.now()
            self.events.write("interrupted")
            self.turns_over.set()  # conversations in their think time stop at once
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
            if early.requested:  # stopped while the engine was still starting
                self.stop(interrupted=True)
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
                stage=self.spec.stage,
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
                "unjudged": self.exchange.unjudged,
                "written": getattr(self.output, "written", 0),
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
            unjudged=self.exchange.unjudged,
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
        """Let requests in flight (and conversations under way) finish: up to the target
        timeout, or 2 s when interrupted; conversations may begin turns for ``sessions.drain``
        more."""
        grace = 2.0 if self.interrupted else self.loaded.scenario.target.timeout + 1.0
        sessions = self.loaded.scenario.workload.sessions
        # Conversations under way may start new turns for ``sessions.drain``; the turn in
        # flight then still gets the usual grace.
        turns_until = self.clock.now() + (sessions.drain if sessions and not self.interrupted
                                          else 0.0)  # fmt: skip
        if sessions is not None and not self.interrupted:
            grace += sessions.drain
        else:
            self.close_sessions()
        idle_since: float | None = None
        deadline = self.clock.now() + grace
        while (
            self.exchange.in_flight
            or self.exchange.open_sessions
            or (self.load.model == "open" and self.outstanding > 0)
        ):
            # A stop during the drain cuts it to 2 s from the stop, as one before it would.
            if self.clock.now() >= (
                min(deadline, self.interrupted_at + 2.0) if self.interrupted else deadline
            ):
                break
            queued = self.load.model == "open" and self.queue.qsize()
            if queued and not self.exchange.in_flight:
                # An arrival queued a moment ago is taken on the next tick; one that no
                # user takes for half a second has nobody left to take it.
                now = self.clock.now()
                idle_since = idle_since if idle_since is not None else now
                if now - idle_since > 0.5:
                    break
            else:
                idle_since = None
            if not self.sessions_closed and self.clock.now() >= turns_until:
                self.close_sessions()
            gevent.sleep(0.02)
        self.close_sessions()
        if self.load.model == "open":
            for _ in range(self.runner.user_count):
                self.queue.put(None)
        if not self.worker:  # a worker's users belong to the master, which stops them
            self.runner.quit()

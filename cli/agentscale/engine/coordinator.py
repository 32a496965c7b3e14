"""The master of a distributed run.

Locust's master runner spreads the users over the workers; this module hands each worker its
share of the arrival schedule, gathers every worker's records and events (sent as Locust
messages) into the one run folder, relays progress to the CLI, and watches for workers that
die. It never imports Locust: ``MasterPort`` is the adapter ``locust_runner`` provides.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.event
import numpy as np
import orjson
import psutil

from agentscale.config.dataset import load_dataset
from agentscale.config.loader import LoadedScenario, parse_document
from agentscale.config.scenario import Scenario
from agentscale.config.traffic import level_now
from agentscale.engine import early
from agentscale.engine.outputs import record_writers
from agentscale.engine.pace import TrailingRate
from agentscale.engine.spec import WORKER_DIR_ENV, EngineSpec, log_suffix, staged
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK, RunInvalid
from agentscale.processes import stop
from agentscale.records.writer import EventLog

JOIN_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
START_DELAY_S = 0.5  # time for the go message to reach every worker before the first arrival

Handler = Callable[[str, dict[str, Any]], None]


class MasterPort(Protocol):
    """What the coordinator needs of Locust's master runner."""

    address: tuple[str, int]

    def send(self, kind: str, data: dict[str, Any], worker: str | None = None) -> None: ...

    def on(self, kind: str, handler: Handler) -> None: ...

    def connected(self) -> list[str]: ...

    def start_users(self, count: int) -> None: ...

    def user_count(self) -> int: ...

    def quit(self) -> None: ...


def setup_message(spec: EngineSpec, loaded: LoadedScenario) -> dict[str, Any]:
    """Everything a worker on another machine needs: it shares no disk with the master."""
    replay = loaded.replay_offsets
    return {
        "scenario_yaml": loaded.path.read_text(encoding="utf-8"),
        "dataset_jsonl": loaded.dataset.path.read_text(encoding="utf-8"),
        "replay_offsets": replay.tolist() if replay is not None else None,
        "spec": spec.model_dump(mode="json", include=SHARED_SPEC),
    }


def worker_setup(data: dict[str, Any], folder: Path) -> tuple[EngineSpec, LoadedScenario]:
    """A worker's copy of the run: the scenario and its dataset written to ``folder``."""
    scenario_path = folder / "scenario.yaml"
    scenario_path.write_text(data["scenario_yaml"], encoding="utf-8")
    dataset_path = folder / "dataset.jsonl"
    dataset_path.write_text(data["dataset_jsonl"], encoding="utf-8")
    document, scenario = parse_document(scenario_path, Scenario, hint="")
    replay = data.get("replay_offsets")
    loaded = LoadedScenario(
        scenario_path,
        document,
        scenario,
        load_dataset(dataset_path),
        np.asarray(replay, dtype=float) if replay is not None else None,
    )
    spec = EngineSpec(scenario_path=scenario_path, run_dir=folder, **data["spec"])
    return spec, staged(loaded, spec)


SHARED_SPEC = {"duration", "seed", "target_url", "windows", "allow_remote", "canaries",
               "progress_every", "flush_every", "trace_nonce", "propagate", "rate", "stage",
               "seq_base"}  # fmt: skip


class Coordinator:
    def __init__(self, spec: EngineSpec, loaded: LoadedScenario, port: MasterPort) -> None:
        self.spec, self.loaded, self.port = spec, loaded, port
        self.load = loaded.scenario.load
        run_dir = spec.run_dir
        self.wall0 = time.time()
        self.events = EventLog(run_dir / "events.jsonl", self.wall0)
        self.requests, self.steps = record_writers(spec)
        self.expected = spec.workers + spec.remote_workers
        self.index: dict[str, int] = {}  # worker id -> its share of the schedule
        self.hello: set[str] = set()  # workers whose handlers are registered
        self.ready: set[str] = set()
        self.done: dict[str, dict[str, Any]] = {}
        self.lost: dict[str, str] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        self.failures: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.scratch: Path | None = None  # the local workers' scratch folders
        self.local: dict[str, subprocess.Popen[bytes]] = {}  # worker id -> local process
        self.interrupted = False
        self.received = 0
        self.writes_itself: set[str] = set()  # local workers: their parts go to the folder
        self.pace = TrailingRate()  # the achieved rate of the progress lines
        self.closing = gevent.event.Event()
        for kind, handler in (
            ("as_hello", self._on_hello),
            ("as_ready", self._on_ready),
            ("as_failed", self._on_failed),
            ("as_rows", self._on_rows),
            ("as_event", self._on_event),
            ("as_progress", self._on_progress),
            ("as_done", self._on_done),
        ):
            port.on(kind, handler)

    # --- messages from the workers ---------------------------------------------------------
    def _on_hello(self, worker: str, data: dict[str, Any]) -> None:
        self.hello.add(worker)
        if data.get("host") == socket.gethostname() and data.get("pid") in {
            p.pid for p in self.processes
        }:
            self.writes_itself.add(worker)

    def _on_ready(self, worker: str, data: dict[str, Any]) -> None:
        self.ready.add(worker)
        for process in self.processes:  # one of ours: its exit is seen at once, not in 3 s
            if process.pid == data.get("pid") and data.get("host") == socket.gethostname():
                self.local[worker] = process

    def _on_failed(self, worker: str, data: dict[str, Any]) -> None:
        self.failures.append(f"worker {self.index.get(worker, '?')}: {data.get('error')}")

    def _on_rows(self, worker: str, data: dict[str, Any]) -> None:
        rows = data.get("requests") or []
        self.received += len(rows)
        self.requests.rows.extend(tuple(r) for r in rows)
        self.steps.rows.extend(tuple(r) for r in data.get("steps") or [])

    def _on_event(self, worker: str, data: dict[str, Any]) -> None:
        fields = dict(data.get("fields") or {})
        self.events.write(str(data.get("kind")), worker=self.index.get(worker), **fields)

    def _on_progress(self, worker: str, data: dict[str, Any]) -> None:
        self.progress[worker] = data

    def _on_done(self, worker: str, data: dict[str, Any]) -> None:
        self.done[worker] = data

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, self._interrupt)
        if early.requested:
            self._interrupt()
        try:
            self._spawn_local_workers()
            self._await_workers()
            self._set_up_workers()
            return self._drive()
        finally:
            self.port.quit()  # every worker, local or remote, leaves with the master
            self._stop_local_workers()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def _interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            self.events.write("interrupted")
            self.port.send("as_stop", {"interrupted": True})

    def _spawn_local_workers(self) -> None:
        host, port = self.port.address
        self.scratch = Path(tempfile.mkdtemp(prefix="agentscale-workers-"))
        for k in range(self.spec.workers):
            scratch = self.scratch / str(k)
            scratch.mkdir()
            log = (self.spec.run_dir / f"worker{log_suffix(self.spec)}-{k}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agentscale", "worker", "--master", f"{host}:{port}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={
                        **os.environ,
                        "AGENTSCALE_PARENT_PID": str(os.getpid()),
                        WORKER_DIR_ENV: str(scratch),
                    },
                )
            )
            log.close()

    def _await_workers(self) -> None:
        host, port = self.port.address
        self.emit("waiting", workers=self.expected, master=f"{host}:{port}")
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        # Locust's "connected" comes before a worker has registered our message handlers; a
        # setup sent then is dropped as unknown. A worker says hello once it can listen.
        while len(self.hello.intersection(self.port.connected())) < self.expected:
            gone = [p for p in self.processes if p.poll() is not None]
            if gone:  # a local worker that died before it joined never will: say so now
                raise RunInvalid(
                    f"a local worker exited (code {gone[0].returncode}) before it joined the "
                    f"master; {len(self.port.connected())} of {self.expected} workers joined",
                    hint="see worker-*.log in the run folder",
                )
            if time.monotonic() > deadline or self.interrupted:
                raise RunInvalid(
                    f"{len(self.port.connected())} of {self.expected} workers joined the master "
                    f"at {host}:{port}",
                    hint="start the others with: agentscale worker --master HOST:PORT "
                    "(see worker-*.log in the run folder for local ones)",
                )
            gevent.sleep(0.1)
        ids = sorted(self.hello.intersection(self.port.connected()))[: self.expected]
        self.index = {worker: k for k, worker in enumerate(ids)}
        self.events.write("workers_joined", workers=len(ids))

    def _set_up_workers(self) -> None:
        base = setup_message(self.spec, self.loaded)
        for worker, k in self.index.items():
            own = {"local_dir": str(self.spec.run_dir)} if worker in self.writes_itself else {}
            self.port.send(
                "as_setup", {**base, "index": k, "count": len(self.index), **own}, worker
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(self.ready) < len(self.index):
            if self.failures:
                raise RunInvalid("a worker could not set up: " + "; ".join(self.failures))
            if time.monotonic() > deadline or self.interrupted:
                raise RunInvalid(f"{len(self.ready)} of {len(self.index)} workers became ready")
            gevent.sleep(0.05)
        if self.load.model == "open":
            self._spawn_users(self.load.max_concurrency)

    def _spawn_users(self, count: int) -> None:
        self.port.start_users(count)
        deadline = time.monotonic() + 30
        while self.port.user_count() < count and time.monotonic() < deadline:
            gevent.sleep(0.02)

    def _drive(self) -> int:
        start = time.time() + START_DELAY_S
        duration = self.spec.duration
        self.port.send("as_go", {"start": start})
        self.events.write(
            "run_started", model=self.load.model, duration=duration, seed=self.spec.seed,
            started_at=start, users=self.port.user_count(), workers=len(self.index),
            stage=self.spec.stage,
        )  # fmt: skip
        self.emit("started", started_at=start, duration=duration, workers=len(self.index))
        # Workers drain for up to the target timeout; past this, one that has not reported its
        # end is lost too.
        limit = start + duration + self.loaded.scenario.target.timeout + 10.0
        flusher = gevent.spawn(self._flush_loop)
        users, last_progress, cpu = -1, 0.0, psutil.Process()
        cpu.cpu_percent()
        while len(self.done) + len(self.lost) < len(self.index):
            now = time.time()
            if self.interrupted:
                limit = min(limit, now + 5.0)
            if now > limit:
                self._watch_workers(now - start, silent=True)
                break
            if self.load.model == "closed" and now < start + duration and not self.interrupted:
                level = max(round(self.load.shape.level(max(now - start, 0), duration)), 0)
                if level != users:
                    self.port.start_users(level)
                    self.events.write("users_changed", users=level)
                    users = level
            self._watch_workers(now - start)
            if now - last_progress >= self.spec.progress_every:
                self._relay_progress(now - start, cpu.cpu_percent())
                last_progress = now
            gevent.sleep(0.05)
        load_ended = max((d.get("load_ended_at") or 0.0 for d in self.done.values()), default=None)
        self.closing.set()
        flusher.join()  # a write under way finishes; then the rest is written here
        self._write(self.requests.take(), self.steps.take())
        counted = ("planned", "completed", "dropped", "cancelled", "unjudged")
        totals = {k: sum(int(d.get(k) or 0) for d in self.done.values()) for k in counted}
        cpus = [c for d in self.done.values() for c in d.get("cpu") or []]
        self.events.write(
            "run_ended", ended_at=time.time(), load_ended_at=load_ended or time.time(),
            **totals,
            records=self.received + sum(int(d.get("written") or 0) for d in self.done.values()),
            unpriced_models=sorted({m for d in self.done.values() for m in d.get("unpriced", [])}),
            price_sources={k: v for d in self.done.values()
                           for k, v in (d.get("price_sources") or {}).items()},
            cpu_max=max(cpus, default=None), cpu_mean=float(np.mean(cpus)) if cpus else None,
            workers=len(self.index), workers_lost=sorted(self.lost.values()),
            interrupted=self.interrupted,
        )  # fmt: skip
        self.events.close()
        self.emit("ended", interrupted=self.interrupted)
        return EXIT_INTERRUPTED if self.interrupted else EXIT_OK

    def _watch_workers(self, elapsed: float, *, silent: bool = False) -> None:
        """Mark the workers that are gone (or, ``silent``, that never reported their end)."""
        alive = set(self.port.connected())
        for worker, k in self.index.items():
            if worker in self.done or worker in self.lost:
                continue
            process = self.local.get(worker)
            exited = process is not None and process.poll() is not None
            if worker not in alive or exited or silent:
                reason = f"worker {k} lost at {elapsed:.1f}s" + (
                    f" (exit {process.returncode})"
                    if exited and process is not None
                    else (" (never reported its end)" if silent else "")
                )
                self.lost[worker] = reason
                self.events.write("worker_lost", worker=k, at=round(elapsed, 3), reason=reason)

    def _relay_progress(self, elapsed: float, master_cpu: float) -> None:
        live = list(self.progress.values())
        if not live:
            return
        counters = ("sent", "completed", "errors", "dropped", "in_flight", "users", "sessions")
        total = {k: sum(p.get(k) or 0 for p in live) for k in counters}
        p95s = [p["p95_ms"] for p in live if p.get("p95_ms") is not None]
        rate = self.pace.add(elapsed, total["sent"])
        duration = self.spec.duration
        draining = elapsed >= duration  # the shape asks for nothing then
        self.emit(
            "progress", elapsed=round(elapsed, 2), duration=duration, model=self.load.model,
            phase="draining" if draining else self.load.shape.phase(elapsed, duration),
            target=level_now(self.loaded.scenario, elapsed, duration),
            achieved=round(rate, 2), in_flight=total["in_flight"], users=total["users"],
            completed=total["completed"], errors=total["errors"], dropped=total["dropped"],
            p95_ms=max(p95s) if p95s else None,
            sessions=total["sessions"] if self.loaded.scenario.workload.sessions else None,
            cpu=max([p.get("cpu") or 0.0 for p in live] + [master_cpu]),
            workers=len(self.index) - len(self.lost), workers_lost=len(self.lost),
        )  # fmt: skip

    def _flush_loop(self) -> None:
        pool = gevent.get_hub().threadpool
        while not self.closing.is_set():
            self.closing.wait(self.spec.flush_every)
            pool.apply(self._write, (self.requests.take(), self.steps.take()))

    def _write(self, requests: list[Any], steps: list[Any]) -> None:
        self.requests.write(requests)
        self.steps.write(steps)

    def _stop_local_workers(self) -> None:
        # They leave with the master's quit message; one that does not is stopped. One that
        # never said hello never got the message: it is stopped at once, not after 10 s.
        deadline = time.monotonic() + 10
        joined = [id(process) for process in self.local.values()]
        for process in self.processes:
            if id(process) not in joined:
                stop(process, grace=1.0)
                continue
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                stop(process, grace=1.0)

    def emit(self, kind: str, **fields: Any) -> None:
        sys.stdout.write(orjson.dumps({"type": kind, **fields}).decode() + "\n")
        sys.stdout.flush()

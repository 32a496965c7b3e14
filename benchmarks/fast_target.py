"""A fast local target for benchmarks: nginx (Debian's package) answering a fixed agent reply,
one worker pinned to the last core so that it is never the bottleneck being measured."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPLY = (
    '{"output": "Answer: ok", "status": "ok", "trace": {"steps": ['
    '{"kind": "llm", "name": "plan", "model": "mock-small", "latency_ms": 1.0,'
    ' "input_tokens": 120, "output_tokens": 20},'
    '{"kind": "tool", "name": "crm_lookup", "latency_ms": 0.5, "attempts": 1, "outcome": "ok"}]}}'
)

EVENTS = 20  # content events of the streamed reply, then the final event with the trace
STREAM_REPLY = "".join(f'data: {{"delta": "word{i} "}}\n\n' for i in range(EVENTS)) + (
    f"event: done\ndata: {REPLY}\n\n"
)

CONFIG = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      default_type application/json;
      return 200 '{reply}';
    }}
    location /stream {{
      default_type text/event-stream;
      return 200 '{stream}';
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_nginx() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        raise SystemExit("nginx is needed for this benchmark: apt-get install -y nginx-light")
    return found


@contextmanager
def nginx(core: int | None = None) -> Iterator[str]:
    """Yields the base URL of an nginx serving REPLY on 127.0.0.1 (and STREAM_REPLY, as
    Server-Sent Events, under /stream)."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="agentscale-bench-"))
    (folder / "nginx.conf").write_text(
        CONFIG.format(dir=folder, port=port, reply=REPLY, stream=STREAM_REPLY)
    )
    command = [find_nginx(), "-c", str(folder / "nginx.conf"), "-p", str(folder)]
    if core is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def last_core() -> int:
    return (os.cpu_count() or 1) - 1


def pin(core: int, command: list[str]) -> list[str]:
    """``command`` pinned to one core (taskset), so generator and target never share one."""
    return ["taskset", "-c", str(core), *command] if shutil.which("taskset") else command

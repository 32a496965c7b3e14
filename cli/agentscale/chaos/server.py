"""Finding toxiproxy-server, and running one of our own on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Collection, Iterable
from pathlib import Path

from agentscale.chaos.toxiproxy_client import ToxiproxyAPI, ToxiproxyError
from agentscale.errors import RunInvalid
from agentscale.processes import stop

BINARY = "toxiproxy-server"
ENV = "AGENTSCALE_TOXIPROXY"
INSTALL_HINT = (
    "run `make setup` (it builds it into .tools/bin), or: GOBIN=$PWD/.tools/bin go install "
    "github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0 && mv .tools/bin/server "
    ".tools/bin/toxiproxy-server; or point --toxiproxy-url at a running server"
)


def find_binary() -> Path | None:
    """``$AGENTSCALE_TOXIPROXY``, the project's .tools/bin (from here or the source tree),
    then the PATH."""
    candidates = []
    if os.environ.get(ENV):
        candidates.append(Path(os.environ[ENV]))
    candidates.append(Path.cwd() / ".tools" / "bin" / BINARY)
    candidates.append(Path(__file__).resolve().parents[3] / ".tools" / "bin" / BINARY)
    on_path = shutil.which(BINARY)
    if on_path:
        candidates.append(Path(on_path))
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


_HANDED_OUT: set[int] = set()


def free_port(below: int | None = None, avoid: Collection[int] = ()) -> int:
    """A free port on 127.0.0.1, never one this process handed out before (it may not be bound
    yet) nor one of ``avoid``; with ``below``, one under it (Toxiproxy's listen ports stay
    below the kernel's ephemeral range, where the OS picks client ports)."""
    if below is None:
        candidates: Iterable[int] = iter(lambda: 0, 1)  # let the OS choose, until it is new
    else:
        start = 20000 + (os.getpid() * 7) % 8000
        candidates = (
            p
            for p in (*range(start, below), *range(1024, start))
            if p not in _HANDED_OUT and p not in avoid
        )
    for candidate in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RunInvalid(f"no free port below {below} on 127.0.0.1")


class ManagedToxiproxy:
    """A toxiproxy-server of agentscale's own, on 127.0.0.1 and a free port."""

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ToxiproxyAPI:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        api = ToxiproxyAPI(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                api.version()
                return api
            except ToxiproxyError:
                time.sleep(0.05)
        self.stop()
        raise RunInvalid("toxiproxy-server did not start", hint=f"see {self.log_path}")

    def stop(self) -> None:
        stop(self.process)

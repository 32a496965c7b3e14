"""``agentscale worker``: one more Locust worker for a distributed run's master.

Nothing else is imported here: Locust's gevent patches the standard library on import, and
must do so before anything else loads ``ssl`` or ``socket``.
"""

from __future__ import annotations


def worker(master_host: str, master_port: int) -> int:
    from agentscale.engine import early

    early.without_pandas()  # what the engine does without, a worker does too
    from agentscale.engine.locust_runner import run_worker

    return run_worker(master_host, master_port)

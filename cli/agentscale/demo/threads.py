"""The demo agent's conversations: an in-memory thread store, per tenant.

A thread keeps its turns (what the user asked, what the tools found, what the agent answered).
The resilient profile caps what it sends the model: once the thread is longer than its cap,
the older turns are folded into a recap (one model call); the naive profile sends everything,
so its prompts grow turn after turn until the model's context window refuses them.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from agentscale.demo.data import tokens

THREADS_PER_TENANT = 5_000  # least recently used threads go first
KEPT_TURNS = 2  # turns kept word for word under the cap


@dataclass
class Thread:
    id: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant) texts
    recap: str | None = None  # the older turns, folded

    def messages(self) -> list[dict[str, str]]:
        out = []
        if self.recap is not None:
            out.append({"role": "assistant", "content": self.recap})
        for user, answer in self.turns:
            out.append({"role": "user", "content": user})
            out.append({"role": "assistant", "content": answer})
        return out

    def size(self) -> int:
        return sum(tokens(m["content"]) + 4 for m in self.messages())

    def fold(self, recap: str) -> None:
        """Replace all but the latest turns by ``recap``."""
        self.recap = recap
        self.turns = self.turns[-KEPT_TURNS:]


class ThreadStore:
    def __init__(self) -> None:
        self.tenants: dict[str, OrderedDict[str, Thread]] = {}

    def open(self, tenant: str, thread_id: str) -> Thread:
        """The tenant's thread of that id, or a new one (an empty or unknown id). Ids are per
        tenant: one tenant's id never opens another's thread."""
        threads = self.tenants.setdefault(tenant, OrderedDict())
        found = threads.get(thread_id) if thread_id else None
        if found is None:
            found = Thread(thread_id or f"th-{secrets.token_hex(6)}")
            threads[found.id] = found
            while len(threads) > THREADS_PER_TENANT:
                threads.popitem(last=False)
        threads.move_to_end(found.id)
        return found

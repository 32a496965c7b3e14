"""Conversations: what a session carries from one turn to the next.

A session has an id agentscale makes (``{{session_id}}``), may learn a thread id from an answer
(``sessions.thread_from``, then ``{{thread_id}}``), and may send the conversation so far back
(``{{history}}``, cut to its latest turns within a token budget).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jmespath
import orjson

if TYPE_CHECKING:
    from agentscale.config.dataset import GoldenItem
    from agentscale.config.scenario import Sessions as SessionsConfig
    from agentscale.config.template import RequestTemplate
    from agentscale.engine.plan import PlannedRequest
    from agentscale.telemetry.body import Trace

MAX_THREAD_ID = 200  # characters
CHARS_PER_TOKEN = 4  # the estimate the history's budget is kept with
MESSAGE_OVERHEAD = 16  # characters a message costs besides its text (role, framing)


@dataclass(slots=True)
class Conversation:
    session_id: str
    turns: int  # planned
    turn: int = 0
    thread_id: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    history_json: str = "[]"


class Sessions:
    def __init__(
        self, config: SessionsConfig | None, run_token: str, items: tuple[GoldenItem, ...] = ()
    ) -> None:
        self.items = items
        self.enabled = config is not None
        self.config = config
        self.token = run_token
        self.think_time = config.think_time if config is not None else 0.0
        self.bounds = config.turns_bounds() if config is not None else None
        self.thread_from = (
            jmespath.compile(config.thread_from)
            if config is not None and config.thread_from
            else None
        )
        self.history = config is not None and config.history == "client"
        self.budget = (config.history_max_tokens if config is not None else 0) * CHARS_PER_TOKEN

    def start(self, planned: PlannedRequest, rng: random.Random) -> Conversation:
        # The session id names the run too: an agent that keeps threads across runs must
        # not continue an earlier run's conversation.
        session = f"{self.token}-{planned.request_id}"
        return Conversation(session, self.turns_for(planned.item, rng))

    def turns_for(self, item: int, rng: random.Random) -> int:
        if self.bounds is None:
            turns = self.items[item].turns if self.items else None
            return len(turns) if turns else 1
        low, high = self.bounds
        return low if low == high else rng.randint(low, high)

    def fill(
        self, talk: Conversation, escaped: dict[str, str], template: RequestTemplate,
        item: GoldenItem,
    ) -> None:  # fmt: skip
        """This turn's values, escaped for the body."""
        escaped["prompt"] = template.escape(item.turn(talk.turn).prompt)
        escaped["session_id"] = template.escape(talk.session_id)
        escaped["turn"] = str(talk.turn)
        escaped["thread_id"] = template.escape(talk.thread_id or "")
        template.fill_history(escaped, talk.history_json)

    def fill_raw(self, talk: Conversation, values: dict[str, str], item: GoldenItem) -> None:
        """This turn's values as they are (for headers)."""
        values["prompt"] = item.turn(talk.turn).prompt
        values["session_id"] = talk.session_id
        values["turn"] = str(talk.turn)
        values["thread_id"] = talk.thread_id or ""
        values["history"] = talk.history_json

    def learn(self, talk: Conversation, trace: Trace) -> None:
        """The thread id an answer gives (the first one is kept); what cannot be used as one
        is a warning of the request, never sent back."""
        if self.thread_from is None or talk.thread_id is not None:
            return
        body = trace.body if isinstance(trace.body, dict | list) else None
        try:
            found = self.thread_from.search(body) if body is not None else None
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError):
            found = None
        if found is None:
            trace.warnings.append("sessions.thread_from found no thread id in the answer")
            return
        if isinstance(found, bool) or not isinstance(found, str | int):
            trace.warnings.append(f"thread id: a {type(found).__name__}, not a string or number")
            return
        text = str(found)
        problem = thread_id_problem(text)
        if problem is not None:
            trace.warnings.append(f"thread id: {problem}; not sent back")
            return
        talk.thread_id = text

    def after(self, talk: Conversation, trace: Trace, prompt: str) -> None:
        """What an answered turn adds to the conversation."""
        if self.history:
            talk.history.append({"role": "user", "content": prompt})
            talk.history.append({"role": "assistant", "content": trace.output or ""})
            kept: list[dict[str, str]] = []
            size = 0
            pairs = len(talk.history) // 2
            for i in range(pairs - 1, -1, -1):  # the latest whole turns within the budget
                user, answer = talk.history[2 * i], talk.history[2 * i + 1]
                size += len(user["content"]) + len(answer["content"]) + 2 * MESSAGE_OVERHEAD
                if size > self.budget:
                    break
                kept[:0] = [user, answer]
            talk.history = kept
            talk.history_json = orjson.dumps(talk.history).decode()


def thread_id_problem(text: str) -> str | None:
    """Why an id from an answer cannot be sent back (in a body or a header), if it cannot."""
    if not text:
        return "empty"
    if len(text) > MAX_THREAD_ID:
        return f"longer than {MAX_THREAD_ID} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "it has control characters (a line break?) in it"
    if not text.isascii():
        return "it is not ASCII (it could not go in a header)"
    return None

"""What the HTTP fault stage's kinds do to bytes, free of I/O so that it is tested directly:
a provider's rate limit (token buckets and its headers), stream framing, corrupted bodies and
the error objects a provider answers with a 200."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

# A request's token estimate is its text's length over this (a provider counts its own way;
# the figure only has to grow with the prompt), plus a few tokens of framing per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
STREAM_TYPES = {"text/event-stream": "sse", "application/x-ndjson": "ndjson"}
NDJSON_TYPES = ("application/jsonl", "application/ndjson", "application/json-seq")
SSE_END = re.compile(rb"\r?\n\r?\n")


def reset_text(seconds: float) -> str:
    """A reset time the way providers write it in ``x-ratelimit-reset-*``: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


@dataclass
class Bucket:
    """A token bucket of ``per_minute`` tokens that refills evenly over a minute; it starts
    full. Its level may go below zero when an answer used more than was estimated."""

    per_minute: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.per_minute, self.level + (now - self.at) * self.per_minute / 60)
        self.at = now

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` (at most the whole bucket) is there."""
        short = min(amount, self.per_minute) - self.level
        return max(short, 0.0) * 60 / self.per_minute

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return max(self.per_minute - self.level, 0.0) * 60 / self.per_minute


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0  # seconds, when refused
    which: str = ""  # requests | tokens: the quota that refused


@dataclass
class RateLimit:
    """A provider's quota per key (the dependency, or a header's value): requests and model
    tokens a minute. A request is admitted when one request and its estimated tokens are left;
    its answer's usage then settles the difference."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, dict[str, Bucket]] = field(default_factory=dict)

    def _buckets(self, key: str) -> dict[str, Bucket]:
        found = self.buckets.get(key)
        if found is None:
            now = self.clock()
            quotas = {"requests": self.requests_per_minute, "tokens": self.tokens_per_minute}
            found = {
                name: Bucket(float(quota), float(quota), now)
                for name, quota in quotas.items()
                if quota
            }
            self.buckets[key] = found
        return found

    def admit(self, key: str, tokens: int) -> Decision:
        buckets = self._buckets(key)
        now = self.clock()
        needed = {"requests": 1.0, "tokens": float(tokens)}
        waits = {}
        for name, bucket in buckets.items():
            bucket.refill(now)
            waits[name] = bucket.wait(needed[name])
        refused = [name for name, wait in waits.items() if wait > 0]
        if not refused:
            for name, bucket in buckets.items():
                bucket.level -= needed[name]
        headers = self.headers(buckets)
        if not refused:
            return Decision(True, headers)
        which = max(refused, key=lambda n: waits[n])
        seconds = waits[which]
        headers["Retry-After"] = str(max(math.ceil(seconds), 1))
        headers["retry-after-ms"] = str(max(math.ceil(seconds * 1000), 1))
        return Decision(False, headers, seconds, which)

    def settle(self, key: str, estimated: int, used: int | None) -> None:
        """An answer's real token count replaces the estimate taken at admission."""
        bucket = self._buckets(key).get("tokens")
        if bucket is not None and used is not None:
            bucket.refill(self.clock())
            bucket.level -= used - estimated

    @staticmethod
    def headers(buckets: dict[str, Bucket]) -> dict[str, str]:
        out = {}
        for name, bucket in buckets.items():
            out[f"x-ratelimit-limit-{name}"] = str(int(bucket.per_minute))
            out[f"x-ratelimit-remaining-{name}"] = str(max(math.floor(bucket.level), 0))
            out[f"x-ratelimit-reset-{name}"] = reset_text(bucket.reset())
        return out


def rate_limit_body(decision: Decision, limit: int | None) -> bytes:
    """The error object an OpenAI-compatible provider sends with its 429."""
    message = (
        f"Rate limit reached for {decision.which} per minute (limit {limit}). Please try again "
        f"in {reset_text(decision.retry_after)}. (injected by agentscale)"
    )
    error = {"message": message, "type": decision.which, "param": None}
    return orjson.dumps({"error": {**error, "code": "rate_limit_exceeded"}})


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: {"type": "text", "text": ...}
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return 0


def request_tokens(body: bytes) -> int:
    """The tokens a provider reserves for a request: its messages' text and ``max_tokens``."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(payload, dict):
        return 0
    messages = payload.get("messages")
    prompt = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                chars = _text_length(message.get("content"))
                prompt += math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE
    elif isinstance(payload.get("prompt"), str):
        prompt = math.ceil(len(payload["prompt"]) / CHARS_PER_TOKEN)
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return prompt + (limit if isinstance(limit, int) and limit > 0 else 0)


def _usage_total(document: Any) -> int | None:
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
    parts = parts if all(isinstance(p, int) for p in parts) else [
        usage.get(k) for k in ("input_tokens", "output_tokens")
    ]  # fmt: skip
    return sum(parts) if all(isinstance(p, int) for p in parts) else None  # type: ignore[arg-type]


def answer_tokens(tail: bytes) -> int | None:
    """The tokens an answer used, from its ``usage``: a JSON body, or the last streamed event
    that carries one (``tail`` is the answer's end)."""
    try:
        return _usage_total(orjson.loads(tail))
    except orjson.JSONDecodeError:
        pass
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text.startswith(b"data:"):
            text = text[5:].strip()
        if b'"usage"' not in text:
            continue
        try:
            found = _usage_total(orjson.loads(text))
        except orjson.JSONDecodeError:
            continue
        if found is not None:
            return found
    return None


def stream_format(content_type: str | None, encoding: str | None) -> str | None:
    """sse or ndjson for an answer the stage can split into events; None for a plain or a
    compressed body (its events cannot be seen without decoding it)."""
    if encoding and encoding.lower() not in ("identity", ""):
        return None
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in NDJSON_TYPES:
        return "ndjson"
    return STREAM_TYPES.get(kind)


class Splitter:
    """Cuts a byte stream into whole events (SSE: up to a blank line; NDJSON: a line)."""

    def __init__(self, form: str) -> None:
        self.form = form
        self.pending: list[bytes] = []  # an event's start, not yet ended

    def feed(self, chunk: bytes) -> list[bytes]:
        # Every event ends with a newline: a chunk without one is only kept. Otherwise the
        # buffer is searched from a position rather than sliced after each event, so a long
        # event or a chunk of many costs its length, not its length squared.
        if b"\n" not in chunk:
            self.pending.append(chunk)
            return []
        buffer = b"".join([*self.pending, chunk]) if self.pending else chunk
        events: list[bytes] = []
        start = 0
        while True:
            if self.form == "sse":
                found = SSE_END.search(buffer, start)
                end = found.end() if found else -1
            else:
                newline = buffer.find(b"\n", start)
                end = newline + 1 if newline >= 0 else -1
            if end < 0:
                self.pending = [buffer[start:]] if start < len(buffer) else []
                return events
            events.append(buffer[start:end])
            start = end

    def rest(self) -> bytes:
        rest, self.pending = b"".join(self.pending), []
        return rest


def corrupt_json(body: bytes, how: str) -> bytes:
    """``truncate``: the first half; ``invalid_json``: a trailing comma before the last closing
    bracket (what a model writing JSON by hand often does); ``wrong_schema``: valid JSON in a
    shape nobody asked for (the original, one level down)."""
    if how == "truncate":
        return body[: len(body) // 2]
    stripped = body.rstrip()
    if how == "invalid_json":
        if stripped[-1:] in (b"}", b"]"):
            return stripped[:-1] + b"," + stripped[-1:]
        return stripped + b",}"
    try:
        original = orjson.loads(body)
    except orjson.JSONDecodeError:
        original = body.decode("utf-8", "replace")
    return orjson.dumps({"data": original, "schema": "unexpected"})


def corrupt_event(event: bytes, how: str, form: str) -> bytes:
    """One streamed event with its data corrupted the same way; a truncated event is cut in
    half with its end (the stream then ends there)."""
    if how == "truncate":
        return event[: len(event) // 2]
    if form == "ndjson":
        return corrupt_json(event.rstrip(b"\r\n"), how) + b"\n"
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                lines[i] = b"data: " + corrupt_json(payload, how)
                break
    return b"\n".join(lines)


def error_object(body: str | None) -> bytes:
    """A provider's error inside a successful answer."""
    if body is not None:
        return body.encode()
    error = {
        "message": "The server had an error while processing your request. (injected by "
        "agentscale)",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
    return orjson.dumps({"error": error})


def wants_stream(headers: Any, body: bytes) -> bool:
    """Whether a request asked for a streamed answer (``"stream": true``, or an Accept header
    that names an event stream)."""
    if "text/event-stream" in (headers.get("Accept") or ""):
        return True
    if b'"stream"' not in body:
        return False
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and payload.get("stream") is True

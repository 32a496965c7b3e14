"""Streamed answers (Server-Sent Events or NDJSON) read from the chunks as they arrived.

The adapter hands over each chunk with the moment it arrived; this module frames the events,
times them (first content event, gaps between events) and picks out the document that carries
the trace: the final event, or the last JSON event before an ``[DONE]`` sentinel. Pure: no
I/O, tested with made-up chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

StreamKind = Literal["sse", "ndjson"]
# Event types that end a stream (SSE ``event:``, or a JSON event's ``type``/``event`` field).
END_TYPES = frozenset(
    {"done", "end", "final", "complete", "completed", "response.completed", "message_stop"}
)
SENTINEL = b"[DONE]"
STREAM_TYPES = {"text/event-stream": "sse", "application/x-ndjson": "ndjson",
                "application/ndjson": "ndjson", "application/jsonl": "ndjson",
                "application/x-jsonlines": "ndjson"}  # fmt: skip
# Where a content event's text is, tried in order (OpenAI chunks, Anthropic deltas, plain).
_TEXT_PATHS = (("choices", 0, "delta", "content"), ("delta", "text"), ("delta",), ("content",),
               ("text",), ("token",), ("output",))  # fmt: skip
# Typed JSON events that carry no answer text (Anthropic's and OpenAI Responses' framing).
NO_CONTENT_TYPES = frozenset({
    "message_start", "content_block_start", "content_block_stop", "message_delta", "ping",
    "response.created", "response.in_progress", "response.output_item.added",
    "response.output_item.done", "response.content_part.added", "response.content_part.done",
})  # fmt: skip


def kind_of(content_type: str | None) -> StreamKind | None:
    """The stream kind a Content-Type announces, if it announces one."""
    if not content_type:
        return None
    found = STREAM_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    return "sse" if found == "sse" else "ndjson" if found == "ndjson" else None


@dataclass(slots=True)
class StreamRead:
    events: int = 0  # content events
    ttft: float | None = None  # when the first content event arrived (clock seconds)
    gaps_ms: list[float] = field(default_factory=list)  # between consecutive content events
    final: bool = False  # the stream said it was complete
    document: bytes | None = None  # the JSON that carries the trace (final event, or last one)
    text: list[str] = field(default_factory=list)  # content events' text, for the output


def _content(parsed: Any, data: bytes) -> tuple[bool, str | None]:
    """Whether an event carries answer text, and the text where it is known. A JSON event
    with an empty text (an OpenAI role chunk), only usage, or a framing type carries none; a
    JSON event of a shape not known here counts as content (its text unknown)."""
    if parsed is None:
        raw = data.decode("utf-8", "replace")
        return bool(raw), raw
    if not isinstance(parsed, dict):
        return True, None
    kind = parsed.get("type")
    if isinstance(kind, str) and kind in NO_CONTENT_TYPES:
        return False, None
    text = _text(parsed)
    if text is not None:
        return bool(text), text
    if "choices" in parsed or set(parsed) <= {"usage", "id", "object", "model", "created"}:
        return False, None  # an OpenAI chunk without content: role, finish or usage only
    return True, None


def _text(value: Any) -> str | None:
    for path in _TEXT_PATHS:
        found = value
        for key in path:
            if isinstance(key, int):
                found = found[key] if isinstance(found, list) and len(found) > key else None
            else:
                found = found.get(key) if isinstance(found, dict) else None
            if found is None:
                break
        if isinstance(found, str):
            return found
    return None


class StreamReader:
    """Frames events from chunks; ``end`` (a compiled JMESPath) marks a final event too."""

    def __init__(self, kind: StreamKind, end: Any = None) -> None:
        self.kind = kind
        self.end = end

    def read(self, chunks: list[tuple[float, bytes]]) -> StreamRead:
        result = StreamRead()
        last: float | None = None
        for at, data, event_type in self._events(chunks):
            if data == SENTINEL:
                result.final = True
                continue
            if not data.strip():
                continue
            parsed: Any = None
            if data[:1] in (b"{", b"["):
                try:
                    parsed = orjson.loads(data)
                except orjson.JSONDecodeError:
                    parsed = None
            final = event_type in END_TYPES or self._ends(parsed)
            if isinstance(parsed, dict):
                result.document = data
            if final:
                result.final = True
                if result.ttft is None:
                    result.ttft = at  # the whole answer came in its final event
                continue
            content, piece = _content(parsed, data)
            if not content:
                continue
            if last is not None:
                result.gaps_ms.append((at - last) * 1000.0)
            last = at
            if result.ttft is None:
                result.ttft = at
            result.events += 1
            if piece:
                result.text.append(piece)
        return result

    def _ends(self, parsed: Any) -> bool:
        if not isinstance(parsed, dict):
            return False
        kind = parsed.get("type", parsed.get("event"))
        if isinstance(kind, str) and kind in END_TYPES:
            return True
        if parsed.get("done") is True or "trace" in parsed or "status" in parsed:
            return True
        if self.end is not None:
            try:
                return bool(self.end.search(parsed))
            except Exception:  # an expression that cannot be applied to this event: not final
                return False
        return False

    def _events(self, chunks: list[tuple[float, bytes]]) -> list[tuple[float, bytes, str | None]]:
        """(arrival, data, event type) of each complete event, in order."""
        events: list[tuple[float, bytes, str | None]] = []
        pending: list[bytes] = []  # an unfinished line, in pieces (joined once it ends)
        data: list[bytes] = []
        event_type: str | None = None
        for at, chunk in chunks:
            if b"\n" not in chunk and b"\r" not in chunk:
                pending.append(chunk)  # no line ends here: never re-copy a growing buffer
                continue
            pending.append(chunk)
            buffer = b"".join(pending)
            held = b""
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF split over chunks
                buffer, held = buffer[:-1], b"\r"
            if b"\r" in buffer:
                buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buffer.split(b"\n")
            pending = [lines.pop() + held]  # an unfinished line waits for the next chunk
            for line in lines:
                if self.kind == "ndjson":
                    if line.strip():
                        events.append((at, line.strip(), None))
                    continue
                if not line:  # a blank line dispatches the event
                    if data or event_type:
                        events.append((at, b"\n".join(data), event_type))
                    data, event_type = [], None
                elif line.startswith(b":"):
                    continue  # a comment (keep-alive)
                else:
                    name, _, value = line.partition(b":")
                    value = value[1:] if value.startswith(b" ") else value
                    if name == b"data":
                        data.append(value)
                    elif name == b"event":
                        event_type = value.decode("utf-8", "replace").strip()
        rest = b"".join(pending).strip()
        if self.kind == "ndjson" and rest and chunks:
            events.append((chunks[-1][0], rest, None))  # a last line without "\n"
        return events

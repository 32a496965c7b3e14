"""Streamed answers (Server-Sent Events or NDJSON) read from the chunks as they arrived.

The adapter feeds each chunk, with the moment it arrived, to a ``Framer``, which cuts it into
events and says when the final one has come (so the adapter stops reading there);
``summarise`` then times the events (first content event, gaps between content events) and
picks out the document that carries the trace: the final event, or the last JSON event before
an ``[DONE]`` sentinel. Pure: no I/O, tested with made-up chunks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

StreamKind = Literal["sse", "ndjson"]
# Event types that end a stream (SSE ``event:``, or a JSON event's ``type``/``event`` field).
END_TYPES = frozenset(
    {"done", "end", "final", "complete", "completed", "response.completed", "message_stop"}
)
SENTINEL = b"[DONE]"
BOM = b"\xef\xbb\xbf"
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
_UNREAD = object()  # data that looked like JSON but could not be read even leniently


def kind_of(content_type: str | None) -> StreamKind | None:
    """The stream kind a Content-Type announces, if it announces one."""
    if not content_type:
        return None
    found = STREAM_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    return "sse" if found == "sse" else "ndjson" if found == "ndjson" else None


@dataclass(slots=True)
class Event:
    at: float  # when the chunk that completed it arrived
    data: bytes
    parsed: Any  # the data as JSON; None if it is not JSON
    final: bool
    sentinel: bool = False  # data: [DONE]


@dataclass(slots=True)
class StreamRead:
    events: int = 0  # content events
    ttft: float | None = None  # when the first content event arrived (clock seconds)
    gaps_ms: list[float] = field(default_factory=list)  # between consecutive content events
    final: bool = False  # the stream said it was complete
    document: bytes | None = None  # the JSON that carries the trace (final event, or last one)
    text: list[str] = field(default_factory=list)  # content events' text, for the output


def _parse(data: bytes) -> Any:
    """An event's data as JSON: strictly, else as Python's json module reads it (NaN,
    Infinity, 1e400, as the body reader does); None for data that is not JSON at all."""
    if data[:1] not in (b"{", b"["):
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return _UNREAD


class Framer:
    """Cuts timed chunks into events as they come; ``feed`` says when the final one came.
    ``end`` (a compiled JMESPath, ``target.stream_end``) marks a final event too."""

    def __init__(self, kind: StreamKind, end: Any = None) -> None:
        self.kind = kind
        self.end = end
        self.events: list[Event] = []
        self.ended = False
        self.pending: list[bytes] = []  # an unfinished line, in pieces (joined once it ends)
        self.data: list[bytes] = []
        self.event_type: str | None = None
        self.started = False
        self.opening = b""  # the first bytes, while they may still be a byte-order mark's
        self.after_cr = False  # the last chunk ended with CR: a LF first in this one ends nothing
        # SSE ends a line at CR, LF or CRLF; NDJSON at LF alone (a CR is JSON whitespace).
        self.cr_ends_lines = kind == "sse"

    def feed(self, at: float, chunk: bytes) -> bool:
        """Frame ``chunk``; True once the final event has come (later bytes are not read)."""
        if self.ended:
            return True
        if not self.started:
            chunk = self.opening + chunk
            if len(chunk) < len(BOM) and BOM.startswith(chunk):
                self.opening = chunk  # a mark split over chunks: wait for the rest of it
                return False
            self.started, self.opening = True, b""
            chunk = chunk.removeprefix(BOM)
        if not self.cr_ends_lines:
            return self._ndjson(at, chunk)
        if self.after_cr:
            self.after_cr = False
            chunk = chunk.removeprefix(b"\n")  # the second half of a CRLF split over chunks
        if b"\n" not in chunk and b"\r" not in chunk:
            self.pending.append(chunk)  # no line ends here: never re-copy a growing buffer
            return False
        self.pending.append(chunk)
        buffer = b"".join(self.pending)
        # A CR ends a line at once (SSE allows CR, LF and CRLF), so that an event whose lines
        # end in CR alone is timed when it came, not when the next chunk did.
        self.after_cr = buffer.endswith(b"\r")
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self.pending = [lines.pop()]  # an unfinished line waits for the next chunk
        for line in lines:
            if self._line(at, line):
                self.ended = True
                return True
        return False

    def _ndjson(self, at: float, chunk: bytes) -> bool:
        if b"\n" not in chunk:
            self.pending.append(chunk)
            return False
        self.pending.append(chunk)
        lines = b"".join(self.pending).split(b"\n")
        self.pending = [lines.pop()]
        for line in lines:
            if self._line(at, line):  # (a CRLF's CR is stripped with the line's blanks)
                self.ended = True
                return True
        return False

    def close(self, at: float) -> None:
        """The stream ended: an NDJSON line without its line break still counts."""
        rest = b"".join(self.pending).strip()
        self.pending = []
        if self.kind == "ndjson" and rest and not self.ended:
            self.ended = self._dispatch(at, rest, None)

    def _line(self, at: float, line: bytes) -> bool:
        if self.kind == "ndjson":
            return bool(line.strip()) and self._dispatch(at, line.strip(), None)
        if not line:  # a blank line dispatches the event
            data, event_type = self.data, self.event_type
            self.data, self.event_type = [], None
            if data or event_type:
                return self._dispatch(at, b"\n".join(data).strip(), event_type)
            return False
        if line.startswith(b":"):
            return False  # a comment (keep-alive)
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"data":
            self.data.append(value)
        elif name == b"event":
            self.event_type = value.decode("utf-8", "replace").strip()
        return False

    def _dispatch(self, at: float, data: bytes, event_type: str | None) -> bool:
        if data == SENTINEL:
            self.events.append(Event(at, data, None, True, sentinel=True))
            return True
        parsed = _parse(data)
        final = event_type in END_TYPES or self._ends(parsed)
        self.events.append(Event(at, data, parsed, final))
        return final

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


def summarise(framer: Framer) -> StreamRead:
    """The timings, the trace's document and the text of a framed stream."""
    result = StreamRead()
    last: float | None = None
    for event in framer.events:
        if event.sentinel:
            result.final = True
            break
        if event.parsed is _UNREAD or isinstance(event.parsed, dict):
            result.document = event.data  # the body reader says what in it cannot be read
        if event.final:
            result.final = True
            if result.ttft is None:
                result.ttft = event.at  # the whole answer came in its final event
            break  # what came after the final event is not part of the answer
        content, piece = _content(event.parsed, event.data)
        if not content:
            continue
        if last is not None:
            result.gaps_ms.append((event.at - last) * 1000.0)
        last = event.at
        if result.ttft is None:
            result.ttft = event.at
        result.events += 1
        if piece:
            result.text.append(piece)
    return result


def read_stream(kind: StreamKind, chunks: list[tuple[float, bytes]], end: Any = None) -> StreamRead:
    """Frame and summarise a whole list of timed chunks (tests, and re-reading)."""
    framer = Framer(kind, end)
    for at, chunk in chunks:
        if framer.feed(at, chunk):
            break
    framer.close(chunks[-1][0] if chunks else 0.0)
    return summarise(framer)


def _content(parsed: Any, data: bytes) -> tuple[bool, str | None]:
    """Whether an event carries answer text, and the text where it is known. A JSON event
    with an empty text (an OpenAI role chunk), only usage, or a framing type carries none; a
    JSON event of a shape not known here counts as content (its text unknown)."""
    if parsed is None or parsed is _UNREAD:
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

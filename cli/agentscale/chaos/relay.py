"""Relaying a dependency's answer with a fault inside it: cut, held, slowed or corrupted.

A streamed answer (SSE or NDJSON, uncompressed) is relayed event by event; a plain body is one
event. A kind that has nothing to act on (a cut after 5 events of a 3-event stream, gaps in a
plain body) relays the answer untouched and is not recorded as injected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agentscale.chaos.kinds import Splitter, corrupt_event, corrupt_json, stream_format

MAX_CORRUPT_BODY = 64 * 1024 * 1024  # a plain body read whole to be corrupted

Write = Callable[[bytes], Awaitable[None]]


class Cut(Exception):
    """The answer must end here without its proper end: the connection is closed."""


async def relay(
    fault: dict[str, Any],
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    encoding: str | None,
    write: Write,
    applied: Callable[[], None],
    removed: asyncio.Event | None = None,
) -> None:
    """Write the answer from ``chunks`` with ``fault`` in it; ``applied`` is called once, when
    the fault takes effect; a hold ends early once ``removed`` is set (the window is over).
    Raises ``Cut`` when the connection must be closed mid-answer."""
    kind = fault["kind"]
    form = stream_format(content_type, encoding)
    if kind == "stream_cut" and fault.get("after_bytes") is not None:
        await _cut_after_bytes(int(fault["after_bytes"]), chunks, write, applied)
        return
    if kind == "corrupt" and form is None:
        body = b""
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_CORRUPT_BODY:
                break
        applied()
        await write(corrupt_json(body, fault["corruption"]))
        return
    events = _events(chunks, form)
    await _EventRelay(fault, write, applied, form or "plain", removed).run(events)


async def _cut_after_bytes(
    limit: int, chunks: AsyncIterator[bytes], write: Write, applied: Callable[[], None]
) -> None:
    sent = 0
    async for chunk in chunks:
        if sent + len(chunk) > limit:
            await write(chunk[: limit - sent])
            applied()
            raise Cut()
        await write(chunk)
        sent += len(chunk)


async def _events(chunks: AsyncIterator[bytes], form: str | None) -> AsyncIterator[bytes]:
    """Whole events as they complete; a plain body is one event, at its end."""
    if form is None:
        body = b""
        async for chunk in chunks:
            body += chunk
        yield body
        return
    splitter = Splitter(form)
    async for chunk in chunks:
        for event in splitter.feed(chunk):
            yield event
    rest = splitter.rest()
    if rest:
        yield rest


class _EventRelay:
    def __init__(
        self,
        fault: dict[str, Any],
        write: Write,
        applied: Callable[[], None],
        form: str,
        removed: asyncio.Event | None,
    ) -> None:
        self.fault = fault
        self.write = write
        self.applied = applied
        self.form = form
        self.removed = removed or asyncio.Event()
        self.done = False

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds``, or until the window is removed."""
        if seconds > 0 and not self.removed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.removed.wait(), seconds)

    def _once(self) -> None:
        if not self.done:
            self.done = True
            self.applied()

    async def run(self, events: AsyncIterator[bytes]) -> None:
        fault, kind = self.fault, self.fault["kind"]
        after = fault.get("after_events")
        passed = 0
        last = 0.0
        async for event in events:
            if kind in ("stream_cut", "stream_stall") and passed == after and not self.done:
                self._once()
                if kind == "stream_cut":
                    raise Cut()
                await self.hold(float(fault["stall"]))
            elif kind == "slow_stream" and passed > 0:
                self._once()
                await self.hold(last + float(fault["gap"]) - time.monotonic())
            elif kind == "corrupt" and not self.done and _has_data(event, self.form):
                self._once()
                event = corrupt_event(event, fault["corruption"], self.form)
                if fault["corruption"] == "truncate":
                    await self.write(event)
                    return  # the answer ends, properly framed, in the middle of an event
            await self.write(event)
            last = time.monotonic()
            passed += 1


def _has_data(event: bytes, form: str) -> bool:
    """An event with a JSON payload to corrupt (not a comment, a keep-alive or ``[DONE]``)."""
    if form == "ndjson":
        return bool(event.strip())
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            return bool(payload) and payload != b"[DONE]"
    return False

"""Relaying a dependency's answer with a fault inside it: cut, held, slowed or corrupted.

A streamed answer (SSE or NDJSON, uncompressed) is relayed event by event; a plain body is one
event, relayed chunk by chunk as it comes. A kind that has nothing to act on (a cut after 5
events of a 3-event stream, gaps in a plain body, a body too large to corrupt) relays the
answer untouched and is not recorded as injected; so does a fault whose window ended while
the answer was under way."""

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
    removed = removed or asyncio.Event()
    if kind == "stream_cut" and fault.get("after_bytes") is not None:
        await _cut_after_bytes(int(fault["after_bytes"]), chunks, write, applied, removed)
    elif kind == "corrupt" and form is None:
        await _corrupt_body(fault["corruption"], chunks, write, applied, removed)
    elif form is None:
        # A plain body is one event: only a cut or a stall before it acts; it then flows as it
        # comes, however large.
        if fault.get("after_events") == 0 and kind in ("stream_cut", "stream_stall"):
            await _EventRelay(fault, write, applied, "plain", removed).before_first()
        async for chunk in chunks:
            await write(chunk)
    else:
        await _EventRelay(fault, write, applied, form, removed).run(_events(chunks, form))


async def _cut_after_bytes(
    limit: int,
    chunks: AsyncIterator[bytes],
    write: Write,
    applied: Callable[[], None],
    removed: asyncio.Event,
) -> None:
    sent = 0
    async for chunk in chunks:
        if sent + len(chunk) > limit and not removed.is_set():
            await write(chunk[: limit - sent])
            applied()
            raise Cut()
        await write(chunk)
        sent += len(chunk)


async def _corrupt_body(
    how: str,
    chunks: AsyncIterator[bytes],
    write: Write,
    applied: Callable[[], None],
    removed: asyncio.Event,
) -> None:
    """A plain body read whole, then corrupted; one beyond ``MAX_CORRUPT_BODY`` is relayed as
    it is (never cut short in silence)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_CORRUPT_BODY:
            for part in parts:
                await write(part)
            async for rest in chunks:
                await write(rest)
            return
    body = b"".join(parts)
    if removed.is_set():
        await write(body)
        return
    applied()
    await write(corrupt_json(body, how))


async def _events(chunks: AsyncIterator[bytes], form: str) -> AsyncIterator[bytes]:
    """Whole events as they complete."""
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
        removed: asyncio.Event,
    ) -> None:
        self.fault = fault
        self.write = write
        self.applied = applied
        self.form = form
        self.removed = removed
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

    async def before_first(self) -> None:
        """A cut or a stall before the first byte of a plain body."""
        if self.removed.is_set():
            return
        self._once()
        if self.fault["kind"] == "stream_cut":
            raise Cut()
        await self.hold(float(self.fault["stall"]))

    async def run(self, events: AsyncIterator[bytes]) -> None:
        fault, kind = self.fault, self.fault["kind"]
        after = fault.get("after_events")
        passed = 0
        last = 0.0
        async for event in events:
            if self.removed.is_set():  # the window is over: the rest flows as it is
                await self.write(event)
                continue
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

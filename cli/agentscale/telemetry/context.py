"""W3C trace context for each request: a ``traceparent`` whose trace id is derived from the
request's sequence number and the run's nonce, and ``baggage`` with the request id, so that the
agent's own spans, and whatever reached its dependencies, can be tied back to the request."""

from __future__ import annotations

import secrets

BAGGAGE_KEY = "agentscale.request_id"
_MASK = (1 << 64) - 1


def new_nonce() -> str:
    """16 hex digits, never all zeros: the first half of every trace id of one run."""
    while True:
        nonce = secrets.token_hex(8)
        if int(nonce, 16):
            return nonce


def trace_id(nonce: str, seq: int) -> str:
    return f"{nonce}{seq & _MASK:016x}"


def span_id(nonce: str, seq: int) -> str:
    """The client span of the request (the parent of the agent's first span)."""
    return f"{(int(nonce, 16) ^ (seq + 1)) & _MASK or 1:016x}"


def traceparent(nonce: str, seq: int) -> str:
    return f"00-{trace_id(nonce, seq)}-{span_id(nonce, seq)}-01"


def seq_of(trace: str, nonce: str) -> int | None:
    """The request's sequence number of one of this run's trace ids; None for another's."""
    if len(trace) != 32 or trace[:16] != nonce:
        return None
    try:
        return int(trace[16:], 16)
    except ValueError:
        return None


def baggage_value(header: str | None, key: str) -> str | None:
    """One entry of a W3C ``baggage`` header."""
    for entry in (header or "").split(","):
        name, _, value = entry.partition("=")
        if name.strip() == key:
            return value.split(";", 1)[0].strip() or None
    return None


def parse_traceparent(header: str | None) -> str | None:
    """The trace id of a ``traceparent`` header (version 00), or None if it is not one."""
    if not header:
        return None
    parts = header.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return None
    return parts[1].lower()


TURN_SHIFT = 48  # a conversation's turn rides in the high bits of a trace id's sequence number
_SEQ = (1 << TURN_SHIFT) - 1


def request_id(seq: int, turn: int = 0) -> str:
    """The request id of arrival ``seq`` (and of one turn of its conversation)."""
    return f"{seq:07d}" if not turn else f"{seq:07d}.{turn}"


def trace_seq(seq: int, turn: int = 0) -> int:
    return seq | (turn << TURN_SHIFT)


def request_id_of(traced: int) -> str:
    """The request id of a trace id's sequence number (``seq_of``)."""
    return request_id(traced & _SEQ, traced >> TURN_SHIFT)

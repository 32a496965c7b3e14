"""Whether a request succeeded, and if not, the class of its error."""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

import jmespath
import jmespath.exceptions

from agentscale.config.scenario import DEFAULT_REQUIRE, Success
from agentscale.telemetry.body import Trace


class IncompleteResponse(Exception):
    """The answer ended before the length its headers announced."""


class AnswerTooLarge(Exception):
    """An answer beyond the size agentscale reads (a runaway stream or body)."""


class BadBody(Exception):
    """A body that is not what its Content-Encoding says (corrupt, or cut short of its end)."""


class StreamCut(Exception):
    """A streamed answer that ended (or broke off) before its final event."""


class StreamStall(Exception):
    """A streamed answer that sent nothing for longer than ``target.stream_idle_timeout``."""


# Errors of the HTTP client (geventhttpclient, under Locust) by name: the engine's child
# process imports it, this module must not.
_CLOSED = frozenset({"HTTPConnectionClosed", "EmptyResponse", "ClosedMidHead"})
_BAD_HTTP = frozenset({"HTTPParseError", "BadStatusLine", "HTTPException", "InvalidURL"})


def transport_error_class(error: BaseException) -> str:
    """The error class of a request that got no usable HTTP answer (README "Success").

    geventhttpclient wraps the cause of a failed attempt in ``RetriesExceeded(original=...)``:
    the cause decides the class."""
    original = getattr(error, "original", None)
    if isinstance(original, BaseException):
        error = original
    name = type(error).__name__
    if isinstance(error, socket.timeout | TimeoutError) or "Timeout" in name:
        return "timeout"
    if isinstance(error, IncompleteResponse):
        return "incomplete_response"
    if isinstance(error, AnswerTooLarge) or name == "HeadTooLarge":
        return "answer_too_large"
    if isinstance(error, BadBody):
        return "bad_response"
    if isinstance(error, StreamStall):
        return "stream_stall"
    if isinstance(error, StreamCut):
        return "stream_cut"
    if isinstance(error, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(error, ConnectionResetError | BrokenPipeError) or name in _CLOSED:
        return "connection_reset"  # closed or reset before a complete answer
    if name in _BAD_HTTP or any(c.__name__ in _BAD_HTTP for c in type(error).__mro__):
        return "bad_response"
    return "connection_error"


def http_error_class(code: int) -> str:
    if code == 429:
        return "http_429"
    if 500 <= code < 600:
        return "http_5xx"
    if 400 <= code < 500:
        return "http_4xx"
    return f"http_{code}"


FAILED_OUTCOMES = frozenset({"error", "timeout", "short_circuited"})


def step_failure(trace: Trace) -> str | None:
    """``llm_error`` or ``tool_error`` when the trace shows a step that failed: a 200 answer
    that is wrong because a dependency failed is that dependency's failure."""
    for step in trace.steps:
        if step.outcome in FAILED_OUTCOMES:
            return "llm_error" if step.kind == "llm" else "tool_error"
    return None


class Judge:
    def __init__(self, rule: Success) -> None:
        self.statuses = frozenset(rule.status) if rule.status else None
        # The default rule, status != 'error', is the trace-status check below: no need to
        # run JMESPath for it on every response.
        require = rule.require
        needed = require is not None and require.strip() != DEFAULT_REQUIRE
        self.require = jmespath.compile(require) if require is not None and needed else None
        self.expect = rule.expect

    def status_ok(self, code: int) -> bool:
        return code in self.statuses if self.statuses is not None else 200 <= code < 300

    def verdict(
        self, code: int, trace: Trace, expected: Sequence[str]
    ) -> tuple[bool, str | None, bool | None]:
        """(success, error class, expected answer found) for a response that arrived."""
        if not self.status_ok(code):
            return False, http_error_class(code), None
        if trace.status == "error":
            return False, step_failure(trace) or "agent_error", None
        if self.require is not None:
            subject = trace.body if isinstance(trace.body, dict | list) else {}
            try:
                held = self.require.search(subject)
            except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as error:
                # The expression cannot be evaluated on this answer: it does not hold.
                trace.warnings.append(f"success.require: {type(error).__name__}: {error}"[:300])
                held = False
            if not held:
                return False, step_failure(trace) or "require_failed", None
        try:
            expect_ok = self.matches(trace.output, expected)
        except re.error as error:
            trace.warnings.append(f"expect: not a regular expression ({error})")
            expect_ok = False
        if expect_ok is False:
            return False, step_failure(trace) or "wrong_answer", False
        return True, None, expect_ok

    def matches(self, output: str | None, expected: Sequence[str]) -> bool | None:
        if not expected or self.expect == "none":
            return None
        text = (output or "").strip()
        if self.expect == "exact":
            return any(text.casefold() == e.strip().casefold() for e in expected)
        if self.expect == "regex":
            return all(re.search(e, text) is not None for e in expected)
        folded = text.casefold()
        return all(e.casefold() in folded for e in expected)

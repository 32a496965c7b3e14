"""The direct road to the target: a user's requests go to geventhttpclient's pooled client,
the one Locust's session itself ends at, without the session's per-request work (parsing the
URL again, its cookie jar, its timing and events), none of which agentscale reads; and the
request head built here, not by the client's builder (``Wire.head``).

A target that sets a cookie gets the browser-like behaviour Locust gives: from its first
``Set-Cookie`` on, that user keeps and sends its cookies through Locust's session (``slow``).

On both roads an answer the client's parser reads is a ``Reply``: its connection goes back to
the pool only once the final answer is complete and nothing came after it (``adopt``).
"""

from __future__ import annotations

import errno
import re
import socket
import zlib
from collections.abc import Callable
from ssl import SSLError
from typing import Any

import gevent
import geventhttpclient.client
from geventhttpclient._parser import HTTPParseError
from geventhttpclient.header import Headers
from geventhttpclient.response import HTTPConnectionClosed, HTTPSocketPoolResponse
from geventhttpclient.url import URL
from geventhttpclient.useragent import CompatRequest
from geventhttpclient.useragent import ConnectionError as ClientConnectionError

from agentscale.config.template import UNSENDABLE as BAD_VALUE
from agentscale.engine.plain import Plain, plain

# What Locust's session asks for (the reader decodes all three), and the failures it turns
# into an answer without a status: the same here, so that both roads classify alike.
ACCEPT_ENCODING = "gzip, deflate, br"
FAILURES = (
    ClientConnectionError,
    ConnectionError,
    socket.error,
    SSLError,
    HTTPConnectionClosed,
    HTTPParseError,
    zlib.error,
)
# An answer's head (status line and fields, interim answers included) beyond this is refused:
# the client's parser joins a field's value anew on each read, so a head of megabytes held
# every user of the process for seconds, past any timeout (20 MB: 31 s).
MAX_HEAD_BYTES = 1 << 20


# What the client itself checks of a request head (RFC 9110's token here, its field-value is
# the scenario check's BAD_VALUE), so that a head this module builds refuses what
# geventhttpclient's own builder refuses.
TOKEN = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
WITH_BODY = frozenset(("POST", "PUT", "PATCH"))
# Headers whose handling (100-continue, chunked bodies, a length of the scenario's own) only
# the client's builder has: a request with one of them goes through it.
THE_CLIENTS = frozenset(("expect", "transfer-encoding", "content-length"))


class UnsendableHeader(ValueError):
    """A header value (from the dataset, through a template) that HTTP/1.1 cannot carry. The
    value is not in the message: it may hold a secret from ``${VAR}``."""

    def __init__(self, name: str, position: int) -> None:
        super().__init__(
            f"header {name}: character {position + 1} of its value cannot be sent (a line "
            "break, another control character, or one outside latin-1)"
        )


def check_values(headers: dict[str, str]) -> None:
    """What ``Wire.head`` checks of each value, for the roads through the client's builder
    (whose own error quotes the value)."""
    for name, value in headers.items():
        found = BAD_VALUE.search(value)
        if found is not None:
            raise UnsendableHeader(name, found.start())


class _Beyond(Exception):
    """Bytes after the final answer: the parser is stopped there (they are no part of it)."""


class HeadTooLarge(HTTPParseError):
    """An answer's head beyond ``MAX_HEAD_BYTES`` (read by name as ``answer_too_large``). A
    parse error to both roads, so that Locust's session records it as a failure too."""


class ClosedMidHead(HTTPParseError):
    """The connection ended before the final answer's head did (after an interim answer, or
    in the middle of a head): closed before a complete answer, not an answer that is not
    HTTP (telemetry.judge reads it by name, as ``connection_reset``)."""


class Reply(HTTPSocketPoolResponse):
    """The client's response, ended by its final answer. The client gives the connection
    back the moment a message completes, in the middle of the bytes it was fed: a 100
    Continue gave it back before the real answer, a 101 gave back a connection that no longer
    speaks HTTP, and an answer followed by another in the same read took the second one's
    status and body for its own, the connection then reused. Here the connection is given
    back after the feed, and only when the final answer left it clean; anything after that
    answer (another answer, stray bytes) is not read and the connection is closed."""

    _final: int | None = None  # the status of the final answer, once complete
    _headed = False  # the final answer's head is complete
    _head_bytes = 0  # fed before that

    transfer_coded = False  # a transfer coding besides chunked, which the parser cannot undo

    def _on_headers_complete(self) -> int | bool | None:
        found = super()._on_headers_complete()
        if HTTPSocketPoolResponse.get_code(self) >= 200:
            self._headed = True
            coding = self._headers_index.get("transfer-encoding")
            if coding:
                codings = ", ".join(coding) if isinstance(coding, list) else coding
                self.transfer_coded = bool(
                    {c.strip() for c in codings.lower().split(",")} - {"chunked", ""}
                )
        return found

    def should_close(self) -> bool:
        # An interim answer (100 Continue) completes a message too: a timer firing after it
        # gave the connection back with the real answer still to come, which the next
        # request then took for its own. Only a complete final answer leaves it reusable.
        return self._final is None or bool(super().should_close())

    def _on_message_complete(self) -> None:
        self.message_complete = True
        code = HTTPSocketPoolResponse.get_code(self)
        if code >= 200:
            self._final = code

    def _on_message_begin(self) -> None:
        if self._final is not None:
            raise _Beyond()
        super()._on_message_begin()

    def get_code(self) -> int:
        return self._final if self._final is not None else super().get_code()

    def feed(self, data: str | bytes) -> None:
        if not self._headed:
            if not data and self._head_bytes:  # (nothing at all: the client's to retry)
                raise ClosedMidHead("the connection closed before the answer's head ended")
            self._head_bytes += len(data)
        try:
            super().feed(data)
        except (_Beyond, HTTPParseError):
            self._trailing_data_dropped = True  # (should_close: the connection is closed)
            if self._final is None:
                raise  # not an answer (a 101 switches protocols: no longer HTTP)
        # After the feed: a read that ends the head may carry the body's first bytes too (a
        # head of exactly 1 MiB is one). The head stays within one read of the limit.
        if not self._headed and self._head_bytes > MAX_HEAD_BYTES:
            self._trailing_data_dropped = True  # (should_close: the connection is closed)
            raise HeadTooLarge(f"an answer head beyond {MAX_HEAD_BYTES >> 20} MiB")
        if self._final is not None:
            self.release()


def single(headers: Any, name: str) -> str | None:
    """A field HTTP allows once (Content-Type, Content-Length), as one value: the last where
    the answer sent it twice, as browsers read it (the client's headers give a list then)."""
    if headers is None:  # never ``if headers``: a Headers' len() walks every field
        return None
    value = headers.get(name)
    if isinstance(value, list):
        return str(value[-1]) if value else None
    return value  # type: ignore[no-any-return]


def adopt() -> None:
    """Let the client read every answer as a ``Reply`` (Locust's session's road too): it
    builds its responses by this module-level name. In the engine's process only."""
    geventhttpclient.client.HTTPSocketPoolResponse = Reply  # type: ignore[attr-defined]


class Failed:
    """No answer at all: what the reader needs of it (status 0 and the cause)."""

    __slots__ = ("error",)
    status_code = 0
    headers = None
    content = None
    _response = None
    _cached_content = None

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Answer:
    """An answer whose body is still on the socket; the reader takes it from ``_response``."""

    __slots__ = ("_response", "headers", "status_code")
    _cached_content = None
    content = None
    error = None

    def __init__(self, raw: Any) -> None:
        self._response = raw
        self.headers = raw._headers_index
        self.status_code = raw.get_code()

    def info(self) -> Headers:  # what http.cookiejar reads a response by
        return self.headers  # type: ignore[no-any-return]


class Route:
    """One path of the target: its pooled client and what every request head to it starts
    with. ``defaults``: the client's own header lines (User-Agent, Host), each sent unless the
    scenario sets that header itself."""

    __slots__ = ("defaults", "direct", "http", "pool", "starts", "target", "url")

    def __init__(self, http: Any, target: str, url: str) -> None:
        self.http, self.target, self.url = http, target, url
        self.pool = http._connection_pool
        # A proxy wants the absolute URL, HTTP/1.0 no Host: the client's builder knows both.
        self.direct = not http.use_proxy and http.version == "HTTP/1.1"
        host = http.host if ":" not in http.host or http.host[0] == "[" else f"[{http.host}]"
        if http.port not in (80, 443):
            host += f":{http.port}"
        own = http.default_headers.items()
        lines = {name.lower(): f"{name}: {value}\r\n" for name, value in own}
        lines.setdefault("host", f"Host: {host}\r\n")
        self.defaults = tuple(lines.items())
        self.starts: dict[str, str] = {}

    def start(self, method: str) -> str:
        """The request line for ``method`` (in capitals)."""
        line = self.starts.get(method)
        if line is None:
            if not TOKEN.fullmatch(method):
                raise ValueError(f"invalid HTTP method {method!r}")
            line = self.starts[method] = f"{method} {self.target} HTTP/1.1\r\n"
        return line


class Wire:
    """One user's connection to the target (Locust's session ``client`` is its pool)."""

    def __init__(self, client: Any, slow: Callable[..., Any]) -> None:
        self.client, self.slow = client, slow
        self.agent = client.client  # Locust's user agent: its pool and its cookie jar
        self.routes: dict[str, Route] = {}
        self.names: set[str] = set()  # header names already found to be tokens
        self.cookies = False  # True once the target set one: then Locust's session does it all

    def route(self, path: str) -> Route:
        found = self.routes.get(path)
        if found is None:
            url = self.client._build_url(path)
            split = URL(url)
            target = getattr(split, "quoted_uri", split.request_uri)
            http = self.agent.clientpool.get_client(split)
            found = self.routes[path] = Route(http, target, url)
        return found

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        if self.cookies:
            check_values(headers)
            return self.slow(method, path, body, headers)
        route = self.route(path)
        headers = dict(headers)
        auth = self.client.auth_header  # credentials in the target URL, as Locust sends them
        if auth:
            headers["Authorization"] = auth
        if "Accept-Encoding" not in headers:  # the template spells it so (config/template.py)
            headers["Accept-Encoding"] = ACCEPT_ENCODING
        try:
            names = {name.lower() for name in headers}
            if route.direct and len(names) == len(headers) and names.isdisjoint(THE_CLIENTS):
                verb = method.upper()
                raw = self.send(route, verb, self.head(route, verb, body, headers, names))
            else:
                check_values(headers)
                raw = route.http.request(method, route.target, body=body, headers=headers)
            answer = Answer(raw)
        except gevent.Timeout:
            raise  # the exchange's own timer: the caller's to judge
        except FAILURES as problem:
            return Failed(problem)
        if "set-cookie" in answer.headers and self.agent.cookiejar is not None:
            sent = CompatRequest(route.url, method=method, headers=Headers(headers), payload=body)
            self.agent.cookiejar.extract_cookies(answer, sent)
            self.cookies = True
        return answer

    def head(
        self, route: Route, method: str, body: bytes | None, headers: dict[str, str],
        names: set[str],
    ) -> bytes:  # fmt: skip
        """The request as bytes: what the client's builder sends, without its two merges of
        the headers into its case-insensitive dict and its two regexes per header (a third of
        the client's time a request). ``method`` in capitals; ``names``: the headers' names,
        lower case."""
        parts = [route.start(method)]
        for name, line in route.defaults:
            if name not in names:
                parts.append(line)
        for name, value in headers.items():
            if name not in self.names:
                if not TOKEN.fullmatch(name):
                    raise ValueError(f"invalid header field name {name!r}")
                self.names.add(name)
            found = BAD_VALUE.search(value)
            if found is not None:
                raise UnsendableHeader(name, found.start())
            parts.append(f"{name}: {value}\r\n")
        if body:
            parts.append(f"Content-Length: {len(body)}\r\n\r\n")
            return "".join(parts).encode("latin-1") + body
        parts.append("Content-Length: 0\r\n\r\n" if method in WITH_BODY else "\r\n")
        return "".join(parts).encode("latin-1")

    def send(self, route: Route, method: str, data: bytes) -> Plain | Reply:
        """``data`` on a pooled connection, and the answer's head read; a connection the
        target closed under us is tried again as the client does (idempotent methods only)."""
        pool = route.pool
        again = pool.size + 1 if method in IDEMPOTENT else 0
        while True:
            sock = pool.get_socket()  # (checks that an idle connection is still open)
            try:
                sock.sendall(data)
            except OSError as problem:
                if problem.errno not in (errno.ECONNRESET, errno.EPIPE):
                    pool.release_socket(sock)
                    raise
                # The target may have answered early and closed: that answer is the result.
                try:
                    return self.answer(route, sock, method)
                except (OSError, HTTPParseError):
                    if again > 0:
                        again -= 1
                        continue
                    raise
            except BaseException:
                pool.release_socket(sock)  # (a timer firing mid-send: the slot is free again)
                raise
            try:
                return self.answer(route, sock, method)
            except HTTPConnectionClosed:
                if again > 0:
                    again -= 1
                    continue
                raise

    @staticmethod
    def answer(route: Route, sock: Any, method: str) -> Plain | Reply:
        """The answer's first bytes, read here: a plain answer (``plain``) is complete in
        them; any other is the client's parser's, from those bytes on."""
        http, pool = route.http, route.pool
        try:
            data = sock.recv(http.block_size)
        except BaseException as problem:
            pool.release_socket(sock)  # (as the client's response does when its read fails)
            if isinstance(problem, OSError) and problem.errno == errno.ECONNRESET:
                raise HTTPConnectionClosed("connection closed.") from problem
            raise
        try:
            found = plain(data, method) if data else None
        except BaseException:
            pool.release_socket(sock)  # a defect here costs one request, not a pool slot
            raise
        if found is not None:
            answer, keep = found
            (pool.return_socket if keep else pool.release_socket)(sock)
            return answer
        return Reply(
            sock, pool, block_size=http.block_size, method=method,
            headers_type=http.headers_type, pre_buffered=data,
        )  # fmt: skip

"""The direct road to the target: a user's requests go to geventhttpclient's pooled client,
the one Locust's session itself ends at, without the session's per-request work (parsing the
URL again, its cookie jar, its timing and events), none of which agentscale reads.

A target that sets a cookie gets the browser-like behaviour Locust gives: from its first
``Set-Cookie`` on, that user keeps and sends its cookies through Locust's session (``slow``).
"""

from __future__ import annotations

import socket
import zlib
from collections.abc import Callable
from ssl import SSLError
from typing import Any

import gevent
from geventhttpclient._parser import HTTPParseError
from geventhttpclient.header import Headers
from geventhttpclient.response import HTTPConnectionClosed
from geventhttpclient.url import URL
from geventhttpclient.useragent import CompatRequest
from geventhttpclient.useragent import ConnectionError as ClientConnectionError

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


class Wire:
    """One user's connection to the target (Locust's session ``client`` is its pool)."""

    def __init__(self, client: Any, slow: Callable[..., Any]) -> None:
        self.client, self.slow = client, slow
        self.agent = client.client  # Locust's user agent: its pool and its cookie jar
        self.routes: dict[str, tuple[Any, str, str]] = {}
        self.cookies = False  # True once the target set one: then Locust's session does it all

    def route(self, path: str) -> tuple[Any, str, str]:
        found = self.routes.get(path)
        if found is None:
            url = self.client._build_url(path)
            split = URL(url)
            target = getattr(split, "quoted_uri", split.request_uri)
            found = self.routes[path] = (self.agent.clientpool.get_client(split), target, url)
        return found

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        if self.cookies:
            return self.slow(method, path, body, headers)
        http, target, url = self.route(path)
        headers = dict(headers)
        auth = self.client.auth_header  # credentials in the target URL, as Locust sends them
        if auth:
            headers["Authorization"] = auth
        if "Accept-Encoding" not in headers:  # the template spells it so (config/template.py)
            headers["Accept-Encoding"] = ACCEPT_ENCODING
        try:
            answer = Answer(http.request(method, target, body=body, headers=headers))
        except gevent.Timeout:
            raise  # the exchange's own timer: the caller's to judge
        except FAILURES as problem:
            return Failed(problem)
        if "set-cookie" in answer.headers and self.agent.cookiejar is not None:
            sent = CompatRequest(url, method=method, headers=Headers(headers), payload=body)
            self.agent.cookiejar.extract_cookies(answer, sent)
            self.cookies = True
        return answer

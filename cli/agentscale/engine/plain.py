"""The common answer read without geventhttpclient's parser: an HTTP/1.1 head and a body of
exactly its Content-Length, all in one read (what an agent's JSON answer is nearly always).

The client's parser calls back into Python for every field of the head, about 25 µs an
answer; splitting the head here costs about 6. Anything this module does not fully understand
(another version, 1xx/204/304, HEAD, a chunked or cut-off body, a field twice, a cookie,
folded lines, bytes past the body) is left to the client's parser, which then reads on from
the bytes already taken (``None``)."""

from __future__ import annotations

import re

# RFC 9110's token, for a field name; a field line that is not "name:value" is not plain.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# A control character, or a CR or LF not in a CRLF pair: the client's parser judges the head.
_ODD = re.compile(r"\r(?!\n)|(?<!\r)\n|[^\t\r\n\x20-\x7e\x80-\xff]")
# The parser also ends the connection on Proxy-Connection: close; the cookie jar reads the
# client's own response.
_LEFT_TO_THE_CLIENT = frozenset(("transfer-encoding", "set-cookie", "proxy-connection"))
# "200", never "²00": str.isdigit() takes latin-1's superscripts, and int() then raises.
_CODE = re.compile(r"[0-9]{3}\Z")
# A length of more digits is no agent's answer (and int() refuses over 4,300 digits).
_LONGEST = 18


class Plain:
    """A complete answer, as the reader takes it (the shape of the client's own response:
    ``_body_buffer``, ``message_complete``, no socket left to read). ``headers`` keys are
    lower case: every reader of them asks in lower case."""

    __slots__ = ("_body_buffer", "_headers_index", "status_code")
    message_complete = True
    transfer_coded = False  # (a transfer coding is left to the client's parser)
    _sock = None
    _pool = None

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status
        self._headers_index = headers
        self._body_buffer = bytearray(body)

    def get_code(self) -> int:
        return self.status_code


def plain(data: bytes, method: str) -> tuple[Plain, bool] | None:
    """The answer in ``data`` and whether its connection may be kept, or None when it is not
    plain (the client's parser then reads it, starting from ``data``)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or method == "HEAD":
        return None
    head = data[:end].decode("latin-1")
    if _ODD.search(head):
        return None
    lines = head.split("\r\n")
    status = lines[0]
    # "HTTP/1.1 200 OK" or "HTTP/1.1 200": a final answer that has a body.
    if (
        not status.startswith("HTTP/1.1 ")
        or not _CODE.match(status[9:12])
        or (len(status) > 12 and status[12] != " ")
    ):
        return None
    code = int(status[9:12])
    if code < 200 or code in (204, 304) or code > 599:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _NAME.match(name):
            return None  # a folded line, a space before the colon, no colon
        key = name.lower()
        if key in headers or key in _LEFT_TO_THE_CLIENT:
            return None
        headers[key] = value.strip(" \t")
    length = headers.get("content-length")
    if length is None or not length.isascii() or not length.isdigit() or len(length) > _LONGEST:
        return None
    start = end + 4
    if len(data) - start != int(length):
        return None  # more to come (the parser reads it), or bytes past the answer
    connection = headers.get("connection")
    keep = connection is None or "close" not in _tokens(connection)
    return Plain(code, headers, data[start:]), keep


def _tokens(value: str) -> list[str]:
    return [token.strip(" \t") for token in value.lower().split(",")]

"""Request templates: ``{{var}}`` filled per request, ``${VAR}`` filled from the environment.

A body template is compiled once into literal pieces and variable names, so rendering a request
is a join, not a walk of the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SESSION_VARIABLES = ("session_id", "turn", "thread_id", "history")  # workload.sessions only
BUILTIN_VARIABLES = ("tenant", "prompt", "workflow", "request_id", "canary", *SESSION_VARIABLES)
RAW_JSON = "history"  # "{{history}}" in a JSON body becomes a JSON value, not a string
RAW_NAME = "history json"  # its name once compiled (no placeholder can be called that)


class MissingVariable(KeyError):
    pass


def env_references(value: Any) -> list[str]:
    """Names of ``${VAR}`` references without a default, anywhere in ``value``."""
    text = orjson.dumps(value).decode() if not isinstance(value, str) else value
    return [m.group(1) for m in ENV_REFERENCE.finditer(text) if m.group(2) is None]


# A ${VAR} value shorter than this is not redacted from answers: it would match ordinary text
# ("eu" in every "queue"). Such values are named in a warning before the run.
MIN_REDACTED = 4


def unredacted(value: Any, env: Mapping[str, str]) -> list[str]:
    """The ``${VAR}`` names in ``value`` whose values are too short to redact (not empty)."""
    return sorted(
        {name for name in env_references(value) if 0 < len(env.get(name, "")) < MIN_REDACTED}
    )


def expand_env(text: str, env: Mapping[str, str], found: list[str] | None = None) -> str:
    """``text`` with each ``${VAR}`` filled in; the values taken from ``env`` go to ``found``."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            if found is not None:
                found.append(env[name])
            return env[name]
        if default is not None:
            return default
        raise MissingVariable(name)

    return ENV_REFERENCE.sub(replace, text)


def expand_env_in(value: Any, env: Mapping[str, str], found: list[str] | None = None) -> Any:
    """``value`` (parsed JSON) with ``${VAR}`` filled in inside its strings: a value with a
    quote or a brace in it stays a string, it never rewrites the document around it."""
    if isinstance(value, str):
        return expand_env(value, env, found)
    if isinstance(value, list):
        return [expand_env_in(item, env, found) for item in value]
    if isinstance(value, dict):
        return {
            expand_env(key, env, found): expand_env_in(item, env, found)
            for key, item in value.items()
        }
    return value


# What a header value may hold as the engine sends it (RFC 9110's field-value, in latin-1):
# tab, printable ASCII and the bytes 0x80-0xff.
UNSENDABLE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


def header_problem(value: str) -> str | None:
    """Why a header value (``${VAR}`` expanded or not) cannot be sent, if it cannot. The
    character itself is not named: the value may hold a secret."""
    if any(c in value for c in "\r\n\0"):
        return "it has a line break or a NUL in it (a header value is one line)"
    found = UNSENDABLE.search(value)
    if found is not None:
        return (
            f"character {found.start() + 1} cannot be sent in a header (HTTP/1.1 header values"
            " are latin-1: tab, printable ASCII and U+0080-U+00FF, no control characters)"
        )
    return None


def secret_forms(secret: str) -> list[str]:
    """The ways a secret can come back in a response: as is, and escaped inside a JSON
    string (with or without non-ASCII as \\u escapes, with or without ``\\/``)."""
    escaped = orjson.dumps(secret).decode()[1:-1]
    ascii_escaped = json.dumps(secret)[1:-1]
    forms = {secret, escaped, ascii_escaped, escaped.replace("/", "\\/")}
    forms.add(ascii_escaped.replace("/", "\\/"))
    return sorted(forms, key=len, reverse=True)


def template_variables(value: Any) -> set[str]:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else value
    return set(PLACEHOLDER.findall(text))


class Template:
    """A string with ``{{var}}`` placeholders; ``escape`` prepares values for their context."""

    def __init__(self, text: str, *, json_strings: bool) -> None:
        pieces = PLACEHOLDER.split(text)
        self.literals = pieces[0::2]
        self.names = pieces[1::2]
        self.json_strings = json_strings
        self.raw: set[int] = set()  # placeholders that are a whole JSON value (their quotes go)
        if json_strings:
            for i, name in enumerate(self.names):
                before, after = self.literals[i], self.literals[i + 1]
                whole = before[-2:-1] in (":", "[", ",") and after[1:2] in (",", "}", "]")
                if name == RAW_JSON and before.endswith('"') and after.startswith('"') and whole:
                    self.literals[i], self.literals[i + 1] = before[:-1], after[1:]
                    self.names[i] = RAW_NAME
                    self.raw.add(i)

    def escape(self, value: str) -> str:
        # Placeholders of a JSON body sit inside JSON strings: escape, and drop the quotes.
        return orjson.dumps(value).decode()[1:-1] if self.json_strings else value

    def render(self, values: Mapping[str, str]) -> str:
        escaped = {name: self.escape(values[name]) for name in self.names if name != RAW_NAME}
        if self.raw:
            escaped[RAW_NAME] = values[RAW_JSON]
        return self.fill(escaped)

    def fill(self, escaped: Mapping[str, str]) -> str:
        """Render from values already escaped with ``escape`` (the hot path)."""
        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            out.append(escaped[name])
            out.append(literal)
        return "".join(out)


def _spelled(name: str) -> str:
    # Locust's session (which a user whose target sets cookies goes through) knows two
    # spellings of Accept-Encoding and puts its own value over any other one.
    return "Accept-Encoding" if name.lower() == "accept-encoding" else name


class RequestTemplate:
    """Body and headers of one target, with the environment already filled in."""

    def __init__(self, body: Any, headers: Mapping[str, str], env: Mapping[str, str]) -> None:
        self.secrets: list[str] = []  # values read from the environment: never to be recorded
        if body is None:
            self.body: Template | None = None
            self.content_type = None
        elif isinstance(body, str):
            self.body = Template(expand_env(body, env, self.secrets), json_strings=False)
            self.content_type = "text/plain; charset=utf-8"
        else:
            self.body = Template(
                orjson.dumps(expand_env_in(body, env, self.secrets)).decode(), json_strings=True
            )
            self.content_type = "application/json"
        self.headers = {
            _spelled(name): Template(expand_env(value, env, self.secrets), json_strings=False)
            for name, value in headers.items()
        }
        self.static_headers = {
            name: template.literals[0]
            for name, template in self.headers.items()
            if not template.names
        }
        self.dynamic_headers = {n: t for n, t in self.headers.items() if t.names}
        if self.content_type and "content-type" not in {h.lower() for h in headers}:
            self.static_headers["Content-Type"] = self.content_type

    def escape(self, value: str) -> str:
        return self.body.escape(value) if self.body is not None else value

    def fill_history(self, escaped: dict[str, str], history: str) -> None:
        """``{{history}}`` (JSON text) into ``escaped``: as is where it is a whole value."""
        escaped[RAW_JSON] = self.escape(history)
        escaped[RAW_NAME] = history

    def fill_body(self, escaped: Mapping[str, str]) -> bytes | None:
        return self.body.fill(escaped).encode() if self.body is not None else None

    def render_headers(self, values: Mapping[str, str]) -> dict[str, str]:
        if not self.dynamic_headers:
            return self.static_headers
        rendered = dict(self.static_headers)
        for name, template in self.dynamic_headers.items():
            rendered[name] = template.render(values)
        return rendered

"""How numbers are written for people (terminal, HTML, Markdown, summary.md): one place, so
that every output agrees."""

from __future__ import annotations

import math
import re

NONE = "-"


def num(value: float | None, digits: int = 4) -> str:
    """A figure with ``digits`` significant digits below 1,000, whole above; ``never`` for an
    infinite time."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isinf(value):
        return "never" if value > 0 else "-never"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return _significant(value, digits)


def _significant(value: float, digits: int, sign: str = "") -> str:
    """``digits`` significant digits in positional notation: a cost per success of 1.2e-05
    dollars reads as 0.000012 (people compare such figures by their zeros)."""
    if abs(value) <= 1e-12:
        value = 0.0  # float noise (a CI of 4e-14 dollars): no figure here is that small
    if not 1e-12 < abs(value) < 1e-4:  # zero, NaN and the infinite too
        return f"{value:{sign}.{digits}g}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:{sign}.{decimals}f}".rstrip("0")


def _zero(text: str) -> str:
    """``text`` without the minus of a figure that rounds to zero ("-0.0%" from float noise)."""
    if text[:1] in "-+" and not any(c in "123456789" for c in text):
        return text[1:] if text[0] == "-" else text
    return text


def fixed(value: float | None, digits: int = 1, unit: str = "") -> str:
    """A figure with ``digits`` decimals (for columns that line up)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}{unit}"
    return _zero(f"{value:,.{digits}f}") + unit


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return NONE
    return _zero(f"{value:.{digits}%}")


def usd(value: float | None) -> str:
    """Dollars to the millionth; a smaller figure (not zero) to its first digits, never
    "$0.000000" for a cost that was there."""
    if value is None:
        return "unknown"
    if 1e-12 < abs(value) < 5e-7:
        return f"${_significant(value, 2)}"
    return "$" + _zero(f"{value:.6f}")


def signed(value: float | None) -> str:
    if value is None:
        return NONE
    if math.isfinite(value) and abs(value) >= 1000:
        return f"{value:+,.0f}"
    return _significant(value, 4, "+")


def change(value: float | None, share: float | None) -> str:
    """A change and, when there is a base to compare with, its share: ``+12 (+10.0%)``."""
    if value is None:
        return NONE
    if share is None:
        return signed(value)
    part = _zero(f"{share:+.1%}")
    return f"{signed(value)} ({part if part[0] in '+-' else '+' + part})"


def interval(bounds: list[float] | None) -> str:
    return f"[{signed(bounds[0])}, {signed(bounds[1])}]" if bounds else NONE


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# GitHub links bare URLs too: a word joiner in "://" and after "www" keeps them text.
_AUTOLINK = re.compile(r"(?i)(://|\bwww\.|@)")
_EMPHASIS = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # "_" that could open or close
_MARKDOWN = re.compile(r"([\\`*\[\]<>~])")  # GFM: "_" inside a word emphasises nothing


def plain(text: object) -> str:
    """Text safe to print: control characters (terminal escapes, NUL, BEL) shown as U+FFFD."""
    return _CONTROL.sub("\ufffd", str(text))


def cell(text: object) -> str:
    """Text for one cell of a Markdown table: one line, no control characters, and nothing that
    Markdown or HTML would act on (an agent's step name is data, never a link or emphasis)."""
    one_line = plain(str(text).replace("\n", " "))
    escaped = _MARKDOWN.sub(r"\\\1", one_line).replace("|", "\\|")
    escaped = _EMPHASIS.sub(r"\\_", escaped)
    return _AUTOLINK.sub(
        lambda m: (
            "\u2060" + m.group(1)
            if m.group(1) == "@"
            else m.group(1)[:1] + "\u2060" + m.group(1)[1:]
        ),
        escaped,
    )

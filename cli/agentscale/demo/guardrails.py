"""Input blocking rules and output redaction for the demo agent."""

from __future__ import annotations

import re

BLOCK_RULES = {
    "prompt_injection": re.compile(r"ignore (all |any )?(previous|prior) instructions", re.I),
    "card_number": re.compile(r"\b(?:\d[ -]?){15,16}\b"),
}
REDACT_RULES = {
    "email": (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[redacted email]"),
    # International numbers only (a leading +), so that dates and order numbers stay.
    "phone": (
        re.compile(r"\+\d{1,3}[ -]?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]?\d{2,4}){2,3}"),
        "[redacted phone]",
    ),
}


def blocked_by(text: str) -> str | None:
    """The first blocking rule that ``text`` breaks, if any."""
    for rule, pattern in BLOCK_RULES.items():
        if pattern.search(text):
            return rule
    return None


def redact(text: str) -> tuple[str, list[str]]:
    """``text`` with PII replaced, and the rules that fired."""
    fired = []
    for rule, (pattern, replacement) in REDACT_RULES.items():
        text, count = pattern.subn(replacement, text)
        if count:
            fired.append(rule)
    return text, fired

"""How the reports write numbers: one place, so that HTML and Markdown agree."""

from __future__ import annotations

from typing import Any


# --- formatting ------------------------------------------------------------------------------
def fmt_value(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "never" if value == float("inf") else f"{value:,.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def fmt_usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"

"""Conversations by turn number: how latency, tokens and cost grow as a thread gets longer, and
what a whole successful conversation costs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from agentscale.analysis.figures import ConversationFigures, TurnFigures
from agentscale.analysis.known import mean as _mean
from agentscale.analysis.known import quantile as _q
from agentscale.records.frames import RunFrames

# A model refusing a prompt too long for it (OpenAI, Anthropic, vLLM wordings); not Go's
# "context deadline exceeded", which is a timeout.
CONTEXT_ERROR = (
    r"context[_ ]length|context[_ ]window|maximum context|prompt is too long|too many tokens"
)


def conversation_figures(frames: RunFrames) -> ConversationFigures | None:
    requests = frames.requests
    if "turn" not in requests or not requests["turn"].notna().any():
        return None
    a = dict(frames.arrays)
    a["steps_count"] = requests["steps"].to_numpy(dtype=float, na_value=0.0)
    turn = requests["turn"].to_numpy(dtype=float, na_value=np.nan)
    sent = frames.sent & ~np.isnan(turn)
    limits = _limits(frames)
    by_turn: list[TurnFigures] = []
    for number in np.unique(turn[sent]).astype(int).tolist():
        mask = sent & (turn == number)
        n = int(mask.sum())
        cost = a["cost_usd"][mask]
        # Whether anything could have told of a limit: budget events, or steps to read.
        told = (~np.isnan(a["budget_exhausted"][mask])) | (a["steps_count"][mask] > 0)
        by_turn.append(
            {
                "turn": number,
                "requests": n,
                "success_rate": float(a["success"][mask].mean()) if n else None,
                "latency_p95_ms": _q(a["latency_ms"][mask], 95),
                "ttft_p95_ms": _q(a["ttft_ms"][mask], 95),
                "input_tokens_mean": _mean(a["input_tokens"][mask]),
                "output_tokens_mean": _mean(a["output_tokens"][mask]),
                "cost_per_turn_usd": float(cost.mean()) if n and not np.isnan(cost).any() else None,
                "limits_hit": int(limits[mask].sum()) if told.any() else None,
            }
        )
    sessions = pd.DataFrame(
        {
            "session": requests["session_id"].astype("string"),
            "sent": sent,
            "dropped": a["dropped"],
            "success": a["success"] & sent,
            "cost": a["cost_usd"],
            "planned": requests["session_turns"].to_numpy(dtype=float, na_value=np.nan),
        }
    )[requests["session_id"].notna().to_numpy()]
    grouped = sessions.groupby("session", sort=False).agg(
        sent=("sent", "sum"), dropped=("dropped", "any"), successes=("success", "sum"),
        planned=("planned", "max"),
    )  # fmt: skip
    live = grouped[~grouped["dropped"]]
    complete = live["sent"] >= live["planned"]
    successful = complete & (live["successes"] >= live["planned"])
    spent = sessions.loc[sessions["sent"], "cost"].to_numpy(dtype=float)
    cost_known = spent.size > 0 and not np.isnan(spent).any()
    wins = int(successful.sum())
    slope, first, which = _growth(a, turn, sent, limits, frames)
    return {
        "sessions": len(grouped),
        "dropped": int(grouped["dropped"].sum()),
        "complete": int(complete.sum()),
        "truncated": int((~complete).sum()),
        "successful": wins,
        "success_rate": wins / len(live) if len(live) else None,
        "turns_mean": float(live["sent"].mean()) if len(live) else None,
        "cost_per_successful_conversation_usd": (
            float(spent.sum()) / wins if cost_known and wins else None
        ),
        "input_tokens_per_turn": slope,
        "first_limit_turn": first,
        "limit": which,
        "by_turn": by_turn,
    }


def _limits(frames: RunFrames) -> np.ndarray:
    """Per request: it hit a budget, or a step failed because the prompt was too long."""
    hit: np.ndarray = np.nan_to_num(frames.arrays["budget_exhausted"], nan=0.0) > 0
    steps = frames.steps
    if not steps.empty and "error" in steps:
        errors = steps["error"].astype("string")
        context = errors.str.contains(CONTEXT_ERROR, case=False, regex=True).fillna(False)
        rows = steps.loc[context.to_numpy(dtype=bool), "req"].to_numpy()
        hit = hit.copy()
        hit[rows] = True
    return hit


def _growth(
    a: dict[str, np.ndarray],
    turn: np.ndarray,
    sent: np.ndarray,
    limits: np.ndarray,
    frames: RunFrames,
) -> tuple[float | None, int | None, str | None]:
    """The input tokens' slope over the turn number (least squares over every turn sent),
    and the first turn at which a limit was hit, with which one."""
    tokens = a["input_tokens"]
    known = sent & ~np.isnan(tokens)
    slope = None
    if known.any() and np.unique(turn[known]).size >= 2:
        slope = float(np.polyfit(turn[known], tokens[known], 1)[0])
    hits = sent & limits
    if not hits.any():
        return slope, None, None  # (whether limits were reported at all: per turn)
    first = int(turn[hits].min())
    at_first = hits & (turn == first)
    budget = (np.nan_to_num(a["budget_exhausted"], nan=0.0) > 0)[at_first].any()
    return slope, first, "budget" if budget else "context window"

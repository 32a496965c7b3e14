"""Which scaling lever to pull first, from the scorecard, with the numbers that led there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentscale.analysis.figures import Card, RetrievalFigures
from agentscale.config.scenario import Price
from agentscale.formatting import pct, usd

DOMINANT_SHARE = 0.35  # a step holding this much of the slowest 5% dominates it
ATTRIBUTED_ENOUGH = 0.5  # below this share of the slowest requests' time seen in steps: blind
INPUT_COST_SHARE = 0.6  # input tokens at this share of LLM spend: context is the cost


@dataclass(frozen=True)
class Diagnosis:
    lever: str
    why: str
    evidence: list[str]


def diagnose(overall: Card, prices: Mapping[str, Price] | None = None) -> Diagnosis:
    steps = overall["steps"]
    shares = overall["slowest_5pct_share"]
    tools = overall["tools"]

    def kind(name: str) -> str | None:
        step = steps.get(name)
        return step["kind"] if step else None

    seen = sum(s for n, s in shares.items() if kind(n) not in (None, "unattributed"))
    if overall["requests"] and seen < ATTRIBUTED_ENOUGH:
        # No lever can be named for time nobody can see: replicas would be a guess.
        hidden = shares.get("(unattributed)")
        return Diagnosis(
            "instrument first (report the agent's steps: spans over OTLP, or a trace in the body)",
            f"only {seen:.0%} of the time of the slowest 5% of requests is in reported steps",
            [
                f"p95 {overall['latency_p95_ms'] or 0:,.0f} ms, of which the steps account for "
                f"{seen:.0%}" + (f"; unattributed {hidden:.0%}" if hidden is not None else ""),
                "send spans to agentscale's OTLP receiver (telemetry.otlp) or list the steps "
                "in the response (telemetry.steps)",
            ],
        )
    dependency = [(n, s) for n, s in shares.items() if kind(n) in ("tool", "retrieval")]
    if dependency:
        name, share = max(dependency, key=lambda pair: pair[1])
        if share >= DOMINANT_SHARE:
            tool = tools.get(name)
            return Diagnosis(
                f"timeout, cache and fallback for {name}",
                f"{name} holds {share:.0%} of the time of the slowest 5% of requests",
                [
                    f"{name} p95 {steps[name]['p95_ms'] or 0:,.0f} ms",
                    "retries per call "
                    + (
                        f"{tool['retries_per_call']:.2f}"
                        if tool and tool["retries_per_call"] is not None
                        else "not reported"
                    ),
                    f"outcomes {tool['outcomes'] if tool else {}}",
                    f"cache hit rate {pct(overall['cache_hit_rate'], 0)}",
                ],
            )
    tokens_in = overall["input_tokens_mean"] or 0.0
    tokens_out = overall["output_tokens_mean"] or 0.0
    price_in, price_out = _average_prices(prices)
    spend_in, spend_out = tokens_in * price_in, tokens_out * price_out
    if spend_in + spend_out > 0 and spend_in / (spend_in + spend_out) >= INPUT_COST_SHARE:
        return Diagnosis(
            "reduce the context (fewer or smaller chunks, summaries, prompt caching)",
            f"input tokens are {spend_in / (spend_in + spend_out):.0%} of the model spend",
            [
                f"{tokens_in:,.0f} input / {tokens_out:,.0f} output tokens per request",
                f"cost per success {usd(overall['cost_per_success_usd'])}",
                _retrieval(overall["retrieval"]),
            ],
        )
    tool_share = sum(s for n, s in shares.items() if kind(n) == "tool")
    calls = overall["tool_calls_per_request"] or 0.0
    if calls >= 2 and tool_share >= 0.3:
        return Diagnosis(
            "run independent tool calls concurrently (bounded async)",
            f"{calls:.1f} tool calls per request take {tool_share:.0%} of the slowest 5%",
            [f"{n} p95 {steps[n]['p95_ms'] or 0:,.0f} ms" for n in tools if n in steps],
        )
    llm = sum(s for n, s in shares.items() if kind(n) == "llm")
    return Diagnosis(
        "add replicas and balance load (no single step to fix first)",
        "no tool dominates, context is not the cost, tool calls are not serial",
        [
            f"model steps hold {llm:.0%} of the slowest 5%",
            f"p95 {overall['latency_p95_ms'] or 0:,.0f} ms at "
            f"{overall['throughput_rps'] or 0:.1f} requests/s",
        ],
    )


def _average_prices(prices: Mapping[str, Price] | None) -> tuple[float, float]:
    """Mean input and output price per token over the scenario's models (1:4 if unknown)."""
    if not prices:
        return 1.0, 4.0
    ins = [p.input_per_mtok for p in prices.values()]
    outs = [p.output_per_mtok for p in prices.values()]
    return sum(ins) / len(ins), sum(outs) / len(outs)


def _retrieval(found: RetrievalFigures | None) -> str:
    if not found:
        return "no retrieval step reported"
    return (
        f"retrieval: top_k {found['top_k_mean'] or 0:g}, "
        f"{found['chunk_tokens_mean'] or 0:,.0f} chunk tokens per search"
    )

"""What a request consumed: tokens, tool calls, retries and their cost, in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentscale.config.scenario import Price
from agentscale.telemetry.body import Trace


@dataclass(slots=True)
class Tally:
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    tool_calls: int | None  # None: the agent reported no steps
    retries: int | None  # None: no tool step said how many attempts it took
    cost_usd: float | None  # None: some tokens had no price, or nothing was reported


def published_price(model: str) -> Price | None:
    """The model's list price from genai-prices' bundled data (no network), if it knows it."""
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    try:
        per_in = calc_price(Usage(input_tokens=1_000_000, output_tokens=0), model_ref=model)
        per_out = calc_price(Usage(input_tokens=0, output_tokens=1_000_000), model_ref=model)
        cached = calc_price(
            Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000, output_tokens=0),
            model_ref=model,
        )
    except (LookupError, ValueError):
        return None
    return Price(
        input_per_mtok=float(per_in.total_price),
        output_per_mtok=float(per_out.total_price),
        cached_input_per_mtok=float(cached.total_price),
    )


class PriceBook:
    """The scenario's ``pricing`` first, then published prices (genai-prices); a model in
    neither is unpriced: its cost is unknown, never zero."""

    def __init__(self, prices: Mapping[str, Price], published: bool = True) -> None:
        self.prices: dict[str, Price | None] = dict(prices)
        self.published = published
        self.unpriced: set[str] = set()  # models seen with tokens but no price
        self.sources: dict[str, str] = {name: "scenario" for name in prices}

    def price(self, model: str) -> Price | None:
        if model not in self.prices:
            found = published_price(model) if self.published else None
            self.prices[model] = found
            if found is not None:
                self.sources[model] = "genai-prices"
        return self.prices[model]

    def cost(self, model: object, tokens_in: int, tokens_out: int, cached: int) -> float | None:
        price = self.price(model) if isinstance(model, str) else None
        if price is None:
            self.unpriced.add(model if isinstance(model, str) else "<no model named>")
            return None
        cached_price = price.cached_input_per_mtok
        if cached_price is None:
            cached_price = price.input_per_mtok
        # A cached-token count is part of the input count (OpenTelemetry GenAI, OpenAI usage).
        fresh = max(tokens_in - cached, 0)
        return (
            fresh * price.input_per_mtok
            + cached * cached_price
            + tokens_out * price.output_per_mtok
        ) / 1e6

    def tally(self, trace: Trace) -> Tally:
        tokens_in = tokens_out = cached_in = tools = retries = 0
        reported = attempts_reported = unmetered_llm = in_unknown = out_unknown = False
        cost: float | None = 0.0
        for step in trace.steps:
            if step.kind == "tool":
                tools += 1
                if step.attempts is not None:
                    attempts_reported = True
                    retries += max(step.attempts - 1, 0)
            if step.kind == "llm" and (step.input_tokens is None or step.output_tokens is None):
                # A model call with a count missing (or refused as out of range): that side's
                # total and the cost are unknown, never a sum that took the gap for 0.
                in_unknown = in_unknown or step.input_tokens is None
                out_unknown = out_unknown or step.output_tokens is None
            if step.input_tokens is None and step.output_tokens is None:
                unmetered_llm = unmetered_llm or step.kind == "llm"
                continue
            n_in, n_out = step.input_tokens or 0, step.output_tokens or 0
            n_cached = step.cached_input_tokens or 0
            cached_in += n_cached
            tokens_in += n_in
            tokens_out += n_out
            reported = True
            # Every step is priced, even once the total is unknown, so that every unpriced
            # model is named in the warning, not just the first.
            step_cost = self.cost(step.model or trace.model, n_in, n_out, n_cached)
            cost = None if step_cost is None or cost is None else cost + step_cost
        if not reported and (trace.input_tokens is not None or trace.output_tokens is not None):
            tokens_in, tokens_out = trace.input_tokens or 0, trace.output_tokens or 0
            # usage with one side missing or refused: that side is unknown, not 0
            in_unknown, out_unknown = trace.input_tokens is None, trace.output_tokens is None
            reported = True
            cost = self.cost(trace.model, tokens_in, tokens_out, 0)
        elif not reported and (not trace.has_trace or unmetered_llm):
            # No trace and no usage, or model calls without token counts: the cost is
            # unknown, not zero (a trace of tools alone made no model call: that costs 0).
            cost = None
        if reported and trace.input_tokens is not None:
            tokens_in, in_unknown = trace.input_tokens, False  # the mapping has the last word
        if reported and trace.output_tokens is not None:
            tokens_out, out_unknown = trace.output_tokens, False
        if in_unknown or out_unknown:
            cost = None
        return Tally(
            tokens_in if reported and not in_unknown else None,
            tokens_out if reported and not out_unknown else None,
            cached_in if reported and cached_in else None,
            tools if trace.steps_reported or trace.steps else None,
            retries if attempts_reported else None,
            cost,
        )

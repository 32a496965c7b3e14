"""Cost of a request from its token counts and the scenario's price table."""

from __future__ import annotations

from collections.abc import Mapping

from agentscale.scenario import Price
from agentscale.trace import Trace, as_int


class PriceBook:
    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)
        self.unpriced: set[str] = set()  # models seen with tokens but no price: cost unknown

    def _cost(
        self, model: str | None, tokens_in: int, tokens_out: int, cached: int
    ) -> float | None:
        price = self.prices.get(model) if model else None
        if price is None:
            self.unpriced.add(model or "<no model named>")
            return None
        cached_price = price.cached_input_per_mtok
        if cached_price is None:
            cached_price = price.input_per_mtok
        fresh = max(tokens_in - cached, 0)
        return (
            fresh * price.input_per_mtok
            + cached * cached_price
            + tokens_out * price.output_per_mtok
        ) / 1e6

    def cost(self, trace: Trace) -> float | None:
        """USD for this request; None when any token is unpriced or nothing was reported."""
        total = 0.0
        priced_any = False
        for step in trace.steps:
            tokens_in = as_int(step.get("input_tokens", step.get("prompt_tokens"))) or 0
            tokens_out = as_int(step.get("output_tokens", step.get("completion_tokens"))) or 0
            if not tokens_in and not tokens_out:
                continue
            model = step.get("model") if isinstance(step.get("model"), str) else trace.model
            cached = as_int(step.get("cached_input_tokens")) or 0
            cost = self._cost(model, tokens_in, tokens_out, cached)
            if cost is None:
                return None
            total += cost
            priced_any = True
        if not priced_any and (trace.input_tokens or trace.output_tokens):
            return self._cost(trace.model, trace.input_tokens or 0, trace.output_tokens or 0, 0)
        if not priced_any and not trace.has_trace:
            return None
        return total

"""Reading the agent trace, judging success and pricing a request (DESIGN trace contract)."""

import orjson
import pytest

from agentscale.config.scenario import Price, Success, Telemetry
from agentscale.telemetry.body import TraceReader
from agentscale.telemetry.judge import Judge, transport_error_class
from agentscale.telemetry.pricing import PriceBook

CONTRACT = {
    "output": "Refund issued for order 1182.",
    "status": "ok",
    "trace": {
        "steps": [
            {
                "kind": "llm",
                "name": "plan",
                "model": "gpt-4o-mini",
                "latency_ms": 812.4,
                "input_tokens": 1200,
                "output_tokens": 90,
                "cached_input_tokens": 0,
            },
            {
                "kind": "retrieval",
                "name": "kb_search",
                "latency_ms": 35.1,
                "top_k": 5,
                "chunk_tokens": 1450,
                "cache": "hit",
            },
            {
                "kind": "tool",
                "name": "crm_lookup",
                "latency_ms": 220.0,
                "attempts": 3,
                "outcome": "ok",
                "error": "HTTP 503",
                "cache": "miss",
            },
            {
                "kind": "guardrail",
                "name": "pii",
                "latency_ms": 1.2,
                "action": "redact",
                "rule": "email",
            },
            {
                "kind": "llm",
                "name": "answer",
                "model": "gpt-4o-mini",
                "prompt_tokens": 300,
                "completion_tokens": 10,
            },
        ],
        "events": [
            {"type": "circuit_open", "target": "crm_lookup"},
            {"type": "fallback", "target": "kb_search", "mode": "keyword"},
        ],
    },
}


def read(body, telemetry=None):
    return TraceReader(telemetry).read(orjson.dumps(body) if not isinstance(body, bytes) else body)


def test_the_contract_shape_is_read_with_token_aliases():
    trace = read(CONTRACT)
    assert trace.status == "ok" and trace.output.startswith("Refund")
    tally = PriceBook({}).tally(trace)
    assert (tally.input_tokens, tally.output_tokens) == (1500, 100)
    assert (tally.tool_calls, tally.retries) == (1, 2)
    assert [s.kind for s in trace.steps] == ["llm", "retrieval", "tool", "guardrail", "llm"]
    assert [e["type"] for e in trace.events] == ["circuit_open", "fallback"]


def test_no_trace_leaves_tokens_unknown_not_zero():
    trace = read(b"plain text answer")
    assert trace.steps == [] and trace.output == "plain text answer"
    tally = PriceBook({}).tally(trace)
    assert tally.input_tokens is None and tally.cost_usd is None


def test_openai_style_usage_through_telemetry_mapping():
    body = {
        "model": "mock-small",
        "choices": [{"message": {"content": "hello"}}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7},
    }
    telemetry = Telemetry(
        output="choices[0].message.content",
        input_tokens="usage.prompt_tokens",
        output_tokens="usage.completion_tokens",
        model="model",
    )
    trace = read(body, telemetry)
    tally = PriceBook({"mock-small": Price(input_per_mtok=1, output_per_mtok=2)}).tally(trace)
    assert (trace.output, tally.input_tokens, tally.output_tokens) == ("hello", 42, 7)
    assert tally.cost_usd == pytest.approx((42 * 1 + 7 * 2) / 1e6)


def test_openai_usage_is_read_without_a_mapping():
    body = {"model": "mock-small", "usage": {"prompt_tokens": 42, "completion_tokens": 7}}
    tally = PriceBook({"mock-small": Price(input_per_mtok=1, output_per_mtok=2)}).tally(read(body))
    assert (tally.input_tokens, tally.output_tokens) == (42, 7) and tally.cost_usd > 0


def test_cost_sums_llm_steps_and_unknown_models_make_it_unknown():
    trace = read(CONTRACT)
    prices = PriceBook({"gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6)})
    assert prices.tally(trace).cost_usd == pytest.approx((1500 * 0.15 + 100 * 0.6) / 1e6)
    nobody = PriceBook({}, published=False)
    assert nobody.tally(trace).cost_usd is None and nobody.unpriced == {"gpt-4o-mini"}


def test_published_prices_fill_in_for_known_models_and_unknown_ones_stay_unknown():
    book = PriceBook({})
    assert book.tally(read(CONTRACT)).cost_usd == pytest.approx((1500 * 0.15 + 100 * 0.6) / 1e6)
    assert book.sources == {"gpt-4o-mini": "genai-prices"}
    mock = read({"trace": {"steps": [{"kind": "llm", "model": "mock-small", "input_tokens": 5}]}})
    assert book.tally(mock).cost_usd is None and book.unpriced == {"mock-small"}


def test_every_unpriced_model_is_named_not_only_the_first():
    steps = [
        {"kind": "llm", "model": model, "input_tokens": 5, "output_tokens": 1}
        for model in ("house-a", "priced", "house-b")
    ]
    book = PriceBook({"priced": Price(input_per_mtok=1, output_per_mtok=1)}, published=False)
    assert book.tally(read({"trace": {"steps": steps}})).cost_usd is None
    assert book.unpriced == {"house-a", "house-b"}


def test_a_trace_without_tokens_costs_nothing_rather_than_unknown():
    body = {"trace": {"steps": [{"kind": "tool", "name": "crm", "attempts": 1}]}}
    assert PriceBook({}).tally(read(body)).cost_usd == 0.0


def test_cached_input_tokens_use_the_cached_price():
    body = {
        "trace": {
            "steps": [
                {
                    "kind": "llm",
                    "model": "m",
                    "input_tokens": 1000,
                    "cached_input_tokens": 800,
                    "output_tokens": 0,
                }
            ]
        }
    }
    prices = PriceBook({"m": Price(input_per_mtok=10, output_per_mtok=0, cached_input_per_mtok=1)})
    assert prices.tally(read(body)).cost_usd == pytest.approx((200 * 10 + 800 * 1) / 1e6)


def judge(**rule):
    return Judge(Success(**rule))


def test_success_needs_status_trace_status_require_and_expected_answer():
    ok = read(CONTRACT)
    assert judge().verdict(200, ok, ("1182",)) == (True, None, True)
    assert judge().verdict(200, ok, ("9999",)) == (False, "wrong_answer", False)
    assert judge(expect="none").verdict(200, ok, ("9999",)) == (True, None, None)
    assert judge().verdict(503, ok, ()) == (False, "http_5xx", None)
    assert judge().verdict(429, ok, ()) == (False, "http_429", None)
    assert judge(status=[200, 404]).verdict(404, ok, ())[0] is True
    error = read({**CONTRACT, "status": "error"})
    assert judge().verdict(200, error, ()) == (False, "agent_error", None)
    strict = judge(require="length(trace.steps) > `10`")
    assert strict.verdict(200, ok, ()) == (False, "require_failed", None)


def test_degraded_answers_still_succeed_and_keep_their_status():
    degraded = read({**CONTRACT, "status": "degraded"})
    assert judge().verdict(200, degraded, ("1182",))[0] is True and degraded.status == "degraded"


def test_exact_and_regex_expectations():
    trace = read({"output": "  Order 42 shipped "})
    assert judge(expect="exact").matches(trace.output, ("order 42 shipped",)) is True
    assert judge(expect="regex").matches(trace.output, (r"Order \d+",)) is True
    assert judge(expect="contains").matches(trace.output, ("42", "shipped")) is True
    assert judge(expect="contains").matches(trace.output, ("42", "lost")) is False


def test_transport_errors_are_classified():
    assert transport_error_class(TimeoutError()) == "timeout"
    assert transport_error_class(ConnectionRefusedError()) == "connection_refused"
    assert transport_error_class(ConnectionResetError()) == "connection_reset"
    assert transport_error_class(OSError()) == "connection_error"


def test_a_refused_token_count_makes_the_total_and_the_cost_unknown_never_zero():
    body = (
        b'{"output": "x", "trace": {"steps": [{"kind": "llm", "name": "p", "model": "mock-small",'
        b' "input_tokens": -1, "output_tokens": 5}]}}'
    )
    trace = TraceReader(None).read(body)
    assert "steps[0].input_tokens: negative (-1)" in trace.warnings
    tally = PriceBook({"mock-small": Price(input_per_mtok=1, output_per_mtok=2)}).tally(trace)
    assert tally.input_tokens is None and tally.output_tokens == 5 and tally.cost_usd is None


def test_nan_and_infinity_in_a_body_drop_only_their_fields_with_a_warning():
    body = (
        b'{"output": "x", "status": "ok", "trace": {"steps": [{"kind": "tool", "name": "t",'
        b' "latency_ms": NaN, "attempts": 1}, {"kind": "tool", "name": "u", "latency_ms":'
        b" Infinity}]}}"
    )
    trace = TraceReader(None).read(body)
    assert [s.name for s in trace.steps] == ["t", "u"] and trace.steps[0].attempts == 1
    assert all(s.latency_ms is None for s in trace.steps)
    assert any("NaN or Infinity" in w for w in trace.warnings)
    assert any("steps[0].latency_ms" in w for w in trace.warnings)


def test_a_model_call_without_counts_beside_a_metered_one_leaves_totals_unknown():
    body = (
        b'{"output": "x", "trace": {"steps": [{"kind": "llm", "name": "a", "model": "mock-small",'
        b' "input_tokens": 10, "output_tokens": 5}, {"kind": "llm", "name": "b", "model":'
        b' "mock-small", "input_tokens": -1, "output_tokens": -3}]}}'
    )
    prices = PriceBook({"mock-small": Price(input_per_mtok=1, output_per_mtok=2)})
    tally = prices.tally(TraceReader(None).read(body))
    assert tally.input_tokens is None and tally.output_tokens is None and tally.cost_usd is None
    usage = (
        b'{"output": "x", "model": "mock-small", "usage": {"input_tokens": -5, "output_tokens": 7}}'
    )
    tally = prices.tally(TraceReader(None).read(usage))
    assert tally.input_tokens is None and tally.output_tokens == 7 and tally.cost_usd is None

"""OpenTelemetry spans as agentscale keeps them: decoded from OTLP (protobuf or JSON) into flat
rows for ``spans.parquet``, and read back as trace steps.

A span becomes a step by the scenario's rules (``telemetry.spans``) first, then by the
conventions agent frameworks emit: the OpenTelemetry GenAI conventions (``gen_ai.*``: chat,
text_completion, generate_content -> llm; execute_tool -> tool; embeddings, retrieval ->
retrieval; invoke_agent and the like are containers), OpenInference (``openinference.span.kind``
LLM, TOOL, RETRIEVER, EMBEDDING, RERANKER, GUARDRAIL; AGENT and CHAIN are containers), and an
HTTP client span to a known dependency's address (a tool step named after it, when no span
above it is a step already).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agentscale.config.scenario import SpanRule
from agentscale.jsondata import Json, JsonObject
from agentscale.telemetry.trace import printable

ERROR = 2  # OTLP status code
CLIENT = 3  # OTLP span kind

GENAI_KINDS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "execute_tool": "tool",
    "embeddings": "retrieval",
    "retrieval": "retrieval",
}
OPENINFERENCE_KINDS = {
    "LLM": "llm",
    "TOOL": "tool",
    "RETRIEVER": "retrieval",
    "EMBEDDING": "retrieval",
    "RERANKER": "retrieval",
    "GUARDRAIL": "guardrail",
}
# Names of the same figure in the conventions, newest first.
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHED_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
TOOL_NAME = ("gen_ai.tool.name", "tool.name")


@dataclass(frozen=True, slots=True)
class SpanRow:
    """One span, flat: the columns of ``spans.parquet``."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start: float  # epoch seconds
    end: float
    status_code: int
    status_message: str | None
    attributes: str  # JSON object
    service: str | None


# --- decoding OTLP ---------------------------------------------------------------------------
def decode_protobuf(body: bytes) -> list[SpanRow]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    rows = []
    for resource_spans in request.resource_spans:
        service = _service({a.key: _any_value(a.value) for a in resource_spans.resource.attributes})
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {a.key: _any_value(a.value) for a in span.attributes}
                rows.append(
                    SpanRow(
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex() or None,
                        span.name,
                        int(span.kind),
                        span.start_time_unix_nano / 1e9,
                        span.end_time_unix_nano / 1e9,
                        int(span.status.code),
                        span.status.message or None,
                        orjson.dumps(attributes).decode(),
                        service,
                    )
                )
    return rows


def _any_value(value: Any) -> Json:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return bytes(value.bytes_value).hex()
    found: Json = getattr(value, which)
    return found


def decode_json(body: bytes) -> list[SpanRow]:
    """OTLP/JSON: ids are hex strings, times nanosecond strings or numbers."""
    document = orjson.loads(body)
    rows = []
    for resource_spans in _list(document, "resourceSpans"):
        resource = resource_spans.get("resource") if isinstance(resource_spans, dict) else None
        service = _service(_attributes(resource or {}))
        for scope_spans in _list(resource_spans, "scopeSpans"):
            for span in _list(scope_spans, "spans"):
                if not isinstance(span, dict):
                    continue
                status = span.get("status") or {}
                rows.append(
                    SpanRow(
                        str(span.get("traceId", "")).lower(),
                        str(span.get("spanId", "")).lower(),
                        str(span.get("parentSpanId") or "").lower() or None,
                        str(span.get("name", "")),
                        _kind(span.get("kind")),
                        int(span.get("startTimeUnixNano") or 0) / 1e9,
                        int(span.get("endTimeUnixNano") or 0) / 1e9,
                        _status(status.get("code") if isinstance(status, dict) else None),
                        (status.get("message") or None) if isinstance(status, dict) else None,
                        orjson.dumps(_attributes(span)).decode(),
                        service,
                    )
                )
    return rows


def _list(node: Any, key: str) -> list[Any]:
    found = node.get(key) if isinstance(node, dict) else None
    return found if isinstance(found, list) else []


def _attributes(node: Mapping[str, Any]) -> JsonObject:
    out: JsonObject = {}
    for item in _list(node, "attributes"):
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            out[item["key"]] = _json_value(item.get("value"))
    return out


def _json_value(value: Any) -> Json:
    if not isinstance(value, dict) or not value:
        return None
    which, inner = next(iter(value.items()))
    if which == "arrayValue":
        return [_json_value(v) for v in _list(inner, "values")]
    if which == "kvlistValue":
        return {kv.get("key"): _json_value(kv.get("value")) for kv in _list(inner, "values")}
    if which == "intValue":
        return int(inner)
    found: Json = inner
    return found


_KINDS = {"SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
          "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}  # fmt: skip


def _kind(value: Any) -> int:
    if isinstance(value, int):
        return value
    return _KINDS.get(str(value), 0)


def _status(value: Any) -> int:
    if isinstance(value, int):
        return value
    return {"STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(str(value), 0)


def _service(resource: Mapping[str, Json]) -> str | None:
    name = resource.get("service.name")
    return name if isinstance(name, str) else None


# --- spans -> steps ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpanStep:
    """What one span says as a step (before retries are merged)."""

    kind: str
    name: str
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    failed: bool
    error: str | None


def classify(
    name: str,
    kind: int,
    attributes: Mapping[str, Json],
    status_code: int,
    status_message: str | None,
    rules: Iterable[SpanRule] = (),
    dependencies: Mapping[str, str] | None = None,
) -> SpanStep | None:
    """The step a span stands for, or None for a container or a span of no interest."""
    rule = next((r for r in rules if _matches(r, name, attributes)), None)
    step_kind: str | None = None
    step_name = name
    if rule is not None:
        if rule.kind == "ignore":
            return None
        step_kind = rule.kind
        step_name = (_text(attributes.get(rule.name_from)) if rule.name_from else None) or name
    if step_kind is None:
        step_kind, step_name = _convention(name, kind, attributes, dependencies or {})
    if step_kind is None:
        return None
    error_type = _text(attributes.get("error.type"))
    failed = status_code == ERROR or error_type is not None
    if rule is not None and rule.error_if is not None and not failed:
        value = _text(attributes.get(rule.error_if.attribute)) or ""
        failed = re.search(rule.error_if.matches, value) is not None
    return SpanStep(
        kind=step_kind,
        name=printable((step_name or name)[:200]),
        model=_text(_first(attributes, (rule.model_from,) if rule and rule.model_from else MODEL)),
        input_tokens=_count(_first(attributes, INPUT_TOKENS)),
        output_tokens=_count(_first(attributes, OUTPUT_TOKENS)),
        cached_input_tokens=_count(_first(attributes, CACHED_TOKENS)),
        failed=failed,
        error=(status_message or error_type) if failed else None,
    )


def _convention(
    name: str, kind: int, attributes: Mapping[str, Json], dependencies: Mapping[str, str]
) -> tuple[str | None, str]:
    operation = _text(attributes.get("gen_ai.operation.name"))
    if operation in GENAI_KINDS:
        found = GENAI_KINDS[operation]
        tool = _text(_first(attributes, TOOL_NAME))
        return found, tool if found == "tool" and tool else name
    open_kind = _text(attributes.get("openinference.span.kind"))
    if open_kind in OPENINFERENCE_KINDS:
        found = OPENINFERENCE_KINDS[open_kind]
        tool = _text(_first(attributes, TOOL_NAME))
        return found, tool if found == "tool" and tool else name
    if kind == CLIENT and dependencies:
        address = _address(attributes)
        if address is not None and address in dependencies:
            return "tool", dependencies[address]
    return None, name


def _address(attributes: Mapping[str, Json]) -> str | None:
    host = _text(attributes.get("server.address") or attributes.get("net.peer.name"))
    port = attributes.get("server.port") or attributes.get("net.peer.port")
    if host and port:
        return f"{host}:{port}"
    url = _text(attributes.get("url.full") or attributes.get("http.url"))
    match = re.match(r"^\w+://([^/]+)", url or "")
    return match.group(1) if match else None


def _matches(rule: SpanRule, name: str, attributes: Mapping[str, Json]) -> bool:
    if rule.name is not None and re.search(rule.name, name) is None:
        return False
    return all(_text(attributes.get(key)) == value for key, value in rule.attributes.items())


def _first(attributes: Mapping[str, Json], keys: Iterable[str]) -> Json:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _text(value: Json) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return printable(str(value)[:200])


def _count(value: Json) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and 0 <= value <= 100_000_000:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None

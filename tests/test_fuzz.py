"""Hostile values in the fields the JSON Schemas name: `validate` answers with a clear error or
accepts, never a traceback; whatever it accepts, a two-second load runs without crashing.

Each example is a valid file with one to three fields (chosen from the schema's properties)
set to a hostile value: NaN, infinities, huge or negative numbers, line breaks, wrong types.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentscale.commands.validate import schema_document, validate_file
from agentscale.errors import AgentscaleError
from conftest import DATASET, agentscale

# Scenarios validate took, with how hostile their values were, for the load test below.
ACCEPTED: list[tuple[int, int, dict[str, Any]]] = []
LOADS = 5


def _paths(schema: dict[str, Any], node: dict[str, Any], prefix: tuple[str, ...], depth: int = 0):
    """(path, JSON type) for every property of the schema, through $ref, unions and nesting."""
    if depth > 6:
        return
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if prefix and "type" in node:
        yield prefix, node["type"]
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        yield from _paths(schema, option, prefix, depth + 1)
    for name, child in node.get("properties", {}).items():
        yield (*prefix, name), None
        yield from _paths(schema, child, (*prefix, name), depth + 1)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _paths(schema, node["additionalProperties"], (*prefix, "acme"), depth + 1)
    if isinstance(node.get("items"), dict):
        yield from _paths(schema, node["items"], (*prefix, "0"), depth + 1)


def _all_paths(kind: str) -> list[tuple[tuple[str, ...], str | None]]:
    schema = schema_document(kind)
    return sorted(set(_paths(schema, schema, ())), key=str)


def _present(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths a valid file already spells: the fields users really write."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _present(value, (*prefix, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _present(value, (*prefix, str(index)))
    return found


# Values of the right JSON type that are still wrong: what a schema's types let through.
# Edge values that may well be valid are among them, so that some files get through to a load.
NUMBERS = [float("nan"), float("inf"), -float("inf"), 1e300, 1e12, -1, 0, -0.0, 1e-300, 2**63,
           10**30, 99999999999999999999, 1, 0.5, 1e-9, 49_999, 100_000]  # fmt: skip
STRINGS = ["", "a\r\nb", "x" * 10_000, "\x00", "{{nope}}", "${NOPE_AS_FUZZ}", ".nan", "-5s",
           "1e12", "\u202e\ud7ff", "99999999999999999999ms", "0.0.0.0:1", "x", "1s", "10%",
           "1ms", "< 0"]  # fmt: skip
BY_TYPE = {
    "number": st.sampled_from(NUMBERS),
    "integer": st.sampled_from([n for n in NUMBERS if isinstance(n, int)] + [2**31, -(2**63)]),
    "string": st.sampled_from(STRINGS),
    "boolean": st.booleans(),
    "object": st.sampled_from([{}, {"x": float("nan")}]),
    "array": st.sampled_from([[], [float("nan")], [{}]]),
}
HOSTILE = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e12, -1, 0, 10**30, 2**63]),
    st.sampled_from(["", "a\r\nb", "1e12", "-5s", ".inf", "99999999999999999999", "\x00"]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(min_value=-5, max_value=5), max_size=2),
)


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put ``value`` at ``path``, making the containers on the way (a list's index is
    clamped to its length)."""
    node: Any = document
    for part in path[:-1]:
        if isinstance(node, list):
            if not node:
                node.append({})
            index = min(int(part) if part.isdigit() else 0, len(node) - 1)
            if not isinstance(node[index], dict | list):
                node[index] = {}
            node = node[index]
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(node, list):
        if not node:
            node.append(None)
        node[min(int(last) if last.isdigit() else 0, len(node) - 1)] = value
    else:
        node[last] = value


SCENARIO: dict[str, Any] = {
    "apiVersion": "agentscale/v1",
    "kind": "Scenario",
    "name": "fuzz",
    "seed": 1,
    "target": {
        "url": "http://127.0.0.1:9/agent",
        "timeout": "2s",
        "headers": {"X-Test": "1"},
        "body": {"tenant_id": "{{tenant}}", "input": "{{prompt}}"},
    },
    "workload": {"dataset": "golden.jsonl"},
    "tenants": {"acme": 1.0},
    "load": {"shape": {"kind": "constant", "rps": 5}, "duration": "2s", "max_concurrency": 20},
    "pricing": {"mock-small": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}},
    "gates": {"latency_p95_ms": {"max_increase": "10%"}, "slo": {"latency_p95_ms": "< 8000"}},
}
PROFILE: dict[str, Any] = {
    "apiVersion": "agentscale/v1",
    "kind": "FaultProfile",
    "name": "fuzz",
    "seed": 1,
    "dependencies": [{"name": "crm", "upstream": "127.0.0.1:9", "listen": "127.0.0.1:21900"}],
    "windows": [
        {
            "name": "w",
            "target": "crm",
            "at": "1s",
            "for": "1s",
            "toxic": {"type": "latency", "latency": 10},
            "ramp": [{"at": "0.5s", "toxic": {}}],
        },
    ],
    "expect": [{"window": "w", "success_rate": ">= 0.5"}],
}


def _hostility(value: Any) -> int:
    """How likely a value is to break something downstream of validation."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return 3
    if isinstance(value, int | float) and (value < 0 or abs(value) > 1e6):
        return 2
    if isinstance(value, str) and (not value or any(ord(c) < 32 for c in value)):
        return 2
    return 1 if isinstance(value, list | dict) and not value else 0


def _check(folder: Path, base: dict[str, Any], paths, data) -> tuple[int, dict[str, Any]] | None:
    document = copy.deepcopy(base)
    score = 0
    # Half the draws from the fields the valid file has, half from all the schema names; the
    # value is of the type the schema gives the field (or anything, when it gives none).
    where = st.one_of(st.sampled_from([(p, None) for p in _present(base)]), st.sampled_from(paths))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path, kind = data.draw(where)
        value = data.draw(BY_TYPE.get(kind, HOSTILE) if isinstance(kind, str) else HOSTILE)
        score += _hostility(value)
        _set(document, path, value)
    path = folder / "fuzzed.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        validate_file(path)
    except AgentscaleError as error:
        assert error.exit_code == 2
        assert error.render()  # one message, with where and what
        return None
    return score, document


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    found = tmp_path_factory.mktemp("fuzz")
    (found / "golden.jsonl").write_text(DATASET.read_text())
    return found


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_scenarios_are_refused_cleanly_or_accepted(folder, data):
    accepted = _check(folder, SCENARIO, _all_paths("scenario"), data)
    if accepted is not None:
        ACCEPTED.append((accepted[0], len(ACCEPTED), accepted[1]))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_fault_profiles_are_refused_cleanly_or_accepted(folder, data):
    _check(folder, PROFILE, _all_paths("fault-profile"), data)


def test_what_validate_accepts_loads_for_two_seconds_without_crashing(folder, server):
    assert ACCEPTED, "the fuzzing above accepted no scenario at all"
    chosen = [document for _, _, document in sorted(ACCEPTED, key=lambda a: (-a[0], a[1]))]
    for index, document in enumerate(chosen[:LOADS]):
        document = copy.deepcopy(document)
        target = document.get("target")
        if isinstance(target, dict) and str(target.get("url", "")).startswith("http://127.0.0.1:9"):
            target["url"] = server.url("/agent")
        path = folder / f"load-{index}.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        result = agentscale(
            "load", str(path), "--duration", "2s", "--out", str(folder / "runs"), timeout=90
        )
        assert "Traceback" not in result.output, result.output
        assert result.code in (0, 1, 2, 3), result.output

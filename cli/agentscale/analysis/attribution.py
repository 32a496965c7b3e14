"""Which requests met an injected fault: the HTTP fault stage records the trace context the
agent forwarded with each call it answered with a fault; joined here to the requests. A
failed request that met one failed because of that dependency (``tool_error`` or
``llm_error``), not because its answer was simply wrong."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from agentscale.records.frames import RunFrames
from agentscale.telemetry.context import request_id_of, seq_of

# A failure that says only "the answer was not right"; a fault met explains it better.
VAGUE = frozenset({"wrong_answer", "require_failed", "agent_error"})


def attribute_faults(frames: RunFrames, nonce: str | None, kinds: Mapping[str, str]) -> int:
    """Set ``fault_hit`` (the windows whose faults each request met) and relabel the vague
    failures of those requests; returns how many requests met a fault. ``kinds``: what each
    dependency is (``llm``, ``tool``...), for the error class."""
    injected = frames.injected
    requests = frames.requests
    if injected is None or injected.empty:
        return 0
    by_id = pd.Series(range(len(requests)), index=requests["request_id"].astype(str))
    hits: dict[int, set[str]] = {}
    dependency_of: dict[int, str] = {}
    for row in injected.itertuples(index=False):
        position = _position(row.request_id, row.trace_id, nonce, by_id)
        if position is None:
            continue
        hits.setdefault(position, set()).add(str(row.window or row.dependency))
        dependency_of.setdefault(position, str(row.dependency))
    if not hits:
        return 0
    column = requests["fault_hit"].astype(object) if "fault_hit" in requests else None
    values = list(column) if column is not None else [None] * len(requests)
    classes = list(requests["error_class"].astype(object))
    success = requests["success"].to_numpy(dtype=bool)
    for position, windows in hits.items():
        values[position] = ",".join(sorted(windows))
        if not success[position] and classes[position] in VAGUE:
            kind = kinds.get(dependency_of[position], "tool")
            classes[position] = "llm_error" if kind == "llm" else "tool_error"
    requests["fault_hit"] = pd.Series(values, index=requests.index, dtype=object)
    requests["error_class"] = pd.Categorical(classes)
    frames.reset()
    return len(hits)


def _position(request_id: object, trace: object, nonce: str | None, by_id: pd.Series) -> int | None:
    """The row of the request a forwarded call belonged to: by its baggage's request id, else
    by its trace id (one of this run's)."""
    if isinstance(request_id, str) and request_id in by_id.index:
        return int(by_id[request_id])
    if isinstance(trace, str) and nonce:
        seq = seq_of(trace, nonce)
        if seq is not None and request_id_of(seq) in by_id.index:
            return int(by_id[request_id_of(seq)])
    return None

"""``python -m agentscale.demo``: the stack for ``agentscale load`` (one JSON line when ready)."""

from __future__ import annotations

import argparse
import sys

import orjson

from agentscale.demo.settings import DEPENDENCIES, DemoSettings
from agentscale.demo.stack import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m agentscale.demo")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--profile", choices=("resilient", "naive"), default="resilient")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--route", action="append", default=[], help="NAME=HOST:PORT")
    parser.add_argument("--cache-scope-bug", action="store_true")
    parser.add_argument("--llm-capacity", type=int)
    parser.add_argument("--bulkheads", choices=("on", "off"))
    parser.add_argument("--tenant-concurrency", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument("--telemetry", choices=("body", "otlp", "both"), default="body")
    args = parser.parse_args()
    routes = dict(item.split("=", 1) for item in args.route)
    unknown = set(routes) - set(DEPENDENCIES)
    if unknown:
        parser.error(f"unknown dependency {sorted(unknown)}; known: {', '.join(DEPENDENCIES)}")
    settings = DemoSettings(
        profile=args.profile,
        time_scale=args.time_scale,
        jitter=min(max(args.jitter, 0.0), 1.0),
        port=args.port,
        routes=routes,
        cache_scope_bug=args.cache_scope_bug,
        llm_capacity=args.llm_capacity,
        bulkheads=None if args.bulkheads is None else args.bulkheads == "on",
        tenant_concurrency=args.tenant_concurrency,
        max_steps=args.max_steps,
        max_tokens=args.max_tokens,
        max_seconds=args.max_seconds,
        telemetry=args.telemetry,
    )

    def ready(description: dict[str, object]) -> None:
        sys.stdout.write(orjson.dumps(description).decode() + "\n")
        sys.stdout.flush()

    serve(settings, ready, watch=True)


if __name__ == "__main__":
    main()

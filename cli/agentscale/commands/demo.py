"""``agentscale demo serve``: the reference agent stack in the foreground."""

from __future__ import annotations

from agentscale import console
from agentscale.demo.settings import DemoSettings
from agentscale.demo.stack import serve


def serve_demo(settings: DemoSettings) -> int:
    def ready(description: dict[str, object]) -> None:
        console.print_line(
            f"agent: POST {description['agent']}  ({settings.profile}, "
            f"time scale {settings.time_scale:g}); Ctrl-C stops"
        )
        services = description["services"]
        assert isinstance(services, dict)
        for name, address in services.items():
            console.print_line(f"  {name:<11} {address}")

    serve(settings, ready)
    return 0

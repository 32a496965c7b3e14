"""Entry of the engine's child process: ``python -m agentscale.engine SPEC.json``.

Locust (and gevent's monkey-patching) live here only, never in the CLI process.
"""

from __future__ import annotations

import sys

from agentscale.engine import early


def main() -> int:
    early.watch()  # from here on, a stop signal is an interruption, never a traceback
    # Everything else is imported once the signals are watched (pydantic and the schemas
    # take a while: a Ctrl-C then must not surface as a traceback from an import).
    from agentscale.engine.spec import EngineSpec
    from agentscale.errors import EXIT_INTERRUPTED, AgentscaleError

    with open(sys.argv[1], encoding="utf-8") as file:
        spec = EngineSpec.model_validate_json(file.read())
    from agentscale.engine.locust_runner import run

    if early.requested:
        print("stopped before the load began", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return run(spec)
    except AgentscaleError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C while the engine drains
        print("stopped by a signal", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""Entry of the engine's child process: ``python -m agentscale.engine SPEC.json``, or ``--spare``
(started early, it reads where its spec and log are from stdin: see spare.py).

Locust (and gevent's monkey-patching) live here only, never in the CLI process.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from agentscale.engine import early


def main() -> int:
    early.watch()  # from here on, a stop signal is an interruption, never a traceback
    early.without_pandas()
    # Everything else is imported once the signals are watched (pydantic and the schemas
    # take a while: a Ctrl-C then must not surface as a traceback from an import).
    from agentscale.engine import spare
    from agentscale.engine.spec import EngineSpec
    from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK, AgentscaleError

    if sys.argv[1:] == [spare.FLAG]:
        from agentscale.engine import locust_runner  # noqa: F401  # what a spare is for

        spec_path = spare.receive()
        if spec_path is None:  # the CLI went away, or needed no engine after all
            return EXIT_OK
    else:
        spec_path = Path(sys.argv[1])
    spec = EngineSpec.model_validate_json(spec_path.read_text(encoding="utf-8"))
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
    code = main()
    gc.freeze()  # the records are written and closed: no collection on the way out
    sys.exit(code)

"""Errors that reach the user: each carries a message, a hint and the exit code to leave with.

The CLI turns them into one printed message and exits in one place (``agentscale.cli.main``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # regression, SLO or resilience expectation failed
EXIT_USAGE = 2  # usage or configuration error
EXIT_INVALID = 3  # run invalid or inconclusive
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Location:
    """Where in a user's file something is wrong (1-based line and column)."""

    path: Path
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = str(self.path)
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


class AgentscaleError(Exception):
    """An error the user can act on. Never shown with a traceback."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: Location | None = None,
        field: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location
        self.field = field
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        """``file:line:col: field: message``, then the hint on its own line."""
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        text = ": ".join(parts)
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(AgentscaleError):
    """A scenario, dataset or option that cannot be used as written (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass, so the user fixes them all at once."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(errors[0].message, hint=errors[0].hint)
        self.errors = errors

    def render(self) -> str:
        return "\n".join(error.render() for error in self.errors)


class RunInvalid(AgentscaleError):
    """The run cannot be trusted: infrastructure failed, the load generator saturated (exit 3)."""

    exit_code = EXIT_INVALID


class Interrupted(AgentscaleError):
    """The user stopped the run (Ctrl-C or SIGTERM); what was measured is kept."""

    exit_code = EXIT_INTERRUPTED

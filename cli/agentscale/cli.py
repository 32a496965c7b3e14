"""The command line. Heavy modules are imported inside the commands so ``--help`` stays fast;
``main`` is the one place the process exits."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from types import FrameType

from agentscale import stops
from agentscale.stops import requested as STOPPED  # whatever they break, the run was interrupted


def _remember(signum: int, _frame: FrameType | None) -> None:
    STOPPED.append(signum)


def _stop(signum: int, _frame: FrameType | None) -> None:
    STOPPED.append(signum)
    # Only the first stop interrupts: a second one, raised into the clean-up the first
    # started, would cut it short (and could end the process by SIGINT instead of 130).
    if len(STOPPED) == 1:
        raise KeyboardInterrupt


def _catch_stops(handler: object) -> None:
    """Ctrl-C and SIGTERM end the command as an interruption (exit 130), from the first moment
    (commands that drive children install their own handlers on top, and forward them)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, handler)  # type: ignore[arg-type]


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    # A stop raised inside a finalizer cannot propagate: Python would print it as "Exception
    # ignored" with a traceback. It is in ``STOPPED`` all the same, where the run sees it.
    if info.exc_type is not KeyboardInterrupt:
        sys.__unraisablehook__(info)


# Before the imports below, a stop is only remembered (raising inside an import can break the
# import machinery); ``run`` then ends at once with 130.
_catch_stops(_remember)
sys.unraisablehook = _unraisable

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from agentscale.engine import spare
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, AgentscaleError, ConfigError

app = typer.Typer(
    name="agentscale",
    help="Load and chaos testing for AI-agent services, measured per step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class SchemaName(StrEnum):
    scenario = "scenario"
    fault_profile = "fault-profile"


@app.command()
def load(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    duration: Annotated[
        str | None, typer.Option(help="override load.duration, e.g. 30s or 5m")
    ] = None,
    out: Annotated[Path, typer.Option(help="output root; one folder per run")] = Path("reports"),
    seed: Annotated[
        int | None, typer.Option(min=0, max=2**63 - 1, help="fix the request mix and arrivals")
    ] = None,
    allow_remote: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-remote",
            metavar="HOST",
            help="allow a host beyond loopback (target, dependency, Toxiproxy)",
        ),
    ] = None,
    faults: Annotated[
        Path | None, typer.Option(help="fault profile (overrides the scenario's faults:)")
    ] = None,
    toxiproxy_url: Annotated[
        str | None, typer.Option(help="use this running toxiproxy-server instead of our own")
    ] = None,
    baseline: Annotated[Path | None, typer.Option(help="gate against this baseline")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="run K times; the gate sees the noise")] = 1,
    force: Annotated[bool, typer.Option(help="compare with a baseline of another scenario")] = (
        False
    ),
    workers: Annotated[
        int,
        typer.Option(min=0, max=64, help="Locust workers to start here (master/worker mode)"),
    ] = 0,
    remote_workers: Annotated[
        int, typer.Option(min=0, max=1024, help="workers to wait for from other machines")
    ] = 0,
    master_bind: Annotated[
        str, typer.Option(help="HOST:PORT the master listens on for workers")
    ] = "127.0.0.1:0",
) -> int:
    """Run a scenario: drive the load, record every request, score it, and give a verdict."""
    spare.prepare()  # the engine's imports overlap ours and the checks
    from agentscale.commands.load import LoadOptions, run_load

    _utf8(scenario, "SCENARIO", out=out, faults=faults, baseline=baseline)
    seconds = _seconds(duration, "--duration")
    if seconds is not None and seconds <= 0:
        raise ConfigError("must be longer than zero", field="--duration")
    options = LoadOptions(
        out=out,
        duration=seconds,
        seed=seed,
        allow_remote=tuple(allow_remote or ()),
        faults=faults,
        toxiproxy_url=toxiproxy_url,
        baseline=baseline,
        repeat=repeat,
        force=force,
        workers=workers,
        remote_workers=remote_workers,
        master_bind=_address(master_bind, "--master-bind"),
    )
    if remote_workers and master_bind.startswith("127.0.0.1:0"):
        raise ConfigError(
            "remote workers need a port they can reach",
            field="--master-bind",
            hint="e.g. --master-bind 0.0.0.0:5557, then on each machine: "
            "agentscale worker --master THIS_HOST:5557",
        )
    return run_load(scenario, options)


@app.command()
def capacity(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    slo: Annotated[
        str,
        typer.Option(
            help='what a stage must hold, e.g. "latency_p95_ms < 8000, success_rate >= 0.99"'
        ),
    ],
    start: Annotated[str, typer.Option(help="the first rate tried, e.g. 2rps")] = "2rps",
    max_rate: Annotated[
        str, typer.Option("--max", help="the highest rate tried, e.g. 500rps")
    ] = "500rps",
    stage: Annotated[str, typer.Option(help="each stage's length, at least, e.g. 30s")] = "30s",
    min_requests: Annotated[
        int, typer.Option(min=10, help="arrivals per stage, at least (slow stages run longer)")
    ] = 100,
    precision: Annotated[
        str, typer.Option(help="bisect until first bad / last good is within this")
    ] = "5%",
    peak: Annotated[
        str | None, typer.Option(help="the peak to serve, e.g. 120rps: how many replicas")
    ] = None,
    headroom: Annotated[str, typer.Option(help="spare capacity at --peak")] = "30%",
    baseline: Annotated[
        Path | None, typer.Option(help="a saved capacity.json (or its run folder) to gate on")
    ] = None,
    tolerance: Annotated[
        str, typer.Option(help="a sustainable rate this far below the baseline's regressed")
    ] = "10%",
    force: Annotated[bool, typer.Option(help="compare with a capacity of another scenario")] = (
        False
    ),
    faults: Annotated[
        Path | None, typer.Option(help="fault profile, replayed from each stage's start")
    ] = None,
    out: Annotated[Path, typer.Option(help="output root; one folder for the search")] = Path(
        "reports"
    ),
    seed: Annotated[
        int | None, typer.Option(min=0, max=2**63 - 1, help="fix the request mix and arrivals")
    ] = None,
    allow_remote: Annotated[
        list[str] | None,
        typer.Option("--allow-remote", metavar="HOST", help="allow a host beyond loopback"),
    ] = None,
    toxiproxy_url: Annotated[
        str | None, typer.Option(help="use this running toxiproxy-server instead of our own")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=0, max=64, help="Locust workers to start here (master/worker mode)")
    ] = 0,
) -> int:
    """Find the highest rate the target sustains under an SLO, the knee, and the step that
    gives way first; with --peak, the replicas needed."""
    spare.prepare()
    from agentscale.analysis.capacity import parse_slos
    from agentscale.commands.capacity import run_capacity
    from agentscale.commands.capacity_stage import CapacityOptions
    from agentscale.commands.load import LoadOptions
    from agentscale.config.units import RATE_HINT, parse_fraction, parse_rate

    def rate(text: str, field: str) -> float:
        try:
            return parse_rate(text)
        except ValueError as error:
            raise ConfigError(str(error), field=field, hint=RATE_HINT) from None

    def share(text: str, field: str, high: float, *, zero: bool) -> float:
        try:
            value = parse_fraction(text)
        except ValueError as error:
            raise ConfigError(str(error), field=field, hint="e.g. 5% or 0.05") from None
        low_ok = value >= 0 if zero else value > 0
        if not low_ok or value > high:
            span = f"from {'0' if zero else 'above 0'} to {high:.0%}"
            raise ConfigError(f"{text!r} is out of range ({span})", field=field)
        return value

    _utf8(scenario, "SCENARIO", out=out, faults=faults, baseline=baseline)
    try:
        slos = parse_slos(slo)
    except ValueError as error:
        raise ConfigError(
            str(error),
            field="--slo",
            hint='e.g. --slo "latency_p95_ms < 8000, success_rate >= 0.99"',
        ) from None
    first, highest = rate(start, "--start"), rate(max_rate, "--max")
    if highest < first:
        raise ConfigError(f"--max {max_rate} is below --start {start}", field="--max")
    seconds = _seconds(stage, "--stage")
    if seconds is None or seconds < 1:
        raise ConfigError("a stage lasts at least 1 s", field="--stage", hint="e.g. 30s")
    options = CapacityOptions(
        load=LoadOptions(
            out=out,
            seed=seed,
            allow_remote=tuple(allow_remote or ()),
            faults=faults,
            toxiproxy_url=toxiproxy_url,
            workers=workers,
        ),
        slos=slos,
        start=first,
        maximum=highest,
        stage=seconds,
        min_requests=min_requests,
        precision=share(precision, "--precision", 1.0, zero=False),
        peak=rate(peak, "--peak") if peak is not None else None,
        headroom=share(headroom, "--headroom", 10.0, zero=True),
        baseline=baseline,
        tolerance=share(tolerance, "--tolerance", 1.0, zero=True),
        force=force,
    )
    return run_capacity(scenario, options)


def _utf8(scenario: Path, name: str, **options: Path | None) -> None:
    """Every path a run records (run.json, the report) is written as UTF-8: a file or folder
    whose name is not valid UTF-8 is refused before anything starts, not a traceback later."""
    given = {name: scenario} | {f"--{k.replace('_', '-')}": v for k, v in options.items()}
    for field, path in given.items():
        if path is None:
            continue
        try:
            str(path.absolute()).encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                f"{os.fsencode(path.absolute())!r} is not valid UTF-8",
                field=field,
                hint="rename the file or folder (its path is recorded in run.json)",
            ) from None


def _seconds(text: str | None, field: str) -> float | None:
    """A duration option (30s, 5m, ...) in seconds; a usage error names the option."""
    from agentscale.config.units import DURATION_HINT, parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration", field=field, hint=DURATION_HINT) from None


def _address(text: str, field: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{text!r} is not HOST:PORT", field=field, hint="e.g. 127.0.0.1:5557")
    return host, int(port)


@app.command()
def worker(
    master: Annotated[str, typer.Option(help="HOST:PORT of the master (agentscale load)")],
) -> int:
    """Join an `agentscale load --workers/--remote-workers` run as one more Locust worker."""
    host, port = _address(master, "--master")
    from agentscale.commands.worker import worker as run_worker

    return run_worker(host, port)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="scenarios and fault profiles to check")],
) -> int:
    """Check scenarios and fault profiles; print file:line:col: field: message (exit 2)."""
    from agentscale import console
    from agentscale.commands.validate import validate_file

    failed = False
    for path in files:
        try:
            for warning in validate_file(path):
                console.print_warning(warning)
        except AgentscaleError as error:
            console.print_error(error)
            failed = True
        else:
            console.print_line(f"ok: {path}")
    return EXIT_USAGE if failed else EXIT_OK


@app.command()
def schema(
    name: Annotated[
        SchemaName, typer.Argument(metavar="scenario|fault-profile", help="which schema")
    ],
) -> int:
    """Print the JSON Schema of a file kind (for editor completion)."""
    import json

    from agentscale import console
    from agentscale.commands.validate import schema_document

    console.print_plain(json.dumps(schema_document(name.value), indent=2))
    return EXIT_OK


@app.command("scorecard")
def scorecard_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
) -> int:
    """(Re)compute a run's scorecard, write scorecard.json and print it."""
    from agentscale.commands.finished import scorecard

    return scorecard(run_dir)


baseline_app = typer.Typer(
    help="Baselines: the scorecards a run is gated against.", no_args_is_help=True
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("save")
def baseline_save(
    run_dirs: Annotated[
        list[Path], typer.Argument(metavar="RUN_DIR...", help="one or more run folders")
    ],
    name: Annotated[str, typer.Option(help="the baseline's name")],
    folder: Annotated[Path, typer.Option("--dir", help="where baselines are kept")] = Path(
        "reports/baselines"
    ),
) -> int:
    """Store a baseline from one or more runs (repeated runs give the gate its noise floor)."""
    from agentscale.commands.finished import save_baseline

    return save_baseline(run_dirs, name, folder)


@app.command()
def compare(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    baseline: Annotated[Path, typer.Option(help="the baseline file")],
    force: Annotated[bool, typer.Option(help="compare with a baseline of another scenario")] = (
        False
    ),
) -> int:
    """Gate a finished run against a baseline; write verdict.json, junit.xml, summary.md."""
    from agentscale.commands.finished import compare

    return compare(run_dir, baseline, force)


class ReportFormat(StrEnum):
    html = "html"
    md = "md"
    adr = "adr"


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    baseline: Annotated[Path | None, typer.Option(help="show the run against this baseline")] = (
        None
    ),
    format: Annotated[ReportFormat, typer.Option(help="html, md or adr")] = ReportFormat.html,
    out: Annotated[Path | None, typer.Option(help="where to write it")] = None,
) -> int:
    """Write the run's report: one self-contained HTML file, or Markdown, or an ADR."""
    from agentscale.commands.finished import report as write

    return write(run_dir, format.value, baseline, out)


demo_app = typer.Typer(help="The reference agent stack (target.url: demo).", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


class DemoProfile(StrEnum):
    resilient = "resilient"
    naive = "naive"


@demo_app.command("serve")
def demo_serve(
    port: Annotated[int, typer.Option(help="the agent's port (0: a free one)")] = 8080,
    profile: Annotated[DemoProfile, typer.Option(help="resilience policy")] = DemoProfile.resilient,
    time_scale: Annotated[
        float, typer.Option(min=0, help="multiplies every artificial delay; 0 = none")
    ] = 1.0,
    llm_capacity: Annotated[
        int | None, typer.Option(min=1, help="completions the mock model serves at once")
    ] = None,
    bulkheads: Annotated[
        bool | None, typer.Option("--bulkheads/--no-bulkheads", help="override the profile's")
    ] = None,
    cache_scope_bug: Annotated[
        bool, typer.Option(help="key the tool cache without the tenant (a real leak)")
    ] = False,
) -> int:
    """Run the reference agent stack in the foreground; the agent answers POST .../agent."""
    from agentscale.commands.demo import serve_demo
    from agentscale.demo.settings import DemoSettings

    settings = DemoSettings(
        profile=profile.value,
        time_scale=time_scale,
        port=port,
        llm_capacity=llm_capacity,
        bulkheads=bulkheads,
        cache_scope_bug=cache_scope_bug,
    )
    return serve_demo(settings)


chaos_app = typer.Typer(help="Fault injection without load.", no_args_is_help=True)
app.add_typer(chaos_app, name="chaos")
ToxiproxyURL = Annotated[str | None, typer.Option(help="a running toxiproxy-server's API URL")]


@chaos_app.command("list")
def chaos_list(
    folder: Annotated[Path, typer.Argument(help="where the profiles are")] = Path("fault_profiles"),
) -> int:
    """List the fault profiles of a folder and their windows."""
    from agentscale.commands.chaos import list_profiles

    return list_profiles(folder)


@chaos_app.command("apply")
def chaos_apply(
    profile: Annotated[Path, typer.Argument(help="a fault profile with dependencies")],
    for_: Annotated[
        str | None, typer.Option("--for", help="how long; the profile's last window by default")
    ] = None,
    toxiproxy_url: ToxiproxyURL = None,
    out: Annotated[Path, typer.Option(help="output root for the events")] = Path("reports"),
    allow_remote: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-remote", metavar="HOST", help="allow a dependency or Toxiproxy beyond loopback"
        ),
    ] = None,
) -> int:
    """Apply a profile's windows on their schedule without load; undo all of it at the end."""
    from agentscale.commands.chaos import apply

    seconds = _seconds(for_, "--for")
    if seconds is not None and seconds <= 0:
        raise ConfigError("must be longer than zero", field="--for", hint="e.g. --for 2m")
    return apply(profile, seconds, toxiproxy_url, out, tuple(allow_remote or ()))


@chaos_app.command("status")
def chaos_status(toxiproxy_url: ToxiproxyURL = None) -> int:
    """Show the proxies, toxics and stages agentscale has in place."""
    from agentscale.commands.chaos import status

    return status(toxiproxy_url)


@chaos_app.command("reset")
def chaos_reset(
    toxiproxy_url: ToxiproxyURL = None,
    everything: Annotated[
        bool, typer.Option("--all", help="also the faults of runs that are still going")
    ] = False,
) -> int:
    """Remove the toxics, proxies and fault processes that runs now gone left behind."""
    from agentscale.commands.chaos import reset

    return reset(toxiproxy_url, everything)


@app.command()
def doctor() -> int:
    """Check toxiproxy-server, ports and versions; say how to fix what is missing."""
    from agentscale.commands.doctor import doctor as run_doctor

    return run_doctor()


@app.command()
def version() -> int:
    """Print the versions of agentscale and of what it drives."""
    from agentscale.commands.doctor import version as show

    return show()


def run(argv: list[str]) -> int:
    """Run the CLI and return its exit code; every error becomes a message and a code here."""
    _catch_stops(_stop)
    code = EXIT_INTERRUPTED
    if not STOPPED:
        try:
            code = _run(argv)
        finally:
            # A stop now comes after all the work: the spare (if unused) still goes, quietly.
            with contextlib.suppress(KeyboardInterrupt):
                spare.discard()
    if code == EXIT_INTERRUPTED and STOPPED and not stops.announced:
        # Never a silent exit: a stop before a run could say anything (or while it was
        # scored) printed nothing else. Typer turns a KeyboardInterrupt into a plain 130.
        with contextlib.suppress(KeyboardInterrupt, OSError):
            sys.stderr.write("stopped by a signal (exit 130)\n")
            sys.stderr.flush()
    return code


def _run(argv: list[str]) -> int:
    try:
        result = app(args=argv, prog_name="agentscale", standalone_mode=False)
    except AgentscaleError as error:
        from agentscale import console

        console.print_error(error)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:  # click's name for a KeyboardInterrupt inside a command
        return EXIT_INTERRUPTED
    except TyperException as error:  # usage errors from the (vendored) click parser
        show = getattr(error, "show", None)
        if show is not None:
            show()
        # Bare `agentscale` shows the help: asking for it is not a mistake.
        return EXIT_OK if type(error).__name__ == "NoArgsIsHelpError" else EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        # A stop signal raised inside an import can surface as another error (the import
        # machinery's own); the user asked to stop, and that is what the exit says.
        if STOPPED:
            return EXIT_INTERRUPTED
        raise
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    # Before pyarrow is loaded: its allocator (mimalloc) then gives the pages that reading
    # the records freed back to the system at once. With its default delay it still held
    # about 0.2 GB of them when a million requests' scorecard peaked (benchmarks/
    # scorecard.py: 1.43-1.50 GB, now 1.22-1.30). A user's own setting is kept.
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
    code = run(sys.argv[1:])
    if STOPPED:
        # The interpreter puts the default actions back as it shuts down: a second Ctrl-C in
        # that time would kill it by SIGINT. Stopping already, it ignores further stops.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        # A stop raised inside an exec() of generated code (dataclasses and pydantic build
        # their classes that way, so an import can be in one) leaves CPython's mark of an
        # unhandled KeyboardInterrupt set even once it was caught: the interpreter would end
        # by killing itself with SIGINT instead of exiting 130. The next exec() clears it.
        exec("None")
    # What is left is the interpreter's teardown, whose collection of pandas' and pyarrow's
    # objects alone took 0.25 s of every command that scored a run; every file is closed.
    gc.freeze()
    sys.exit(code)

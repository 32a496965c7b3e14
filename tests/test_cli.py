"""The CLI's outside: help is fast and complete, the schema is usable, the README is true."""

import json
import re
import subprocess
import sys
import time

import jsonschema
import pytest
import yaml

from conftest import ROOT, agentscale

COMMANDS = (
    "report",
    "worker",
    "load",
    "capacity",
    "validate",
    "schema",
    "version",
    "demo",
    "chaos",
    "doctor",
    "scorecard",
    "baseline",
    "compare",
)
GROUPS = {"demo": ("serve",), "chaos": ("list", "apply", "status", "reset"), "baseline": ("save",)}


def test_help_lists_the_commands_and_answers_in_under_a_second():
    best = min(_timed(["--help"]) for _ in range(3))
    assert best < 1.0
    result = agentscale("--help")
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command


def _timed(args):
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agentscale", *args], capture_output=True, check=True)
    return time.perf_counter() - began


def test_help_does_not_import_the_heavy_modules():
    code = (
        "import sys; from agentscale.cli import run; run(['--help']);"
        "print(sorted(m for m in ('locust', 'pandas', 'pyarrow', 'gevent', 'numpy')"
        " if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_bare_command_shows_help():
    result = agentscale()
    assert result.code == 0 and "load" in result.output


def test_schema_describes_the_example_scenarios():
    result = agentscale("schema", "scenario")
    assert result.code == 0
    document = json.loads(result.stdout)
    assert document["title"] == "agentscale Scenario"
    for path in (ROOT / "scenarios").glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"apiVersion": "agentscale/v1", "kind": "Scenario"}, document)


def test_version_names_locust():
    result = agentscale("version")
    assert result.code == 0 and "locust" in result.stdout and "agentscale" in result.stdout


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_readme_starts_with_make_demo_then_make_test():
    commands = [c for c in readme_commands() if c.startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]


def test_readme_agentscale_examples_match_the_cli():
    """Every `agentscale ...` line in the README names a real command and real options."""
    examples = [c for c in readme_commands() if c.startswith("agentscale ")]
    assert examples
    for example in examples:
        words = example.split()
        command = words[1]
        if command.startswith("-"):
            continue
        assert command in COMMANDS, example
        path = [command]
        if command in GROUPS:
            assert words[2] in GROUPS[command], example
            path.append(words[2])
        help_text = agentscale(*path, "--help").stdout
        for option in (w.split("=")[0] for w in words if w.startswith("--")):
            assert option in help_text, f"{example}: {option} is not an option of {command}"


def test_readme_scenario_files_exist_and_validate():
    for path in sorted(
        set(re.findall(r"scenarios/[\w./-]+\.yaml", (ROOT / "README.md").read_text()))
    ):
        assert (ROOT / path).exists(), path
        assert agentscale("validate", str(ROOT / path)).code == 0, path

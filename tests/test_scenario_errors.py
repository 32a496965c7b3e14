"""A bad scenario exits 2 with file:line:col, the field and a hint; never a traceback."""

import re

import pytest

from conftest import agentscale, scenario_dict, write_scenario

GOOD = """\
apiVersion: agentscale/v1
kind: Scenario
name: demo-like
target:
  url: http://127.0.0.1:9/agent
  body: {input: "{{prompt}}"}
workload:
  dataset: golden.jsonl
load:
  shape: {kind: constant, rps: 5}
  duration: 10s
"""


def check(tmp_path, text, *, line, field, words, command="validate", env=None):
    path = write_scenario(tmp_path, text)
    result = agentscale(command, str(path), env=env)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    match = re.search(rf"{re.escape(str(path))}:(\d+):(\d+): {re.escape(field)}: ", result.stderr)
    assert match, result.stderr
    assert int(match.group(1)) == line
    for word in words:
        assert word in result.stderr
    return result


def test_a_good_scenario_validates(tmp_path):
    result = agentscale("validate", str(write_scenario(tmp_path, GOOD)))
    assert result.code == 0 and "ok:" in result.stdout


def test_unknown_field_points_at_the_key_with_a_suggestion(tmp_path):
    text = GOOD.replace("  duration: 10s", "  duration: 10s\n  max_concurency: 5")
    check(
        tmp_path,
        text,
        line=12,
        field="load.max_concurency",
        words=["unknown field", "did you mean 'max_concurrency'"],
    )


def test_wrong_type(tmp_path):
    text = GOOD.replace("rps: 5", "rps: lots")
    check(tmp_path, text, line=10, field="load.shape.rps", words=["valid number"])


def test_duration_in_words_is_refused_with_the_accepted_forms(tmp_path):
    text = GOOD.replace("duration: 10s", "duration: 5 minutes")
    check(tmp_path, text, line=11, field="load.duration", words=["'5 minutes'", "30s, 5m"])


def test_missing_dataset_file(tmp_path):
    text = GOOD.replace("golden.jsonl", "nowhere.jsonl")
    check(tmp_path, text, line=8, field="workload.dataset", words=["dataset file not found"])


def test_broken_yaml_points_at_the_break(tmp_path):
    text = GOOD.replace("  body: {input:", "  body: {input: [")
    path = write_scenario(tmp_path, text)
    result = agentscale("validate", str(path))
    assert result.code == 2 and "Traceback" not in result.output
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: invalid YAML", result.stderr)


def test_unknown_shape_kind_lists_the_known_ones(tmp_path):
    text = GOOD.replace("kind: constant", "kind: bursty")
    check(tmp_path, text, line=10, field="load.shape", words=["'bursty'", "spike"])


def test_wrong_unit_for_the_model(tmp_path):
    text = GOOD.replace("rps: 5", "users: 5")
    check(tmp_path, text, line=10, field="load.shape.users", words=["write rps"])


def test_workflow_weight_for_a_workflow_the_dataset_lacks(tmp_path):
    text = GOOD.replace(
        "  dataset: golden.jsonl", "  dataset: golden.jsonl\n  workflows: {refnd: 1}"
    )
    check(tmp_path, text, line=9, field="workload.workflows.refnd", words=["refund"])


def test_bad_dataset_line_points_into_the_dataset(tmp_path):
    path = write_scenario(tmp_path, GOOD)
    (tmp_path / "golden.jsonl").write_text('{"prompt": "hi"}\n{"prompt": 3, "workflow": "x"}\n')
    result = agentscale("validate", str(path))
    assert result.code == 2
    assert f"{tmp_path / 'golden.jsonl'}:2:1: prompt: " in result.stderr


def test_missing_environment_variable_stops_a_run_before_it_starts(tmp_path):
    text = GOOD.replace(
        "  body:", '  headers: {Authorization: "Bearer ${NO_SUCH_TOKEN_X}"}\n  body:'
    )
    result = check(
        tmp_path,
        text,
        line=6,
        field="target.headers",
        command="load",
        words=["NO_SUCH_TOKEN_X is not set", "export NO_SUCH_TOKEN_X"],
    )
    assert not (tmp_path / "reports").exists()
    assert result.stdout == ""


def test_remote_target_needs_to_be_allowed(tmp_path):
    text = GOOD.replace("127.0.0.1:9", "example.com")
    check(
        tmp_path,
        text,
        line=5,
        field="target.url",
        command="load",
        words=["not a loopback address", "--allow-remote example.com"],
    )


@pytest.mark.parametrize("bad", ["--duration=5 minutes", "--duration=0"])
def test_bad_duration_option(tmp_path, bad):
    path = write_scenario(tmp_path, scenario_dict("http://127.0.0.1:9/agent"))
    result = agentscale("load", str(path), bad)
    assert result.code == 2 and "--duration" in result.stderr and "Traceback" not in result.output


def test_several_errors_are_reported_at_once(tmp_path):
    text = GOOD.replace("rps: 5", "rps: -1").replace("duration: 10s", "duration: soon")
    path = write_scenario(tmp_path, text)
    result = agentscale("validate", str(path))
    assert "load.shape.rps" in result.stderr and "load.duration" in result.stderr


def test_missing_file_and_unknown_command():
    assert agentscale("validate", "/nonexistent/x.yaml").code == 2
    result = agentscale("frobnicate")
    assert result.code == 2 and "Traceback" not in result.output


def test_a_tolerance_in_the_wrong_direction_is_refused_where_it_is_written(tmp_path):
    text = GOOD + "gates:\n  latency_p95_ms: {max_decrease: 10%}\n"
    check(
        tmp_path,
        text,
        line=13,
        field="gates.latency_p95_ms",
        words=["other way", "write max_increase"],
    )


def test_an_explicitly_empty_environment_is_empty_not_the_real_one(tmp_path, monkeypatch):
    from agentscale.config.loader import load_scenario
    from agentscale.errors import ConfigErrors

    monkeypatch.setenv("AS_TEST_TOKEN", "set-in-the-real-environment")
    text = GOOD.replace("  body:", '  headers: {Authorization: "Bearer ${AS_TEST_TOKEN}"}\n  body:')
    path = write_scenario(tmp_path, text)
    assert load_scenario(path, for_run=True).scenario.target.headers  # the real one has it
    with pytest.raises(ConfigErrors) as error:
        load_scenario(path, env={}, for_run=True)
    assert "AS_TEST_TOKEN is not set" in error.value.render()


def test_a_header_value_http_cannot_carry_is_refused_by_validate_and_from_the_environment(
    tmp_path,
):
    """A header value outside latin-1 passed validate, then every request of the run was
    agentscale_error (exit 3): the scenario's fault, found before anything is sent (exit 2),
    and the same for a value from ${VAR} at load, without showing the value."""
    text = GOOD.replace("  body:", '  headers: {X-Note: "h\\u00e9llo \\u20ac"}\n  body:')
    check(tmp_path, text, line=6, field="target.headers", words=["X-Note", "character 7"])
    text = GOOD.replace("  body:", '  headers: {X-Key: "k ${AS_TEST_KEY}"}\n  body:')
    result = check(tmp_path, text, line=6, field="target.headers.X-Key", command="load",
                   words=["X-Key", "latin-1"], env={"AS_TEST_KEY": "s3cr\u20act"})  # fmt: skip
    assert "s3cr" not in result.output and not (tmp_path / "reports").exists()


def test_a_secret_too_short_to_redact_is_named_before_the_run(tmp_path):
    """Values of ${VAR} are redacted from answers from 4 characters on (a shorter one would
    match ordinary text): a shorter one is named in a warning, its value never shown."""
    text = GOOD.replace("  body:", '  headers: {X-Key: "${AS_SHORT_KEY}"}\n  body:')
    text = text.replace("duration: 10s", "duration: 1s")
    path = write_scenario(tmp_path, text)
    (tmp_path / "golden.jsonl").write_text('{"prompt": "hi"}\n')
    result = agentscale(
        "load", str(path), "--out", str(tmp_path / "r"), env={"AS_SHORT_KEY": "q7z"}
    )
    assert "${AS_SHORT_KEY} is shorter than 4 characters" in result.stderr, result.output
    assert "q7z" not in result.output

"""What a hostile tester tried, each answered with one clear message and the documented exit
code: no traceback, no folder left behind, no secret written down."""

from __future__ import annotations

import json
import os
import shutil

import orjson
import pytest

from agentscale.config.template import RequestTemplate, secret_forms
from conftest import agentscale, only_run, scenario_dict, write_scenario


def _refused(result, *words: str) -> None:
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr


def test_an_environment_value_stays_inside_its_json_string():
    body = {"input": "{{prompt}}", "key": "${KEY}", "n": 3}
    hostile = 'x", "admin": true, "y": "\\'
    template = RequestTemplate(body, {}, {"KEY": hostile})
    sent = orjson.loads(template.fill_body({"prompt": template.escape('say "hi"')}) or b"")
    assert sent == {"input": 'say "hi"', "key": hostile, "n": 3}
    assert template.secrets == [hostile]


def test_a_secret_is_redacted_in_every_form_an_answer_can_carry_it():
    secret = 'tok/"ö\\9'
    forms = secret_forms(secret)
    assert secret in forms
    assert json.dumps(secret)[1:-1] in forms  # \u00f6, \" and \\
    assert orjson.dumps(secret).decode()[1:-1] in forms  # raw UTF-8, \" and \\
    assert json.dumps(secret)[1:-1].replace("/", "\\/") in forms


def test_hostile_scenarios_get_one_clear_message(tmp_path, server):
    url = server.url("/agent")

    def scenario(name: str, text: str | None = None, **changes) -> str:
        folder = tmp_path / name
        folder.mkdir()
        document = text if text is not None else scenario_dict(url, **changes)
        return str(write_scenario(folder, document))

    big = scenario("big", f"seed: {'9' * 5000}\n")
    _refused(agentscale("validate", big), "cannot read this value")
    cycle = scenario("cycle", "a: &x [1, *x]\n")
    _refused(agentscale("validate", cycle), "aliases are expanded")
    control = scenario("control", 'name: "a\x01b"\n')
    _refused(agentscale("validate", control), "invalid YAML")
    nul = scenario("nul", workload__dataset="golden\x00.jsonl")
    _refused(agentscale("validate", nul), "workload.dataset", "cannot be used")
    nul_faults = scenario("nul_faults", faults="crm\x00.yaml")  # found by test_fuzz
    _refused(agentscale("validate", nul_faults), "faults", "cannot be used")
    fifo_dir = tmp_path / "fifo"
    fifo = scenario("fifo", workload__dataset="pipe.jsonl")
    os.mkfifo(fifo_dir / "pipe.jsonl")
    _refused(agentscale("validate", fifo), "not a regular file")
    slashes = scenario("slashes", target__url=url.replace("/agent", "//agent"))
    _refused(agentscale("validate", slashes), "target.url", "starts with //")
    nan = scenario("nan", target__body={"input": "{{prompt}}", "t": float("nan")})
    _refused(agentscale("validate", nan), "NaN")

    # A line break in a header value, from the environment: refused before any load, and the
    # value itself never printed.
    header = scenario("header")
    document = scenario_dict(url, load__duration="1s")
    document["target"]["headers"] = {"Authorization": "Bearer ${TOKEN}"}
    header = str(write_scenario(tmp_path / "header", document))
    injected = "abc\r\nX-Admin: yes"
    result = agentscale("load", header, "--out", str(tmp_path / "out"), env={"TOKEN": injected})
    _refused(result, "target.headers.Authorization", "line break")
    assert "X-Admin" not in result.output and not (tmp_path / "out").exists()

    # Base-60 numbers are not YAML's business here: "1:30" stays text, and says so.
    sixty = scenario("sixty", load__duration="1:30")
    _refused(agentscale("validate", sixty), "load.duration")


def test_hostile_options_and_folders_get_one_clear_message(tmp_path, server):
    path = write_scenario(tmp_path, scenario_dict(server.url("/agent"), load__duration="1s"))
    file_out = tmp_path / "a-file"
    file_out.write_text("")
    _refused(agentscale("load", str(path), "--out", str(file_out)), "--out")
    # Not UTF-8 (a byte 0xff in a folder's name): refused, not a traceback from run.json.
    _refused(agentscale("load", str(path), "--out", str(tmp_path) + "/bad\udcffbyte"), "--out")
    _refused(agentscale("load", str(path), "--seed", "-1"), "--seed")
    _refused(agentscale("load", str(path), "--seed", str(2**64)), "--seed")
    _refused(agentscale("load", str(path), "--workers", "1000"), "--workers")
    _refused(agentscale("load", str(path), "--baseline", str(tmp_path)), "folder")
    fake = tmp_path / "fake.json"
    fake.write_text(json.dumps({"schema": "agentscale/baseline/v1", "runs": [{"scorecard": 1}]}))
    _refused(agentscale("load", str(path), "--baseline", str(fake)), "not a baseline file")
    _refused(agentscale("chaos", "list", str(tmp_path / "nope")), "no such folder")

    # A run folder a crash (or a hand) left half-written is named, not a traceback.
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
    assert result.code == 0, result.output
    run = only_run(tmp_path / "r")
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "requests.parquet" / "part-00000.parquet").write_bytes(b"PAR1 not really")
    _refused(agentscale("report", str(damaged)), "cannot be read")
    _refused(agentscale("scorecard", str(damaged)), "cannot be read")
    shutil.rmtree(damaged)
    shutil.copytree(run, damaged)
    (damaged / "run.json").write_text('{"planned": 3, "actual": []}')
    _refused(agentscale("scorecard", str(damaged)), "cannot be read")
    (damaged / "requests.parquet" / "notes.txt").write_text("a stray file is left alone")
    shutil.copy(run / "run.json", damaged / "run.json")
    assert agentscale("scorecard", str(damaged)).code == 0

    # Only a completed, valid run can become a baseline.
    info = json.loads((run / "run.json").read_text())
    info["status"], info["verdict"] = "interrupted", {"result": "interrupted", "reasons": []}
    (damaged / "run.json").write_text(json.dumps(info))
    saved = agentscale("baseline", "save", str(damaged), "--name", "b", "--dir", str(tmp_path))
    _refused(saved, "cannot be a baseline")


@pytest.mark.parametrize(
    "dependency, words",
    [
        ({"upstream": "127.0.0.1:99999", "listen": "127.0.0.1:20001"}, ["1 to 65535"]),
        ({"upstream": "127.0.0.1:20001", "listen": "127.0.0.1:20001"}, ["call itself"]),
    ],
)
def test_a_dependency_that_cannot_work_is_refused(tmp_path, dependency, words):
    profile = tmp_path / "f.yaml"
    document = {"apiVersion": "agentscale/v1", "kind": "FaultProfile", "name": "f",
                "dependencies": [{"name": "crm", **dependency}], "windows": []}  # fmt: skip
    profile.write_text(json.dumps(document))
    _refused(agentscale("validate", str(profile)), *words)


def test_an_accept_encoding_header_in_any_spelling_is_sent_as_the_scenario_gives_it():
    """Locust's session put its own gzip, deflate, br over ACCEPT-ENCODING (it knows two
    spellings): the template gives the one it knows, so the scenario's value is sent."""
    template = RequestTemplate({"q": "x"}, {"ACCEPT-ENCODING": "zstd", "X-Id": "{{tenant}}"}, {})
    assert template.static_headers["Accept-Encoding"] == "zstd"
    assert "ACCEPT-ENCODING" not in template.render_headers({"tenant": "acme"})

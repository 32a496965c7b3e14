"""The report: self-contained HTML that renders offline, escaped agent output, valid GFM."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
import zlib
from pathlib import Path

import pytest

from conftest import agentscale, only_run, scenario_dict, write_scenario

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, server) -> Path:
    """A short run whose failed answers carry markup, with a fault window in it."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "golden.jsonl").write_text(
        f'{{"prompt": "{HOSTILE} where is order 4410?", "workflow": "order_status", '
        '"expect": "never said"}\n{"prompt": "Where is order 7781?", "workflow": '
        '"order_status", "expect": "7781"}\n'
    )
    document = scenario_dict(server.url("/agent"), load__duration="4s")
    path = write_scenario(folder, document)
    result = agentscale("load", str(path), "--out", str(folder / "r"))
    assert result.code == 0, result.output
    assert "report: " in result.stdout
    return only_run(folder / "r")


def test_every_load_writes_a_report_with_the_verdict_first(run_dir):
    text = (run_dir / "report.html").read_text()
    order = [
        text.index(marker)
        for marker in (
            "class='badge",
            "Key figures",
            "Bottleneck diagnosis",
            "Traffic",
            "Latency over time",
            "p95 by step",
            "Measurement method",
        )
    ]
    assert order == sorted(order)
    assert "Pull first:" in text and "agentscale load" in text  # how to reproduce it


def test_agent_output_is_escaped(run_dir):
    text = (run_dir / "report.html").read_text()
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_the_report_fetches_nothing(run_dir):
    text = (run_dir / "report.html").read_text()
    for fetching in ("<script", "<iframe", "<object", "<embed", "<img", "@import", "url("):
        assert fetching not in text, fetching
    # Every link or source points at data: (the icon), nothing else.
    assert re.findall(r"""(?:href|src)=['"]([^'"]*)""", text) == ["data:,"]


def test_markdown_and_adr_are_valid_gfm_tables(run_dir):
    for kind, name in (("md", "report.md"), ("adr", "adr.md")):
        result = agentscale("report", str(run_dir), "--format", kind)
        assert result.code == 0, result.output
        lines = (run_dir / name).read_text().splitlines()
        assert HOSTILE not in "\n".join(lines)
        for i, line in enumerate(lines):
            if line.startswith("| ---") or line.startswith("| :--"):
                header = lines[i - 1]
                width = _cells(header)
                assert re.fullmatch(r"\|( -{3}:? \|)+", line), line
                j = i + 1
                while j < len(lines) and lines[j].startswith("|"):
                    assert _cells(lines[j]) == width, lines[j]
                    j += 1


def _cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line)) - 2


def test_headless_chromium_renders_it_offline_with_no_request_and_no_console_message(
    run_dir, tmp_path
):
    assert CHROMIUM, "chromium is missing: `make setup` installs it (apt-get install chromium)"
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(run_dir), **kwargs)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shot = tmp_path / "shot.png"
    try:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1000,2400",
                f"--screenshot={shot}",
                f"http://127.0.0.1:{server.server_port}/report.html",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert shot.exists(), done.stderr[-2000:]
    assert requests == ["/report.html"]  # the page, and nothing it would have to fetch
    assert "CONSOLE" not in done.stderr
    assert _distinct_pixels(shot.read_bytes()) > 20  # not a blank page


def _distinct_pixels(png: bytes) -> int:
    """Distinct byte values of the decompressed image data (a blank page has a handful)."""
    data, position = b"", 8
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind = png[position + 4 : position + 8]
        if kind == b"IDAT":
            data += png[position + 8 : position + 8 + length]
        position += 12 + length
    return len(set(zlib.decompress(data)))


def test_the_report_stays_small_whatever_the_run_length(run_dir):
    from agentscale.report.data import gather

    data = gather(run_dir)
    assert len(data.series["x"]) <= 121  # about 120 buckets, however long the run
    assert (run_dir / "report.html").stat().st_size < 1.5 * 1024 * 1024


def test_chart_legends_wrap_inside_the_chart_and_eight_lines_have_eight_colours():
    from agentscale.report.charts import WIDTH, line_chart

    names = [f"tenant-{i}" for i in range(8)]
    svg = str(line_chart([0, 1, 2], {n: [1.0, 2.0, 3.0] for n in names}, unit="ms"))
    height = float(re.search(r'viewBox="0 0 \d+ (\d+)"', svg).group(1))
    legends = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" class="legend">([^<]*)</text>', svg)
    assert [name for _, _, name in legends] == names
    for x, y, name in legends:
        assert float(x) + 6.5 * len(name) <= WIDTH and float(y) <= height, (x, y, name)
    colours = re.findall(r'<polyline points="[^"]*" fill="none" stroke="(#[0-9a-f]{6})"', svg)
    assert len(set(colours)) == 8


def test_hostile_answers_create_no_element_or_attribute_in_the_rendered_report(tmp_path, server):
    """What the agent answered, the names it gave its steps and the errors it reported, as the
    browser parses the report: no element, no attribute comes from them."""
    from html.parser import HTMLParser

    (tmp_path / "golden.jsonl").write_text('{"prompt": "hello", "workflow": "w"}\n')
    document = scenario_dict(
        server.url("/hostile"), load__duration="2s", load__shape={"kind": "constant", "rps": 10}
    )
    path = write_scenario(tmp_path, document)
    result = agentscale("load", str(path), "--out", str(tmp_path / "r"))
    assert result.code in (0, 1), result.output
    assert "Traceback" not in result.output and "[/nope]" in result.stdout  # text, not markup
    assert "\x1b" not in result.stdout  # no terminal escape from the agent reaches the screen
    run = only_run(tmp_path / "r")
    assert agentscale("report", str(run), "--format", "md").code == 0
    summary = (run / "summary.md").read_text() + (run / "report.md").read_text()
    assert not re.search(r"(?<!\\)\]\(javascript:", summary)  # never a Markdown link
    assert "\x1b" not in summary and "\x07" not in summary and "http://evil" not in summary
    assert CHROMIUM, "chromium is missing: `make setup` installs it (apt-get install chromium)"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         (run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = done.stdout
    assert "onerror=alert(1)" in dom  # the text is there, shown as text

    class Elements(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

        def handle_starttag(self, tag, attrs):
            self.found.append((tag, attrs))

    parsed = Elements()
    parsed.feed(dom)
    tags = {tag for tag, _ in parsed.found}
    assert not tags & {"script", "img", "a", "iframe", "object", "embed"}, tags
    for tag, attrs in parsed.found:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            assert "javascript:" not in (value or ""), (tag, name, value)
            assert "alert(" not in (value or ""), (tag, name, value)

"""Records are complete part files as the run goes: readable after a kill, even when empty."""

import pandas as pd

from agentscale.records.writer import REQUEST_COLUMNS, EventLog, PartWriter, read_events


def row(i: int):
    values = {name: None for name, _ in REQUEST_COLUMNS}
    values.update(
        request_id=f"r{i}",
        intended_start=1.7e9 + i,
        latency_ms=float(i),
        success=True,
        faults=[],
        dropped=False,
    )
    return tuple(values.values())


def test_an_empty_run_is_readable_with_its_columns(tmp_path):
    PartWriter(tmp_path / "requests.parquet", REQUEST_COLUMNS)
    frame = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(frame) == 0 and "latency_ms" in frame.columns


def test_each_flush_adds_a_complete_part_and_nothing_is_read_twice(tmp_path):
    writer = PartWriter(tmp_path / "requests.parquet", REQUEST_COLUMNS)
    writer.rows.extend(row(i) for i in range(3))
    writer.flush()
    writer.rows.extend(row(i) for i in range(3, 5))
    # A part being written sits aside under a dot-name until it is complete.
    (tmp_path / "requests.parquet" / ".part-000099.parquet.tmp").write_bytes(b"PAR1 half")
    writer.flush()
    frame = pd.read_parquet(tmp_path / "requests.parquet")
    assert sorted(frame["request_id"]) == [f"r{i}" for i in range(5)]
    assert str(frame["intended_start"].dt.tz) == "UTC"
    assert frame["intended_start"].iloc[0].timestamp() == 1.7e9


def test_event_log_survives_a_torn_last_line(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", started=0.0)
    log.write("run_started", model="open")
    log.close()
    with open(tmp_path / "events.jsonl", "a") as file:
        file.write('{"type": "cut sh')
    assert [e["type"] for e in read_events(tmp_path / "events.jsonl")] == ["run_started"]


def test_a_value_of_the_wrong_type_is_nulled_and_the_rest_kept(tmp_path):
    writer = PartWriter(tmp_path / "requests.parquet", REQUEST_COLUMNS)
    good, bad = list(row(1)), list(row(2))
    bad[list(dict(REQUEST_COLUMNS)).index("input_tokens")] = "lots"
    writer.rows.extend([tuple(good), tuple(bad)])
    writer.flush()
    frame = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(frame) == 2 and frame["input_tokens"].isna().all()


def test_a_part_encoded_in_slices_is_the_part_written_at_once_and_pauses_between(tmp_path):
    """The engine encodes a second's rows in slices, giving its loop a turn between them: the
    part must hold exactly what one write of the same rows holds, bad values nulled alike."""
    rows = [row(i) for i in range(1_000)]
    bad = list(rows[700])
    bad[list(dict(REQUEST_COLUMNS)).index("input_tokens")] = "lots"
    rows[700] = tuple(bad)
    at_once = PartWriter(tmp_path / "once", REQUEST_COLUMNS)
    at_once.write(rows)
    sliced = PartWriter(tmp_path / "sliced", REQUEST_COLUMNS)
    pauses = []
    written = sliced.store(sliced.encode(rows, pause=lambda: pauses.append(1)))
    assert written == 1_000 and len(pauses) == 4  # slices of 256 rows
    assert sliced.store(sliced.encode([], pause=lambda: pauses.append(1))) == 0
    assert len(pauses) == 4 and len(list((tmp_path / "sliced").glob("part-*"))) == 2
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "sliced"), pd.read_parquet(tmp_path / "once")
    )


def test_step_counts_are_read_small_and_exact_beyond_what_32_bits_hold(tmp_path):
    """Counts are held as 32-bit floats to halve a long run's memory, only where every value is
    exact so: a step of 2**24 + 1 tokens (the edge lets 10^8 through) keeps its count."""
    from agentscale.records.frames import read_frames
    from agentscale.records.writer import STEP_COLUMNS

    requests = PartWriter(tmp_path / "requests.parquet", REQUEST_COLUMNS)
    requests.rows.extend(row(i) for i in range(2))
    requests.flush()
    steps = PartWriter(tmp_path / "steps.parquet", STEP_COLUMNS)
    for i, tokens in enumerate((100, 2**24 + 1)):
        values = dict.fromkeys(name for name, _ in STEP_COLUMNS)
        values.update(request_id=f"r{i}", index=0, kind="llm", name="plan", latency_ms=1.0,
                      attempts=2, input_tokens=tokens, output_tokens=7)  # fmt: skip
        steps.rows.append(tuple(values.values()))
    steps.flush()
    frame = read_frames(tmp_path, None, 1.0, []).steps
    assert frame["input_tokens"].tolist() == [100, 2**24 + 1]
    assert frame["output_tokens"].dtype == "float32" and frame["output_tokens"].tolist() == [7, 7]
    assert frame["attempts"].dtype == "float32" and frame["top_k"].isna().all()

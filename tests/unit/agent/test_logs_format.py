"""The CRI log format: timestamps, records, partial lines, rotation and the readers.

Files only (tmp_path); the FIFO and follow paths are in tests/integration/agent.
"""

from __future__ import annotations

import calendar
import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.agent.logs import (
    MAX_LINE,
    LogWriter,
    format_timestamp,
    parse_timestamp,
    read_lines,
)

T0 = calendar.timegm(time.strptime("2026-11-26T03:21:16", "%Y-%m-%dT%H:%M:%S"))


def test_timestamp_layout() -> None:
    assert format_timestamp(T0 + 0.25) == "2026-11-26T03:21:16.250000000Z"
    assert format_timestamp(T0 + 0.123456)[:26] == "2026-11-26T03:21:16.123456"  # float: µs exact
    assert format_timestamp(T0) == "2026-11-26T03:21:16.000000000Z"


def test_parse_timestamp_accepts_rfc3339nano_forms() -> None:
    base = T0 * 1_000_000_000
    assert parse_timestamp("2026-11-26T03:21:16.123456789Z") == base + 123456789
    assert parse_timestamp("2026-11-26T03:21:16.5Z") == base + 500_000_000  # Go trims zeros
    assert parse_timestamp("2026-11-26T03:21:16Z") == base
    assert parse_timestamp("2026-11-26T05:21:16.1+02:00") == base + 100_000_000


@given(st.integers(min_value=0, max_value=4_000_000_000), st.integers(0, 999_999))
def test_timestamp_round_trip_to_the_microsecond(sec: int, micros: int) -> None:
    now = sec + micros / 1e6
    nanos = parse_timestamp(format_timestamp(now))
    assert abs(nanos - round(now * 1e9)) < 1000


def test_records_are_cri_lines(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "0.log")
    w.write("stdout", b"hello\nwor", T0)
    w.write("stderr", b"oops\n", T0 + 1)
    w.write("stdout", b"ld\n", T0 + 2)
    w.write("stdout", b"no newline", T0 + 3)
    w.close(now=T0 + 4)
    assert (tmp_path / "0.log").read_bytes().splitlines() == [
        b"2026-11-26T03:21:16.000000000Z stdout F hello",
        b"2026-11-26T03:21:17.000000000Z stderr F oops",
        b"2026-11-26T03:21:18.000000000Z stdout F world",
        b"2026-11-26T03:21:20.000000000Z stdout P no newline",
    ]
    assert read_lines(tmp_path, 0) == [b"hello\n", b"oops\n", b"world\n", b"no newline"]


def test_long_lines_are_split_into_partials_and_joined_back(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "0.log")
    long = b"x" * (2 * MAX_LINE + 10)
    w.write("stdout", long + b"\nshort\n", T0)
    w.close()
    tags = [r.split(b" ")[2] for r in (tmp_path / "0.log").read_bytes().splitlines()]
    assert tags == [b"P", b"P", b"F", b"F"]
    assert read_lines(tmp_path, 0) == [long + b"\n", b"short\n"]


def test_tail_since_timestamps(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "2.log")
    for i in range(10):
        w.write("stdout", b"line %d\n" % i, T0 + i)
    w.close()
    assert read_lines(tmp_path, 2, tail=3) == [b"line 7\n", b"line 8\n", b"line 9\n"]
    assert read_lines(tmp_path, 2, tail=0) == []
    assert read_lines(tmp_path, 2, tail=-1) == [b"line %d\n" % i for i in range(10)]
    assert read_lines(tmp_path, 2, since=T0 + 8) == [b"line 8\n", b"line 9\n"]
    assert read_lines(tmp_path, 2, since=T0 + 5, tail=1) == [b"line 9\n"]
    assert read_lines(tmp_path, 2, tail=1, timestamps=True) == [
        b"2026-11-26T03:21:25.000000000Z line 9\n"
    ]
    assert read_lines(tmp_path, 1) == []  # another restart: no file


def test_rotation_keeps_the_newest_files(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "0.log", max_bytes=200, max_files=3)
    for i in range(40):
        w.write("stdout", b"line %02d\n" % i, T0 + i)
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["0.log", "0.log.1", "0.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 200
    lines = read_lines(tmp_path, 0)
    # The newest lines survive, in order, without a gap; the oldest were dropped.
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers[-1] == 39
    assert numbers == list(range(numbers[0], 40))
    assert numbers[0] > 0
    assert read_lines(tmp_path, 0, tail=5) == [b"line %02d\n" % i for i in range(35, 40)]


def test_single_file_rotation_truncates(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "0.log", max_bytes=100, max_files=1)
    for i in range(20):
        w.write("stderr", b"e%d\n" % i, T0)
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["0.log"]
    assert read_lines(tmp_path, 0)[-1] == b"e19\n"


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["stdout", "stderr"]),
    st.lists(st.binary(max_size=3 * MAX_LINE // 2), max_size=12),
    st.integers(min_value=120, max_value=100_000),
)
def test_what_is_written_is_read_back(stream: str, chunks: list[bytes], max_bytes: int) -> None:
    """Any bytes, any chunking, any rotation size: the reader gives the same bytes back."""
    with tempfile.TemporaryDirectory() as d:
        w = LogWriter(Path(d) / "0.log", max_bytes=max_bytes, max_files=10_000)
        for data in chunks:
            w.write(stream, data, T0)  # type: ignore[arg-type]
        w.close(now=T0)
        got = read_lines(d, 0)
    assert b"".join(got) == b"".join(chunks)
    assert all(line.endswith(b"\n") for line in got[:-1])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.binary(max_size=200)), max_size=20)
)
def test_interleaved_streams_lose_no_line(chunks: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        w = LogWriter(Path(d) / "0.log")
        for stream, data in chunks:
            w.write(stream, data, T0)  # type: ignore[arg-type]
        w.close(now=T0)
        got = read_lines(d, 0)
    assert sum(line.endswith(b"\n") for line in got) == sum(d.count(b"\n") for _, d in chunks)
    assert sorted(b"".join(got)) == sorted(b"".join(d for _, d in chunks))

"""Trace loading (both formats, every error), synthetic generators and duration distributions."""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.distributions import MAX_P90_OVER_MEAN, Fixed, LogNormal, duration
from experiments.generators import SHAPES, Diurnal, OnOff, Poisson, Ramp, Step, generate
from experiments.traces import (
    Trace,
    TraceError,
    _generic_fast,
    _load_careful,
    load_trace,
    shuffle_blocks,
    trace_argument,
    write_trace,
)

AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE_SECOND = AZURE_HEAD + "2023-11-16 18:17:04,1,1\n2023-11-16 18:17:05"  # a good line, then another


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_azure_format_with_seven_digit_fractions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        AZURE_HEAD + "2023-11-16 18:17:04.0319600,3180,8\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:18:03.9799600,1,1\n",
    )
    trace = load_trace(path)
    assert trace.name == "t.csv"
    assert trace.arrivals == pytest.approx([0.0, 0.052, 60.0])
    assert trace.service is None


def test_generic_format_sorts_and_keeps_service_aligned(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,service_s\n1000.5,2\n1000.0,7\n1003,1.5\n")
    trace = load_trace(path)
    assert trace.arrivals.tolist() == [0.0, 0.5, 3.0]
    assert trace.service is not None and trace.service.tolist() == [7.0, 2.0, 1.5]
    assert trace.span == 3.0 and len(trace) == 3


def test_spreadsheet_exports_with_a_byte_order_mark_and_crlf_load(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp,service_s\r\n10,4\r\n12.5,6\r\n")
    trace = load_trace(path)
    assert trace.arrivals.tolist() == [0.0, 2.5]
    assert trace.service is not None and trace.service.tolist() == [4.0, 6.0]


def test_round_trip_through_write_trace(tmp_path: Path) -> None:
    arrivals, service = np.array([0.0, 0.25, 9.5]), np.array([1.0, 2.0, 3.0])
    path = tmp_path / "rt.csv"
    write_trace(path, arrivals, service)
    trace = load_trace(path)
    assert trace.arrivals.tolist() == arrivals.tolist()
    assert trace.service is not None and trace.service.tolist() == service.tolist()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("timestamp\n", "no jobs"),
        ("when,what\n1,2\n", "unrecognised header"),
        ("timestamp\n1\nsoon\n", "line 3: timestamp 'soon' is not a number"),
        ("timestamp,service_s\n1,2\n2,-1\n", "line 3: service_s must be"),
        ("timestamp,service_s\n1,2\n2\n", "line 3 has no 'service_s' value"),
        # Blank lines still count: the number is the one an editor shows.
        ("timestamp,service_s\n1,2\n\n2,-1\n", "line 4: service_s must be"),
        ("timestamp\n1\n\n \nsoon\n", "line 5: timestamp 'soon' is not a number"),
        ("timestamp,service_s\r\n1,2\r\n\r\n2\r\n", "line 4 has no 'service_s' value"),
        (AZURE_HEAD + "\n2023-11-16 18:17:04.0319600,1,1\nyesterday,1,1\n", "line 4: TIMESTAMP 'yesterday'"),
        ("timestamp\n1\ninf\n", "finite"),
        (AZURE_HEAD + "2023-11-16 18:17:04.0319600,1,1\nyesterday,1,1\n", "line 3: TIMESTAMP 'yesterday'"),
        # One value per column, no more, no fewer: a row was read by its first columns alone.
        ("timestamp,service_s\n1,5\n2,000,5\n", "line 3 has 3 values for the header's 2 columns: '5' after"),
        ("timestamp\n1\n2,3\n", "line 3 has 2 values for the header's 1 columns: '3' after the 'timestamp'"),
        ("timestamp\n1\n2, \n", "line 3 has 2 values for the header's 1 columns: '' after the 'timestamp'"),
        ("timestamp,id\n1,a\n2\n", "line 3 has no 'id' value"),
        ("timestamp,service_s,id\n1,5,a\n\n2,5\n", "line 4 has no 'id' value"),
        ("timestamp,\n1,\n2\n", "line 3 has no value in column 2"),
        (
            "timestamp,\n1,\n2,,3\n",
            "line 3 has 3 values for the header's 2 columns: '3' after the value in column 2",
        ),
        ("timestamp,service_s,timestamp\n1,5,2\n", "the header names the column 'timestamp' twice"),
        (AZURE_SECOND + "\n", "line 3 has no 'ContextTokens' value"),
        (AZURE_SECOND + ",1\n", "line 3 has no 'GeneratedTokens'"),
        (AZURE_SECOND + ",1,1,7\n", "line 3 has 4 values for"),
        (AZURE_SECOND + ",,1\n", "line 3: ContextTokens '' is not"),
        (AZURE_SECOND + ",1,ten\n", "line 3: GeneratedTokens 'ten'"),
        (AZURE_SECOND + ",-1,1\n", "ContextTokens '-1' is not a whole"),
        (AZURE_SECOND + ",1,2.5\n", "GeneratedTokens '2.5' is not a"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        "timestamp,service_s\n1,5\n,\n , \n2,7\n,\n",  # rows of blanks only: a spreadsheet's empty rows
        "timestamp,service_s,id\n1,5,a\n2,7,\n",  # an extra column is the file's own business
        "service_s,timestamp\n5,1\n7,2\n",
        '"timestamp","service_s"\n"1","5"\n2,7\n',
    ],
)
def test_what_a_loose_but_whole_file_holds_is_read(tmp_path: Path, text: str) -> None:
    trace = load_trace(write(tmp_path, text))
    assert trace.arrivals.tolist() == [0.0, 1.0]
    assert trace.service is not None and trace.service.tolist() == [5.0, 7.0]


def test_an_azure_file_with_whole_token_counts_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, AZURE_HEAD + "2023-11-16 18:17:04, 0 ,12\n\n2023-11-16 18:17:06,4808,10\n")
    assert load_trace(path).arrivals.tolist() == [0.0, 2.0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "absent.csv")


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_generators_are_seeded_sorted_and_in_range(kind: str) -> None:
    shape = SHAPES[kind]()
    a, _ = generate(shape, seed=3)
    b, _ = generate(shape, seed=3)
    c, _ = generate(shape, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) >= 0) and a[0] >= 0 and a[-1] < shape.duration


def test_generator_rates_follow_their_shape() -> None:
    def rate_in(arrivals: np.ndarray, lo: float, hi: float) -> float:
        return float(np.count_nonzero((arrivals >= lo) & (arrivals < hi)) / (hi - lo))

    poisson, _ = generate(Poisson(rate=20.0, duration=1000.0), seed=1)
    assert rate_in(poisson, 0, 1000) == pytest.approx(20.0, rel=0.05)
    ramp, _ = generate(Ramp(start_rate=1.0, end_rate=21.0, ramp_at=100.0, ramp_seconds=200.0), seed=1)
    assert rate_in(ramp, 0, 100) == pytest.approx(1.0, abs=0.5)
    assert rate_in(ramp, 190, 210) == pytest.approx(11.0, rel=0.3)
    assert rate_in(ramp, 300, 1800) == pytest.approx(21.0, rel=0.05)
    step, _ = generate(Step(base_rate=2.0, factor=10.0, step_at=100.0, step_seconds=100.0), seed=1)
    assert rate_in(step, 100, 200) / rate_in(step, 300, 1800) == pytest.approx(10.0, rel=0.2)
    onoff, _ = generate(OnOff(rate=10.0, on_seconds=10.0, off_seconds=90.0, duration=1000.0), seed=1)
    assert np.all(np.mod(onoff, 100.0) < 10.0)
    diurnal, _ = generate(Diurnal(mean_rate=10.0, amplitude=0.9, period=1000.0, duration=1000.0), seed=1)
    assert rate_in(diurnal, 400, 600) > 5 * rate_in(diurnal, 0, 100)


def test_generated_service_column() -> None:
    arrivals, service = generate(Poisson(rate=50.0, duration=200.0), seed=2, service=duration(5.0, 9.0))
    assert service is not None and len(service) == len(arrivals)
    assert float(np.mean(service)) == pytest.approx(5.0, rel=0.05)
    assert float(np.quantile(service, 0.9)) == pytest.approx(9.0, rel=0.08)


def test_durations() -> None:
    assert duration(30.0) == Fixed(30.0) == duration(30.0, 30.0)
    assert isinstance(duration(30.0, 45.0), LogNormal)
    draws = LogNormal(30.0, 45.0).draw(np.random.default_rng(0), 200_000)
    assert float(np.mean(draws)) == pytest.approx(30.0, rel=0.01)
    assert float(np.quantile(draws, 0.9)) == pytest.approx(45.0, rel=0.01)
    for mean, p90 in [(30.0, 20.0), (30.0, 30.0 * MAX_P90_OVER_MEAN + 1), (0.0, 1.0)]:
        with pytest.raises(ValueError, match="lognormal"):
            LogNormal(mean, p90)
    with pytest.raises(ValueError):
        Fixed(-1.0)


def test_shuffled_blocks_keep_every_block_whole_and_only_change_their_order() -> None:
    # Three 10 s blocks, each starting on its boundary (so the shuffled trace needs no new origin);
    # the service times name the jobs and must travel with them.
    arrivals = np.array([0.0, 1.0, 2.0, 10.0, 13.0, 20.0])
    block = np.array([0, 0, 0, 1, 1, 2])
    trace = Trace("t", arrivals, np.arange(6.0))
    orders = set()
    for seed in range(30):
        shuffled = shuffle_blocks(trace, 10.0, seed)
        assert shuffled.service is not None and len(shuffled) == 6
        assert np.all(np.diff(shuffled.arrivals) >= 0) and shuffled.arrivals[0] == 0.0
        job = shuffled.service.astype(int)
        assert sorted(job.tolist()) == list(range(6))  # every job once
        # Each job moved by a whole number of blocks, the same number for its whole block.
        moved = (shuffled.arrivals - arrivals[job]) / 10.0
        assert np.allclose(moved, np.round(moved))
        position = block[job] + np.round(moved).astype(int)
        assert all(len(set(position[block[job] == b].tolist())) == 1 for b in range(3))
        assert sorted(set(position.tolist())) == [0, 1, 2]  # the blocks fill the three slots
        orders.add(tuple(job.tolist()))
        assert shuffle_blocks(trace, 10.0, seed).arrivals.tolist() == shuffled.arrivals.tolist()
    assert len(orders) == 6  # all 3! orders of the blocks occur
    with pytest.raises(ValueError, match="block_seconds"):
        shuffle_blocks(trace, 0.0, 1)
    empty = Trace("empty", np.array([]))
    assert shuffle_blocks(empty, 10.0, 1) is empty


@pytest.mark.parametrize(
    ("stamp", "problem"),
    [
        ("", "line 3: TIMESTAMP '' is not a date-time"),
        ("NaT", "line 3: TIMESTAMP 'NaT' is not a date-time"),
        ("1700000000", "generic CSV with a 'timestamp' header"),
        ("now", "line 3: TIMESTAMP 'now' is not a date-time"),
        ("2300-01-01 00:00:00", "line 3: TIMESTAMP '2300-01-01 00:00:00' is outside 1678..2261"),
    ],
)
def test_azure_timestamps_numpy_would_misread_are_refused(tmp_path: Path, stamp: str, problem: str) -> None:
    # numpy reads '' and 'NaT' as NaT, bare integers as years and wraps years past 2262, all silently:
    # the replay then spanned centuries and never ended, or scored a made-up trace.
    path = write(tmp_path, AZURE_HEAD + f"2023-11-16 18:17:03,1,1\n{stamp},1,1\n2023-11-16 18:17:09,1,1\n")
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert str(caught.value).startswith(str(path)) and problem in str(caught.value)


def test_azure_timestamps_with_utc_offsets_are_compared_in_utc(tmp_path: Path) -> None:
    path = write(tmp_path, AZURE_HEAD + "2023-11-16T18:17:03+01:00,1,1\n2023-11-16 17:17:05Z,1,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "no explicit representation of timezones" is noise
        trace = load_trace(path)
    assert trace.arrivals.tolist() == [0.0, 2.0]


cells = st.one_of(
    st.floats(min_value=-1e6, max_value=1e9, allow_nan=False).map(lambda x: f"{x:.6f}"),
    st.integers(min_value=0, max_value=10**6).map(str),
    st.sampled_from(["", " ", "x", "#1", "1_000", "nan", "-inf", '"2.5"', " 7 ", "1e3"]),
)


@st.composite
def generic_csv(draw: st.DrawFn) -> bytes:
    """Generic traces as people write them: odd spacing, blank lines, CRLF, a BOM, extra columns."""
    columns = draw(
        st.permutations(["timestamp", *draw(st.sampled_from([[], ["service_s"], ["service_s", "id"]]))])
    )
    lines = [",".join(f" {c}" if draw(st.booleans()) else c for c in columns)]
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            lines.append(draw(st.sampled_from(["", "  ", ","])))
        else:
            lines.append(",".join(draw(cells) for _ in range(draw(st.integers(1, len(columns) + 1)))))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + newline.join(lines) + newline * draw(st.integers(0, 2))).encode()


@settings(max_examples=300, deadline=None)
@given(generic_csv())
def test_the_fast_reader_gives_what_the_careful_one_gives(content: bytes) -> None:
    """numpy's reader is a shortcut only: the same trace, or the same error naming the line."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_bytes(content)
        try:
            careful: Trace | str = _load_careful(path)
        except TraceError as exc:
            careful = str(exc)
        try:
            fast: Trace | str = load_trace(path)
        except TraceError as exc:
            fast = str(exc)
    if isinstance(careful, str) or isinstance(fast, str):
        assert fast == careful
        return
    assert fast.arrivals.tolist() == careful.arrivals.tolist()
    assert (fast.service is None) == (careful.service is None)
    if fast.service is not None and careful.service is not None:
        assert fast.service.tolist() == careful.service.tolist()


@settings(max_examples=200, deadline=None)
@given(
    header=st.sampled_from([["timestamp"], ["timestamp", "service_s"], ["service_s", "timestamp", "id"]]),
    jobs=st.integers(min_value=1, max_value=12),
    blanks=st.lists(st.integers(min_value=0, max_value=12), max_size=3),
    bad=st.integers(min_value=0, max_value=11),
    change=st.sampled_from([-2, -1, 1, 2]),
    crlf=st.booleans(),
)
def test_a_record_of_another_width_is_refused_by_both_readers_naming_its_line(
    *, header: list[str], jobs: int, blanks: list[int], bad: int, change: int, crlf: bool
) -> None:
    """Each job's record holds one value per column; one record longer or shorter (at any place,
    blank lines anywhere) is refused by its line number, however the file is read."""
    records = [",".join(str(i) for _ in header) for i in range(jobs)]
    bad %= jobs
    width = max(0, len(header) + change)
    if width in (0, len(header)):  # a record of no values is a blank line; none of this width is bad
        return
    records[bad] = ",".join(["3"] * width)
    lines = [",".join(header), *records]
    for at in sorted(blanks, reverse=True):
        lines.insert(1 + min(at, len(lines) - 1), "")
    line = 1 + lines.index(records[bad], 1)  # the editor's number of the bad record
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_text(("\r\n" if crlf else "\n").join(lines) + "\n", encoding="utf-8")
        with pytest.raises(TraceError) as caught:
            load_trace(path)
        assert str(caught.value).startswith(f"{path}: line {line} has ")
        with pytest.raises(TraceError) as careful:
            _load_careful(path)
        assert str(careful.value) == str(caught.value)


def test_a_million_job_generic_trace_is_read_by_numpy(tmp_path: Path) -> None:
    """The shortcut is taken for a clean file (the careful path raises if it is asked)."""
    path = write(tmp_path, "timestamp,service_s\n" + "".join(f"{i / 3:.6f},5\n" for i in range(1000)))
    fast = _generic_fast(path)
    assert fast is not None and len(fast[0]) == 1000 and fast[1] is not None
    assert load_trace(path).arrivals[-1] == pytest.approx(999 / 3)


@pytest.mark.parametrize(
    ("scale", "unit"), [(1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds")]
)
def test_epoch_timestamps_in_another_unit_are_refused_naming_it(
    tmp_path: Path, scale: float, unit: str
) -> None:
    """An hour of epoch milliseconds, shifted to 0, replayed as 41 days at a thousandth of the rate."""
    path = tmp_path / "epoch.csv"
    write_trace(path, (1_700_000_000.0 + np.arange(0.0, 3600.0, 10.0)) * scale)
    with pytest.raises(TraceError, match=f"read as {unit} since the epoch, not seconds"):
        load_trace(path)
    write_trace(path, 1_700_000_000.0 + np.arange(0.0, 3600.0, 10.0))  # epoch seconds are fine
    assert load_trace(path).span == pytest.approx(3590.0)


def test_a_benchmark_trace_argument_is_its_parsers_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="bench.py")
    with pytest.raises(SystemExit) as info:
        trace_argument(parser, "--trace", tmp_path / "nope.csv")
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"bench.py: error: --trace: {tmp_path / 'nope.csv'}: no such file\n"
    )

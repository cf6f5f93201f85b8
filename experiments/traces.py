"""Load job traces: the Azure LLM inference CSV and a generic ``timestamp[,service_s]`` CSV.

The format is told apart by the header, so ``--trace`` takes either without a flag. Arrivals come
back sorted and shifted so the first job arrives at t=0 (the simulator's origin). Every problem is a
:class:`TraceError` whose message names the file and what is wrong, fit to print on one line.

Every record holds exactly one value per header column: a missing value or one too many is refused,
naming the line and the column (one comma too many in ``2,000,5`` read the job as arriving at 2 with
a service time of 0). Lines with nothing but blanks and commas are skipped: they hold no job, and
spreadsheet exports end with them. Columns the header names beyond the known ones are kept out of
the trace but must be there on every line; the Azure token counts must be whole numbers.
"""

from __future__ import annotations

import argparse
import csv
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
AZURE_CODE_TRACE = Path(__file__).resolve().parents[1] / "traces" / "azure_llm_code_2023.csv"
"""The real reference trace, shipped in the repository (``traces/README.md`` says where it is from)."""
GENERIC_TIME, GENERIC_SERVICE = "timestamp", "service_s"
EPOCH_UNITS = {"milliseconds": 1e3, "microseconds": 1e6, "nanoseconds": 1e9}
"""Units a timestamp column is mistakenly written in, by how many make a second."""
EPOCH_SECONDS = (1e9, 1e11)
"""Epoch seconds of the years 2001-5138: a timestamp that is one of these in another unit is that unit."""


def _epoch_unit(latest: float) -> str | None:
    """The unit of :data:`EPOCH_UNITS` in which ``latest`` is a plausible epoch time (never one in
    seconds: those are below the range of every unit here)."""
    low, high = EPOCH_SECONDS
    return next((unit for unit, per in EPOCH_UNITS.items() if low <= latest / per < high), None)


# What numpy parses that is a date-time: a calendar date, optionally a time and a UTC offset. numpy
# also reads "", "NaT", "now", "today" and bare integers (as years), none of them an arrival time.
_DATE_TIME = re.compile(
    r"\d{4}-\d\d-\d\d(?:[T ]\d\d(?::\d\d(?::\d\d(?:\.\d+)?)?)?)?(?:Z|[+-]\d\d(?::?\d\d)?)?"
)


class TraceError(ValueError):
    """A trace file that cannot be used, with a message naming the file and the problem."""


@dataclass(frozen=True, slots=True)
class Trace:
    """Job arrivals (seconds from the first one) and, if the file had them, service times."""

    name: str
    arrivals: np.ndarray
    service: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def span(self) -> float:
        return float(self.arrivals[-1])


def load_trace(path: str | Path) -> Trace:
    """Read ``path`` in whichever supported format its header names."""
    path = Path(path)
    fast = _generic_fast(path)
    return _trace(path, *fast) if fast is not None else _load_careful(path)


def _load_careful(path: Path) -> Trace:
    """Every format, cell by cell: slower, but it names the line of any problem."""
    try:
        # utf-8-sig: a CSV saved by a spreadsheet starts with a byte-order mark, not part of the header.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            # The physical line each record ends on: blank lines and quoted newlines count too.
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read it ({exc})") from None
    if not rows:
        raise TraceError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0][1]]
    _check_header(path, header)
    kept = [(line, r) for line, r in rows[1:] if any(cell.strip() for cell in r)]
    body = _Body([r for _, r in kept], [line for line, _ in kept])
    if not body.rows:
        raise TraceError(f"{path}: the header is there but there are no jobs")
    _check_widths(path, header, body)
    if AZURE_COLUMNS[0] in header:
        arrivals, service = _azure(path, header, body), None
    elif GENERIC_TIME in header:
        arrivals, service = _generic(path, header, body)
    else:
        raise TraceError(
            f"{path}: unrecognised header {','.join(header)!r}; expected the Azure LLM columns "
            f"{','.join(AZURE_COLUMNS)} or a generic '{GENERIC_TIME}[,{GENERIC_SERVICE}]' CSV"
        )
    return _trace(path, arrivals, service)


def _trace(path: Path, arrivals: np.ndarray, service: np.ndarray | None) -> Trace:
    """The checked, sorted trace of parsed columns (shifted so the first job arrives at 0)."""
    if not np.all(np.isfinite(arrivals)):
        raise TraceError(f"{path}: timestamps must be finite numbers")
    unit = _epoch_unit(float(np.max(np.abs(arrivals))))
    if unit is not None:
        # Shifted to start at 0, an hour of epoch milliseconds replayed as 41 days of traffic at a
        # thousandth of its rate, exit 0.
        raise TraceError(
            f"{path}: the timestamps read as {unit} since the epoch, not seconds; write the "
            f"timestamp column in seconds (divide by {EPOCH_UNITS[unit]:,.0f})"
        )
    order = np.argsort(arrivals, kind="stable")
    arrivals = arrivals[order]
    return Trace(path.name, arrivals - arrivals[0], None if service is None else service[order])


def _generic_fast(path: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A generic CSV's columns parsed by numpy's C reader, or None to take the careful path.

    The csv module plus a float per cell took 2.4 s of a million-job replay's 11 s; numpy reads the
    same file in 0.1 s. Any file it does not read cleanly (blank cells, a missing value or one too
    many, a word where a number belongs, another column, another format) goes the careful way, which
    finds the same numbers or says which line is wrong: the line numbers, and a blank line's place,
    are only known there.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if '"' in first:  # a quoted header could span lines, and skiprows counts lines
        return None
    header = [h.strip() for h in next(csv.reader([first]), [])]
    # Only a header of the two known columns, each once: numpy then reads every column and refuses
    # a record of another width, which it does not with a selection of columns (one more value,
    # or one fewer in a column not selected, went through unseen).
    if sorted(header) not in ([GENERIC_TIME], sorted([GENERIC_TIME, GENERIC_SERVICE])):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns of an empty file
            values = np.loadtxt(
                path,
                delimiter=",",
                skiprows=1,
                dtype=np.float64,
                encoding="utf-8-sig",
                comments=None,
                quotechar='"',
                ndmin=2,
            )
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    if len(values) == 0 or values.shape[1] != len(header) or not np.all(np.isfinite(values)):
        return None  # the careful path names the offending line (blank lines shift the count)
    arrivals = values[:, header.index(GENERIC_TIME)].copy()
    if GENERIC_SERVICE not in header:
        return arrivals, None
    service = values[:, header.index(GENERIC_SERVICE)].copy()
    return (arrivals, service) if np.all(service >= 0) else None


def _check_header(path: Path, header: list[str]) -> None:
    """Refuse a header that names a column twice: which of the two would the trace be read from?"""
    named = [h for h in header if h]
    twice = next((h for i, h in enumerate(named) if h in named[:i]), None)
    if twice is not None:
        raise TraceError(f"{path}: the header names the column {twice!r} twice")


def _value_of(header: list[str], index: int) -> str:
    """How a message names a record's value in column ``index``: by the header's name for it, or
    by its place (counted from 1) when the header left that column unnamed."""
    return f"{header[index]!r} value" if header[index] else f"value in column {index + 1}"


def _check_widths(path: Path, header: list[str], body: _Body) -> None:
    """Refuse the first record that does not hold exactly one value per header column.

    A record one value short shifts nothing but still misses one; one value too long almost always
    means a comma inside a number (``2,000``) or a column moved, and reading the first columns of
    it anyway read another column's value as the job's.
    """
    width = len(header)
    for line, row in zip(body.lines, body.rows, strict=True):
        if len(row) < width:
            raise TraceError(f"{path}: line {line} has no {_value_of(header, len(row))}")
        if len(row) > width:
            raise TraceError(
                f"{path}: line {line} has {len(row)} values for the header's {width} columns: "
                f"{row[width].strip()!r} after the {_value_of(header, width - 1)} is one too many "
                "(a comma inside a number?)"
            )


class _Body(NamedTuple):
    """The non-blank records after the header, and the file line each one is on (for errors)."""

    rows: list[list[str]]
    lines: list[int]


def _column(header: list[str], body: _Body, name: str) -> list[str]:
    """The stripped values of column ``name`` (every record has one: :func:`_check_widths`)."""
    index = header.index(name)
    return [row[index].strip() for row in body.rows]


def _floats(path: Path, body: _Body, values: list[str], name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:
        line, bad = _first_bad(body, values, float)
        raise TraceError(f"{path}: line {line}: {name} {bad!r} is not a number") from None


def _date_time(value: str) -> np.datetime64:
    """One TIMESTAMP as :func:`_azure` accepts it; ``ValueError`` names what numpy alone would take."""
    if not _DATE_TIME.fullmatch(value):
        raise ValueError(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return np.datetime64(value)


def _first_bad(body: _Body, values: list[str], parse: Callable[[str], object]) -> tuple[int, str]:
    for line, value in zip(body.lines, values, strict=True):
        try:
            parse(value)
        except ValueError:
            return line, value
    return 0, ""  # unreachable for values that failed as a batch


_WHOLE_NUMBER = re.compile(r"\d+")


def _token_counts(path: Path, header: list[str], body: _Body) -> None:
    """Refuse a token count that is not a whole number >= 0 (blank, a word, a fraction).

    The replay reads only the arrival times, but a count that is not one says the record is not what
    the header says it is (a column moved, a value cut short), and its time may be another column's.
    """
    for name in AZURE_COLUMNS[1:]:
        if name not in header:
            continue
        values = _column(header, body, name)
        bad = next((i for i, v in enumerate(values) if not _WHOLE_NUMBER.fullmatch(v)), None)
        if bad is not None:
            raise TraceError(
                f"{path}: line {body.lines[bad]}: {name} {values[bad]!r} is not a whole number >= 0"
            )


def _azure(path: Path, header: list[str], body: _Body) -> np.ndarray:
    _token_counts(path, header, body)
    stamps = _column(header, body, AZURE_COLUMNS[0])
    try:
        if not all(map(_DATE_TIME.fullmatch, stamps)):
            raise ValueError
        with warnings.catch_warnings():
            # An offset ('...+01:00', 'Z') is converted to UTC, which is what a trace wants; numpy
            # only warns that the result keeps no zone.
            warnings.simplefilter("ignore", UserWarning)
            # '2023-11-16 18:17:03.9799600': numpy reads the 7-digit fraction that datetime rejects.
            parsed = np.asarray(stamps, dtype="datetime64[ns]")
            # Nanoseconds wrap silently outside 1678..2261; microseconds reach any 4-digit year.
            exact = np.asarray(stamps, dtype="datetime64[us]")
    except ValueError:
        line, bad = _first_bad(body, stamps, _date_time)
        raise TraceError(
            f"{path}: line {line}: TIMESTAMP {bad!r} is not a date-time like 2023-11-16 18:17:03.98 "
            f"(for seconds from any origin use a generic CSV with a '{GENERIC_TIME}' header)"
        ) from None
    wrapped = np.abs(parsed.astype("datetime64[us]").astype(np.int64) - exact.astype(np.int64)) > 1
    if np.any(wrapped):
        first = int(np.flatnonzero(wrapped)[0])
        raise TraceError(
            f"{path}: line {body.lines[first]}: TIMESTAMP {stamps[first]!r} is outside 1678..2261"
        )
    nanos = parsed.astype(np.int64)
    return np.asarray((nanos - nanos.min()) / 1e9, dtype=np.float64)


def _generic(path: Path, header: list[str], body: _Body) -> tuple[np.ndarray, np.ndarray | None]:
    arrivals = _floats(path, body, _column(header, body, GENERIC_TIME), GENERIC_TIME)
    if GENERIC_SERVICE not in header:
        return arrivals, None
    service = _floats(path, body, _column(header, body, GENERIC_SERVICE), GENERIC_SERVICE)
    bad = ~(np.isfinite(service) & (service >= 0))
    if np.any(bad):
        line = body.lines[int(np.flatnonzero(bad)[0])]
        raise TraceError(f"{path}: line {line}: {GENERIC_SERVICE} must be a finite number >= 0")
    return arrivals, service


def write_trace(path: Path | None, arrivals: np.ndarray, service: np.ndarray | None = None) -> str:
    """Render a generic CSV (and write it when ``path`` is given); returns the text."""
    if service is None:
        lines = [GENERIC_TIME, *(f"{t:.6f}" for t in arrivals.tolist())]
    else:
        pairs = zip(arrivals.tolist(), service.tolist(), strict=True)
        lines = [f"{GENERIC_TIME},{GENERIC_SERVICE}", *(f"{t:.6f},{s:.6f}" for t, s in pairs)]
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.write_text(text, encoding="utf-8")
    return text


def shuffle_blocks(trace: Trace, block_seconds: float, seed: int) -> Trace:
    """``trace`` cut into ``block_seconds`` blocks and put back in a seeded random order.

    Each block keeps its own arrivals (and service times) at their offsets within it, so the
    bursts, quiet spells and rates are the real trace's; only which comes first changes. A policy
    tuned on one ordering of a short real trace is then scored on others (a block bootstrap).
    """
    if block_seconds <= 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    if len(trace) == 0:
        return trace
    index = np.floor(trace.arrivals / block_seconds).astype(np.int64)
    blocks = int(index[-1]) + 1
    slot = np.empty(blocks, np.int64)
    slot[np.random.default_rng(seed).permutation(blocks)] = np.arange(blocks)
    moved = trace.arrivals + (slot[index] - index) * block_seconds
    order = np.argsort(moved, kind="stable")
    arrivals = moved[order]
    service = None if trace.service is None else trace.service[order]
    name = f"{trace.name}, {block_seconds:g} s blocks shuffled (seed {seed})"
    return Trace(name, arrivals - arrivals[0], service)


def trace_argument(parser: argparse.ArgumentParser, option: str, path: str | Path) -> Trace:
    """The trace a script's ``option`` names, or its parser's one-line usage error (exit 2).

    The benchmarks take ``--trace PATH`` for an operator's own recordings; a typo'd path or a bad
    file ended in a ``TraceError`` traceback there, where the experiments CLI says what is wrong.
    """
    try:
        return load_trace(path)
    except TraceError as exc:
        parser.error(f"{option}: {exc}")

"""The demo's client: paced submissions, the ledger of what was accepted and finished, the view."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from rich.console import Console

from autoscaler.demo.plan import Plan, Traffic
from autoscaler.demo.traffic import Ledger, play, reraise_lost_cancel
from autoscaler.demo.view import View, line, status_of
from jobqueue import JobStatus


def test_ledger_matches_a_completion_read_before_its_acceptance() -> None:
    ledger = Ledger()
    ledger.finish("early", JobStatus.SUCCEEDED, 100.5)  # the worker was faster than the 202
    assert ledger.finished == {}
    ledger.accept("early", 100.0)
    ledger.accept("late", 100.0)
    ledger.finish("late", JobStatus.SUCCEEDED, 101.0)
    ledger.finish("late", JobStatus.SUCCEEDED, 109.0)  # a second report changes nothing
    assert ledger.latencies == [0.5, 1.0] and ledger.outstanding == 0 and ledger.succeeded == 2
    summary = ledger.latency_summary(speedup=10, slo=7.0)
    assert summary is not None
    assert list(summary) == pytest.approx([7.5, 9.75, 0.5])


def test_a_cancellation_swallowed_by_wait_for_still_stops_the_loop() -> None:
    """Ctrl-C cancels the session's task just after a Redis send finished: Python 3.11's
    asyncio.wait_for then returns the send's result and the cancellation is gone (later Pythons
    raise it). Either way the loop must stop at its next turn, not play the trace to the end."""

    async def session() -> int:
        task = asyncio.current_task()
        assert task is not None
        turns = 0

        async def send() -> str:
            if turns == 2:  # the cancel is queued before wait_for hears that the send finished
                asyncio.get_running_loop().call_soon(task.cancel)
            return "sent"

        while turns < 10:
            reraise_lost_cancel()
            turns += 1
            await asyncio.wait_for(send(), timeout=5)
        return turns

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(session())


def test_a_task_nobody_cancelled_runs_on() -> None:
    async def turns() -> int:
        for _ in range(3):
            reraise_lost_cancel()
            await asyncio.sleep(0)
        return 3

    assert asyncio.run(turns()) == 3


def test_play_paces_posts_at_compressed_trace_times_and_counts_refusals() -> None:
    sent: list[tuple[float, dict[str, object]]] = []

    def api(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append((time.monotonic(), body))
        if body["input"]["n"] == 2:
            return httpx.Response(429, json={"error": "overloaded", "detail": "x"})
        return httpx.Response(202, json={"id": f"job{body['input']['n']}"})

    plan = Plan(speedup=20, max_workers=2, queue="demo:run-x")
    traffic = Traffic("t.csv", 100.0, 10.0, 3, 1, np.asarray([0.0, 2.0, 4.0]))
    ledger = Ledger()

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(api), base_url="http://api") as http:
            await play(http, plan, traffic, ledger)

    asyncio.run(go())
    assert [body["model"] for _, body in sent] == ["demo"] * 3
    assert sent[0][1] == {"model": "demo", "version": "run-x", "input": {"n": 0, "trace_seconds": 100.0}}
    gaps = np.diff([at for at, _ in sent])
    assert gaps == pytest.approx([0.1, 0.1], abs=0.05)  # 2 trace seconds at 20x
    assert ledger.sent == 3 and set(ledger.submitted) == {"job0", "job1"}
    assert ledger.rejected == {"HTTP 429": 1}


def test_plain_lines_carry_trace_units() -> None:
    plan = Plan(speedup=10, max_workers=4)
    traffic = Traffic("t.csv", 0.0, 100.0, 5, 1, np.arange(5.0))
    ledger = Ledger(sent=2)
    ledger.accept("a", 0.0)
    ledger.finish("a", JobStatus.SUCCEEDED, 0.6)
    status = status_of(plan, traffic, 3.0, ledger, None)
    assert status.elapsed == 30.0 and status.p50 == pytest.approx(6.0) and status.within_slo == 1.0
    text = line(status)
    assert "t=30/100s" in text and "sent=2/5" in text and "p50=6.0s" in text and "slo=100.0%" in text
    assert text.endswith(" decision=-")  # no tick seen yet
    console = Console(record=True, width=200)
    with View(plan, console, live=False) as view:
        view.show(status)
    assert console.export_text().count("t=30/100s") == 2  # the first line, and the last on exit

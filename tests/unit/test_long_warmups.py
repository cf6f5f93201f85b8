"""The default policy on workloads unlike the reference: warm-ups of minutes, long jobs, many slots.

The defaults were tuned on 30 s warm-ups and 5 s jobs. Each case here is one where a review found
the default far from a fixed pool of the same cost (helper-70, session 44), replayed in the
simulator as ``python -m experiments replay`` would (arrivals from the first job, one warm pod
unless said otherwise); the numbers of the code before each fix are in the comments.
"""

from __future__ import annotations

from experiments.generators import Diurnal, Poisson, Shape, Step, generate
from experiments.replay import Outcome, Setup, prepare, run_policy
from experiments.traces import Trace


def replay(shape: Shape, setup: Setup, policy: str = "startup-aware") -> Outcome:
    arrivals, _ = generate(shape, seed=0)
    trace = Trace("generated", arrivals - arrivals[0])
    outcome, _ = run_policy(prepare(trace, setup), policy)
    return outcome


def test_a_lull_shorter_than_a_warm_up_keeps_the_pool_the_usual_traffic_needs() -> None:
    """2 jobs/s, a one-minute lull, a 120 s warm-up: 94.0 % within SLO at 1.10x before.

    Smooth traffic's standing pool is a few pods; when the need fell to it in the lull, the whole
    pool went at once (the pool counted as the guard against re-need) and came back a warm-up late.
    """
    lull = Step(base_rate=2.0, factor=0.02, step_at=1500.0, step_seconds=60.0, duration=2400.0)
    outcome = replay(lull, Setup(startup=120.0, initial_replicas=12))
    assert outcome.slo_attainment >= 0.99
    assert outcome.cost_vs_oracle <= 0.9


def test_steady_traffic_with_a_long_warm_up_is_not_sized_on_forecast_noise() -> None:
    """Poisson 0.5 job/s, 20 s jobs, SLO 30 s, 120 s warm-up: 97.2 % at 1.21x and up to 151 pods before.

    After a cut of the steady line at a chance "level shift", the short line left, read 62 s ahead,
    carried its slope's noise into the forecast; queued work was then counted as work to finish
    within the wait budget rather than jobs to start, and 14 pods' worth of load got orders of 150.
    Now 100 % at 1.19x with at most 54 pods; a fixed pool of 14 meets 99.8 % at 0.82x.
    """
    outcome = replay(
        Poisson(rate=0.5, duration=7200.0), Setup(startup=120.0, service=20.0, slo=30.0, initial_replicas=14)
    )
    assert outcome.slo_attainment >= 0.995
    assert outcome.max_replicas <= 100


def test_sixteen_slot_pods_with_a_five_minute_warm_up_follow_a_swing_with_the_pods_it_needs() -> None:
    """50 jobs/s ±80 %, 0.2 s jobs on 16 slots, SLO 1.2 s, 300 s warm-up: the peak needs 2 pods.

    Before: up to 83 pods, 79.8 % at 1.05x. The line, noisier than the Holt level it stood in for,
    read the swing's slope far ahead.
    """
    swing = Diurnal(mean_rate=50.0, amplitude=0.8, period=1800.0, duration=3600.0)
    outcome = replay(swing, Setup(startup=300.0, service=0.2, slo=1.2, slots=16))
    assert outcome.max_replicas <= 3
    assert outcome.slo_attainment >= 0.85  # the rest is the swing's rise, a 300 s warm-up behind


def test_long_jobs_with_a_tight_slo_get_no_standing_pool_for_smooth_traffic() -> None:
    """0.05 job/s of 60 s jobs with 1 s to spare: 4.29x the oracle before, now 3.02x (a fixed 9: 2.24x).

    The learned pool's fluid queue had each lone arrival wait for the work ahead of it, so smooth
    traffic of 3 Erlangs kept a standing pool of 10-20; the queueing model's own pods remain.
    """
    outcome = replay(Poisson(rate=0.05, duration=7200.0), Setup(service=60.0, slo=61.0, initial_replicas=9))
    assert outcome.slo_attainment == 1.0
    assert outcome.cost_vs_oracle <= 3.5

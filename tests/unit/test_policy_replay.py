"""The startup-aware policy over many ticks, driven directly or in the simulator."""

import numpy as np
import pytest

from autoscaler.engine.policy import StartupAwareConfig, StartupAwarePolicy
from autoscaler.engine.queueing import slots_for_wait_slo
from autoscaler.engine.snapshot import Decision, PodPhase, PodView, Snapshot
from autoscaler.engine.target import WorkloadSpec
from experiments.distributions import LogNormal
from experiments.generators import OnOff, Poisson, Step, generate
from experiments.oracle import oracle_pod_seconds, warmup_bound
from experiments.sim import SimConfig, simulate


def bursts(count: int, every: float, size: int, within: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    starts = np.arange(count) * every + 60.0
    return np.sort(np.concatenate([s + rng.uniform(0, within, size) for s in starts]))


def replay(arrivals: np.ndarray, config: StartupAwareConfig) -> tuple[float, float, np.ndarray]:
    workload = WorkloadSpec()
    policy = StartupAwarePolicy(workload, config)
    result = simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(workload=workload))
    return float(np.mean(result.latency <= 10.0)), result.pod_seconds, result.timeline.replicas


def test_recurring_bursts_earn_a_standing_pool_that_serves_their_onsets() -> None:
    arrivals = bursts(count=12, every=150.0, size=150, within=15.0)  # 10 jobs/s for 15 s, 2.5 min apart
    # These bursts keep a clock, which the policy would find and pre-warm for: the pool alone here.
    with_pool = replay(arrivals, StartupAwareConfig(season_detect_max_seconds=0))
    without = replay(
        arrivals, StartupAwareConfig(season_detect_max_seconds=0, standing_pool_window_seconds=0)
    )
    assert with_pool[0] > without[0] + 0.3  # onsets are served from warm pods
    assert with_pool[0] >= 0.85
    # Between the last bursts the pool stays up instead of dropping to zero.
    assert with_pool[2][-40:].min() >= 30 and without[2][-40:].min() <= 10


def test_a_configured_season_has_pods_warm_for_each_cron_burst() -> None:
    """30 s at 10 jobs/s every 5 min: nothing reactive serves a burst that is over in one warm-up.

    With ``season_seconds`` set to the period, from the third period on (two seasons fitted)
    the pods are ordered one warm-up ahead of each burst and every job is on time, at less cost
    than reactive scaling spends missing nearly all of them.
    """
    arrivals, _ = generate(OnOff(rate=10.0, on_seconds=30.0, off_seconds=270.0, duration=7200.0), seed=0)
    arrivals -= arrivals[0]
    workload = WorkloadSpec()
    late: list[np.ndarray] = []
    cost: list[float] = []
    for config in (
        StartupAwareConfig(season_seconds=300.0, standing_pool_window_seconds=0),
        StartupAwareConfig(season_detect_max_seconds=0, standing_pool_window_seconds=0),
    ):
        policy = StartupAwarePolicy(workload, config)
        result = simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(workload=workload))
        late.append(result.latency[arrivals >= 900.0] > 10.0)
        cost.append(result.pod_seconds)
    assert not late[0].any()
    assert late[1].mean() > 0.9
    assert cost[0] < 0.7 * cost[1]


def test_a_season_found_in_the_arrivals_retires_the_standing_pool_once_it_serves_the_bursts() -> None:
    """The same cron bursts with the defaults: the pool serves them until the season takes over.

    The period is found after three cycles. Until then only the standing pool serves the bursts,
    and it is held warm between them. Once the season has served a whole cycle on its own, the
    misses from before it no longer count, and the pool is released a whole window (an hour)
    before they would have aged out: between bursts only a pod or two stay up.
    """
    arrivals, _ = generate(OnOff(rate=10.0, on_seconds=30.0, off_seconds=270.0, duration=7200.0), seed=0)
    arrivals -= arrivals[0]
    workload = WorkloadSpec()
    policy = StartupAwarePolicy(workload, StartupAwareConfig())
    result = simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(workload=workload))
    replicas, times = result.timeline.replicas, result.timeline.times
    assert policy.season_seconds == pytest.approx(300.0)
    assert replicas[(times >= 300.0) & (times < 900.0)].min() >= 30  # the pool, before the season
    assert replicas[(times >= 1800.0) & (times < 3600.0)].min() <= 5  # released within the hour
    assert np.all(result.latency[arrivals >= 1800.0] <= 10.0)


@pytest.mark.parametrize(("seed", "late"), [(1, 0.0), (2, 0.0), (1, 20.0)])
def test_pods_ordered_for_a_predicted_burst_are_not_cancelled_before_it(seed: int, late: float) -> None:
    """Cron bursts with the season configured and the standing pool on (the defaults).

    The SLO term reads the profile where pods ordered now first serve, so a few ticks before a
    burst it has moved past the peak and asks for little; the standing pool covers that, and the
    pods ordered for the burst, still warming up, used to be cancelled seconds before it came.
    They are held until their predicted moment, also when the last bursts come 20 s late.
    """
    rng = np.random.default_rng(seed)
    starts = [k * 300.0 + (late if k >= 8 else 0.0) for k in range(12)]
    arrivals = np.sort(np.concatenate([s + np.sort(rng.uniform(0.0, 30.0, 300)) for s in starts]))
    workload = WorkloadSpec()
    policy = StartupAwarePolicy(workload, StartupAwareConfig(season_seconds=300.0))
    result = simulate(arrivals, np.full(len(arrivals), 5.0), policy, SimConfig(workload=workload))
    assert np.all(result.latency[arrivals >= 1800.0] <= 10.0)


def test_a_load_reactive_scaling_handles_gets_no_standing_pool() -> None:
    rng = np.random.default_rng(5)
    arrivals = np.sort(rng.uniform(0, 1800, 9000))  # smooth 5 jobs/s
    with_pool = replay(arrivals, StartupAwareConfig())
    without = replay(arrivals, StartupAwareConfig(standing_pool_window_seconds=0))
    assert with_pool[1] <= without[1] * 1.01


def test_a_one_off_crowd_keeps_the_pool_only_for_the_misses_reactive_scaling_really_had() -> None:
    # A 2-minute 10x crowd in an hour of 1 job/s. The pool replays the window with the pods
    # reactive scaling ordered, ready one warm-up after the order. Counted a tick later, the crowd
    # showed a third more misses than reactive scaling had, and a pool of ~30 pods stayed for
    # twenty minutes (1.18x the cost of no pool at all, for no job more on time; now 1.01x).
    arrivals, _ = generate(Step(step_seconds=120.0, duration=3600.0), seed=0)
    with_pool = replay(arrivals, StartupAwareConfig())
    without = replay(arrivals, StartupAwareConfig(standing_pool_window_seconds=0))
    assert with_pool[0] >= without[0]
    assert with_pool[1] <= 1.1 * without[1]


def steady_decision(config: StartupAwareConfig, rate: float = 1.0, ticks: int = 60) -> Decision:
    """The decision after ``ticks`` ticks of exactly ``rate`` jobs/s served by 8 idle-ish pods."""
    policy = StartupAwarePolicy(WorkloadSpec(), config)
    pods = tuple(PodView(f"p{i}", PodPhase.READY, 0.0, busy_slots=int(i < 5)) for i in range(8))
    decision = None
    for k in range(ticks):
        snap = Snapshot(k * 5.0, 0, 5, int(rate * 5), 5.0, 8, pods, service_times=(5.0,) * 5)
        decision = policy.decide(snap)
    assert decision is not None
    return decision


def test_the_queueing_term_allows_at_most_the_queue_miss_probability() -> None:
    default = steady_decision(StartupAwareConfig())
    # Fixed 5 s service (cv^2 = 0), a 5 s wait budget: the term is Erlang C at 0.01.
    expected = slots_for_wait_slo(default.terms["demand_rate"], 5.0, 5.0, 0.01, 0.0)
    assert default.terms["slo_pods"] == expected
    looser = steady_decision(StartupAwareConfig(queue_miss_probability=0.2))
    assert looser.terms["demand_rate"] == default.terms["demand_rate"]
    assert looser.terms["slo_pods"] == slots_for_wait_slo(looser.terms["demand_rate"], 5.0, 5.0, 0.2, 0.0)
    # The two allowances differ here, and the default buys the extra pod.
    assert default.terms["slo_pods"] > looser.terms["slo_pods"]
    # 1 - confidence caps it too: at 0.95 the 0.5 allowance is never used.
    strict = steady_decision(StartupAwareConfig(confidence=0.95, queue_miss_probability=0.5))
    assert strict.terms["slo_pods"] == slots_for_wait_slo(strict.terms["demand_rate"], 5.0, 5.0, 0.05, 0.0)


@pytest.mark.parametrize(("rate", "seed"), [(0.5, 2), (1.0, 3)])
def test_steady_low_rate_traffic_meets_the_smooth_load_target(rate: float, seed: int) -> None:
    # The smooth-load target, >= 99.5 % within the SLO at <= 0.95x the oracle. Sizing on
    # the Holt level alone (steady_window_seconds=0) held 99.8-100 % here but at 0.92-0.95x with
    # a 0.1 queueing allowance and 1.02-1.10x with the default 0.01; the steady line gives
    # 99.75-99.9 % at 0.89-0.94x.
    arrivals, _ = generate(Poisson(rate=rate, duration=7200.0), seed=seed)
    workload = WorkloadSpec()
    service = np.full(len(arrivals), 5.0)
    policy = StartupAwarePolicy(workload, StartupAwareConfig())
    result = simulate(arrivals, service, policy, SimConfig(workload=workload))
    steady = arrivals >= 600.0  # past the first warm-up
    assert np.mean(result.latency[steady] <= 10.0) >= 0.995
    assert result.pod_seconds <= 0.95 * oracle_pod_seconds(arrivals, service, 1, workload.startup_seconds)
    holt_only = StartupAwarePolicy(workload, StartupAwareConfig(steady_window_seconds=0))
    noisier = simulate(arrivals, service, holt_only, SimConfig(workload=workload))
    assert result.pod_seconds < 0.9 * noisier.pod_seconds


def test_heavy_tailed_service_times_are_sized_for_their_mean() -> None:
    """Lognormal service times (mean 5 s, p90 10 s) at 5 jobs/s: the pool must carry their mean load.

    A tenth of these jobs take longer than the SLO whatever the pool, and the first warm-up costs
    its share: the best any policy can do from one warm pod is 88.6 %. Sized on a trimmed mean
    (4.2 s) the policy reached 78.6 % at 0.85x the oracle; on the capped mean, 88.0 % at 0.93x.
    """
    arrivals, _ = generate(Poisson(rate=5.0, duration=1800.0), seed=1)
    service = LogNormal(mean=5.0, p90=10.0).draw(np.random.default_rng(0), len(arrivals))
    workload = WorkloadSpec()
    policy = StartupAwarePolicy(workload, StartupAwareConfig())
    result = simulate(arrivals, service, policy, SimConfig(workload=workload))
    best = warmup_bound(
        arrivals, service, slots=1, initial_pods=1, startup=30.0, look_seconds=1.0, slo=10.0, max_pods=200
    )
    assert float(np.mean(result.latency <= 10.0)) >= best - 0.01
    assert result.pod_seconds <= 0.95 * oracle_pod_seconds(arrivals, service, 1, workload.startup_seconds)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_one_second_tick_costs_no_more_than_the_default_on_steady_traffic(seed: int) -> None:
    """Poisson 5 jobs/s for 30 min with a 1 s control tick instead of the default 5 s.

    With per-update forecast gains, and each second's count read against the short window's
    noise band, the pool followed one-second wiggles: 862-1,357 pods created where the 5 s tick
    creates 190-250, at 1.11-1.15x the oracle. The tick is the operator's to choose; what it buys
    is a faster look, not a noisier pool.
    """
    arrivals, _ = generate(Poisson(rate=5.0, duration=1800.0), seed=seed)
    service = np.full(len(arrivals), 5.0)
    oracle = oracle_pod_seconds(arrivals, service, 1, 30.0)
    runs = {}
    for tick in (5.0, 1.0):
        workload = WorkloadSpec(tick_seconds=tick)
        policy = StartupAwarePolicy(workload, StartupAwareConfig())
        runs[tick] = simulate(arrivals, service, policy, SimConfig(workload=workload))
    fast = runs[1.0]
    assert np.mean(fast.latency[arrivals >= 300.0] <= 10.0) >= 0.999  # past the first warm-up
    assert fast.pod_seconds <= 0.95 * oracle
    assert len(fast.pod_created) <= 3 * len(runs[5.0].pod_created)  # 1.1-2.2x; was 4.5-6.1x


def test_a_common_slow_mode_of_service_times_is_sized_for_in_full() -> None:
    """60 % of jobs at 0.2 s and 40 % at 12 s, 2 jobs/s (about 9.8 pods of work): with the service
    estimate capped at 20 medians the pool was sized for a third of it, and 17 % of the jobs of a
    steady half hour met a 15 s SLO where a static pool met 98 %."""
    rng = np.random.default_rng(1)
    arrivals = np.sort(rng.uniform(0, 1800, 3600))
    service = np.where(rng.random(3600) < 0.6, 0.2, 12.0)
    workload = WorkloadSpec(slo_seconds=15.0)
    result = simulate(
        arrivals, service, StartupAwarePolicy(workload), SimConfig(workload=workload, initial_replicas=12)
    )
    steady = arrivals > 900  # long after the estimate is measured
    assert float(np.mean(result.latency[steady] <= 15.0)) >= 0.95


def test_the_policy_plans_on_the_p90_of_measured_warm_ups_and_says_so() -> None:
    """The estimator's quantile is tested alone; here, that the policy asks it for the p90 (the
    configured ``startup_quantile``) and sizes with that: planned on the median, every warm-up
    slower than half of them would find the horizon too short."""
    samples = tuple(10.0 * k for k in range(1, 11))  # 10 s ... 100 s: median 55, p90 91
    policy = StartupAwarePolicy(WorkloadSpec())
    decision = policy.decide(
        Snapshot(now=0.0, waiting=0, in_flight=0, arrivals=0, interval=5.0, current_replicas=1)
    )
    decision = policy.decide(
        Snapshot(
            now=5.0,
            waiting=3,
            in_flight=1,
            arrivals=4,
            interval=5.0,
            current_replicas=1,
            startup_times=samples,
        )
    )
    assert policy.startup_estimate == pytest.approx(float(np.quantile(samples, 0.9))) == 91.0
    assert decision.terms["startup_time"] == pytest.approx(policy.startup_estimate)
    tuned = StartupAwarePolicy(WorkloadSpec(), StartupAwareConfig(startup_quantile=0.5))
    tuned.decide(Snapshot(now=5.0, waiting=0, in_flight=0, arrivals=0, interval=5.0, current_replicas=1,
                          startup_times=samples))  # fmt: skip
    assert tuned.startup_estimate == pytest.approx(55.0)

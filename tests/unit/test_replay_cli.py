"""The ``python -m experiments`` interface: JSON shape, user errors, and every subcommand once."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from autoscaler.config import PolicyConfig
from experiments.cli import main
from experiments.distributions import Fixed
from experiments.generators import Poisson, generate
from experiments.keda_sweep import Section, _verdict
from experiments.replay import Outcome, Setup, prepare
from experiments.sim import TickLimitError
from experiments.traces import Trace, load_trace, write_trace
from experiments.tune import suggest_floors

REPO = Path(__file__).resolve().parents[2]
POLICY_KEYS = {
    "policy",
    "slo_attainment",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "pod_seconds",
    "cost_vs_oracle",
    "scale_events",
    "max_replicas",
}


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    arrivals, _ = generate(Poisson(rate=1.0, duration=300.0), seed=5)
    path = tmp_path / "small.csv"
    write_trace(path, arrivals)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_json_to_stdout_is_only_json_with_exactly_the_documented_keys(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(
        capsys, "replay", "--trace", str(trace), "--policy", "keda", "--policy", "static:3", "--json", "-"
    )
    assert status == 0
    document = json.loads(out)
    assert set(document) == {"trace", "jobs", "oracle_pod_seconds", "policies"}
    assert document["trace"] == "small.csv" and document["jobs"] == len(load_trace(trace))
    assert [p["policy"] for p in document["policies"]] == ["keda", "static:3"]
    for entry in document["policies"]:
        assert set(entry) == POLICY_KEYS
        assert 0 <= entry["slo_attainment"] <= 1
        assert entry["latency_p50"] <= entry["latency_p95"] <= entry["latency_p99"]
        assert entry["cost_vs_oracle"] == pytest.approx(entry["pod_seconds"] / document["oracle_pod_seconds"])
        assert isinstance(entry["scale_events"], int) and isinstance(entry["max_replicas"], int)


def test_table_json_file_and_plots(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, plots = tmp_path / "r.json", tmp_path / "plots"
    status, out, _ = run_cli(
        capsys,
        "replay",
        "--trace",
        str(trace),
        "--policy",
        "kpa",
        "--json",
        str(out_json),
        "--plot",
        str(plots),
    )
    assert status == 0
    assert "within SLO" in out and "kpa" in out
    assert json.loads(out_json.read_text())["policies"][0]["policy"] == "kpa"
    assert sorted(p.name for p in plots.iterdir()) == ["latency_cdf.png", "replicas.png"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--trace", "/no/such/trace.csv"], "/no/such/trace.csv: no such file"),
        (["--policy", "kedda"], "unknown policy 'kedda'"),
        (["--slo", "0"], "--slo must be a finite number > 0, got 0.0"),
        # a job takes at least its service time: no pool meets this SLO (the default --service is 5)
        (["--slo", "4"], "--slo 4 must be longer than --service 5: every job's latency is at least"),
        (["--slo", "2", "--service", "2"], "--slo 2 must be longer than --service 2"),
        (["--watch", "-1"], "--watch must be a finite number >= 0, got -1.0"),
        (["--startup-p90", "10"], "lognormal"),
        (["--service", "trace"], "no service_s column"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    trace: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    argv = ["replay", "--trace", str(trace), "--policy", "keda", *args]
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_the_watch_is_an_option_of_the_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Ten quiet minutes, then a minute at 10 jobs/s that begins just after a tick.
    arrivals = np.concatenate([np.arange(0.0, 600.0, 2.0), np.arange(600.5, 660.5, 0.1)])
    path = tmp_path / "burst.csv"
    write_trace(path, arrivals)
    results = {}
    for watch in ("1", "0"):
        argv = ["replay", "--trace", str(path), "--watch", watch, "--policy", "startup-aware", "--json", "-"]
        status, out, _ = run_cli(capsys, *argv)
        assert status == 0
        results[watch] = json.loads(out)["policies"][0]["slo_attainment"]
    assert results["1"] > results["0"]  # pods ordered at the first look into the burst, not at 605 s


def test_service_times_from_the_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "svc.csv"
    write_trace(path, np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    status, out, _ = run_cli(
        capsys, "replay", "--trace", str(path), "--service", "trace", "--policy", "static:1", "--json", "-"
    )
    assert status == 0
    # One warm pod, FIFO: the jobs finish at 1, 3 and 6 s, so latencies are 1, 2 and 4 s.
    assert json.loads(out)["policies"][0]["latency_p50"] == 2.0


def test_bad_trace_content_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    status, _, err = run_cli(capsys, "replay", "--trace", str(bad), "--json", "-")
    assert status == 2 and "unrecognised header" in err and "generate poisson" in err


def test_module_entry_point_in_a_subprocess(trace: Path) -> None:
    command = [sys.executable, "-m", "experiments", "replay", "--trace", str(trace), "--policy", "static:2"]
    ok = subprocess.run([*command, "--json", "-"], cwd=REPO, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["policies"][0]["policy"] == "static:2"
    missing = [sys.executable, "-m", "experiments", "replay", "--trace", "missing.csv"]
    bad = subprocess.run(missing, cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "missing.csv" in bad.stderr


def test_generate_writes_a_loadable_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(
        capsys, "generate", "ramp", "--duration", "120", "--ramp-at", "10", "--seed", "2"
    )
    assert status == 0 and out.startswith("timestamp\n")
    path = tmp_path / "svc.csv"
    status, _, _ = run_cli(
        capsys,
        "generate",
        "poisson",
        "--rate",
        "3",
        "--duration",
        "60",
        "--service-mean",
        "4",
        "--out",
        str(path),
    )
    loaded = load_trace(path)
    assert status == 0 and loaded.service is not None and np.all(loaded.service == 4.0)
    status, _, err = run_cli(capsys, "generate", "step", "--duration", "-1")
    assert status == 2 and "--duration must be a finite number > 0" in err


def test_tune_prints_a_front_and_a_yaml_recommendation(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(
        capsys, "tune", "--trace", str(trace), "--policy", "keda", "--target-attainment", "0.5"
    )
    assert status == 0
    assert "Pareto front" in out
    snippet = out[out.index("# experiments tune") :]
    block = yaml.safe_load(snippet)["policy"]
    assert block["name"] == "keda" and "list_length" in block
    assert PolicyConfig.model_validate(block).name == "keda"  # the daemon accepts it as written


def test_tune_searches_given_knobs_and_shows_where_the_starting_config_stands(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(
        capsys,
        "tune",
        "--trace",
        str(trace),
        "--policy",
        "keda:listLength=3",
        "--grid",
        "listLength=1,8",
        "--grid",
        "scale_up_pods=2,4",
        "--processes",
        "1",
    )
    assert status == 0, err
    # list_length 1, 3 (the spec's), 8 by scale_up_pods 2, 4 (default), at the floor of 0; then the
    # starting knobs at each other floor the trace suggests (the default search adds them).
    floors = [f for f in suggest_floors([prepare(load_trace(trace), Setup())], 0.99) if f != 0]
    assert floors and f"{6 + len(floors)} grid points" in err
    line = out[out.index("Starting config (") :].splitlines()[0]
    assert "list_length=3, scale_up_pods=4, min_replicas=0)" in line and "within SLO at" in line
    status, _, err = run_cli(capsys, "tune", "--trace", str(trace), "--grid", "warp=9")
    assert status == 2 and "unknown knob 'warp'" in err
    status, _, err = run_cli(capsys, "tune", "--trace", str(trace), "--grid", "confidence=0.9,2")
    assert status == 2 and "confidence" in err and "less than 1" in err
    status, _, err = run_cli(capsys, "tune", "--trace", str(trace), "--grid", "confidence")
    assert status == 2 and "expected KNOB=VALUE" in err


def test_tune_searches_the_floor_and_puts_it_on_the_target(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tune", "--trace", str(trace), "--policy", "static:1", "--grid", "n=1", "--processes", "1"]
    status, out, err = run_cli(capsys, *argv, "--min-replicas", "1", "--grid", "minReplicas=6,0")
    assert status == 0, err
    assert "3 grid points" in err  # floors 0, 6 and --min-replicas's 1
    assert "Starting config (n=1, min_replicas=1)" in out
    snippet = yaml.safe_load(out[out.index("# experiments tune") :])
    # A pool of one pod meets 1 job/s of 5 s jobs only with the floor of 6 under it.
    assert snippet == {"min_replicas": 6, "policy": {"name": "static", "n": 1}}
    # auto: the floors the trace suggests (the fluid pool for the target, 10 % either side), and 0.
    status, out, err = run_cli(capsys, *argv, "--grid", "min_replicas=auto", "--target-attainment", "0.9")
    suggested = suggest_floors([prepare(load_trace(trace), Setup())], 0.9)
    assert status == 0, err
    assert len(suggested) == 4 and f"{len(suggested)} grid points" in err  # --min-replicas is 0 here
    assert yaml.safe_load(out[out.index("# experiments tune") :])["min_replicas"] in suggested
    for grid, message in (
        ("min_replicas=six", "'six' is not a whole number of pods, nor 'auto'"),
        ("min_replicas=201", "201 is outside 0..--max-replicas (200)"),
        ("min_replicas=-1", "-1 is outside 0..--max-replicas (200)"),
    ):
        status, _, err = run_cli(capsys, *argv, "--grid", grid)
        assert status == 2 and message in err, err


def test_tune_searches_the_suggested_floors_by_default_with_the_starting_knobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 40 jobs in the first 2 s of every minute: bursts over long before a pod ordered for them is
    # ready, which only a floor serves. Asked for nothing but the trace, tune finds that floor.
    path = tmp_path / "minutely.csv"
    write_trace(path, np.concatenate([m * 60.0 + np.linspace(0.0, 2.0, 40) for m in range(20)]))
    argv = ["tune", "--trace", str(path), "--target-attainment", "0.9", "--processes", "2"]
    status, out, err = run_cli(capsys, *argv, "--policy", "keda")
    assert status == 0, err
    floors = [f for f in suggest_floors([prepare(load_trace(path), Setup())], 0.9) if f != 0]
    assert len(floors) == 3 and f"{6 + len(floors)} grid points" in err  # 6 listLength values at 0
    snippet = yaml.safe_load(out[out.index("# experiments tune") :])
    assert snippet["min_replicas"] in floors  # KEDA alone never meets 90 % of these bursts
    assert "cheapest grid point with SLO attainment >= 0.9" in out
    # A static pool is its own floor: nothing is added to its grid.
    status, _, err = run_cli(capsys, *argv, "--policy", "static:25")
    assert status == 0 and "7 grid points" in err, err  # n: 10, 20, 40, 60, 80, 120 and the spec's 25


def test_tune_on_several_traces_recommends_for_each(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "busier.csv"
    write_trace(other, generate(Poisson(rate=3.0, duration=300.0), seed=6)[0])
    status, out, err = run_cli(
        capsys, "tune", "--trace", str(trace), "--trace", str(other), "--policy", "keda", "--processes", "1"
    )
    assert status == 0, err
    assert "small.csv, busier.csv" in err and "worst trace" in out
    snippet = out[out.index("# experiments tune") :]
    assert "# small.csv: attainment" in snippet and "# busier.csv: attainment" in snippet
    assert yaml.safe_load(snippet)["policy"]["name"] == "keda"


def test_json_to_stdout_stays_strict_json_when_every_job_takes_no_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--service 0`` the oracle was 0 pod-seconds and ``cost_vs_oracle`` a bare NaN, which
    strict JSON parsers refuse (the whole document with it)."""
    path = tmp_path / "instant.csv"
    path.write_text("timestamp\n0\n1\n2\n")
    status, out, _ = run_cli(
        capsys, "replay", "--trace", str(path), "--service", "0", "--policy", "static:1", "--json", "-"
    )

    def refuse(constant: str) -> float:
        raise AssertionError(f"not JSON: {constant}")

    document = json.loads(out, parse_constant=refuse)
    assert status == 0 and document["oracle_pod_seconds"] == pytest.approx(30.0 + 2.0, abs=1e-3)  # gaps idled
    assert math.isfinite(document["policies"][0]["cost_vs_oracle"])


def test_the_keda_sweep_verdict_weighs_a_compared_keda_variant_against_the_sweep_only() -> None:
    """Named by prefix, ``keda:syncOffset=0`` was among the swept settings it is compared with,
    and the report said it was "matched or beaten on both axes by: keda:syncOffset=0"."""

    def point(policy: str, attainment: float, cost: float) -> Outcome:
        return Outcome(policy, attainment, 5.0, 5.0, 5.0, 100.0, cost, 1, 1)

    section = Section(
        Trace("t.csv", np.zeros(1)),
        "",
        100.0,
        [point("keda listLength=5", 0.4, 0.9), point("keda:syncOffset=0", 0.95, 1.0)],
    )
    verdict = _verdict(section, ["keda:syncOffset=0"])
    assert "keda:syncOffset=0" in verdict and "by: keda:syncOffset=0" not in verdict


def test_keda_sweep_writes_markdown(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "sweep.md"
    status, _, _ = run_cli(
        capsys,
        "keda-sweep",
        "--trace",
        str(trace),
        "--list-lengths",
        "1,5",
        "--compare",
        "static:3",
        "--out",
        str(report),
    )
    text = report.read_text()
    assert status == 0
    assert "| keda listLength=1 |" in text and "| keda listLength=5 |" in text and "| static:3 |" in text
    status, _, err = run_cli(capsys, "keda-sweep", "--out", str(report))
    assert status == 2 and "--trace" in err


@pytest.mark.parametrize(
    ("option", "advice"),
    [
        ("--conv-trace", "Azure/AzurePublicDataset"),  # where to download it
        # Shipped in traces/: a typo'd path dropped the Azure row with only a note.
        ("--azure-trace", "pass the path of azure_llm_code_2023.csv"),
    ],
)
def test_scorecard_names_a_missing_real_trace_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, advice: str
) -> None:
    out, missing = tmp_path / "card.md", tmp_path / "trace.csv"
    status, stdout, err = run_cli(capsys, "scorecard", option, str(missing), "--out", str(out))
    assert status == 2 and stdout == "" and not out.exists()
    assert err.startswith(f"error: {option} {missing} not found") and advice in err and err.count("\n") == 1


def test_scorecard_leaves_out_the_reference_pool_above_the_ceiling_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """static:60 under --max-replicas 40 ran 40 pods and was reported as static:60."""
    from experiments import scorecard

    arrivals, _ = generate(Poisson(rate=0.5, duration=120.0), seed=1)
    small = [(Trace("synthetic:smooth", arrivals), "small")]
    monkeypatch.setattr(scorecard, "reference_traces", lambda *_: small)
    out = tmp_path / "card.md"
    status, stdout, err = run_cli(capsys, "scorecard", "--max-replicas", "40", "--out", str(out))
    assert status == 0 and "static:60 is outside --min-replicas 0..--max-replicas 40" in err
    table = stdout.split("\n## ")[1]
    assert "| static:60 |" not in table and "| keda |" in table
    assert scorecard.default_policies(0, 60) == list(scorecard.POLICIES)
    assert "static:60" not in scorecard.default_policies(61, 200)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--tick", "inf"], "--tick must be in (0, 3600], got inf"),
        (["--tick", "1e9"], "--tick must be in (0, 3600]"),
        (["--slots", "10001"], "--slots must be in [1, 10000], got 10001"),
    ],
)
def test_numbers_the_workload_spec_lets_through_are_usage_errors(
    trace: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    status, out, err = run_cli(capsys, "replay", "--trace", str(trace), "--policy", "keda", *args)
    assert status == 2 and out == ""
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_a_trace_mixing_relative_and_epoch_seconds_is_refused_not_replayed_for_ever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three jobs, the last stamped in epoch seconds: 54 years of 5 s ticks, which ran without end."""
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("timestamp\n0\n1\n1700000000\n")
    status, out, err = run_cli(capsys, "replay", "--trace", str(mixed), "--policy", "keda", "--json", "-")
    assert status == 2 and out == ""
    assert "spans 19,676 days" in err and "largest gap is 1,699,999,999 s, after job 2" in err, err


def test_a_trace_of_absurd_span_is_refused_in_a_readable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its days and its largest gap were printed digit by digit: a line of over 1,000 characters."""
    huge = tmp_path / "huge.csv"
    huge.write_text("timestamp\n0\n1e300\n")
    status, out, err = run_cli(capsys, "replay", "--trace", str(huge), "--json", "-")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err == (
        f"error: {huge}: the trace spans 1.16e+295 days, 2e+299 ticks of 5 s to simulate "
        "(at most 2,000,000); its largest gap is 1e+300 s, after job 1: "
        "are its timestamps all in one unit and origin?\n"
    )


@pytest.mark.parametrize(
    ("service", "column", "cause"),
    [
        # (an --slo above each: a shorter one is refused first, as no job could meet it)
        (
            ["--service", "1e300", "--tick", "3600", "--slo", "1e301"],
            "",
            "--service 1e+300 is too long for {trace}: ",
        ),
        (
            ["--service", "1e10", "--service-p90", "1.5e10", "--slo", "1e11"],
            "",
            "--service 1e+10 with --service-p90 1.5e+10 is ",
        ),
        (["--service", "trace"], ",service_s", "the service_s of {trace} (--service trace) are too long: "),
    ],
)
def test_service_times_too_long_for_any_tick_are_blamed_not_the_tick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], service: list[str], column: str, cause: str
) -> None:
    """No --tick (at most 3600 s) replays them: 'pass a --tick of at least 5.1e+293' could not be followed."""
    one = tmp_path / "one.csv"
    one.write_text(f"timestamp{column}\n0{',1e12' if column else ''}\n")
    status, out, err = run_cli(capsys, "replay", "--trace", str(one), *service, "--json", "-")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {cause.format(trace=one)}"), err
    assert (
        "ticks even at the longest --tick, 3600 s (at most 2,000,000)" in err and "pass a --tick" not in err
    )


def test_the_tick_a_refusal_suggests_is_never_above_the_longest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """7,199,996,400 s (1,999,999 ticks after t = 0) need exactly the longest tick; rounded up
    with headroom, that was advised as 3.7e+03."""
    one = tmp_path / "one.csv"
    one.write_text("timestamp\n0\n")
    argv = [
        "replay",
        "--trace",
        str(one),
        "--service",
        "7199996400",
        "--slo",
        "1e10",
        "--tick",
        "3000",
        "--json",
        "-",
    ]
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and err.endswith("; pass a --tick of at least 3600\n"), err


def test_a_trace_of_exactly_the_tick_limit_is_refused_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ticks at 0, 5, ..., 1e7 s are MAX_TICKS + 1: the check passed it, and the replay then ran
    2,000,000 ticks (19 s) before stopping at the limit."""
    edge = tmp_path / "edge.csv"
    edge.write_text("timestamp\n0\n9999995\n")
    status, out, err = run_cli(capsys, "replay", "--trace", str(edge), "--policy", "static:1", "--json", "-")
    assert status == 2 and out == ""
    assert "2,000,001 ticks (at most 2,000,000); pass a --tick of at least 5.1" in err, err


def test_the_tick_limit_met_at_the_longest_tick_does_not_advise_a_longer_one() -> None:
    """Jobs queued behind too few pods can outlast the limit that _check_length let in; at
    --tick 3600 "pass a longer --tick" could not be followed."""
    from experiments.cli import _tick_limit_advice

    def limit(tick: float) -> TickLimitError:
        return TickLimitError("not ended", tick_seconds=tick, watch_seconds=1.0, looks=False)

    assert _tick_limit_advice(limit(5.0)).endswith("; pass a longer --tick")
    longest = _tick_limit_advice(limit(3600.0))
    assert "longer --tick" not in longest and "replay fewer jobs, or give the policy more pods" in longest
    looks = TickLimitError("x", tick_seconds=3600.0, watch_seconds=1e-9, looks=True)
    assert _tick_limit_advice(looks).startswith("--watch 1e-09 is too short")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("jobs", "tick", "ticks"),
    [
        ("0", "1e-300", "5e+300 ticks"),  # one job: its arrivals spanned 0 ticks, and it ran for ever
        ("0\n0", "1e-9", "5,000,000,001 ticks"),  # t = 0 and 5e9 more
        ("0\n1", "1e-6", "6,000,001 ticks"),  # 1 s of arrivals (a million ticks) but 6 s to replay
        ("0\n1", "5e-324", "more than 1e+308 ticks"),  # read as a trace spanning "inf days"
    ],
)
def test_a_tick_too_short_for_the_replay_is_refused_naming_the_tick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str, tick: str, ticks: str
) -> None:
    short = tmp_path / "short.csv"
    short.write_text(f"timestamp\n{jobs}\n")
    status, out, err = run_cli(
        capsys, "replay", "--trace", str(short), "--policy", "static:1", "--tick", tick
    )
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --tick {float(tick):g} is too short for {short}: ") and ticks in err, err
    assert "(at most 2,000,000); pass a --tick of at least " in err


def test_the_tick_a_refusal_suggests_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.csv"
    short.write_text("timestamp\n0\n")  # 5 s of service: 2,000,000 ticks of 2.5e-06 s
    _, _, err = run_cli(capsys, "replay", "--trace", str(short), "--policy", "static:1", "--tick", "1e-6")
    suggested = err.rsplit("at least ", 1)[1].strip()
    assert suggested == "2.6e-06"
    run_cli(
        capsys, "replay", "--trace", str(short), "--policy", "static:0", "--tick", suggested, "--json", "-"
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("watch", ["1e-300", "1e-9"])
def test_a_watch_too_short_for_the_replay_is_refused_naming_the_watch(
    trace: Path, capsys: pytest.CaptureFixture[str], watch: str
) -> None:
    """A tick's watch looks every --watch seconds: at 1e-300 s the first tick never ended."""
    status, out, err = run_cli(
        capsys, "replay", "--trace", str(trace), "--policy", "static:1", "--watch", watch
    )
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --watch {float(watch):g} is too short for {trace}: "), err
    assert "pass a --watch of at least" in err and "or --watch 0 to turn it off" in err


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("command", "tick", "fragment"),
    [
        (["scorecard", "--policy", "static:1"], "0.001", "for the scorecard's trace azure_llm_code_2023.csv"),
        (["keda-sweep", "--synthetic", "smooth", "--compare", "static:1"], "0.001", "for --synthetic smooth"),
        (["tune", "--trace", "TRACE", "--policy", "static:1"], "1e-05", "for TRACE"),
    ],
)
def test_every_command_refuses_a_tick_too_short_for_its_traces(
    *,
    trace: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    tick: str,
    fragment: str,
) -> None:
    """The scorecard's and the sweep's own traces were never checked: at --tick 0.001 they ran for hours."""
    argv = [str(trace) if a == "TRACE" else a for a in command]
    if command[0] != "tune":
        argv += ["--out", str(tmp_path / "out.md")]
    status, out, err = run_cli(capsys, *argv, "--tick", tick)
    assert status == 2 and out == "" and err.count("\n") == 1
    expected = f"error: --tick {tick} is too short {fragment.replace('TRACE', str(trace))}: "
    assert err.startswith(expected), err


def test_a_replay_that_outruns_the_tick_limit_running_names_the_tick(
    trace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue that drains slower than the trace arrives needs more ticks than any check foresees."""

    def too_long(*_args: object, **_kwargs: object) -> None:
        raise TickLimitError(
            "the replay had not ended after 2,000,000 ticks of 0.01 s (20,000 s simulated, 9 of 9 jobs "
            "started)",
            tick_seconds=0.01,
            watch_seconds=0.0,
            looks=False,
        )

    monkeypatch.setattr("experiments.replay.simulate", too_long)
    status, out, err = run_cli(
        capsys, "replay", "--trace", str(trace), "--policy", "static:1", "--tick", "0.01"
    )
    assert status == 2 and out == ""
    assert err == (
        "error: --tick 0.01 is too short: the replay had not ended after 2,000,000 ticks of 0.01 s "
        "(20,000 s simulated, 9 of 9 jobs started); pass a longer --tick\n"
    )


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_an_unwritable_output_is_a_usage_error_before_the_replay(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "out"  # under a file, so no user (root included) can create it
    status, out, err = run_cli(
        capsys, "replay", "--trace", str(trace), "--policy", "static:1", option, str(target)
    )
    assert status == 2 and out == ""  # no table: the replay was not run only to be lost
    assert err == f"error: {option} {target}: cannot write there (Not a directory)\n"


def test_json_into_a_new_directory_is_written(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new" / "r.json"
    status, _, _ = run_cli(
        capsys, "replay", "--trace", str(trace), "--policy", "static:1", "--json", str(target)
    )
    assert status == 0 and json.loads(target.read_text())["policies"][0]["policy"] == "static:1"


def test_generate_to_an_unwritable_path_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, out, err = run_cli(capsys, "generate", "poisson", "--out", str(blocker / "t.csv"))
    assert status == 2 and out == "" and err.startswith("error: --out ") and "Traceback" not in err


def command_line(command: str, trace: Path, out: Path) -> list[str]:
    """``command`` on ``trace`` under one cheap policy (the sweep and the scorecard report to ``out``)."""
    if command == "scorecard":
        return [command, "--azure-trace", str(trace), "--policy", "static:1", "--out", str(out)]
    if command == "keda-sweep":
        return [command, "--trace", str(trace), "--compare", "static:1", "--out", str(out)]
    return [command, "--trace", str(trace), "--policy", "static:1"]


@pytest.mark.parametrize("value", ["2", "1.01", "0", "-1", "nan", "inf"])
def test_a_target_attainment_outside_0_to_1_is_a_usage_error_before_any_replay(
    trace: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """No attainment above 1 is reachable and none at or below 0 is a target; NaN meets nothing."""
    status, out, err = run_cli(capsys, "tune", "--trace", str(trace), "--target-attainment", value)
    assert status == 2 and out == ""
    assert err == f"error: --target-attainment must be in (0, 1], got {float(value)}\n"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["replay", "--slo", "inf"], "--slo"),
        (["replay", "--slo", "nan"], "--slo"),
        (["replay", "--watch", "inf"], "--watch"),
        (["replay", "--watch", "-1"], "--watch"),
        (["replay", "--tick", "nan"], "--tick"),
        (["replay", "--tick", "0"], "--tick"),
        (["replay", "--startup", "nan"], "--startup"),
        (["replay", "--startup-p90", "inf"], "--startup-p90"),
        (["replay", "--service", "inf"], "--service"),
        (["replay", "--service", "-1"], "--service"),
        (["replay", "--service-p90", "nan"], "--service-p90"),
        (["replay", "--slots", "0"], "--slots"),
        (["replay", "--max-replicas", "0"], "--max-replicas"),
        (["replay", "--min-replicas", "-1"], "--min-replicas"),
        (["replay", "--initial-replicas", "-1"], "--initial-replicas"),
        (["tune", "--processes", "0"], "--processes"),
        (["tune", "--slo", "inf"], "--slo"),
        (["keda-sweep", "--processes", "-1"], "--processes"),
        (["keda-sweep", "--list-lengths", "5,inf"], "--list-lengths"),
        (["keda-sweep", "--list-lengths", "nan"], "--list-lengths"),
        (["keda-sweep", "--list-lengths", "0"], "--list-lengths"),
        (["keda-sweep", "--list-lengths", ","], "--list-lengths"),
        (["scorecard", "--slots", "0"], "--slots"),
        (["scorecard", "--watch", "nan"], "--watch"),
    ],
)
def test_every_numeric_flag_out_of_range_is_a_usage_error_naming_it(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    """NaN passes no comparison and infinity every lower bound: neither may slip into a run."""
    command, *rest = argv
    report = tmp_path / "report.md"
    status, out, err = run_cli(capsys, *command_line(command, trace, report), *rest)
    assert status == 2 and out == ""
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1, err
    assert not report.exists()


@pytest.mark.parametrize("flag", ["--startup", "--startup-p90"])
@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep", "scorecard"])
def test_a_startup_beyond_a_day_is_a_usage_error_naming_the_flag(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flag: str
) -> None:
    """A finite startup of 1e308 passed every check; the oracle's bill (a startup per pod level)
    overflowed to infinity and writing the results raised ValueError: a traceback, table or JSON."""
    report = tmp_path / "report.md"
    status, out, err = run_cli(capsys, *command_line(command, trace, report), flag, "1e308")
    assert status == 2 and out == ""
    assert err == f"error: {flag} must be in [0, 86400], got 1e+308\n"
    assert not report.exists()


def test_a_startup_of_a_day_replays_to_finite_numbers(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(
        capsys, "replay", "--trace", str(trace), "--policy", "static:1", "--startup", "86400"
    )
    assert status == 0, err
    assert "oracle" in out and "inf" not in out


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["poisson", "--rate", "nan"], "--rate"),
        (["poisson", "--duration", "inf"], "--duration"),
        (["poisson", "--seed", "-1"], "--seed"),
        (["poisson", "--service-mean", "inf"], "--service-mean"),
        (["poisson", "--service-mean", "5", "--service-p90", "nan"], "--service-p90"),
        (["diurnal", "--amplitude", "2"], "--amplitude"),
        (["diurnal", "--period", "0"], "--period"),
        (["ramp", "--ramp-seconds", "0"], "--ramp-seconds"),
        (["ramp", "--start-rate", "-1"], "--start-rate"),
        (["step", "--factor", "-2"], "--factor"),
        (["onoff", "--on-seconds", "0"], "--on-seconds"),
        (["onoff", "--off-seconds", "-30"], "--off-seconds"),
    ],
)
def test_generate_numbers_out_of_range_are_usage_errors_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    status, out, err = run_cli(capsys, "generate", *argv)
    assert status == 2 and out == ""
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1, err


def test_record_speedup_must_be_finite_and_positive(capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the server is asked anything (port 1: nothing listens there)."""
    for value in ("nan", "inf", "0"):
        status, out, err = run_cli(
            capsys, "record", "--redis-url", "redis://127.0.0.1:1/0", "--speedup", value
        )
        assert status == 2 and out == ""
        assert err.startswith("error: --speedup must be a finite number > 0"), err


@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep", "scorecard"])
def test_replica_bounds_that_contradict_each_other_name_the_flags(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Not the policy's internal field names (``min_replicas``, ``WorkloadSpec(...)``)."""
    argv = command_line(command, trace, tmp_path / "report.md")
    status, out, err = run_cli(capsys, *argv, "--min-replicas", "5", "--max-replicas", "3")
    assert status == 2 and out == ""
    assert err == "error: --min-replicas 5 is above --max-replicas 3\n"
    status, out, err = run_cli(capsys, *argv, "--initial-replicas", "9", "--max-replicas", "3")
    assert status == 2 and err == "error: --initial-replicas 9 is above --max-replicas 3\n"


@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep", "scorecard"])
def test_a_static_pool_above_max_replicas_is_refused_naming_both(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The simulator bounds every decision by --max-replicas, as the daemon does: `static:300` under
    the default 200 replayed 200 pods and was reported as "static:300"."""
    report = tmp_path / "report.md"
    option = "--compare" if command == "keda-sweep" else "--policy"
    argv = command_line(command, trace, report)
    status, out, err = run_cli(capsys, *argv, option, "static:300")
    assert status == 2 and out == "" and not report.exists()
    assert err == f"error: {option} static:300 is above --max-replicas 200\n"
    status, out, err = run_cli(capsys, *argv, option, "static:4", "--max-replicas", "3")
    assert status == 2 and err == f"error: {option} static:4 is above --max-replicas 3\n"


@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep", "scorecard"])
def test_a_static_pool_below_min_replicas_is_refused_naming_both(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The floor bounds every decision too: `static:1 --min-replicas 10` replayed 10 pods as "static:1"."""
    report = tmp_path / "report.md"
    option = "--compare" if command == "keda-sweep" else "--policy"
    argv = command_line(command, trace, report)  # under static:1
    status, out, err = run_cli(capsys, *argv, "--min-replicas", "10")
    assert status == 2 and out == "" and not report.exists()
    assert err.startswith(f"error: {option} static:1 is below --min-replicas 10")


def test_tune_keeps_static_pool_sizes_above_min_replicas(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "tune",
        "--trace",
        str(trace),
        "--policy",
        "static:40",
        "--processes",
        "1",
        "--min-replicas",
        "30",
    ]
    status, out, err = run_cli(capsys, *argv, "--grid", "n=20,40")
    assert status == 2 and out == "" and err.startswith("error: --grid n=20 is below --min-replicas 30")
    status, out, err = run_cli(capsys, *argv, "--max-replicas", "50", "--target-attainment", "0.5")
    assert status == 0, err
    assert "1 grid points" in err  # 40 of the default 10...120


def test_tune_keeps_static_pool_sizes_within_max_replicas(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typed sizes above the ceiling are refused; default candidates above it are not searched."""
    argv = ["tune", "--trace", str(trace), "--policy", "static:10", "--processes", "1"]
    status, out, err = run_cli(capsys, *argv, "--grid", "n=20,300,400")
    assert status == 2 and out == "" and err == "error: --grid n=300,400 is above --max-replicas 200\n"
    status, out, err = run_cli(capsys, *argv, "--max-replicas", "50", "--target-attainment", "0.5")
    assert status == 0, err
    assert "3 grid points" in err  # 10, 20 and 40 of the default 10...120


def test_a_p90_below_its_mean_names_both_flags(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = command_line("replay", trace, Path())
    status, _, err = run_cli(capsys, *argv, "--startup", "30", "--startup-p90", "10")
    assert status == 2 and err.startswith("error: --startup-p90 10 does not fit --startup 30: a lognormal")


@pytest.mark.parametrize("command", ["keda-sweep", "scorecard"])
@pytest.mark.parametrize("blocked", ["under-a-file", "a-directory"])
def test_an_unwritable_report_is_a_usage_error_before_the_run(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, blocked: str
) -> None:
    """The sweep and the scorecard run for minutes; their report path is checked before either."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target, reason = (
        (blocker / "report.md", "Not a directory")
        if blocked == "under-a-file"
        else (tmp_path, "Is a directory")
    )
    status, out, err = run_cli(capsys, *command_line(command, trace, target))
    assert status == 2 and out == ""  # nothing swept or scored only to be lost
    assert err == f"error: --out {target}: cannot write there ({reason})\n"


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "redis://127.0.0.1:port/0",
        "http://127.0.0.1:6379",
        # Taken by redis-py's from_url, then failing at the first command with a traceback or
        # (port 0) silently read as 6379: judged now as the API and the worker judge REDIS_URL.
        "redis://127.0.0.1:0/0",
        "redis://127.0.0.1:6379/0?foo=1",
    ],
)
def test_a_redis_url_redis_py_cannot_read_names_the_flag(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """No scheme (a common slip), another scheme, a port that is no number: one error, no traceback."""
    status, out, err = run_cli(capsys, "record", "--redis-url", url)
    assert status == 2 and out == ""
    assert err.startswith(f"error: --redis-url {url!r} ") and err.count("\n") == 1, err


@pytest.mark.parametrize("url", ["redis://:s3cret@127.0.0.1:port/0", "redis://:s3cret@127.0.0.1:1/0"])
def test_record_never_prints_the_password_in_redis_url(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """Refused by redis-py, or a server that is not there: the message names the server, not the
    password (it went to a terminal, a CI log)."""
    status, out, err = run_cli(capsys, "record", "--redis-url", url)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert "s3cret" not in err and "redis://:***@127.0.0.1:" in err, err


def test_a_keda_sweep_compare_policy_that_does_not_build_is_refused_before_the_sweep(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asked for by name, a typo is the user's to fix, not a 'Not compared' line in a finished report."""
    report = tmp_path / "sweep.md"
    for spec in ("startup-awre", "startup-aware:confidence=2"):
        argv = command_line("keda-sweep", trace, report)
        status, out, err = run_cli(capsys, *argv, "--compare", spec)
        assert status == 2 and out == "" and not report.exists()
        assert err.startswith("error: ") and ("startup-awre" in err or "confidence" in err), err


@pytest.mark.parametrize("window", ["panic_window=1e-10", "stable_window=1e-10,panic_window=1e-10"])
def test_a_kpa_window_shorter_than_knative_allows_is_a_usage_error_naming_it(
    trace: Path, capsys: pytest.CaptureFixture[str], window: str
) -> None:
    """A window of 1e-10 s held no sample, and the replay ended in a ZeroDivisionError traceback."""
    status, out, err = run_cli(capsys, "replay", "--trace", str(trace), "--policy", f"kpa:{window}")
    assert status == 2 and out == ""
    assert (
        err.startswith("error: invalid option(s) for policy 'kpa': KpaConfig needs ") and err.count("\n") == 1
    )
    assert ("stable_window >= 6" if "stable" in window else "1 <= panic_window <= stable_window") in err, err


def test_record_to_an_unwritable_path_is_a_usage_error_before_reading_the_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "trace.csv"
    status, out, err = run_cli(capsys, "record", "--redis-url", "redis://127.0.0.1:1/0", "--out", str(target))
    assert status == 2 and out == ""
    assert err == f"error: --out {target}: cannot write there (Not a directory)\n"


@pytest.mark.parametrize("command", ["tune", "keda-sweep"])
def test_processes_above_four_per_cpu_are_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A typo'd 1000 forked 1000 replays; the cap is checked before the trace is read."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    argv = [command, "--trace", "/no/such/trace.csv"]
    status, out, err = run_cli(capsys, *argv, "--processes", "9")
    assert status == 2 and out == ""
    assert err == "error: --processes must be in [1, 8], got 9\n"
    status, _, err = run_cli(capsys, *argv, "--processes", "8")  # admitted: the trace is what fails
    assert status == 2 and "/no/such/trace.csv: no such file" in err
    status, out, _ = run_cli(capsys, command, "--help")
    assert status == 0 and "at most 4 per CPU (8 here)" in " ".join(out.split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["poisson", "--rate", "1e6", "--duration", "1e6"],
            "--rate 1e+06 and --duration 1e+06 draw about 1,000,000,000,000 arrivals (peak 1e+06 jobs/s "
            "for 1e+06 s), above the 50,000,000 a generated trace may have: lower the rate or --duration",
        ),
        (
            ["step", "--base-rate", "1e4", "--duration", "1e7"],
            "--base-rate 10000 --factor 10 and --duration 1e+07 draw about 1,000,000,000,000 arrivals "
            "(peak 100000 jobs/s for 1e+07 s), above the 50,000,000 a generated trace may have: "
            "lower the rate or --duration",
        ),
    ],
)
def test_generate_refuses_more_jobs_than_a_trace_may_have_before_drawing(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Such a trace ended in a MemoryError traceback, after minutes when it nearly fit."""
    status, out, err = run_cli(capsys, "generate", *argv)
    assert status == 2 and out == ""
    assert err == f"error: {message}\n"


def test_the_generate_limit_is_documented_and_well_above_the_benchmarks_million(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, _ = run_cli(capsys, "generate", "diurnal", "--help")
    assert status == 0 and "At most 50,000,000 arrivals" in out
    monkeypatch.setattr("experiments.cli.generate", lambda *_a, **_k: (np.zeros(1), None))  # no drawing
    status, _, err = run_cli(capsys, "generate", "poisson", "--rate", "1000", "--duration", "50000")
    assert status == 0, err  # exactly the limit
    status, _, err = run_cli(capsys, "generate", "poisson", "--rate", "1000", "--duration", "50000.1")
    assert status == 2 and "above the 50,000,000" in err


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A trace with its own service_s column."""
    arrivals, service = generate(Poisson(rate=1.0, duration=120.0), seed=5, service=Fixed(2.0))
    path = tmp_path / "served.csv"
    write_trace(path, arrivals, service)
    return path


@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep", "scorecard"])
def test_a_service_p90_with_service_times_from_the_trace_is_a_usage_error(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The trace's own times are replayed as they are: the p90 was silently ignored."""
    argv = command_line(command, served, tmp_path / "report.md")
    status, out, err = run_cli(capsys, *argv, "--service", "trace", "--service-p90", "8")
    assert status == 2 and out == ""
    assert err == (
        "error: --service-p90 spreads a drawn --service time, but --service trace replays the "
        "trace's own service_s: drop one of them\n"
    )


def test_generate_refuses_a_service_p90_without_a_service_mean(capsys: pytest.CaptureFixture[str]) -> None:
    """It wrote a trace without any service_s column, the p90 silently dropped."""
    status, out, err = run_cli(capsys, "generate", "poisson", "--service-p90", "8")
    assert status == 2 and out == ""
    assert err == "error: --service-p90 spreads the service times of --service-mean, which is not given\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["step", "--duration", "500"],
            "--step-at 600 is not before --duration 500: the trace would end before the crowd arrives",
        ),
        (
            ["ramp", "--ramp-at", "1800"],
            "--ramp-at 1800 is not before --duration 1800: the trace would end before the ramp begins",
        ),
    ],
)
def test_generate_refuses_a_crowd_or_ramp_after_the_trace_ends(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """It wrote a flat trace, the shape's other options silently without effect."""
    status, out, err = run_cli(capsys, "generate", *argv)
    assert status == 2 and out == ""
    assert err == f"error: {message}\n"


@pytest.mark.parametrize(
    ("first", "second"), [("confidence=0.7", "confidence=0.8"), ("listLength=1", "list_length=2,3")]
)
def test_tune_refuses_a_grid_knob_given_twice_before_reading_the_trace(
    capsys: pytest.CaptureFixture[str], first: str, second: str
) -> None:
    """The last one silently replaced the first (and listLength is list_length)."""
    policy = "keda" if "ength" in first else "startup-aware"
    argv = ["tune", "--trace", "/no/such/trace.csv", "--policy", policy, "--grid", first, "--grid", second]
    status, out, err = run_cli(capsys, *argv)
    knob, again = first.partition("=")[0], second.partition("=")[0]
    assert status == 2 and out == ""
    assert err == (
        f"error: --grid {again} repeats --grid {knob}: list all its values in one --grid {again}=V1,V2\n"
    )


@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep", "scorecard"])
@pytest.mark.parametrize(("tick", "watch"), [("5", "5"), ("5", "7.5"), ("0.5", "1")])
def test_a_watch_no_shorter_than_the_tick_names_both_flags(
    *, trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, tick: str, watch: str
) -> None:
    """The watch looks between ticks: one as long as the tick never looked, and was silently off."""
    report = tmp_path / "report.md"
    argv = command_line(command, trace, report)
    status, out, err = run_cli(capsys, *argv, "--tick", tick, "--watch", watch)
    assert status == 2 and out == "" and not report.exists()
    assert err == (
        f"error: --watch {float(watch):g} is not below --tick {float(tick):g}: the watch looks between "
        "ticks, so it would never look; pass a --watch below --tick, or --watch 0 to turn it off\n"
    )


def test_the_watch_is_off_at_0_and_by_default_when_the_tick_is_no_longer(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--watch 0`` is the way to turn it off; an untyped default never contradicts a short tick."""
    for extra in (["--tick", "5", "--watch", "0"], ["--tick", "1"], ["--tick", "0.5"]):
        status, out, err = run_cli(capsys, "replay", "--trace", str(trace), "--policy", "static:1", *extra)
        assert status == 0, err
        assert "watch 0 s" in out
    status, out, _ = run_cli(capsys, "replay", "--trace", str(trace), "--policy", "static:1", "--tick", "2")
    assert status == 0 and "tick 2 s, watch 1 s" in out


def no_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any replay from here on fails the test: the usage error must come before the work."""

    def ran(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a replay ran before the usage error")

    for target in (
        "experiments.cli.prepare",
        "experiments.cli.replay",
        "experiments.keda_sweep.sweep_trace",
        "experiments.scorecard.score_traces",
    ):
        monkeypatch.setattr(target, ran)


def no_service_column(why: str) -> str:
    return f"error: --service trace replays each trace's own service_s, but {why}: pass --service SECONDS\n"


@pytest.mark.parametrize("synthetic", ["flash", "smooth"])
def test_keda_sweep_of_a_synthetic_trace_with_service_from_the_trace_names_both_before_sweeping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, synthetic: str
) -> None:
    """Synthetic traces have no service_s: the sweep failed only on reaching one, after others ran."""
    no_runs(monkeypatch)
    report = tmp_path / "report.md"
    argv = ["keda-sweep", "--synthetic", synthetic, "--service", "trace", "--out", str(report)]
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and out == "" and not report.exists()
    assert err == no_service_column(f"--synthetic {synthetic} has no service_s column")


@pytest.mark.parametrize("command", ["replay", "tune", "keda-sweep"])
def test_a_trace_without_service_times_under_service_from_the_trace_is_named_before_any_run(
    *,
    served: Path,
    trace: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """Not only the first trace: keda-sweep swept the ones before it, then failed naming no option."""
    no_runs(monkeypatch)
    report, plots = tmp_path / "report.md", tmp_path / "plots"
    argv = command_line(command, served, report)
    if command == "replay":  # one trace, and --plot must not make its directory for nothing
        argv = [command, "--trace", str(trace), "--policy", "static:1", "--plot", str(plots)]
    else:
        argv += ["--trace", str(trace)]
    status, out, err = run_cli(capsys, *argv, "--service", "trace")
    assert status == 2 and out == "" and not report.exists() and not plots.exists()
    assert err == no_service_column(f"--trace {trace} has no service_s column")


def test_scorecard_with_service_from_the_trace_is_refused_before_scoring(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It always scores synthetic traces, which have no service_s: it failed after the real ones ran."""
    no_runs(monkeypatch)
    report = tmp_path / "report.md"
    status, out, err = run_cli(capsys, *command_line("scorecard", served, report), "--service", "trace")
    assert status == 2 and out == "" and not report.exists()
    assert err == no_service_column("the scorecard's synthetic traces have no service_s column")


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--policy", "startup-aware:season_seconds=20"],
        ["replay", "--tick", "10", "--policy", "startup-aware:season_seconds=30"],
        ["tune", "--grid", "season_seconds=10"],
    ],
)
def test_a_season_too_short_for_the_tick_is_a_usage_error_not_a_traceback(
    trace: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, out, err = run_cli(capsys, *argv, "--trace", str(trace))
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: ") and "too short to fit a seasonal profile" in err, err


def test_a_trace_with_service_times_replayed_at_the_default_says_so_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recording has service_s; tuning it without --service trace scored every job at 5 s unseen."""
    path = tmp_path / "rec.csv"
    write_trace(path, np.arange(0.0, 60.0, 2.0), np.full(30, 8.0))
    status, out, err = run_cli(capsys, "replay", "--trace", str(path), "--policy", "static:1", "--json", "-")
    assert status == 0 and json.loads(out)["jobs"] == 30  # stdout is still only JSON
    assert f"note: --trace {path} has a service_s column, replayed at --service 5 s a job" in err, err
    for typed in (["--service", "5"], ["--service", "trace"]):
        status, _, err = run_cli(capsys, "replay", "--trace", str(path), "--policy", "static:1", *typed)
        assert status == 0 and "note:" not in err


def test_service_times_in_milliseconds_are_refused_against_the_slo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """5000 "seconds" a job replayed to 0 % within the SLO with 200 pods for a few jobs, exit 0."""
    path = tmp_path / "ms.csv"
    write_trace(path, np.arange(0.0, 10.0), np.full(10, 5000.0))
    status, out, err = run_cli(capsys, "replay", "--trace", str(path), "--service", "trace", "--json", "-")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert f"--slo 10 must be longer than the median service_s of --trace {path} (5000)" in err, err
    assert "divide milliseconds by 1000" in err

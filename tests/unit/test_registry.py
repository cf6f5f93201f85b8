"""Policy specs: every documented spelling builds, every mistake says what would have been valid."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.engine.baselines import KedaPolicy, KpaPolicy, StaticPolicy
from autoscaler.engine.policy import StartupAwareConfig
from autoscaler.engine.registry import (
    PolicySpecError,
    format_option,
    make_policy,
    parse_spec,
    starting_point,
    tuning_grid,
)
from autoscaler.engine.target import WorkloadSpec

WORKLOAD = WorkloadSpec()


def test_parse_spec() -> None:
    assert parse_spec("static:40") == ("static", ["40"], {})
    assert parse_spec(" keda:listLength=10, syncPeriod = 30 ") == (
        "keda",
        [],
        {"list_length": "10", "sync_period": "30"},
    )


def test_baselines_build_with_options() -> None:
    keda = make_policy("keda:listLength=10", WORKLOAD)
    assert isinstance(keda, KedaPolicy) and keda.config.list_length == 10.0
    assert isinstance(make_policy("keda", WORKLOAD), KedaPolicy)
    kpa = make_policy("kpa:target=2,stable_window=30", WORKLOAD)
    assert isinstance(kpa, KpaPolicy) and kpa.target == 2.0 and kpa.config.stable_window == 30.0
    static = make_policy("static:40", WORKLOAD)
    assert isinstance(static, StaticPolicy) and static.replicas == 40


def test_overrides_win_and_are_coerced_to_the_field_type() -> None:
    keda = make_policy("keda:listLength=10", WORKLOAD, listLength=20.0, scale_up_pods=8.0)
    assert isinstance(keda, KedaPolicy)
    assert keda.config.list_length == 20.0
    assert keda.config.scale_up_pods == 8 and isinstance(keda.config.scale_up_pods, int)
    static = make_policy("static", WORKLOAD, n=12.0)
    assert isinstance(static, StaticPolicy) and static.replicas == 12


def test_startup_aware_builds_with_its_knobs() -> None:
    policy = make_policy("startup-aware:confidence=0.99,drain_seconds=none", WORKLOAD)
    assert policy.name == "startup-aware"
    config = policy.config  # type: ignore[attr-defined]
    assert config.confidence == 0.99 and config.drain_seconds is None
    assert set(tuning_grid("startup-aware")) >= {"confidence"}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nope", "unknown policy 'nope'; valid: startup-aware"),
        (
            "keda:bogus=1",
            "unknown option(s) bogus for policy 'keda'; valid, in snake_case or camelCase: list_length",
        ),
        ("keda:listLenght=5", "unknown option(s) list_lenght for policy 'keda' (did you mean list_length?)"),
        ("startup-aware:standing_pool_atainment=0.9", "(did you mean standing_pool_attainment?)"),
        ("keda:listLength=abc", "list_length='abc' is not a valid float"),
        ("keda:listLength=0", "list_length > 0"),
        ("keda:listLength=inf", "option list_length='inf' is not a finite number"),
        (
            "keda:listLength=5,list_length=10",
            "option list_length is given twice in 'keda:listLength=5,list_length=10'",
        ),
        ("keda:5", "takes key=value options"),
        ("static", "needs exactly a replica count"),
        ("static:many", "not a valid int"),
        ("static:0", "replica count >= 1"),
        ("startup-aware:confidence=2", "confidence"),
        ("startup-aware:warp=9", "unknown option(s) warp"),
    ],
)
def test_mistakes_are_one_line_value_errors(spec: str, fragment: str) -> None:
    with pytest.raises(PolicySpecError) as caught:
        make_policy(spec, WORKLOAD)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_tuning_grids() -> None:
    assert tuning_grid("keda") == {"list_length": [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]}
    assert "utilization" in tuning_grid("kpa:target=2")
    assert tuning_grid("static:3") == {"n": [3, 10, 20, 40, 60, 80, 120]}
    with pytest.raises(PolicySpecError):
        tuning_grid("nope")


def test_the_starting_config_is_always_a_grid_point() -> None:
    """Tuning from the defaults searches the defaults too, so a run shows where they stand."""
    default = StartupAwareConfig()
    grid = tuning_grid("startup-aware")
    start = starting_point("startup-aware", grid)
    assert start["standing_pool_window_seconds"] == default.standing_pool_window_seconds
    assert start["standing_pool_attainment"] == default.standing_pool_attainment
    for knob, value in start.items():
        assert value in grid[knob], knob
        numbers = [float(v) for v in grid[knob] if isinstance(v, int | float)]
        assert numbers == sorted(set(numbers)) and len(numbers) == len(grid[knob]), knob
    mine = tuning_grid("keda:listLength=7")
    assert mine["list_length"] == [1.0, 2.0, 5.0, 7.0, 10.0, 20.0, 50.0]
    assert starting_point("keda:listLength=7", mine) == {"list_length": 7.0}


def test_extra_knobs_replace_or_add_candidates() -> None:
    grid = tuning_grid(
        "startup-aware:confidence=0.9",
        {"confidence": ["0.7"], "queueMissProbability": ["0.02", "0.005"], "drain_seconds": ["20", "none"]},
    )
    assert grid["confidence"] == [0.7, 0.9]  # the given values, plus the spec's own
    assert grid["queue_miss_probability"] == [0.005, 0.01, 0.02]  # camelCase read, default added
    assert grid["drain_seconds"] == [None, 20.0]  # 'none' unsets an optional knob
    assert "scale_down_window_startups" in grid  # the other default knobs stay


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"warp": ["9"]}, "unknown knob 'warp' to tune for policy 'startup-aware'; valid: confidence"),
        ({"confidence": []}, "no values to tune 'confidence' over"),
        ({"confidence": ["high"]}, "confidence='high' is not a valid float"),
        ({"startup_min_samples": ["2.5"]}, "startup_min_samples='2.5' is not a valid int"),
        ({"confidence": ["none"]}, "confidence='none' is not a valid float"),
    ],
)
def test_bad_grids_say_what_is_wrong(extra: dict[str, list[str]], fragment: str) -> None:
    with pytest.raises(PolicySpecError) as caught:
        tuning_grid("startup-aware", extra)
    assert fragment in str(caught.value)


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**9), 10**9),
        st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_format_option_reads_back_exactly(value: float | int | bool | None) -> None:
    """What the tune table and labels print is the value itself, not a rounded neighbour."""
    text = format_option(value)
    if value is None:
        policy = make_policy(f"startup-aware:drain_seconds={text}", WORKLOAD)
        assert policy.config.drain_seconds is None  # type: ignore[attr-defined]
    elif isinstance(value, bool):
        assert text in {"true", "false"} and (text == "true") is value
    else:
        assert float(text) == value and not math.isnan(float(text))
        assert "," not in text and "=" not in text  # safe inside a spec

"""Policy specs: every documented spelling builds, every mistake says what would have been valid."""

from __future__ import annotations

import pytest

from autoscaler.engine.baselines import KedaPolicy, KpaPolicy, StaticPolicy
from autoscaler.engine.registry import PolicySpecError, make_policy, parse_spec, tuning_grid
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
        ("keda:bogus=1", "unknown option(s) bogus for policy 'keda'; valid: list_length"),
        ("keda:listLength=abc", "list_length='abc' is not a valid float"),
        ("keda:listLength=0", "list_length > 0"),
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
    assert "n" in tuning_grid("static:3")
    with pytest.raises(PolicySpecError):
        tuning_grid("nope")

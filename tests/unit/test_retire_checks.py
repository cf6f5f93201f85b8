"""The pure half of retiring a version (:mod:`jobqueue.retire_checks`): which states are refused,
with what advice, and what the plan says, without a server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.keys import queue_name, split_queue
from jobqueue.retire import Sweep, TargetState, VersionState
from jobqueue.retire_checks import (
    ApiRoutes,
    RetireOptions,
    blockers,
    check_names,
    plan_lines,
    routes_from,
    split_without,
)
from jobqueue.traffic import validate_weights

QUIET = VersionState(
    model="m",
    version="v1",
    queue="m:v1",
    listed=True,
    keys=("jq:q:m:v1:stream", "jq:q:m:v1:completions"),
    other_versions=("v2",),
    live_split={"v2": 100.0},
    waiting=Sweep(),
    waiting_high=0,
    in_flight=0,
    holders={},
    workers=(),
    arrivals=10,
    completions=10,
    dead_letters=0,
    keyed_until=None,
)
"""A version ready to go: out of the split, nothing waiting or in flight, no worker, no dead letter."""


def messages(state: VersionState, options: RetireOptions | None = None) -> str:
    return "\n".join(b.message for b in blockers(state, options or RetireOptions()))


def test_a_quiet_version_is_not_refused() -> None:
    assert blockers(QUIET, RetireOptions()) == []


@pytest.mark.parametrize(
    ("split", "advice"),
    [
        ({"v1": 10, "v2": 90}, "weight 10: take it out first (python -m api.traffic set m v2=90)"),
        (
            {"v1": 0, "v2": 100},
            "weight 0 (addressable by name): take it out first (python -m api.traffic set m v2=100)",
        ),
        ({"v1": 100, "v3": 0}, "(python -m api.traffic set m v2=100)"),  # no other weight: a version there is
    ],
)
def test_a_version_in_the_live_split_is_refused_with_the_command_that_takes_it_out(
    split: dict[str, float], advice: str
) -> None:
    found = blockers(replace(QUIET, live_split=split), RetireOptions())
    assert len(found) == 1 and not found[0].clears
    assert advice in found[0].message


def test_the_apis_configuration_is_checked_only_when_known() -> None:
    routes = ApiRoutes(default_queue="m:v1", configured={"m": {"v1": 0.0, "v2": 1.0}})
    text = messages(QUIET, RetireOptions(routes=routes))
    assert "m:v1 is the API's MODEL_REF" in text and "m:v1 is in the API's TRAFFIC_WEIGHTS" in text
    assert messages(QUIET, RetireOptions(routes=ApiRoutes(default_queue="m:v2"))) == ""
    assert routes_from(None, None) is None  # not the API's environment: nothing to check
    assert routes_from("m", None) == ApiRoutes(default_queue=None)  # MODEL_REF names the model only


def test_waiting_jobs_clear_by_themselves_only_while_a_worker_serves_them() -> None:
    waiting = replace(QUIET, waiting=Sweep(runnable=4, dropped=2), waiting_high=1)
    [alone] = blockers(waiting, RetireOptions())
    assert (
        not alone.clears
        and "4 job(s) wait in m:v1 (1 high priority): no worker of it is alive" in alone.message
    )
    served = blockers(replace(waiting, workers=("w1",)), RetireOptions())
    assert [b.clears for b in served] == [True, True]
    assert "its 1 live worker(s) are serving them (--wait SECONDS waits)" in served[0].message
    target = TargetState("m:v2", listed=True, workers=("w9",))
    assert blockers(replace(waiting, target=target), RetireOptions(move_to="v2")) == []


def test_a_target_never_submitted_to_is_refused() -> None:
    target = TargetState("m:v3", listed=False, workers=())
    [found] = blockers(replace(QUIET, target=target), RetireOptions(move_to="v3"))
    assert "--move-to v3: m:v3 was never submitted to (versions of m with a queue: v2)" in found.message


def test_in_flight_jobs_name_their_holders_and_which_are_gone() -> None:
    state = replace(QUIET, in_flight=3, holders={"w1": 2, "gone": 1}, workers=("w1",))
    text = messages(state)
    assert "3 job(s) in flight in m:v1, held by gone (1, not alive), w1 (2)" in text
    assert all(b.clears for b in blockers(state, RetireOptions()))


def test_dead_letters_need_a_decision() -> None:
    state = replace(QUIET, dead_letters=7)
    assert "holds 7 dead letter(s)" in messages(state) and "XREVRANGE jq:q:m:v1:dead" in messages(state)
    assert messages(state, RetireOptions(dead_letters="keep")) == ""
    assert "dead letters: 7 (keep them 30 days)" in plan_lines(state, RetireOptions(dead_letters="keep"))


def test_the_plan_names_the_keys_and_the_idempotency_note_only_while_keys_may_live() -> None:
    lines = plan_lines(replace(QUIET, keyed_until=2000.0), RetireOptions(), now=1000.0)
    assert "delete the queue's keys (stream, completions)" in lines
    assert any(line.startswith("note: idempotency keys used on m:v1 may live until") for line in lines)
    assert not any(
        "note:" in line for line in plan_lines(replace(QUIET, keyed_until=500.0), RetireOptions(), now=1000.0)
    )


@pytest.mark.parametrize(
    ("model", "version", "move_to", "message"),
    [
        ("m", "v:1", None, "version 'v:1' holds ':'"),
        ("m", "", None, "version must not be empty"),
        ("", "v1", None, "model must not be empty"),
        ("m", "bad version", None, "invalid queue name"),
        ("m", "v1", "v1", "is the version being retired"),
        ("m", "v1", "a b", "invalid queue name"),
    ],
)
def test_bad_names_are_refused_before_anything_is_read(
    model: str, version: str, move_to: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_names(model, version, move_to)


NAME = st.text(st.sampled_from("ab1._:@/- {}*"), min_size=0, max_size=6)


@given(model=NAME, version=NAME)
def test_an_accepted_name_is_the_queue_of_that_model_and_version(model: str, version: str) -> None:
    """Whatever is accepted reads back as the same model and version: a retire never deletes the
    queue of another version than the one named."""
    try:
        check_names(model, version)
    except ValueError:
        return
    assert split_queue(queue_name(model, version)) == (model, version)


WEIGHTS = st.dictionaries(st.sampled_from(["v1", "v2", "v3", "v4"]), st.sampled_from([0.0, 0.5, 10.0, 90.0]))


@given(weights=WEIGHTS, version=st.sampled_from(["v1", "v2", "v5"]))
def test_the_split_without_a_version_keeps_the_others_and_is_a_valid_split(
    weights: dict[str, float], version: str
) -> None:
    rest = split_without(weights, version)
    others = {v: w for v, w in weights.items() if v != version}
    if rest is None:
        assert not any(w > 0 for w in others.values())
    else:
        assert rest == others and validate_weights("m", rest) == rest


STATES = st.builds(
    replace,
    st.just(QUIET),
    live_split=st.one_of(st.none(), WEIGHTS),
    waiting=st.builds(Sweep, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    in_flight=st.integers(0, 2),
    workers=st.sampled_from([(), ("w1",)]),
    dead_letters=st.integers(0, 2),
    target=st.sampled_from([None, TargetState("m:v2", True, ()), TargetState("m:v3", False, ())]),
)
OPTIONS = st.builds(
    RetireOptions,
    move_to=st.sampled_from([None, "v2"]),
    dead_letters=st.sampled_from([None, "keep", "delete"]),
    routes=st.sampled_from([None, ApiRoutes(default_queue="m:v1"), ApiRoutes(configured={"m": {"v2": 1.0}})]),
)


@given(state=STATES, options=OPTIONS)
def test_a_retire_goes_ahead_only_when_no_job_can_be_lost_and_nothing_routes_there(
    state: VersionState, options: RetireOptions
) -> None:
    found = blockers(state, options)
    safe = (
        state.version not in (state.live_split or {})
        and (options.routes is None or options.routes.default_queue != state.queue)
        and (options.routes is None or state.version not in options.routes.configured.get(state.model, {}))
        and (state.waiting.runnable == 0 or options.move_to is not None)
        and (options.move_to is None or (state.target is not None and state.target.listed))
        and state.in_flight == 0
        and not state.workers
        and (state.dead_letters == 0 or options.dead_letters is not None)
    )
    assert (found == []) == safe
    # Waiting helps only with what jobs and workers do by themselves, never with the operator's part.
    for blocker in found:
        assert blocker.clears == any(
            word in blocker.message for word in ("in flight", "worker(s) of", "live worker(s) are serving")
        )

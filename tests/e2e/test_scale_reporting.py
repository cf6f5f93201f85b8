"""What the loop reports as done is what the Kubernetes target did on the real API server.

The control loop runs with the real :class:`KubernetesTarget` (the manifests' ServiceAccount), a
real Valkey queue for the worker heartbeats (busy/idle) and the daemon's :class:`Metrics`. The
policy is a fixed answer, so each tick asks for exactly what the test wants; the target then has
the last word: it spares busy pods, and it writes nothing when someone else changed the count since
the tick read it. ``autoscaler_scale_actions_total`` must count what the target set, not what was
asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis

from autoscaler.engine.snapshot import Decision, Snapshot
from autoscaler.engine.target import WorkloadSpec
from autoscaler.loop import LoopSettings, TargetLoop
from autoscaler.metrics import Metrics
from autoscaler.sources.redis_source import StreamSource
from autoscaler.targets.kubernetes import KubernetesTarget
from tests.e2e.kube import ApiProxy, Install, heartbeat, settled_scene, wait_for

pytestmark = pytest.mark.e2e

QUEUE = "reference:v1"


@dataclass
class FixedAnswer:
    """A policy that asks for ``desired``; ``before_answer`` runs inside ``decide`` (mid-tick)."""

    desired: int
    before_answer: list[Callable[[], None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "fixed"

    def decide(self, snapshot: Snapshot) -> Decision:
        for action in self.before_answer:
            action()
        return Decision(self.desired, "fixed")


@dataclass
class Rig:
    """The daemon's loop around the real target and queue, its metrics, and the answer it gets."""

    loop: TargetLoop
    policy: FixedAnswer
    metrics: Metrics

    def actions(self, direction: str) -> float | None:
        labels = {"target": "worker", "direction": direction}
        return self.metrics.registry.get_sample_value("autoscaler_scale_actions_total", labels)


def rig(target: KubernetesTarget, client: redis.Redis, desired: int) -> Rig:
    policy, metrics = FixedAnswer(desired), Metrics()
    settings = LoopSettings(WorkloadSpec(min_replicas=0, tick_seconds=5))
    loop = TargetLoop("worker", StreamSource(client, QUEUE), target, policy, settings, observer=metrics)
    return Rig(loop, policy, metrics)


def test_a_scale_down_held_for_busy_pods_is_not_counted_as_asked(
    installed: Install, target: KubernetesTarget, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    state = settled_scene(installed, target, 3)
    r = rig(target, client, 1)

    # Every pod busy: asked for 1, the target holds at 3 and writes nothing.
    heartbeat(client, state, busy={p.name for p in state.pods}, queue=QUEUE)
    held = r.loop.tick()
    assert held.error is None and held.acted and held.decision is not None and held.decision.desired == 1
    assert held.scaled_to is None and installed.worker_replicas() == 3
    assert r.actions("down") is None

    # Two busy: asked for 1 again, the target goes to 2 (not 1): one step down.
    heartbeat(client, state, busy={p.name for p in state.pods[:2]}, queue=QUEUE)
    down = r.loop.tick()
    assert down.error is None and down.scaled_to == 2 and installed.worker_replicas() == 2
    assert r.actions("down") == 1
    client.close()


def test_a_count_changed_by_someone_else_mid_tick_is_not_counted(
    installed: Install, target: KubernetesTarget, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    settled_scene(installed, target, 2)
    r = rig(target, client, 5)

    # Someone else (kubectl scale, a deploy pipeline) sets 3 after the tick read 2: the target sees
    # the count moved and writes nothing; the loop re-decides next tick.
    def someone_else_scales() -> None:
        body = {"spec": {"replicas": 3}}
        installed.apps.patch_namespaced_deployment_scale("worker", installed.namespace, body)

    r.policy.before_answer = [someone_else_scales]
    overtaken = r.loop.tick()
    assert overtaken.error is None and overtaken.acted and overtaken.scaled_to is None
    assert overtaken.snapshot is not None and overtaken.snapshot.current_replicas == 2
    assert installed.worker_replicas() == 3
    assert r.actions("up") is None

    # The next tick starts from 3 and its scale-up is counted. It runs once the controllers have
    # carried out the 3 (pod created, Ready): not to race their status updates, each of which
    # conflicts with the scale patch (a new resourceVersion); under load a run of those made the
    # patch give up. The target now outlasts such a run, but that is not what this test is about.
    installed.wait_worker_rollout()
    r.policy.before_answer = []
    up = r.loop.tick()
    assert up.scaled_to == 5 and installed.worker_replicas() == 5
    assert r.actions("up") == 1
    client.close()


def test_a_scale_whose_answer_was_lost_is_reported_as_done(installed: Install) -> None:
    """The server applied the patch, the answer never came back: the retry, carrying the same
    resourceVersion, conflicts with that very write. The count is now what was asked; that is a
    rescale (logged, evented, counted), not "someone else changed the replicas"."""
    proxy = ApiProxy(installed.sa)
    lossy = proxy.worker_target(installed)
    try:
        state = lossy.observe()
        size = state.replicas + 1
        proxy.drop_reply_to(installed.worker_scale_patch)
        assert lossy.scale(Decision(size, "answer-lost"), state) == size
        assert proxy.dropped.is_set(), "the proxy lost no answer: the test proves nothing"
        assert lossy.last_outcome is not None and lossy.last_outcome.action == "scaled", lossy.last_outcome
        assert installed.worker_replicas() == size
    finally:
        lossy.close()
        proxy.close()

    def evented() -> bool:
        events = installed.core.list_namespaced_event(
            installed.namespace, field_selector="involvedObject.name=worker,reason=SuccessfulRescale"
        ).items
        return any(e.message.startswith(f"New size: {size}; reason: answer-lost") for e in events)

    wait_for("the rescale event", evented, 10)


def test_a_count_changed_between_ticks_is_put_back_when_the_policy_asks_the_same(
    installed: Install, target: KubernetesTarget, redis_url: str
) -> None:
    """The same answer as the tick before, after someone else changed the count: the tick reads the
    new count from the API server and writes the policy's again (nothing cached of our last write)."""
    client = redis.Redis.from_url(redis_url)
    settled_scene(installed, target, 2)
    r = rig(target, client, 2)
    same = r.loop.tick()
    assert same.error is None and not same.acted and same.scaled_to is None  # already 2

    body = {"spec": {"replicas": 4}}
    installed.apps.patch_namespaced_deployment_scale("worker", installed.namespace, body)
    installed.wait_worker_rollout()  # not to race the controllers' status updates (see above)
    put_back = r.loop.tick()
    assert put_back.snapshot is not None and put_back.snapshot.current_replicas == 4
    assert put_back.error is None and put_back.acted and put_back.scaled_to == 2, put_back.detail
    assert installed.worker_replicas() == 2
    client.close()

"""What a target's policy has learned, kept across processes and hot reloads.

With a :class:`~autoscaler.state_store.StateStore`, a fresh policy first restores what the
previous process learned (its standing pool above all), and the leader saves the state every
``state_save_seconds`` and when the loop stops. Nothing is saved before the store has been read
once, so a start during a Redis outage never overwrites good state with a cold one. A policy
replaced by a hot reload hands its state to the new one (:func:`hand_over`). Without saved state
the loop warms the forecaster from the source's history instead, when the source keeps one.

The document also names the pods whose startups the saved policy has counted
(:data:`STARTUP_PODS`): a new process lists the pods and finds those Ready already, and the target
reports each of them as a startup again (it reports a pod once per process). Without the names, every
restart, failover or rebuild on reload added the running pods' startups to the restored window once
more, and the startup p90 drifted towards the warm-ups of the pods that happened to be running.

Times in the documents are on the loop's :class:`~autoscaler.timeline.Timeline`, like the
policy's own times. Nothing here raises: a store that fails is logged and asked again later, and
a document that cannot be used leaves the policy cold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from autoscaler.engine.snapshot import Policy
from autoscaler.engine.state import StateError, StatefulPolicy
from autoscaler.timeline import Timeline

if TYPE_CHECKING:
    from autoscaler.state_store import StateStore

log = logging.getLogger("autoscaler.loop")

MAX_TIMELINE_CATCH_UP = 86_400.0
"""The furthest a restored state's ``saved_at`` may be ahead for the timeline to move on to it.

A previous process whose wall clock stepped back saved times up to that step ahead of this one's
clock; further ahead than a day, its clock was wrong rather than stepped, and following it would
put ``now`` anywhere (the windows then wait for the wall clock, as without a timeline)."""

STARTUP_PODS = "startup_pods"
"""The document's key for :attr:`LearnedState.counted`: the ids of the pods whose startup samples
the saved policy holds (a document saved before it existed has none, and counts nothing as seen)."""


def hand_over(old: Policy, new: Policy, target: str) -> bool:
    """Restore ``old``'s learned state into ``new`` when both are the same kind of policy."""
    if not (isinstance(old, StatefulPolicy) and isinstance(new, StatefulPolicy)) or old.name != new.name:
        return False
    fields: dict[str, object] = {"target": target}
    try:
        fields["skipped"] = new.restore_state(old.export_state())
    except StateError as exc:
        log.warning("new policy starts cold", extra={"fields": {**fields, "error": str(exc)}})
        return False
    log.info("new policy inherits the learned state", extra={"fields": fields})
    return True


class LearnedState:
    """One target's saved state: restored once per process, then saved when due."""

    def __init__(self, target: str, store: StateStore | None, timeline: Timeline) -> None:
        self.target = target
        self.store = store
        self._timeline = timeline
        self.pending = store is not None
        """The store has not been read yet: restore before deciding, and save nothing meanwhile."""
        self.last_saved: float | None = None
        self.counted: set[str] = set()
        """Pods (their ids: :attr:`~autoscaler.targets.base.TargetState.startup_pods`) whose startup
        samples the policy has been given, by this process or by the one whose state it restored.
        Their startups reported again are not counted again. The loop adds to it, forgets the pods
        that are gone (an id is never reused, so they cannot come back), and empties it when the
        policy starts cold: what a cold policy never held, it may count."""

    def forget_pods_except(self, present: frozenset[str] | None) -> None:
        """Forget the counted pods not in ``present`` (None: the target cannot tell; keep them all)."""
        if present is not None:
            self.counted &= present

    def skip_restore(self) -> None:
        """The policy must start cold (it replaced one whose state kept failing): never restore."""
        self.pending = False

    def restore(self, policy: Policy) -> bool:
        """Continue ``policy`` from the saved document; whether it did (then it needs no warm start).

        An unreachable store stays :attr:`pending` and is asked again next time; an unusable
        document is logged and the policy starts cold.
        """
        store = self.store
        if store is None or not isinstance(policy, StatefulPolicy):
            self.pending = False
            return False
        fields: dict[str, object] = {"target": self.target, "store": store.location}
        problem: str | None = None
        try:
            document = store.load()
        except StateError as exc:
            document, problem = None, str(exc)
        except Exception as exc:
            log.warning("saved state unreadable, will retry", extra={"fields": {**fields, "error": str(exc)}})
            return False
        self.pending = False
        if document is not None:
            try:
                fields["skipped"] = policy.restore_state(document)
            except StateError as exc:
                problem = str(exc)
            else:
                self.counted = self._counted_pods(document, fields)
                saved_at = document.get("saved_at")
                if isinstance(saved_at, int | float):
                    age = self._timeline.now() - saved_at
                    fields["age_seconds"] = round(age, 1)
                    # Saved on a timeline ahead of this one (that process's wall clock stepped back):
                    # move on to it, or the restored windows wait for the wall clock to catch up.
                    if -MAX_TIMELINE_CATCH_UP <= age < 0:
                        fields["timeline_moved_seconds"] = round(self._timeline.not_before(saved_at), 3)
                log.info("learned state restored", extra={"fields": fields})
                return True
        if problem is None:
            log.info("no saved state, starting cold", extra={"fields": fields})
        else:
            log.warning("saved state unusable, starting cold", extra={"fields": {**fields, "error": problem}})
        return False

    @staticmethod
    def _counted_pods(document: Mapping[str, Any], fields: dict[str, object]) -> set[str]:
        """The pods whose startups the restored policy holds, as the document names them.

        Replaces what this process counted before the restore (a store read late, after ticks of a
        cold policy): the restore replaced those samples with the saved ones. A list that is not
        one of strings is ignored (noted in ``fields``) rather than refusing the whole state: a
        pod counted twice skews the p90 a little, a cold policy loses its standing pool.
        """
        pods = document.get(STARTUP_PODS, [])
        if not isinstance(pods, list) or not all(isinstance(pod, str) for pod in pods):
            fields["startup_pods_ignored"] = f"expected a list of strings, got {type(pods).__name__}"
            return set()
        fields["startup_pods"] = len(pods)
        return set(pods)

    def save(
        self, policy: Policy, now: float, every: float, *, allowed: Callable[[], bool], force: bool = False
    ) -> bool:
        """Save ``policy``'s state if ``every`` seconds have passed since the last save (or ``force``).

        ``allowed`` says whether this replica may write it (the acting leader of a live target); it
        is asked only when there is state to save (a store read once, a policy that learns), before
        the interval is checked.
        """
        store = self.store
        if store is None or self.pending or not isinstance(policy, StatefulPolicy) or not allowed():
            return False
        last = self.last_saved
        if not force and last is not None and now - last < every:
            return False
        try:
            store.save(
                {
                    **policy.export_state(),
                    STARTUP_PODS: sorted(self.counted),
                    "saved_at": now,
                    "target": self.target,
                }
            )
        except Exception as exc:
            fields = {"target": self.target, "store": store.location, "error": str(exc)}
            log.warning("saving the learned state failed", extra={"fields": fields})
            return False
        self.last_saved = now
        return True

"""What a target's policy has learned, kept across processes and hot reloads.

With a :class:`~autoscaler.state_store.StateStore`, a fresh policy first restores what the
previous process learned (its standing pool above all), and the leader saves the state every
``state_save_seconds`` and when the loop stops. Nothing is saved before the store has been read
once, so a start during a Redis outage never overwrites good state with a cold one. A policy
replaced by a hot reload hands its state to the new one (:func:`hand_over`). Without saved state
the loop warms the forecaster from the source's history instead, when the source keeps one.

Times in the documents are on the loop's :class:`~autoscaler.timeline.Timeline`, like the
policy's own times. Nothing here raises: a store that fails is logged and asked again later, and
a document that cannot be used leaves the policy cold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

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
            store.save({**policy.export_state(), "saved_at": now, "target": self.target})
        except Exception as exc:
            fields = {"target": self.target, "store": store.location, "error": str(exc)}
            log.warning("saving the learned state failed", extra={"fields": fields})
            return False
        self.last_saved = now
        return True

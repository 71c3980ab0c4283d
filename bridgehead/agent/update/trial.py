"""The running agent's side of a trial: report healthy (commit) or give up (roll back).

The launcher gives a trial exactly one start. Within it, the agent that *is* the release on
trial calls ``healthy()`` once it has passed its health check (the coordinator's rule: the
first welcome from the control plane) and ``deadline_passed()`` from a timer set to
``seconds_left()``; after a rollback the caller re-executes the base (``relaunch_base``),
which launches the previous release. Any other process (the base while a trial is recorded
for someone else, a committed release) finds nothing to do.
"""

from __future__ import annotations

import time

from bridgehead.agent.update.releases import Releases, Trial


class TrialGuard:
    def __init__(self, releases: Releases, own_version: str) -> None:
        self.releases = releases
        self.own_version = own_version

    def trial(self) -> Trial | None:
        """The trial this process is running, if it is one (state read afresh each time)."""
        trial = self.releases.state().trial
        if trial is None or trial.version != self.own_version:
            return None
        if self.releases.linked_version() != self.own_version:
            return None
        return trial

    def seconds_left(self) -> float | None:
        """Until the trial's deadline (may be negative); None if this process is not on trial."""
        trial = self.trial()
        return None if trial is None else trial.deadline - time.time()

    def healthy(self) -> bool:
        """Commit this release if it is on trial; True if it did."""
        if self.trial() is None:
            return False
        self.releases.commit()
        return True

    def fail(self, reason: str) -> bool:
        """Roll this release back if it is on trial; True if it did (the caller re-execs)."""
        if self.trial() is None:
            return False
        self.releases.rollback(reason)
        return True

    def deadline_passed(self) -> bool:
        """At the deadline: roll back if still on trial; True if it did (the caller re-execs)."""
        trial = self.trial()
        if trial is None or time.time() < trial.deadline:
            return False
        return self.fail(f"it did not report healthy within {trial.deadline - trial.started_at:.0f} s of its trial")

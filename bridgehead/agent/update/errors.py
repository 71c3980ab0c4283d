"""Errors of the self-update.

    BridgeheadError
    └── UpdateError              the update cannot go on; the running binary is untouched
        ├── UpdateRefused        the release must not be installed: bad version string, size,
        │                        hash or signature, or a version that already failed here
        └── UpdateStateError     the step does not fit the recorded state (no trial to commit,
                                 a trial already running, state.json unreadable)

Either leaves the agent on the binary it runs: a refusal deletes what was downloaded, never
what is installed.
"""

from __future__ import annotations

from bridgehead.core.errors import BridgeheadError


class UpdateError(BridgeheadError):
    """An update step failed; nothing that runs was changed."""


class UpdateRefused(UpdateError):
    """The release is not acceptable (and will not become so by retrying the same bytes)."""


class UpdateStateError(UpdateError):
    """The requested step does not fit the recorded update state."""

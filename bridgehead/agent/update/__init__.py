"""The agent's side of a signed, staged, reversible self-update (docs/packaging.md, "Self-update:
staging, swap and rollback on the agent").

- ``signing``: the Ed25519 signature of a release (version and SHA-256), checked against the key
  the agent pinned at enrolment;
- ``staging``: a resumable, bounded download into ``releases/.partial/``, verified before it
  becomes ``releases/<version>/bridgehead-agent``;
- ``releases``: the state machine (trial, commit, rollback) and the atomic swap of the
  ``releases/current`` link;
- ``launcher``: what ``bridgehead-agent run`` executes first: the current release, or itself;
- ``trial``: the running agent's side of a trial: commit once healthy, roll back at the deadline.

Everything here is plain files and syscalls; the download over the websocket, draining and the
cluster's one-at-a-time rule are the caller's.
"""

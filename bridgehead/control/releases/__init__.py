"""Agent releases on the control plane: the binaries (``files``); the courier that offers them
to agents over their sessions is beside it. The control plane only carries releases: each is
signed offline by a release key it never holds, and agents check that signature against the
key they pinned at enrolment (docs/packaging.md, docs/security.md)."""

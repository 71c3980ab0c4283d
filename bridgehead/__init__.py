"""Bridgehead: an on-prem relay agent and its control plane.

One distribution, one import namespace. What lives where (docs/architecture.md):

- ``bridgehead.sdk``: the plugin SDK, the only import path a plugin needs (stable);
- ``bridgehead.protocol``: the sans-I/O wire protocol both sides speak;
- ``bridgehead.core``: what both programs share (errors, logging, redaction, config reading);
- ``bridgehead.agent``: the agent process; ``bridgehead.plugins``: its built-in plugins;
- ``bridgehead.control``: the control plane.
"""

import os as _os

# BRIDGEHEAD_VERSION_OVERRIDE is for tests only: it lets a stand-in release (a script that
# runs this package) claim a version, as the self-update tests need (docs/packaging.md). It
# changes what the program reports (--version, Hello), nothing else; never set it in production.
__version__ = _os.environ.get("BRIDGEHEAD_VERSION_OVERRIDE") or "0.1.0"

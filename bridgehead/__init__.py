"""Bridgehead: an on-prem relay agent and its control plane.

One distribution, one import namespace. What lives where (docs/architecture.md):

- ``bridgehead.sdk``: the plugin SDK, the only import path a plugin needs (stable);
- ``bridgehead.protocol``: the sans-I/O wire protocol both sides speak;
- ``bridgehead.core``: what both programs share (errors, logging, redaction, config reading);
- ``bridgehead.agent``: the agent process; ``bridgehead.plugins``: its built-in plugins;
- ``bridgehead.control``: the control plane.
"""

__version__ = "0.1.0"

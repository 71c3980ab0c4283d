"""The ``ssh`` plugin: commands on hosts over SSH, with pinned host keys and pooled
transports (docs/plugins/ssh.md)."""

from bridgehead.plugins.ssh.plugin import SshPlugin

__all__ = ["SshPlugin"]

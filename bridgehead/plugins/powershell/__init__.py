"""The ``powershell`` plugin: PowerShell scripts on Windows and Linux hosts
(docs/plugins/powershell.md)."""

from bridgehead.plugins.powershell.plugin import PowershellPlugin

__all__ = ["PowershellPlugin"]

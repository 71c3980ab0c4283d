"""The ``ssh`` plugin: commands on hosts over SSH, with pinned host keys and pooled
transports (docs/plugins/ssh.md).

Besides the plugin, this package exports what the ``powershell`` plugin composes with (its
ssh transport): ``SshHosts`` runs a command on a warm transport, ``SshParams`` and
``SshProfile`` describe it, ``CommandOutput`` turns its output into records. Other modules
here are the ssh plugin's own.
"""

from bridgehead.plugins.ssh.hosts import SshHosts
from bridgehead.plugins.ssh.output import CommandOutput
from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.plugins.ssh.plugin import SshPlugin

__all__ = ["CommandOutput", "SshHosts", "SshParams", "SshPlugin", "SshProfile"]

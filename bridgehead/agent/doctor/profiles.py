"""One chain of checks per ``[connections.NAME]`` profile, by its plugin's kind:

    driver  the library or ODBC driver the plugin needs is there
    reach   the server's port accepts TCP connections
    login   the profile's credential is accepted (a real login, through the plugin's own code)

A drop-in plugin's profile was validated with the config; doctor has no probe for it.
"""

from __future__ import annotations

from bridgehead.agent.config import AgentConfig, resolve_credential
from bridgehead.agent.doctor.findings import fail, skip
from bridgehead.agent.doctor.runner import Chain, Step, constant
from bridgehead.core.errors import ConfigError
from bridgehead.sdk import Credential, Profile


def profile_chain(config: AgentConfig, name: str, profile: Profile, timeout_s: float) -> Chain:
    label = f"connection {name}"
    try:
        credential = _credential(config, profile)
    except ConfigError as exc:
        return Chain([Step(f"{label} login", constant(fail(str(exc), "correct the profile's credential")))])
    # Imported by kind: a profile of a kind is only there when its plugin (and library) loaded.
    kind = profile.plugin
    if kind == "sql":
        from bridgehead.agent.doctor.probe_sql import SqlProbe
        from bridgehead.plugins.sql.params import SqlProfile

        if isinstance(profile, SqlProfile):
            return SqlProbe(name, profile, credential, timeout_s).chain()
    elif kind == "ldap":
        from bridgehead.agent.doctor.probe_ldap import LdapProbe
        from bridgehead.plugins.ldap.params import LdapProfile

        if isinstance(profile, LdapProfile):
            return LdapProbe(name, profile, credential, timeout_s).chain()
    elif kind == "powershell":
        from bridgehead.agent.doctor.probe_powershell import powershell_chain
        from bridgehead.plugins.powershell.params import PowershellProfile

        if isinstance(profile, PowershellProfile):
            return powershell_chain(name, profile, credential, timeout_s)
    elif kind == "ssh":
        from bridgehead.agent.doctor.probe_ssh import SshProbe
        from bridgehead.plugins.ssh.params import SshProfile

        if isinstance(profile, SshProfile):
            return SshProbe(name, profile, credential, timeout_s).chain()
    elif kind == "rest":
        from bridgehead.agent.doctor.probe_rest import RestProbe
        from bridgehead.plugins.rest.params import RestProfile

        if isinstance(profile, RestProfile):
            return RestProbe(name, profile, credential, timeout_s).chain()
    what = f"no probe for plugin {kind!r}: its profile is valid; run a job to check the connection"
    return Chain([Step(label, constant(skip(what)))])


def _credential(config: AgentConfig, profile: Profile) -> Credential | None:
    if profile.credential is None:
        return None
    # load_config checked the name; read the secrets now, as a job would.
    return resolve_credential(config.credentials[profile.credential], profile.credential, config.data_dir)

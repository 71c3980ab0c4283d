"""The configuration, read exactly as ``run`` reads it (``bridgehead.agent.cli._load``: the
TOML, its structure, the plugins, each connection profile against its plugin, the vault
entries credentials name), so that doctor passes exactly the configs ``run`` accepts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridgehead.agent.config import AgentConfig, AgentSection, load_agent_section
from bridgehead.agent.doctor.findings import Finding, fail, ok, warn
from bridgehead.agent.plugin_loader import AnyPlugin
from bridgehead.core.errors import BridgeheadError
from bridgehead.sdk import Profile

FIX_CONFIG = "correct the key named above ('bridgehead-agent check --config PATH' reads the file the same way)"


@dataclass(frozen=True)
class Loaded:
    config: AgentConfig
    plugins: dict[str, AnyPlugin]
    profiles: dict[str, Profile]


class _Rejections(logging.Handler):
    """The plugin loader logs a plugin it rejects and goes on without it: keep those lines."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().removeprefix("plugin rejected: "))


class ConfigCheck:
    def __init__(self, path: str) -> None:
        self.path = path
        self.loaded: Loaded | None = None
        self.rejected: list[str] = []

    def check(self) -> Finding:
        """Blocking (files, the vault): run it in a thread."""
        # Imported here: cli.py imports this package lazily, and its _load is the one
        # definition of what a valid configuration is.
        from bridgehead.agent.cli import _load

        rejections = _Rejections()
        plugin_log = logging.getLogger("bridgehead.agent.plugins")
        plugin_log.addHandler(rejections)
        plugin_log.propagate = False  # said once, in the table, not in a log line beside it too
        try:
            config, plugins, profiles = _load(self.path)
        except BridgeheadError as exc:  # ConfigError, mostly
            return fail(str(exc), FIX_CONFIG)
        finally:
            plugin_log.removeHandler(rejections)
            plugin_log.propagate = True
            # _load set the config's log level; doctor's output is its table, so only
            # warnings and errors (a plugin's own) reach stderr beside it.
            logging.getLogger().setLevel(logging.WARNING)
        self.loaded = Loaded(config, plugins, profiles)
        self.rejected = rejections.messages
        summary = (
            f"{config.path}: valid; plugins: {', '.join(sorted(plugins)) or 'none'}; "
            f"connections: {', '.join(sorted(profiles)) or 'none'}"
        )
        if self.rejected:
            return warn(
                f"{summary}; rejected: {'; '.join(self.rejected)}",
                "fix or remove the rejected plugin (its jobs fail until then), or list it in agent.disabled_plugins",
            )
        return ok(summary)

    def agent_section(self) -> AgentSection | None:
        """The [agent] table, also from a config that failed after it, so that the identity
        and data_dir checks still run."""
        if self.loaded is not None:
            return self.loaded.config.agent
        try:
            return load_agent_section(self.path)
        except BridgeheadError:
            return None

"""Built-in plugins are written like anyone's: from Bridgehead they import only the SDK.

Read from the source with ``ast`` (every import, also those inside functions and under
``TYPE_CHECKING``), so nothing has to be imported to check it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import bridgehead

ROOT = Path(bridgehead.__file__).parent
PLUGINS = ROOT / "plugins"
SDK = "bridgehead.sdk"
# The one deliberate composition: powershell runs over the ssh plugin's transports, through
# what the ssh package exports (bridgehead/plugins/ssh/__init__.py), not through its modules.
COMPOSED = {("powershell", "bridgehead.plugins.ssh")}


def imported_modules(path: Path, package: str) -> Iterator[str]:
    """Every module ``path`` imports, absolute; ``package`` resolves relative imports."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            yield module
            # ``from bridgehead.plugins.ssh import transports`` imports a module by its name.
            yield from (f"{module}.{alias.name}" for alias in node.names if is_module(f"{module}.{alias.name}"))


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of Bridgehead's source (not a class or function)."""
    top, _, rest = name.partition(".")
    if top != "bridgehead" or not rest:
        return False
    path = ROOT.joinpath(*rest.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def refused_imports() -> list[tuple[str, str]]:
    """(file, module) for each import of Bridgehead that is neither the SDK nor the file's
    own plugin package nor the deliberate composition."""
    refused = []
    for path in sorted(PLUGINS.rglob("*.py")):
        parts = path.relative_to(PLUGINS).with_suffix("").parts
        plugin = parts[0] if len(parts) > 1 else ""
        own = f"bridgehead.plugins.{plugin}"
        package = ".".join(["bridgehead.plugins", *parts[:-1]])  # what ``from . import`` means here
        for module in imported_modules(path, package):
            if module.split(".")[0] != "bridgehead" or module == "bridgehead":
                continue
            if module == SDK or (plugin and (module == own or module.startswith(own + "."))):
                continue
            if (plugin, module) in COMPOSED:
                continue
            refused.append((str(path.relative_to(PLUGINS)), module))
    return refused


def test_builtin_plugins_import_only_the_sdk() -> None:
    """No module under bridgehead/plugins/ imports Bridgehead beyond bridgehead.sdk and its own plugin."""
    assert [] == refused_imports()


def test_the_check_sees_imports_of_every_kind(tmp_path: Path) -> None:
    """The reader finds plain, from-, relative, nested and TYPE_CHECKING imports."""
    source = tmp_path / "mod.py"
    source.write_text(
        "import bridgehead.core.errors\n"
        "from bridgehead import agent\n"
        "from . import params\n"
        "from ..ssh import transports, SshPlugin\n"
        "if TYPE_CHECKING:\n    from bridgehead.protocol import SyncState\n"
        "def f():\n    from bridgehead.sdk.fetcher import Fetcher\n"
    )
    found = set(imported_modules(source, "bridgehead.plugins.ldap"))
    assert {
        "bridgehead.core.errors",
        "bridgehead.agent",
        "bridgehead.plugins.ldap",
        "bridgehead.plugins.ssh",
        "bridgehead.plugins.ssh.transports",
        "bridgehead.protocol",
        "bridgehead.sdk.fetcher",
    } <= found
    assert "bridgehead.plugins.ssh.SshPlugin" not in found


def test_powershell_holds_the_ssh_transport_rather_than_being_an_ssh_plugin() -> None:
    """PowershellPlugin composes ssh's SshHosts; it is not an SshPlugin (whose params it does not take)."""
    from bridgehead.plugins.powershell import PowershellPlugin  # noqa: PLC0415
    from bridgehead.plugins.ssh import SshHosts, SshPlugin  # noqa: PLC0415

    plugin = PowershellPlugin()
    assert (False, True) == (isinstance(plugin, SshPlugin), isinstance(plugin.ssh, SshHosts))
    assert plugin.psrp is not None and plugin._executor is plugin.ssh.executor

"""The plugin loader: built-ins from a static list, entry points and drop-ins through one path;
disabled plugins and names taken from a built-in are refused before anything is imported.

Each case loads in a fresh interpreter, so ``sys.modules`` shows what was imported. Third-party
entry points are real: a ``*.dist-info`` directory on the child's ``sys.path``, as pip leaves one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import bridgehead
from bridgehead.agent.plugin_loader import BUILTIN_PLUGINS

PLUGIN_SOURCE = textwrap.dedent(
    """
    from bridgehead.sdk import JobContext, NoProfile, Params, Plugin


    class ShoutParams(Params):
        text: str = ""


    class Shout(Plugin[ShoutParams, NoProfile]):
        name = "{name}"
        params_type = ShoutParams

        async def run(self, ctx: JobContext[NoProfile], params: ShoutParams) -> None:
            await ctx.emit({{"text": params.text.upper()}})


    PLUGIN = Shout
    """
)

PROBE = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    from bridgehead.agent.plugin_loader import load_plugins

    class Collect(logging.Handler):
        lines = []
        def emit(self, record):
            self.lines.append(record.getMessage())

    logging.getLogger("bridgehead.agent.plugins").addHandler(Collect())
    logging.getLogger("bridgehead.agent.plugins").setLevel(logging.INFO)
    directory, disabled = json.loads(sys.argv[1])
    plugins = load_plugins(Path(directory) if directory else None, disabled)
    print(json.dumps({
        "plugins": {name: type(plugin).__module__ for name, plugin in plugins.items()},
        "modules": sorted(sys.modules),
        "log": Collect.lines,
    }))
    """
)


def install(site: Path, distribution: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Lay out ``distribution`` in ``site`` as pip would: its modules, and a dist-info with entry points."""
    info = site / f"{distribution}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[bridgehead.plugins]\n" + "\n".join(lines) + "\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


def load(site: Path | None = None, plugins_dir: Path | None = None, disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the agent's loader in a child interpreter; what it loaded, imported and logged."""
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    argument = json.dumps([str(plugins_dir) if plugins_dir else None, list(disabled)])
    done = subprocess.run(
        [sys.executable, "-c", PROBE, argument], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_static_list_names_every_builtin_package() -> None:
    """BUILTIN_PLUGINS lists each package under bridgehead/plugins/, by its own name."""
    plugins = Path(bridgehead.__file__).parent / "plugins"
    packages = {path.parent.name for path in plugins.glob("*/__init__.py")}
    assert packages == set(BUILTIN_PLUGINS)
    assert {name: f"bridgehead.plugins.{name}" for name in BUILTIN_PLUGINS} == {
        name: reference.partition(":")[0] for name, reference in BUILTIN_PLUGINS.items()
    }


def test_builtins_load_without_entry_point_metadata() -> None:
    """No built-in is in the entry-point group, and the loader still loads every one, each
    from its own package."""
    from importlib.metadata import entry_points  # noqa: PLC0415

    assert [] == [ep.value for ep in entry_points(group="bridgehead.plugins") if ep.value.startswith("bridgehead.")]
    loaded = load()["plugins"]
    assert set(BUILTIN_PLUGINS) == set(loaded)
    assert [] == [name for name, module in loaded.items() if module.split(".")[:3] != ["bridgehead", "plugins", name]]


def test_disabled_plugins_are_never_imported(tmp_path: Path) -> None:
    """A disabled built-in, entry point or drop-in is skipped by name: its module is never imported."""
    site, drop_ins = tmp_path / "site", tmp_path / "plugins"
    install(site, "shout_dist", {"shout": "shout_plugin:Shout"}, {"shout_plugin": PLUGIN_SOURCE.format(name="shout")})
    drop_ins.mkdir()
    (drop_ins / "whisper.py").write_text(PLUGIN_SOURCE.format(name="whisper"))
    result = load(site, drop_ins, disabled=("sql", "ldap", "shout", "whisper"))
    assert {"echo", "rest", "ssh", "powershell"} == set(result["plugins"])
    imported = set(result["modules"])
    assert set() == imported & {"bridgehead.plugins.sql", "bridgehead.plugins.ldap", "shout_plugin"}
    assert [] == [module for module in imported if module.startswith("bridgehead_dropin_")]
    assert "plugin sql disabled by agent.disabled_plugins (built-in sql" in "\n".join(result["log"])


def test_third_party_plugins_load_beside_the_builtins(tmp_path: Path) -> None:
    """An entry point and a drop-in, not disabled, load through the same validation as built-ins."""
    site, drop_ins = tmp_path / "site", tmp_path / "plugins"
    install(site, "shout_dist", {"shout": "shout_plugin:Shout"}, {"shout_plugin": PLUGIN_SOURCE.format(name="shout")})
    drop_ins.mkdir()
    (drop_ins / "whisper.py").write_text(PLUGIN_SOURCE.format(name="whisper"))
    (drop_ins / "notaplugin.py").write_text("PLUGIN = 42\n")
    result = load(site, drop_ins)
    assert ("shout_plugin", "bridgehead_dropin_whisper") == (result["plugins"]["shout"], result["plugins"]["whisper"])
    assert "notaplugin" not in result["plugins"]
    assert any("notaplugin.py: 42 is not a subclass of bridgehead.sdk.Plugin" in line for line in result["log"])


def test_a_builtin_name_cannot_be_taken_by_a_third_party(tmp_path: Path) -> None:
    """An entry point or drop-in named as a built-in is refused, unimported; the built-in stays."""
    site, drop_ins = tmp_path / "site", tmp_path / "plugins"
    install(site, "evil_dist", {"sql": "evil_sql:Shout"}, {"evil_sql": PLUGIN_SOURCE.format(name="sql")})
    drop_ins.mkdir()
    (drop_ins / "echo.py").write_text(PLUGIN_SOURCE.format(name="echo"))
    result = load(site, drop_ins)
    assert ("bridgehead.plugins.sql.plugin", "bridgehead.plugins.echo") == (
        result["plugins"]["sql"],
        result["plugins"]["echo"],
    )
    assert "evil_sql" not in result["modules"]
    refusals = [line for line in result["log"] if "is a built-in plugin's" in line]
    assert 2 == len(refusals), result["log"]


def test_a_plugin_is_registered_under_its_own_name(tmp_path: Path) -> None:
    """An entry point or drop-in whose name is not its class's name is refused (else disabling
    it by name would not work without importing it)."""
    site, drop_ins = tmp_path / "site", tmp_path / "plugins"
    install(site, "loud_dist", {"loud": "loud_plugin:Shout"}, {"loud_plugin": PLUGIN_SOURCE.format(name="shout")})
    drop_ins.mkdir()
    (drop_ins / "quiet.py").write_text(PLUGIN_SOURCE.format(name="whisper"))
    result = load(site, drop_ins)
    assert set() == {"loud", "shout", "quiet", "whisper"} & set(result["plugins"])
    assert 2 == sum("it must be registered under that name" in line for line in result["log"]), result["log"]

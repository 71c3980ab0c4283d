"""Finding plugins: the built-ins, the ``bridgehead.plugins`` entry-point group, a ``plugins_dir``.

Three sources, one path through here (as datasette's ``DEFAULT_PLUGINS`` beside its
entry points)::

    BUILTIN_PLUGINS          name -> "module:Class", a static list: a frozen binary carries
                             no entry-point metadata, and nothing here depends on it
    entry points             group ``bridgehead.plugins``, an installed package's plugins
    plugins_dir              ``name.py`` or ``name/__init__.py`` exposing ``PLUGIN``: how
                             admins add plugins to the single binary, which cannot pip-install

Each source names its plugins before anything is imported (the built-in's key, the entry
point's name, the file's name), and that name must be the class's ``name``. So a plugin in
``disabled`` is never imported, and a third-party plugin that takes a built-in's name is
refused before it is imported: built-in names are reserved (to replace a built-in, give the
replacement another name and disable the built-in). A plugin that fails to import or to
validate is rejected with a logged reason; the agent starts without it rather than failing
on its first job.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bridgehead.sdk.checks import AnyPlugin, PluginLoadError, params_schema, parse_params, validate_plugin_class

ENTRY_POINT_GROUP = "bridgehead.plugins"
# The plugins shipped in this package, loaded like any other (tests/unit/test_plugin_loader.py
# checks this list against bridgehead/plugins/). Strings, so that nothing is imported for a
# disabled one; a frozen build lists these modules as hidden imports.
BUILTIN_PLUGINS: Mapping[str, str] = {
    "echo": "bridgehead.plugins.echo:EchoPlugin",
    "rest": "bridgehead.plugins.rest:RestPlugin",
    "sql": "bridgehead.plugins.sql:SqlPlugin",
    "ldap": "bridgehead.plugins.ldap:LdapPlugin",
    "ssh": "bridgehead.plugins.ssh:SshPlugin",
    "powershell": "bridgehead.plugins.powershell:PowershellPlugin",
}
log = logging.getLogger("bridgehead.agent.plugins")

__all__ = ["AnyPlugin", "PluginLoadError", "load_plugins", "parse_params", "params_schema", "validate_plugin_class"]


@dataclass(frozen=True)
class Candidate:
    """A plugin known by name, not imported yet: ``load`` imports it and returns the class."""

    name: str
    origin: str
    load: Callable[[], object]
    builtin: bool = False


def _import_object(reference: str) -> object:
    """``"package.module:Attribute"``, imported."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _builtins() -> Iterator[Candidate]:
    for name, reference in BUILTIN_PLUGINS.items():
        yield Candidate(name, f"built-in {name} ({reference})", functools.partial(_import_object, reference), True)


def _from_entry_points() -> Iterator[Candidate]:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        yield Candidate(ep.name, f"entry point {ep.name} ({ep.value})", ep.load)


def _from_directory(directory: Path) -> Iterator[Candidate]:
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            file = path / "__init__.py"
        elif path.suffix == ".py":
            file = path
        else:
            continue
        yield Candidate(path.stem, f"plugins_dir module {file}", functools.partial(_drop_in_plugin, path, file))


def _drop_in_plugin(path: Path, file: Path) -> object:
    """Import the drop-in module at ``file`` (``path`` is the file or its package dir); its ``PLUGIN``."""
    module_name = f"bridgehead_dropin_{path.stem}"
    spec = importlib.util.spec_from_file_location(
        module_name, file, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise PluginLoadError("not importable")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    if not hasattr(module, "PLUGIN"):
        raise PluginLoadError("defines no PLUGIN")
    return module.PLUGIN


def _load(candidate: Candidate) -> type[AnyPlugin]:
    """Import ``candidate`` and check it; ``PluginLoadError`` says why it cannot be used."""
    try:
        obj = candidate.load()
    except PluginLoadError as exc:
        raise PluginLoadError(f"{candidate.origin} {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the agent
        raise PluginLoadError(f"{candidate.origin} failed to import: {exc}") from None
    cls = validate_plugin_class(obj, candidate.origin)
    if cls.name != candidate.name:
        raise PluginLoadError(
            f"{candidate.origin}: the class is named {cls.name!r}; it must be registered under "
            f"that name (so that disabled_plugins can skip it without importing it)"
        )
    return cls


def load_plugins(plugins_dir: Path | None = None, disabled: Iterable[str] = ()) -> dict[str, AnyPlugin]:
    """Instantiate every plugin found, keyed by name: the built-ins, then entry points, then
    ``plugins_dir`` in file-name order. ``disabled`` names are skipped before any import."""
    skip = set(disabled)
    candidates: list[Candidate] = [*_builtins(), *_from_entry_points()]
    if plugins_dir is not None:
        candidates += _from_directory(plugins_dir)
    found: dict[str, AnyPlugin] = {}
    for candidate in candidates:
        if candidate.name in skip:
            log.info("plugin %s disabled by agent.disabled_plugins (%s not imported)", candidate.name, candidate.origin)
            continue
        if not candidate.builtin and candidate.name in BUILTIN_PLUGINS:
            log.error(
                "plugin rejected: %s: the name %r is a built-in plugin's (disable the built-in and "
                "give this one another name to replace it)",
                candidate.origin,
                candidate.name,
            )
            continue
        if candidate.name in found:
            log.error("plugin rejected: %s: the name %r is taken already", candidate.origin, candidate.name)
            continue
        try:
            cls = _load(candidate)
        except PluginLoadError as exc:
            log.error("plugin rejected: %s", exc)
            continue
        found[cls.name] = cls()
    return found

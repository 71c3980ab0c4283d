"""Finding plugins: the ``bridgehead.plugins`` entry-point group, then a ``plugins_dir``.

Built-in plugins are registered through the same entry-point group as third-party ones
(see pyproject.toml), so nothing here knows their names. A drop-in module in
``plugins_dir`` (a ``name.py`` file or a ``name/`` package) exposes its class as ``PLUGIN``;
that is how admins add plugins to the single binary, which cannot pip-install anything.

A plugin that fails to import or to validate is rejected here, at load time, with a logged
reason; the agent starts without it rather than failing on its first job.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from bridgehead.core.errors import InvalidParams
from bridgehead.sdk import Params, Plugin, Profile

ENTRY_POINT_GROUP = "bridgehead.plugins"
log = logging.getLogger("bridgehead.agent.plugins")

AnyPlugin = Plugin[Any, Any]


class PluginLoadError(Exception):
    pass


def validate_plugin_class(obj: object, origin: str) -> type[AnyPlugin]:
    """Check that ``obj`` is a usable plugin class; raise ``PluginLoadError`` saying why not."""
    if not (inspect.isclass(obj) and issubclass(obj, Plugin)):
        raise PluginLoadError(f"{origin}: {obj!r} is not a subclass of bridgehead.sdk.Plugin")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginLoadError(f"{origin}: plugin name {name!r} must be an identifier")
    if not (inspect.isclass(getattr(obj, "params_type", None)) and issubclass(obj.params_type, Params)):
        raise PluginLoadError(f"{origin}: params_type must be a subclass of bridgehead.sdk.Params")
    if not (inspect.isclass(obj.profile_type) and issubclass(obj.profile_type, Profile)):
        raise PluginLoadError(f"{origin}: profile_type must be a subclass of bridgehead.sdk.Profile")
    if inspect.isabstract(obj) or not inspect.iscoroutinefunction(obj.run):
        raise PluginLoadError(f"{origin}: run() must be implemented as 'async def'")
    try:
        msgspec.json.schema(obj.params_type)
    except Exception as exc:  # noqa: BLE001 - any failure here means the schema is unusable
        raise PluginLoadError(f"{origin}: params_type has no JSON schema: {exc}") from None
    return obj


def _from_entry_points() -> Iterable[tuple[str, object]]:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            yield f"entry point {ep.name} ({ep.value})", ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the agent
            log.error("plugin rejected: entry point %s (%s) failed to import: %s", ep.name, ep.value, exc)


def _from_directory(directory: Path) -> Iterable[tuple[str, object]]:
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            file = path / "__init__.py"
        elif path.suffix == ".py":
            file = path
        else:
            continue
        module_name = f"bridgehead_dropin_{path.stem}"
        origin = f"plugins_dir module {file}"
        try:
            spec = importlib.util.spec_from_file_location(
                module_name, file, submodule_search_locations=[str(path)] if path.is_dir() else None
            )
            if spec is None or spec.loader is None:
                raise PluginLoadError("not importable")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the agent
            sys.modules.pop(module_name, None)
            log.error("plugin rejected: %s failed to import: %s", origin, exc)
            continue
        if not hasattr(module, "PLUGIN"):
            log.error("plugin rejected: %s defines no PLUGIN", origin)
            continue
        yield origin, module.PLUGIN


def load_plugins(plugins_dir: Path | None = None, disabled: Iterable[str] = ()) -> dict[str, AnyPlugin]:
    """Instantiate every plugin found, keyed by name; ``disabled`` names are skipped."""
    skip = set(disabled)
    found: dict[str, AnyPlugin] = {}
    sources: list[tuple[str, object]] = list(_from_entry_points())
    if plugins_dir is not None:
        sources += list(_from_directory(plugins_dir))
    for origin, obj in sources:
        try:
            cls = validate_plugin_class(obj, origin)
        except PluginLoadError as exc:
            log.error("plugin rejected: %s", exc)
            continue
        if cls.name in skip:
            log.info("plugin %s disabled by agent.disabled_plugins", cls.name)
            continue
        if cls.name in found:
            log.error("plugin rejected: %s: the name %r is taken already", origin, cls.name)
            continue
        found[cls.name] = cls()
    return found


def parse_params(plugin: AnyPlugin, params: Mapping[str, Any]) -> Params:
    """Validate a job's params against the plugin's schema; ``InvalidParams`` says where."""
    try:
        return msgspec.convert(params, plugin.params_type, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"params for plugin {plugin.name!r}: {exc}") from None


def params_schema(plugin: AnyPlugin) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(plugin.params_type)
    return schema

"""What makes a class a plugin, checked the same way wherever it comes from: the agent's loader
(built-ins, entry points, the drop-in directory) and ``bridgehead.sdk.testing`` run these, so a
plugin that passes its own tests loads in an agent. Also how a job's params become the plugin's
``Params`` struct, and the JSON schema the agent publishes for them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import msgspec

from bridgehead.core.errors import InvalidParams
from bridgehead.sdk.plugin import Params, Plugin, Profile

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


def parse_params(plugin: AnyPlugin, params: Mapping[str, Any]) -> Params:
    """Validate a job's params against the plugin's schema; ``InvalidParams`` says where."""
    try:
        return msgspec.convert(params, plugin.params_type, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"params for plugin {plugin.name!r}: {exc}") from None


def params_schema(plugin: AnyPlugin) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(plugin.params_type)
    return schema

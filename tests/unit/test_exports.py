"""The public surfaces stay small and deliberate: adding a name is a decision, not an accident."""

from __future__ import annotations

from pathlib import Path

import bridgehead.protocol
import bridgehead.sdk

SDK = {
    "Credential",
    "Fetcher",
    "InvalidParams",
    "JobContext",
    "JobError",
    "NoProfile",
    "Params",
    "Plugin",
    "PolicyDenied",
    "Profile",
    "Record",
    "RecordArray",
    "RecordSink",
    "RecordTooLarge",
    "SourceError",
    "SourceUnavailable",
    "SyncState",
    "redact",
    "redact_bytes",
    "register_secret",
}


def test_sdk_exports_exactly_its_surface() -> None:
    """bridgehead.sdk.__all__ is the documented plugin surface, and every name exists."""
    assert SDK == set(bridgehead.sdk.__all__)
    assert [] == [name for name in bridgehead.sdk.__all__ if not hasattr(bridgehead.sdk, name)]


def test_every_sdk_name_is_documented() -> None:
    """docs/plugins.md, the plugin author's guide, mentions each name the SDK exports."""
    guide = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    assert [] == [name for name in bridgehead.sdk.__all__ if f"`{name}`" not in guide]


def test_protocol_exports_exist_and_cover_every_message() -> None:
    """Every name in bridgehead.protocol.__all__ exists, and every message type is exported."""
    from bridgehead.protocol import messages

    assert [] == [name for name in bridgehead.protocol.__all__ if not hasattr(bridgehead.protocol, name)]
    message_types = {
        name
        for name, value in vars(messages).items()
        if isinstance(value, type) and getattr(getattr(value, "__struct_config__", None), "tag", None)
    }
    assert set() == message_types - set(bridgehead.protocol.__all__)

"""The ``ldap`` plugin: directory searches, paged and streamed one record per entry
(docs/plugins/ldap.md)."""

from bridgehead.plugins.ldap.plugin import LdapPlugin

__all__ = ["LdapPlugin"]

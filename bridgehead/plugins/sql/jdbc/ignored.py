"""The properties that only tune the Java driver, per dialect: ignored by the translation
(and listed in docs/plugins/sql-jdbc.md), where any other property not understood is refused."""

from __future__ import annotations

# Properties that only tune the Java driver (statement caches, Java-side timeouts and
# encodings, logging) and have no effect worth carrying over: ignored. All names lowercase;
# properties are matched case-insensitively. Timeouts are among them because the sql
# profile has its own (connect_timeout_s, query_timeout_s).
POSTGRESQL_IGNORED = frozenset(
    {
        "applicationname",
        "assumeminserverversion",
        "binarytransfer",
        "cancelsignaltimeout",
        "connecttimeout",
        "defaultrowfetchsize",
        "loggerfile",
        "loggerlevel",
        "logintimeout",
        "preparedstatementcachequeries",
        "preparedstatementcachesizemib",
        "preparethreshold",
        "rewritebatchedinserts",
        "sockettimeout",
        "tcpkeepalive",
    }
)
MYSQL_IGNORED = frozenset(
    {
        "allowpublickeyretrieval",
        "autoreconnect",
        "cacheprepstmts",
        "characterencoding",
        "connecttimeout",
        "initialtimeout",
        "logintimeout",
        "maxreconnects",
        "prepstmtcachesize",
        "prepstmtcachesqllimit",
        "rewritebatchedstatements",
        "servertimezone",
        "sockettimeout",
        "tcpkeepalive",
        "usejdbccomplianttimezoneshift",
        "uselegacydatetimecode",
        "useserverprepstmts",
        "useunicode",
        "zerodatetimebehavior",
    }
)
SQLSERVER_IGNORED = frozenset(
    {
        "applicationname",
        "cancelquerytimeout",
        "disablestatementpooling",
        "lastupdatecount",
        "logintimeout",
        "packetsize",
        "querytimeout",
        "responsebuffering",
        "selectmethod",
        "sendstringparametersasunicode",
        "sendtimeasdatetime",
        "sockettimeout",
        "statementpoolingcachesize",
        "workstationid",
        "xopenstates",
    }
)
JTDS_IGNORED = frozenset(
    {
        "appname",
        "batchsize",
        "buffermaxmemory",
        "bufferminpackets",
        "cachemetadata",
        "charset",
        "lastupdatecount",
        "logintimeout",
        "maxstatements",
        "packetsize",
        "preparesql",
        "progname",
        "sendstringparametersasunicode",
        "socketkeepalive",
        "sockettimeout",
        "tcpnodelay",
        "tds",
        "usecursors",
        "uselobs",
        "wsid",
    }
)

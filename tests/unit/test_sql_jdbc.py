"""Unit tests of bridgehead.plugins.sql.jdbc: JDBC URLs translated into ODBC connection strings, or refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridgehead.plugins.sql import jdbc, odbc_string
from bridgehead.plugins.sql.jdbc import jdbc_to_odbc

PG = "Driver={PostgreSQL Unicode};"
MY = "Driver={MariaDB Unicode};"
MS = "Driver={ODBC Driver 18 for SQL Server};"
ORA = "Driver={Oracle 21 ODBC driver};"
SID_DESCRIPTOR = "(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST={host})(PORT={port}))(CONNECT_DATA=(SID={sid})))"

TRANSLATIONS = [
    # PostgreSQL
    ("jdbc:postgresql://db.example.com/cmdb", PG + "Server=db.example.com;Port=5432;Database=cmdb;SSLmode=prefer"),
    ("jdbc:postgresql://db:6543/cmdb", PG + "Server=db;Port=6543;Database=cmdb;SSLmode=prefer"),
    ("jdbc:postgresql://db", PG + "Server=db;Port=5432;SSLmode=prefer"),
    ("jdbc:postgresql://db/", PG + "Server=db;Port=5432;SSLmode=prefer"),
    ("JDBC:PostgreSQL://db/x", PG + "Server=db;Port=5432;Database=x;SSLmode=prefer"),
    ("  jdbc:postgresql://db/x\n", PG + "Server=db;Port=5432;Database=x;SSLmode=prefer"),
    ("jdbc:postgresql://10.0.0.7:5433/x", PG + "Server=10.0.0.7;Port=5433;Database=x;SSLmode=prefer"),
    ("jdbc:postgresql://[::1]/x", PG + "Server=::1;Port=5432;Database=x;SSLmode=prefer"),
    ("jdbc:postgresql://[fe80::1%eth0]:5433/x", PG + "Server=fe80::1%eth0;Port=5433;Database=x;SSLmode=prefer"),
    ("jdbc:postgresql://db/my%20db", PG + "Server=db;Port=5432;Database=my db;SSLmode=prefer"),
    ("jdbc:postgresql://db/a%3Bb", PG + "Server=db;Port=5432;Database={a;b};SSLmode=prefer"),
    ("jdbc:postgresql://db/x?ssl=true", PG + "Server=db;Port=5432;Database=x;SSLmode=verify-full"),
    ("jdbc:postgresql://db/x?ssl", PG + "Server=db;Port=5432;Database=x;SSLmode=verify-full"),
    ("jdbc:postgresql://db/x?ssl=false", PG + "Server=db;Port=5432;Database=x;SSLmode=prefer"),
    ("jdbc:postgresql://db/x?sslmode=require", PG + "Server=db;Port=5432;Database=x;SSLmode=require"),
    ("jdbc:postgresql://db/x?ssl=true&sslmode=disable", PG + "Server=db;Port=5432;Database=x;SSLmode=disable"),
    ("jdbc:postgresql://db/x?sslmode=VERIFY-CA", PG + "Server=db;Port=5432;Database=x;SSLmode=verify-ca"),
    ("jdbc:postgresql://db/x?sslmode=allow", PG + "Server=db;Port=5432;Database=x;SSLmode=allow"),
    (
        "jdbc:postgresql://db/x?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem",
        PG + "Server=db;Port=5432;Database=x;SSLmode=verify-full;pqopt={sslrootcert=/etc/ssl/ca.pem}",
    ),
    (
        "jdbc:postgresql://db/x?sslrootcert=/etc/my%20ca's.pem",
        PG + "Server=db;Port=5432;Database=x;SSLmode=prefer;pqopt={sslrootcert='/etc/my ca\\'s.pem'}",
    ),
    (
        "jdbc:postgresql://db/x?ApplicationName=mid&connectTimeout=10&loginTimeout=5&socketTimeout=0"
        "&tcpKeepAlive=true&prepareThreshold=0&applicationName=y",
        PG + "Server=db;Port=5432;Database=x;SSLmode=prefer",
    ),
    # MySQL and MariaDB
    ("jdbc:mysql://db/cmdb", MY + "Server=db;Port=3306;Database=cmdb"),
    ("jdbc:mysql://db:3307", MY + "Server=db;Port=3307"),
    ("jdbc:mariadb://db:3307/cmdb", MY + "Server=db;Port=3307;Database=cmdb"),
    ("jdbc:mysql://[2001:db8::5]/x", MY + "Server=2001:db8::5;Port=3306;Database=x"),
    ("jdbc:mysql://db/caf%C3%A9", MY + "Server=db;Port=3306;Database=caf\u00e9"),
    ("jdbc:mysql://db/x?useSSL=true", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mariadb://db/x?useSsl=true", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mysql://db/x?requireSSL=true", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mysql://db/x?useSSL=false", MY + "Server=db;Port=3306;Database=x"),
    (
        "jdbc:mysql://db/x?useSSL=true&verifyServerCertificate=true",
        MY + "Server=db;Port=3306;Database=x;FORCETLS=1;SSLVERIFY=1",
    ),
    ("jdbc:mysql://db/x?useSSL=true&verifyServerCertificate=false", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    (
        "jdbc:mariadb://db/x?useSsl=true&trustServerCertificate=false",
        MY + "Server=db;Port=3306;Database=x;FORCETLS=1;SSLVERIFY=1",
    ),
    ("jdbc:mariadb://db/x?useSsl=true&trustServerCertificate=true", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mysql://db/x?verifyServerCertificate=true", MY + "Server=db;Port=3306;Database=x"),
    ("jdbc:mysql://db/x?sslMode=DISABLED", MY + "Server=db;Port=3306;Database=x"),
    ("jdbc:mysql://db/x?sslMode=PREFERRED", MY + "Server=db;Port=3306;Database=x"),
    ("jdbc:mysql://db/x?sslMode=REQUIRED", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mysql://db/x?sslMode=VERIFY_CA", MY + "Server=db;Port=3306;Database=x;FORCETLS=1;SSLVERIFY=1"),
    ("jdbc:mysql://db/x?sslMode=VERIFY_IDENTITY", MY + "Server=db;Port=3306;Database=x;FORCETLS=1;SSLVERIFY=1"),
    ("jdbc:mariadb://db/x?sslMode=disable", MY + "Server=db;Port=3306;Database=x"),
    ("jdbc:mariadb://db/x?sslMode=trust", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mariadb://db/x?sslMode=verify-ca", MY + "Server=db;Port=3306;Database=x;FORCETLS=1;SSLVERIFY=1"),
    ("jdbc:mariadb://db/x?sslMode=verify-full", MY + "Server=db;Port=3306;Database=x;FORCETLS=1;SSLVERIFY=1"),
    ("jdbc:mysql://db/x?sslMode=REQUIRED&useSSL=false", MY + "Server=db;Port=3306;Database=x;FORCETLS=1"),
    ("jdbc:mysql://db/x?useSSL=true&sslMode=DISABLED", MY + "Server=db;Port=3306;Database=x"),
    (
        "jdbc:mysql://db/x?useUnicode=true&characterEncoding=UTF-8&serverTimezone=UTC&autoReconnect=true"
        "&zeroDateTimeBehavior=convertToNull&connectTimeout=5000&socketTimeout=0",
        MY + "Server=db;Port=3306;Database=x",
    ),
    # SQL Server (mssql-jdbc)
    ("jdbc:sqlserver://sql1", MS + "Server=sql1,1433"),
    ("jdbc:sqlserver://sql1:1444", MS + "Server=sql1,1444"),
    ("jdbc:sqlserver://sql1;databaseName=cmdb", MS + "Server=sql1,1433;Database=cmdb"),
    ("jdbc:sqlserver://sql1;database=cmdb;", MS + "Server=sql1,1433;Database=cmdb"),
    ("jdbc:sqlserver://sql1;DATABASENAME=cmdb", MS + "Server=sql1,1433;Database=cmdb"),
    ("jdbc:sqlserver://sql1\\PROD;databaseName=cmdb", MS + "Server=sql1\\PROD;Database=cmdb"),
    ("jdbc:sqlserver://sql1\\PROD:1500;databaseName=cmdb", MS + "Server=sql1,1500;Database=cmdb"),
    ("jdbc:sqlserver://;serverName=sql1;portNumber=1500", MS + "Server=sql1,1500"),
    ("jdbc:sqlserver://;serverName=sql1\\PROD", MS + "Server=sql1\\PROD"),
    ("jdbc:sqlserver://sql1;instanceName=PROD", MS + "Server=sql1\\PROD"),
    ("jdbc:sqlserver://sql1;port=1500", MS + "Server=sql1,1500"),
    ("jdbc:sqlserver://sql1;databaseName={cm;db}", MS + "Server=sql1,1433;Database={cm;db}"),
    (
        "jdbc:sqlserver://sql1:1433;databaseName=cmdb;encrypt=true;trustServerCertificate=true",
        MS + "Server=sql1,1433;Database=cmdb;Encrypt=yes;TrustServerCertificate=yes",
    ),
    (
        "jdbc:sqlserver://sql1;encrypt=false;trustServerCertificate=false",
        MS + "Server=sql1,1433;Encrypt=no;TrustServerCertificate=no",
    ),
    ("jdbc:sqlserver://sql1;encrypt=strict", MS + "Server=sql1,1433;Encrypt=strict"),
    ("jdbc:sqlserver://sql1;encrypt=Mandatory", MS + "Server=sql1,1433;Encrypt=yes"),
    ("jdbc:sqlserver://sql1;encrypt=optional", MS + "Server=sql1,1433;Encrypt=no"),
    (
        "jdbc:sqlserver://sql1;encrypt=true;hostNameInCertificate=*.corp.example",
        MS + "Server=sql1,1433;Encrypt=yes;HostNameInCertificate=*.corp.example",
    ),
    ("jdbc:sqlserver://ag1;multiSubnetFailover=true", MS + "Server=ag1,1433;MultiSubnetFailover=yes"),
    (
        "jdbc:sqlserver://sql1;databaseName=x;applicationName=MID;loginTimeout=30;sendStringParametersAsUnicode=false"
        ";selectMethod=cursor;socketTimeout=0",
        MS + "Server=sql1,1433;Database=x",
    ),
    # SQL Server through jTDS
    ("jdbc:jtds:sqlserver://sql1", MS + "Server=sql1,1433"),
    ("jdbc:jtds:sqlserver://sql1:1500/cmdb", MS + "Server=sql1,1500;Database=cmdb"),
    ("jdbc:jtds:sqlserver://sql1/cmdb;instance=PROD", MS + "Server=sql1\\PROD;Database=cmdb"),
    ("jdbc:jtds:sqlserver://sql1:1500/cmdb;instance=PROD", MS + "Server=sql1,1500;Database=cmdb"),
    ("jdbc:jtds:sqlserver://sql1;databaseName=cmdb;portNumber=1500", MS + "Server=sql1,1500;Database=cmdb"),
    ("jdbc:jtds:sqlserver://sql1/cmdb;ssl=off", MS + "Server=sql1,1433;Database=cmdb;Encrypt=no"),
    (
        "jdbc:jtds:sqlserver://sql1/cmdb;ssl=request",
        MS + "Server=sql1,1433;Database=cmdb;Encrypt=yes;TrustServerCertificate=yes",
    ),
    (
        "jdbc:jtds:sqlserver://sql1/cmdb;ssl=require",
        MS + "Server=sql1,1433;Database=cmdb;Encrypt=yes;TrustServerCertificate=yes",
    ),
    (
        "jdbc:jtds:sqlserver://sql1/cmdb;ssl=authenticate",
        MS + "Server=sql1,1433;Database=cmdb;Encrypt=yes;TrustServerCertificate=no",
    ),
    (
        "jdbc:jtds:sqlserver://sql1/cmdb;appName=MID;loginTimeout=20;socketTimeout=0;tds=8.0;useLOBs=false"
        ";sendStringParametersAsUnicode=false;prepareSQL=2",
        MS + "Server=sql1,1433;Database=cmdb",
    ),
    # Oracle thin
    (
        "jdbc:oracle:thin:@dbh:1521:ORCL",
        ORA + "DBQ={" + SID_DESCRIPTOR.format(host="dbh", port=1521, sid="ORCL") + "}",
    ),
    (
        "jdbc:oracle:thin:@10.1.2.3:1522:CMDB_1",
        ORA + "DBQ={" + SID_DESCRIPTOR.format(host="10.1.2.3", port=1522, sid="CMDB_1") + "}",
    ),
    (
        "jdbc:oracle:thin:@[::1]:1521:ORCL",
        ORA + "DBQ={" + SID_DESCRIPTOR.format(host="::1", port=1521, sid="ORCL") + "}",
    ),
    ("jdbc:oracle:thin:@//dbh:1522/cmdb.example.com", ORA + "DBQ=//dbh:1522/cmdb.example.com"),
    ("jdbc:oracle:thin:@//dbh/cmdb", ORA + "DBQ=//dbh:1521/cmdb"),
    ("jdbc:oracle:thin:@dbh:1522/cmdb", ORA + "DBQ=//dbh:1522/cmdb"),
    ("jdbc:oracle:thin:@dbh/cmdb", ORA + "DBQ=//dbh:1521/cmdb"),
    ("jdbc:oracle:thin:@[2001:db8::9]:1522/cmdb", ORA + "DBQ=//[2001:db8::9]:1522/cmdb"),
    ("jdbc:oracle:thin:@tcp://dbh:1522/cmdb", ORA + "DBQ=//dbh:1522/cmdb"),
    ("jdbc:oracle:thin:@tcps://dbh:2484/cmdb", ORA + "DBQ=tcps://dbh:2484/cmdb"),
    ("jdbc:oracle:thin:@CMDB_PROD", ORA + "DBQ=CMDB_PROD"),
    (
        "jdbc:oracle:thin:@(DESCRIPTION=(ADDRESS=(PROTOCOL=TCPS)(HOST=h)(PORT=2484))(CONNECT_DATA=(SERVICE_NAME=s)))",
        ORA + "DBQ={(DESCRIPTION=(ADDRESS=(PROTOCOL=TCPS)(HOST=h)(PORT=2484))(CONNECT_DATA=(SERVICE_NAME=s)))}",
    ),
    (
        "jdbc:oracle:thin:@ (description = (address_list = (address = (protocol = tcp)(host = a)(port = 1521)))"
        " (connect_data = (service_name = s)))",
        ORA + "DBQ={(description = (address_list = (address = (protocol = tcp)(host = a)(port = 1521)))"
        " (connect_data = (service_name = s)))}",
    ),
    ("JDBC:ORACLE:THIN:@//dbh:1521/cmdb", ORA + "DBQ=//dbh:1521/cmdb"),
]


@pytest.mark.parametrize(("url", "expected"), TRANSLATIONS)
def test_translation(url: str, expected: str) -> None:
    assert jdbc_to_odbc(url) == expected


@pytest.mark.parametrize(("url", "expected"), TRANSLATIONS)
def test_translation_holds_no_credentials_and_parses(url: str, expected: str) -> None:
    pairs = odbc_string.parse(jdbc_to_odbc(url))
    keys = {key.lower() for key, _ in pairs}
    assert not keys & {"uid", "pwd", "user", "password"}
    assert odbc_string.build(pairs) == expected


@pytest.mark.parametrize(
    ("url", "driver", "expected"),
    [
        (
            "jdbc:sqlserver://sql1;databaseName=cmdb",
            "ODBC Driver 17 for SQL Server",
            "Driver={ODBC Driver 17 for SQL Server};Server=sql1,1433;Database=cmdb",
        ),
        ("jdbc:postgresql://db/x", " PostgreSQL ", "Driver={PostgreSQL};Server=db;Port=5432;Database=x;SSLmode=prefer"),
        (
            "jdbc:mysql://db/x",
            "MySQL ODBC 8.0 Unicode Driver",
            "Driver={MySQL ODBC 8.0 Unicode Driver};Server=db;Port=3306;Database=x",
        ),
        (
            "jdbc:oracle:thin:@//h/s",
            "/opt/oracle/libsqora.so.21.1",
            "Driver={/opt/oracle/libsqora.so.21.1};DBQ=//h:1521/s",
        ),
        ("jdbc:sqlserver://sql1", "odd}name", "Driver={odd}}name};Server=sql1,1433"),
    ],
)
def test_driver_override(url: str, driver: str, expected: str) -> None:
    assert jdbc_to_odbc(url, driver=driver) == expected


def test_blank_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="odbc_driver is blank"):
        jdbc_to_odbc("jdbc:postgresql://db/x", driver="  ")


CREDENTIAL_URLS = [
    "jdbc:postgresql://db/x?user=mid&password=Hunter2secret",
    "jdbc:postgresql://db/x?password=Hunter2secret",
    "jdbc:postgresql://db/x?PASSWORD=Hunter2secret&sslmode=bogus",
    "jdbc:postgresql://mid:Hunter2secret@db/x",
    "jdbc:postgresql://mid:Hunter2secret@db:5432/x?ssl=true",
    "jdbc:postgresql://mid:Hunt/er2?secret@db/x",
    "jdbc:mysql://mid:Hunter2secret@db/x",
    "jdbc:mysql://mid@db/x",
    "jdbc:mysql://db/x?user=mid&password=Hunter2secret",
    "jdbc:mariadb://db/x?userName=mid&password=Hunter2secret",
    "jdbc:mysql://db/x?password1=Hunter2secret",
    "jdbc:sqlserver://sql1;databaseName=x;user=sa;password=Hunter2secret",
    "jdbc:sqlserver://sql1;password={Hunter2secret}",
    "jdbc:sqlserver://sql1;password=Hunter2;secret",
    "jdbc:sqlserver://sql1;password={Hunter2secret",
    "jdbc:sqlserver://sql1;userName=sa",
    "jdbc:sqlserver://sa:Hunter2secret@sql1",
    "jdbc:jtds:sqlserver://sql1/x;user=sa;password=Hunter2secret",
    "jdbc:jtds:sqlserver://sa:Hunter2secret@sql1/x",
    "jdbc:oracle:thin:scott/Hunter2secret@dbh:1521:ORCL",
    "jdbc:oracle:thin:scott/Hunter2secret@//dbh:1521/svc",
    "jdbc:oracle:thin:scott/Hunter2@secret@dbh:1521:ORCL",
    "jdbc:oracle:thin:scott@dbh:1521:ORCL",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_credentials_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ValueError) as info:
        jdbc_to_odbc(url)
    message = str(info.value)
    assert "holds credentials" in message
    assert "[credentials.NAME]" in message
    assert "credential key" in message
    for piece in ("Hunter", "secret", "er2"):
        assert piece not in message


ERRORS = [
    # not JDBC, or a database that is not translated
    ("postgresql://db/x", ["must start with 'jdbc:'", "jdbc:postgresql://", "connection_string", "dsn"]),
    ("", ["must start with 'jdbc:'"]),
    ("jdbc:db2://h:50000/x", ["'jdbc:db2:' URLs are not translated", "jdbc:oracle:thin:@", "connection_string", "dsn"]),
    ("jdbc:h2:mem:test", ["'jdbc:h2:' URLs are not translated", "jdbc:jtds:sqlserver://"]),
    ("jdbc:mysql+srv://h/x", ["'jdbc:mysql+srv:' URLs are not translated"]),
    ("jdbc:", ["this kind of JDBC URL is not translated", "connection_string"]),
    # PostgreSQL
    ("jdbc:postgresql:cmdb", ["jdbc:postgresql://host[:port][/database][?properties]"]),
    ("jdbc:postgresql://h1,h2/x", ["several hosts", "connection_string"]),
    ("jdbc:postgresql://h1:5432,h2:5432/x", ["several hosts"]),
    ("jdbc:postgresql:///x", ["no host after '//'"]),
    ("jdbc:postgresql://db:0/x", ["port '0'", "1 to 65535"]),
    ("jdbc:postgresql://db:65536/x", ["port '65536'", "1 to 65535"]),
    ("jdbc:postgresql://db:54x/x", ["port '54x'", "1 to 65535"]),
    ("jdbc:postgresql://db:/x", ["port ''"]),
    ("jdbc:postgresql://db:+5432/x", ["port '+5432'"]),
    ("jdbc:postgresql://::1/x", ["must be in brackets"]),
    ("jdbc:postgresql://[::1/x", ["no closing ']'"]),
    ("jdbc:postgresql://[::1]5432/x", ["expected ':port'"]),
    ("jdbc:postgresql://[db]/x", ["'[db]'", "not an IPv6 address"]),
    ("jdbc:postgresql://d b/x", ["host 'd b'", "not a host name"]),
    ("jdbc:postgresql://db/x/y", ["more than a database name"]),
    (
        "jdbc:postgresql://db/x?sslmode=on",
        ["'sslmode'", "disable, allow, prefer, require, verify-ca, verify-full", "'on'"],
    ),
    ("jdbc:postgresql://db/x?ssl=maybe", ["'ssl'", "true or false", "'maybe'"]),
    ("jdbc:postgresql://db/x?sslrootcert=", ["'sslrootcert'", "is empty"]),
    (
        "jdbc:postgresql://db/x?currentSchema=cmdb",
        ["property 'currentSchema'", "PostgreSQL", "ssl, sslmode, sslrootcert", "connection_string"],
    ),
    ("jdbc:postgresql://db/x?sslfactory=org.postgresql.ssl.NonValidatingFactory", ["property 'sslfactory'"]),
    ("jdbc:postgresql://db/x?=1", ["has no name before '='"]),
    # MySQL / MariaDB
    ("jdbc:mysql:loadbalance://h1,h2/x", ["single-host form jdbc:mysql://", "load-balancing"]),
    ("jdbc:mysql:replication://h1,h2/x", ["single-host form"]),
    ("jdbc:mariadb:sequential://h1,h2/x", ["single-host form jdbc:mariadb://"]),
    ("jdbc:mysql://h1,h2/x", ["several hosts"]),
    ("jdbc:mysql://address=(host=h)(port=3306)/x", ["key-value host form"]),
    ("jdbc:mysql://(host=h,port=3306)/x", ["key-value host form"]),
    ("jdbc:mysql://db:99999/x", ["port '99999'"]),
    ("jdbc:mysql://db/x?sslMode=SOMETIMES", ["'sslMode'", "VERIFY_IDENTITY", "'SOMETIMES'"]),
    ("jdbc:mysql://db/x?useSSL=yes please", ["'useSSL'", "true or false"]),
    ("jdbc:mysql://db/x?trustCertificateKeyStoreUrl=file:/ks.jks", ["property 'trustCertificateKeyStoreUrl'", "MySQL"]),
    ("jdbc:mariadb://db/x?serverSslCert=/ca.pem", ["property 'serverSslCert'", "MariaDB"]),
    ("jdbc:mysql://db/x?connectionCollation=utf8mb4_bin", ["property 'connectionCollation'", "connection_string"]),
    # SQL Server
    ("jdbc:sqlserver:sql1", ["jdbc:sqlserver://host[\\instance][:port][;property=value...]"]),
    ("jdbc:sqlserver://", ["names no server"]),
    ("jdbc:sqlserver://;databaseName=x", ["names no server"]),
    ("jdbc:sqlserver://[::1]:1433", ["IPv6", "host name", "connection_string"]),
    ("jdbc:sqlserver://sql1:0", ["port '0'"]),
    ("jdbc:sqlserver://sql1\\bad name", ["instance name 'bad name'"]),
    ("jdbc:sqlserver://sql1;serverName=sql2", ["'serverName'", "keep one"]),
    ("jdbc:sqlserver://sql1:1433;portNumber=1433", ["'portNumber'", "keep one"]),
    ("jdbc:sqlserver://sql1\\A;instanceName=B", ["'instanceName'", "keep one"]),
    ("jdbc:sqlserver://;serverName=sql1\\A;instanceName=B", ["names the instance twice"]),
    ("jdbc:sqlserver://sql1;databaseName=a;database=b", ["both 'databaseName' and 'database'", "keep one"]),
    ("jdbc:sqlserver://sql1;encrypt=maybe", ["'encrypt'", "true, false or strict", "'maybe'"]),
    ("jdbc:sqlserver://sql1;trustServerCertificate=perhaps", ["'trustServerCertificate'", "true or false"]),
    ("jdbc:sqlserver://sql1;hostNameInCertificate=", ["'hostNameInCertificate'", "is empty"]),
    (
        "jdbc:sqlserver://sql1;integratedSecurity=true",
        ["property 'integratedSecurity'", "SQL Server", "connection_string"],
    ),
    ("jdbc:sqlserver://sql1;authentication=ActiveDirectoryPassword", ["property 'authentication'"]),
    ("jdbc:sqlserver://sql1;applicationIntent=ReadOnly", ["property 'applicationIntent'"]),
    ("jdbc:sqlserver://sql1;databaseName={x", ["cannot be read", "never closed"]),
    ("jdbc:sqlserver://sql1;databaseName", ["cannot be read", "no '='"]),
    # jTDS
    ("jdbc:jtds:sybase://syb1:5000/x", ["jTDS", "only for SQL Server", "not Sybase"]),
    ("jdbc:jtds:sqlserver://", ["names no server"]),
    ("jdbc:jtds:sqlserver://sql1/a;databaseName=b", ["database both", "keep one"]),
    ("jdbc:jtds:sqlserver://sql1:1433;portNumber=1500", ["port both", "keep one"]),
    ("jdbc:jtds:sqlserver://sql1/a/b", ["more than a database name"]),
    ("jdbc:jtds:sqlserver://sql1;ssl=on", ["'ssl'", "off, request, require or authenticate", "'on'"]),
    ("jdbc:jtds:sqlserver://sql1;domain=CORP", ["property 'domain'", "jTDS", "connection_string"]),
    ("jdbc:jtds:sqlserver://sql1;namedPipe=true", ["property 'namedPipe'"]),
    ("jdbc:jtds:sqlserver://[::1]/x", ["IPv6"]),
    # Oracle
    ("jdbc:oracle:oci:@ORCL", ["only for the thin driver"]),
    ("jdbc:oracle:thin:dbh:1521:ORCL", ["needs '@'"]),
    ("jdbc:oracle:thin:@", ["nothing after '@'"]),
    ("jdbc:oracle:thin:@dbh:ORCL", ["'ORCL'", "not a port", "host:port:SID"]),
    ("jdbc:oracle:thin:@dbh:1521", ["names no database"]),
    ("jdbc:oracle:thin:@dbh:1521/", ["names no database"]),
    ("jdbc:oracle:thin:@dbh:70000:ORCL", ["port '70000'"]),
    ("jdbc:oracle:thin:@dbh:1521:OR-CL", ["SID 'OR-CL'"]),
    ("jdbc:oracle:thin:@//dbh:1521:ORCL", ["takes a service name after '/'", "host:port:SID"]),
    ("jdbc:oracle:thin:@//dbh:1521/svc:dedicated", ["service name 'svc:dedicated'", "DESCRIPTION"]),
    ("jdbc:oracle:thin:@//dbh:1521/svc/inst1", ["service name 'svc/inst1'"]),
    ("jdbc:oracle:thin:@//dbh:1521/svc?oracle.net.ssl_server_dn_match=true", ["after '?'", "connection_string"]),
    ("jdbc:oracle:thin:@//h1,h2:1521/svc", ["several", "host"]),
    ("jdbc:oracle:thin:@(DESCRIPTION=(ADDRESS=(HOST=h))", ["unbalanced parentheses"]),
    ("jdbc:oracle:thin:@(DESCRIPTION=(ADDRESS=(HOST=h))))", ["unbalanced parentheses"]),
    ("jdbc:oracle:thin:@(DESCRIPTION=(ADDRESS=(HOST=h)))?x=1", ["text after the closing ')'"]),
    ("jdbc:oracle:thin:@(ADDRESS=(HOST=h))", ["(DESCRIPTION=...)"]),
]


@pytest.mark.parametrize(("url", "fragments"), ERRORS)
def test_error(url: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        jdbc_to_odbc(url)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_ignored_properties_are_lowercase_and_not_translated_or_credentials() -> None:
    for ignored in (jdbc.POSTGRESQL_IGNORED, jdbc.MYSQL_IGNORED, jdbc.SQLSERVER_IGNORED, jdbc.JTDS_IGNORED):
        for name in ignored:
            assert name == name.lower()
            assert "password" not in name and name not in ("user", "username")
            assert "ssl" not in name and "encrypt" not in name and "trust" not in name


DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins" / "sql-jdbc.md"


@pytest.mark.parametrize(
    ("heading", "ignored"),
    [
        ("PostgreSQL", jdbc.POSTGRESQL_IGNORED),
        ("MySQL and MariaDB", jdbc.MYSQL_IGNORED),
        ("SQL Server (mssql-jdbc)", jdbc.SQLSERVER_IGNORED),
        ("SQL Server (jTDS)", jdbc.JTDS_IGNORED),
    ],
)
def test_docs_list_the_ignored_properties(heading: str, ignored: frozenset[str]) -> None:
    # The doc's list of ignored properties is what an admin checks: keep it the code's list.
    text = DOC.read_text(encoding="utf-8").split("## Ignored properties", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^\| {re.escape(heading)} \| (.+) \|$", text, re.MULTILINE)
    assert match, f"no row for {heading} in the ignored-properties table of {DOC.name}"
    documented = {name.strip().strip("`").lower() for name in match.group(1).split(",")}
    assert documented == ignored


def _doc_translation_rows() -> list[tuple[str, str]]:
    section = DOC.read_text(encoding="utf-8").split("## JDBC URL you have", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)`[^|]* \| `([^`]+)` \|$", section, re.MULTILINE)


def test_docs_have_a_translation_table() -> None:
    assert len(_doc_translation_rows()) >= 25


@pytest.mark.parametrize(("url", "expected"), _doc_translation_rows())
def test_docs_translation_table_is_what_the_code_does(url: str, expected: str) -> None:
    assert jdbc_to_odbc(url) == expected

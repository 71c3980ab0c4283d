"""What a read-only job may send: exactly one statement, read as the database will read it.

A driver may run several statements of one text (psqlODBC always does; MariaDB Connector/ODBC
does when the connection string enables multi-statements), and one of them could end the
read-only transaction. So the text of a job on a ``read_only`` profile is lexed here, with the
server's own rules, before anything reaches the driver, and refused (``policy_denied``) unless:

- it is one statement: no ``;`` outside strings, quoted identifiers and comments, other than
  trailing ones;
- it starts with a word that only reads: ``SELECT``, ``WITH``, ``VALUES``, ``TABLE``, ``SHOW``,
  ``EXPLAIN``, ``DESCRIBE``/``DESC`` (after any opening parentheses); ``SET``, ``COMMIT``,
  ``CALL``, ``DO``, ``COPY``, ``LOCK``, ``HANDLER``, ``LOAD`` and every other statement are
  refused, whatever the database would make of them;
- it holds no ``INTO`` (``SELECT ... INTO`` makes a table, writes a file on the server, or sets
  a session variable that outlives the job on a pooled connection);
- on MariaDB, it holds no executable comment (``/*! ... */``, ``/*M! ... */``): MariaDB runs
  what is inside.

The lexers (PostgreSQL 15 ``scan.l``, MariaDB 10.11 ``sql_lex.cc``) differ in what hides a ``;``:

    PostgreSQL  '...' with '' (backslash literal while standard_conforming_strings = on);
                E'...' with \\ escapes; $tag$...$tag$ (not after an identifier character, as
                identifiers may hold $); "..." with ""; -- to the end of the line (\\n or \\r);
                /* */ nested
    MariaDB     '...' and "..." with '' / "" and \\ escapes (unless NO_BACKSLASH_ESCAPES;
                "..." is an identifier under ANSI_QUOTES); `...` with ``; # to \\n; -- only
                when a space or control character follows; /* */ not nested; /*! */ is code
    others      '...' with ''; "...", `...` and [...] names (SQLite); -- and /* */

A server setting can change how backslashes read (``standard_conforming_strings``,
``NO_BACKSLASH_ESCAPES``, ``ANSI_QUOTES``), so the text is lexed every such way and must be one
statement in each: a text that is one statement only under some readings is refused. Lexing is pure and linear; no
I/O here (tests/unit/test_sql_statements.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from bridgehead.sdk import PolicyDenied

READING_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "DESCRIBE", "DESC"})
_REFUSED_WORDS = {"INTO": "SELECT ... INTO makes a table, writes a file on the server or sets a session variable"}

# Identifier characters: every code point from U+0080 up counts, as every byte >= 0x80 does
# for both servers (a UTF-8 connection; the "Unicode" drivers are).
_HIGH = "\u0080-\U0010ffff"
_PG_WORD = re.compile(f"[A-Za-z_{_HIGH}][A-Za-z0-9_${_HIGH}]*")
_MARIA_WORD = re.compile(f"[A-Za-z0-9_${_HIGH}]+")
_DIGITS = re.compile("[0-9]+")
_DOLLAR_DELIMITER = re.compile(f"\\$(?:[A-Za-z_{_HIGH}][A-Za-z0-9_{_HIGH}]*)?\\$")
# ASCII only: to both servers U+00A0 and the like are identifier characters, not space.
_SPACE = re.compile("[ \t\n\r\f\v]+")
_NESTING = re.compile(r"/\*|\*/")


@dataclass(frozen=True)
class Lexing:
    """One way a server may read a text."""

    syntax: str  # "postgresql", "mariadb" or "standard"
    backslash_escapes: bool  # in '...'
    double_quote_escapes: bool = False  # in MariaDB's "..." (a string, or under ANSI_QUOTES a name)

    @property
    def postgresql(self) -> bool:
        return self.syntax == "postgresql"

    @property
    def mariadb(self) -> bool:
        return self.syntax == "mariadb"


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, identifier, comment, code_comment, semicolon, other
    start: int
    end: int
    text: str = ""  # words only


def _quoted_end(text: str, start: int, quote: str, backslash: bool) -> int:
    """The index after the quote that closes a quoted token whose body starts at ``start``."""
    n = len(text)
    i = start
    while i < n:
        c = text[i]
        if c == "\\" and backslash:
            i += 2
        elif c == quote:
            if i + 1 < n and text[i + 1] == quote:  # doubled: part of the body
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n  # unterminated: the server refuses the text, and nothing after it is code


def tokens(text: str, lexing: Lexing) -> Iterator[Token]:
    """The tokens of ``text`` that matter for where statements end, in order."""
    n = len(text)
    word = _MARIA_WORD if lexing.mariadb else _PG_WORD
    eol = "\n" if lexing.mariadb else "\n\r"
    i = 0
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c in " \t\n\r\f\v":
            space = _SPACE.match(text, i)
            i = space.end() if space else i + 1
            continue
        token = _token(text, i, c, nxt, lexing, word, eol)
        yield token
        i = token.end


def _token(text: str, i: int, c: str, nxt: str, lexing: Lexing, word: re.Pattern[str], eol: str) -> Token:
    n = len(text)
    pg, maria = lexing.postgresql, lexing.mariadb
    if c == "'":
        return Token("string", i, _quoted_end(text, i + 1, "'", lexing.backslash_escapes))
    if pg and c in "eE" and nxt == "'":
        return Token("string", i, _quoted_end(text, i + 2, "'", True))
    if c == '"':
        backslash = maria and lexing.double_quote_escapes
        return Token("string" if maria else "identifier", i, _quoted_end(text, i + 1, '"', backslash))
    if c == "`" and not pg:
        return Token("identifier", i, _quoted_end(text, i + 1, "`", False))
    if c == "[" and not (pg or maria):  # SQLite's [name]
        close = text.find("]", i + 1)
        return Token("identifier", i, n if close < 0 else close + 1)
    if c == ";":
        return Token("semicolon", i, i + 1)
    if (c == "-" and nxt == "-" and (not maria or _space_or_control(text, i + 2))) or (c == "#" and maria):
        end = min((k for k in (text.find(e, i) for e in eol) if k >= 0), default=n)
        return Token("comment", i, end)
    if c == "/" and nxt == "*":
        return _block_comment(text, i, lexing)
    if c == "$" and pg and (delimiter := _DOLLAR_DELIMITER.match(text, i)):
        close = text.find(delimiter.group(), delimiter.end())
        return Token("string", i, n if close < 0 else close + len(delimiter.group()))
    if (match := word.match(text, i)) or (match := _DIGITS.match(text, i)):
        return Token("word", i, match.end(), match.group().upper())
    return Token("other", i, i + 1)


def _space_or_control(text: str, i: int) -> bool:
    # MariaDB: "--" starts a comment only before a space or control character (or the end).
    return i >= len(text) or text[i] <= " " or text[i] == "\x7f"


def _block_comment(text: str, i: int, lexing: Lexing) -> Token:
    n = len(text)
    if not lexing.postgresql:
        close = text.find("*/", i + 2)
        end = n if close < 0 else close + 2
        executable = lexing.mariadb and (text.startswith("/*!", i) or text[i : i + 4].upper() == "/*M!")
        return Token("code_comment" if executable else "comment", i, end)
    depth, k = 0, i
    while (mark := _NESTING.search(text, k)) is not None:
        depth += 1 if mark.group() == "/*" else -1
        k = mark.end()
        if depth == 0:
            return Token("comment", i, k)
    return Token("comment", i, n)


def lexings(syntax: str) -> tuple[Lexing, ...]:
    """The readings a text must pass on a database of ``syntax``: each quote with and without
    backslash escapes (MariaDB's ' and " independently: NO_BACKSLASH_ESCAPES, ANSI_QUOTES)."""
    if syntax == "mariadb":
        return tuple(Lexing(syntax, single, double) for single in (True, False) for double in (True, False))
    return (Lexing(syntax, backslash_escapes=False), Lexing(syntax, backslash_escapes=True))


def statement_count(text: str, lexing: Lexing) -> int:
    """How many statements ``text`` holds under ``lexing`` (empty ones between ``;`` not counted)."""
    count, open_statement = 0, False
    for token in tokens(text, lexing):
        if token.kind == "semicolon":
            open_statement = False
        elif token.kind != "comment" and not open_statement:
            count, open_statement = count + 1, True
    return count


def check_read_only(text: str, syntax: str) -> None:
    """Raise ``PolicyDenied`` unless ``text`` is one statement that only reads (module docstring)."""
    # Without a backslash every reading is the same: one will do.
    readings = [_one_reading(text, lexing) for lexing in lexings(syntax)[: None if "\\" in text else 1]]
    refusals = [r for r in readings if r is not None]
    if refusals:
        reason = refusals[0]
        if len(refusals) < len(readings):
            reason += (
                " when backslashes in quoted strings are read in one of the ways server settings allow "
                "(standard_conforming_strings, NO_BACKSLASH_ESCAPES, ANSI_QUOTES): write the text so "
                "that every way reads it as one statement"
            )
        raise PolicyDenied(f"read_only = true: {reason}")


def _one_reading(text: str, lexing: Lexing) -> str | None:
    """Why ``text`` is refused under ``lexing``, or None."""
    first: Token | None = None
    ended_at: int | None = None  # where the first statement's ";" is
    for token in tokens(text, lexing):
        if token.kind == "comment":
            continue
        if token.kind == "code_comment":
            return "the query holds a MariaDB executable comment (/*! ... */), which MariaDB runs as SQL"
        if token.kind == "semicolon":
            if first is None:
                return "the query starts with ';'; a read-only job runs exactly one statement"
            ended_at = token.start if ended_at is None else ended_at
            continue
        if ended_at is not None:
            return (
                f"the query holds more than one statement (more SQL follows the ';' at character {ended_at + 1}); "
                "a read-only job runs exactly one statement"
            )
        if first is None and not (token.kind == "other" and text[token.start] == "("):
            first = token
            if token.kind != "word" or token.text not in READING_WORDS:
                shown = text[token.start : min(token.end, token.start + 40)]
                allowed = ", ".join(sorted(READING_WORDS))
                return (
                    f"a read-only job runs a statement that starts with one of {allowed}; "
                    f"this one starts with {shown!r}"
                )
        if token.kind == "word" and token.text in _REFUSED_WORDS:
            return f"{_REFUSED_WORDS[token.text]}; a read-only job may not"
    if first is None:
        return "the query holds no statement"
    return None

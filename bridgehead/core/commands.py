"""What both command-line programs share: run the chosen subcommand, and turn an expected
failure into one line on stderr and its exit code (never a traceback)."""

from __future__ import annotations

import argparse
import sys

from bridgehead.core.errors import BridgeheadError


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except BridgeheadError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        return 130

"""Mutation checks: does each invariant's test fail when the code stops keeping it?

Every row of ``tests/mutations/*.toml`` breaks the code in one place (``find`` → ``replace``
in ``file``) and names the tests that must catch it. The rows run one after another in one
copy of the tree (tracked and untracked-not-ignored files), the mutated file restored after
each; pytest runs there with ``PYTHONPATH`` putting the copy first, so every process the tests
start (``sys.executable -m bridgehead...``) imports the mutated code too. Exit 1 from pytest (a
test failed) is "caught", 0 is "NOT CAUGHT", anything else, a timeout included, is "error": a
mutation that does not even import proves nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS_GLOB = "tests/mutations/*.toml"
DEFAULT_TIMEOUT_S = 600.0
CAUGHT, NOT_CAUGHT = "caught", "NOT CAUGHT"


@dataclass(frozen=True)
class Row:
    invariant: str
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    timeout_s: float
    source: str  # the TOML file it came from, for messages


def load_rows(root: Path) -> list[Row]:
    rows: list[Row] = []
    for path in sorted(root.glob(ROWS_GLOB)):
        for i, raw in enumerate(tomllib.loads(path.read_text()).get("mutation", []), 1):
            try:
                tests = raw["tests"]
                if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
                    raise ValueError("tests must be a non-empty list of strings")
                rows.append(
                    Row(
                        invariant=str(raw["invariant"]),
                        name=str(raw["name"]),
                        file=str(raw["file"]),
                        find=str(raw["find"]),
                        replace=str(raw["replace"]),
                        tests=tuple(tests),
                        timeout_s=float(raw.get("timeout_s", DEFAULT_TIMEOUT_S)),
                        source=f"{path.relative_to(root)} row {i}",
                    )
                )
            except (KeyError, TypeError, ValueError) as e:
                sys.exit(f"{path.relative_to(root)} row {i}: bad row ({e!r})")
    return rows


def copy_tree(root: Path, dest: Path) -> None:
    """The files git knows of or would add (tracked, and untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = root / name
        if not src.exists() and not src.is_symlink():  # deleted in the work tree, not yet in git
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)


def forget_bytecode(path: Path) -> None:
    """Drop a module's cached bytecode: a mutation of the same size written in the same second
    as the last one would otherwise look unchanged to the import system."""
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink()


def run_pytest(copy: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[int | None, str]:
    """pytest's exit code (None: timed out) and the tail of its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(copy / p) for p in ("", "sandbox", "testing"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    # Its own process group, so a timeout takes the servers and agents the tests started too.
    with subprocess.Popen(
        cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            code = None
        except BaseException:  # interrupted (Ctrl+C): leave no tests running in the copy
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    return code, out.decode(errors="replace")[-3000:]


def judge(code: int | None) -> str:
    if code is None:
        return "error: timed out"
    return {1: CAUGHT, 0: NOT_CAUGHT}.get(code, f"error: pytest exit {code}")


def run_row(copy: Path, row: Row, failing_baselines: set[tuple[str, ...]], verbose: bool) -> str:
    if row.tests in failing_baselines:
        return "error: tests fail unmutated"
    target = copy / row.file
    if not target.is_file():
        return f"error: no file {row.file}"
    original = target.read_text()
    count = original.count(row.find)
    if count != 1:
        return f"error: find matches {count} times"
    stat = target.stat()
    try:
        forget_bytecode(target)
        target.write_text(original.replace(row.find, row.replace))
        code, tail = run_pytest(copy, row.tests, row.timeout_s)
    finally:
        target.write_text(original)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        forget_bytecode(target)
    result = judge(code)
    if result != CAUGHT or verbose:  # how it was caught, to check it was for the right reason
        print(tail, file=sys.stderr)
    return result


def baseline(copy: Path, rows: list[Row]) -> set[tuple[str, ...]]:
    """The test sets that fail with nothing mutated: a failure there proves nothing."""
    failing: set[tuple[str, ...]] = set()
    for tests in dict.fromkeys(r.tests for r in rows):
        started = time.monotonic()
        code, tail = run_pytest(copy, tests, max(r.timeout_s for r in rows if r.tests == tests))
        print(f"baseline {' '.join(tests)}: exit {code} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        if code != 0:
            print(tail, file=sys.stderr)
            failing.add(tests)
    return failing


def table(results: list[tuple[Row, str, float]]) -> str:
    lines = ["| invariant | mutation | tests | result | seconds |", "|---|---|---|---|---|"]
    for row, result, seconds in results:
        tests = "<br>".join(f"`{t}`" for t in row.tests)
        lines.append(f"| {row.invariant} | {row.name} | {tests} | {result} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", metavar="TEXT", action="append", help="rows whose invariant or name contains TEXT (repeatable: any)"
    )
    parser.add_argument("--list", action="store_true", help="print the rows, run nothing")
    parser.add_argument("--baseline", action="store_true", help="first run each test set unmutated")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output of caught rows too")
    args = parser.parse_args()

    rows = load_rows(ROOT)
    if args.only:
        needles = [text.lower() for text in args.only]
        rows = [r for r in rows if any(n in r.invariant.lower() or n in r.name.lower() for n in needles)]
    if args.list:
        for r in rows:
            path = ROOT / r.file
            found = path.read_text().count(r.find) if path.is_file() else "no file"
            warning = "" if found == 1 else f"  [find matches: {found}]"
            print(f"{r.invariant} | {r.name} | {r.file} | {' '.join(r.tests)}{warning}")
        return 0
    if not rows:
        print("no rows", file=sys.stderr)
        return 2

    results: list[tuple[Row, str, float]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        copy = Path(tmp)
        copy_tree(ROOT, copy)
        failing = baseline(copy, rows) if args.baseline else set()
        for i, row in enumerate(rows, 1):
            print(f"[{i}/{len(rows)}] {row.invariant}: {row.name} ...", file=sys.stderr, flush=True)
            row_started = time.monotonic()
            result = run_row(copy, row, failing, args.verbose)
            seconds = time.monotonic() - row_started
            results.append((row, result, seconds))
            elapsed = time.monotonic() - started
            print(f"[{i}/{len(rows)}] {result} ({seconds:.0f} s; {elapsed:.0f} s so far)", file=sys.stderr, flush=True)
    print(table(results))
    return 0 if all(result == CAUGHT for _, result, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

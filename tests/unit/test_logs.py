"""The logging both commands set up (``configure_logging``): everything that reaches stderr
through Python, not only log calls, passes the secret filter.

Each case runs in a child interpreter: ``configure_logging`` replaces process-wide state (the
root handler, ``sys.excepthook``, ``threading.excepthook``, warning capture) that this test
process must keep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SECRET = "s3cr3t-Pa55/word"  # noqa: S105 - a fake secret

CHILD = textwrap.dedent(
    """
    import logging, sys, threading, warnings
    from bridgehead.core.logs import configure_logging
    from bridgehead.core.redact import REDACTOR

    secret = sys.argv[2]
    REDACTOR.add(secret)
    configure_logging("debug", sys.argv[1])
    log = logging.getLogger("bridgehead.test")
    log.info("arg <%s>", secret)
    extra = {"text": f"<{secret}>", "nested": {"k": [f"<{secret}>"]}, "obj": ValueError(f"<{secret}>")}
    log.info("extras", extra=extra)
    try:
        raise ValueError(f"handled <{secret}>")
    except ValueError:
        log.exception("handled it")
    warnings.warn(f"warned <{secret}>", stacklevel=1)

    def fail():
        raise RuntimeError(f"in a thread <{secret}>")

    thread = threading.Thread(target=fail, name="worker")
    thread.start()
    thread.join()
    raise RuntimeError(f"uncaught <{secret}>")
    """
)


def run_child(fmt: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, fmt, SECRET], capture_output=True, text=True, timeout=60, check=False
    )
    assert 1 == result.returncode, result.stderr  # premise: the child got to its uncaught exception
    return result


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_nothing_written_to_stderr_holds_the_secret(fmt: str) -> None:
    """Log lines, tracebacks, warnings, a thread's and the main thread's uncaught exceptions all
    reach stderr (each is there), none with the secret."""
    err = run_child(fmt).stderr
    for what in ("arg <***>", "handled <***>", "warned <***>", "in a thread <***>", "uncaught <***>"):
        assert what in err, err
    assert "uncaught exception in thread 'worker'" in err
    assert SECRET not in err and json.dumps(SECRET)[1:-1] not in err


def test_json_extra_fields_of_any_type_are_masked() -> None:
    """In JSON lines, ``extra`` fields are masked whether a string, nested in containers, or an
    object printed with ``str``."""
    lines = [json.loads(line) for line in run_child("json").stderr.splitlines() if line.startswith("{")]
    [extras] = [line for line in lines if line["message"] == "extras"]
    assert ("<***>", {"k": ["<***>"]}, "<***>") == (extras["text"], extras["nested"], extras["obj"])

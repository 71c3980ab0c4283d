"""The frozen agent's entry point: ``bridgehead-agent`` as the console script runs it.

``bridgehead-agent --version`` alone is answered before the CLI is imported: importing it
(the config, the plugin loader, msgspec, the SDK) is most of a one-file start-up after the
unpacking, and installers and health checks run ``--version`` often. The answer is the one
argparse gives (``build_parser``); tests/integration/test_agent_binary.py compares the two.
"""

import sys

if sys.argv[1:] == ["--version"]:
    from bridgehead import __version__

    print(f"bridgehead-agent {__version__}")
    sys.exit(0)

from bridgehead.agent.cli import main  # noqa: E402 - after the fast path, on purpose

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bridgehead_sandbox``: the same as ``bridgehead-sandbox``."""

import sys

from bridgehead_sandbox.cli import main

sys.exit(main())

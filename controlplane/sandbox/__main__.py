"""``python -m controlplane.sandbox``: the same as ``bridgehead-sandbox``."""

import sys

from controlplane.sandbox.cli import main

sys.exit(main())

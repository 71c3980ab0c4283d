import sys
from pathlib import Path

# The harness module lives beside the tests; make it importable as ``harness``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

"""Runtime hook: give the agent's child processes the environment the admin started it with.

A one-file PyInstaller program on Linux runs with ``LD_LIBRARY_PATH`` pointing at its unpack
directory first, so that its own Python finds the bundled libraries. The dynamic linker read
that when this process started; changing ``os.environ`` now does not affect it, but every
process the agent starts (``pwsh`` for a local PowerShell job) inherits ``os.environ``, and
must load its own libraries, not this binary's copies (an OpenSSL of another version).
The bootloader keeps the admin's value in ``LD_LIBRARY_PATH_ORIG``.
"""

import os
import sys

if getattr(sys, "frozen", False) and sys.platform.startswith("linux"):
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)

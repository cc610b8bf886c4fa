#!/usr/bin/python3.11
"""appbin-pack: ship a Python ASGI application as one executable.

Run through build/appbin-pack (configured by CMake from appbin-pack.in), or
as `/usr/bin/python3.11 -I packager/appbin_pack.py --host HOST ...`. The
stdlib packed is the one of the Python running this script. See README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from appbin_packer.cli import main  # noqa: E402  (needs the path above)

if __name__ == "__main__":
    sys.exit(main())

"""appbin-pack: packs a venv, the stdlib of the Python running it and a host into app.bin."""

import sys

VERSION = "0.1.0"
# The Python X.Y whose stdlib gets packed: the one running the packer (the
# host's python: build/appbin-pack runs it under the right one).
PYTHON_TAG = f"{sys.version_info[0]}.{sys.version_info[1]}"


class PackError(Exception):
    """A problem with the inputs or the output: reported in one line, exit status 1."""

    exit_code = 1


class UsageError(PackError):
    """A malformed command line: exit status 2."""

    exit_code = 2

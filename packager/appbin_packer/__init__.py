"""appbin-pack: packs a venv, Debian's python3.11 stdlib and a host into app.bin."""

VERSION = "0.1.0"
PYTHON_TAG = "3.11"


class PackError(Exception):
    """A problem with the inputs or the output: reported in one line, exit status 1."""

    exit_code = 1


class UsageError(PackError):
    """A malformed command line: exit status 2."""

    exit_code = 2

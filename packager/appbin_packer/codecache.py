"""The code cache (host/codecache.h): what start-up compiles from strings.

dataclasses, namedtuple and typing.ForwardRef generate source while modules
import and compile it each time. Once app.bin is written, the packer runs it
once, `app.bin python -I -c TRAINING app`, which imports what a server's
start-up imports and loads the app as the server does, with the host
recording every exec()/eval()/compile() of a string it compiled without a
warning (APPBIN_CODECACHE_RECORD, host/codecache_hook.h). The records become
the member appbin/codecache; the file is then written again with it.

A run that fails (the app's import needs a database, a variable...) still
leaves what was recorded before the failure; the packer says so in one
line and packs that. Entries whose filename or source name the temporary
app.bin's own path are left out: they could not be hit from anywhere else,
and the output must not depend on where it was written.
"""

import marshal
import os
import struct
import subprocess
import tempfile

from .imports import RUNTIME_IMPORTS
from .pyc import canonical_marshal, share_equal_frozensets

MEMBER = "appbin/codecache"
RECORD_ENV = "APPBIN_CODECACHE_RECORD"
TRAINING_TIMEOUT = 120  # seconds

_RECORD_MAGIC = b"APPBINCR"
_RECORD_HEADER = struct.Struct("<8sII")    # magic, PY_VERSION_HEX, optimisation level
_RECORD = struct.Struct("<QiiiiIIII")      # hash, start, flags, feature version, optimize,
                                           # filename, source and code lengths, 0
_MAGIC = b"APPBINCC"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIIIQ")        # magic, version, PY_VERSION_HEX, level, count, 0
_ENTRY = struct.Struct("<QiiiiIIIIII")     # hash, start, flags, feature version, optimize,
                                           # (offset, length) of filename, source, code

# What a server's start-up runs before serving: the runtime's imports, then
# the app loaded by the runtime's own function (a factory is called).
# It ends with os._exit(0): neither the app's atexit handlers nor its
# threads matter here, nor CPython's exit status after a caught
# KeyboardInterrupt from exec()'d code.
_TRAINING = f"""\
import importlib, os, sys
spec, factory = sys.argv[1], sys.argv[2] == "1"
sys.argv = [sys.executable]  # as a server's: app.bin and no options
for name in {RUNTIME_IMPORTS!r}:
    importlib.import_module(name)
import _appbin_runtime
_appbin_runtime.load_app(spec, factory)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


class Training:
    """The result of a training run."""

    def __init__(self, member, entries, problem):
        self.member = member      # the member's bytes, or None when nothing was recorded
        self.entries = entries    # how many entries it holds
        self.problem = problem    # one line when the run failed, else None


def train(app_bin, app, factory):
    """Runs app.bin's training import; returns a Training."""
    app_bin = os.path.abspath(app_bin)
    with tempfile.TemporaryDirectory(prefix="appbin-codecache-") as scratch:
        record = os.path.join(scratch, "record")
        env = dict(os.environ, **{RECORD_ENV: record})
        problem = None
        try:
            run = subprocess.run([app_bin, "python", "-I", "-c", _TRAINING, app,
                                  "1" if factory else "0"],
                                 cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, timeout=TRAINING_TIMEOUT)
            if run.returncode != 0:
                lines = run.stderr.decode("utf-8", "replace").strip().splitlines()
                problem = (f"loading {app} exited with status {run.returncode}"
                           + (f": {lines[-1]}" if lines else ""))
        except subprocess.TimeoutExpired:
            problem = f"loading {app} did not finish within {TRAINING_TIMEOUT} s"
        except OSError as e:
            problem = f"cannot run {app_bin}: {e.strerror}"
        try:
            with open(record, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
    member, entries = build_member(data, exclude=app_bin)
    return Training(member, entries, problem)


def read_records(data):
    """(PY_VERSION_HEX, optimisation level, [(key, code)]) from a record file;
    key = (hash, start, flags, feature version, optimize, filename, source).
    A record cut short (a killed run) ends the list."""
    if len(data) < _RECORD_HEADER.size:
        return None, None, []
    magic, version, level = _RECORD_HEADER.unpack_from(data)
    if magic != _RECORD_MAGIC:
        raise ValueError("not a code cache record file")
    records, pos = [], _RECORD_HEADER.size
    while pos + _RECORD.size <= len(data):
        h, start, flags, feature, optimize, n_file, n_src, n_code, _ = \
            _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        end = pos + n_file + n_src + n_code
        if end > len(data):
            break
        filename = data[pos:pos + n_file]
        source = data[pos + n_file:pos + n_file + n_src]
        code = data[pos + n_file + n_src:end]
        records.append(((h, start, flags, feature, optimize, filename, source), code))
        pos = end
    return version, level, records


def build_member(data, exclude=None):
    """The appbin/codecache member for a record file's bytes: (bytes or
    None, entry count). Records naming `exclude` (a path) are left out; each
    code object is marshalled again canonically (pyc.py), so that the member
    does not depend on the training process's state."""
    version, level, records = read_records(data)
    unique = {}
    marker = os.fsencode(exclude) if exclude else None
    for key, code in records:
        if key in unique or (marker and (marker in key[5] or marker in key[6])):
            continue
        unique[key] = canonical_marshal(marshal.dumps(share_equal_frozensets(
            marshal.loads(code))))
    if not unique:
        return None, 0
    keys = sorted(unique)
    table_end = _HEADER.size + _ENTRY.size * len(keys)
    blob, offsets, entries = bytearray(), {}, []

    def place(data):
        if data not in offsets:
            offsets[data] = table_end + len(blob)
            blob.extend(data)
        return offsets[data], len(data)

    for key in keys:
        h, start, flags, feature, optimize, filename, source = key
        entries.append(_ENTRY.pack(h, start, flags, feature, optimize, *place(filename),
                                   *place(source), *place(unique[key])))
    header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, version, level, len(keys), 0)
    return header + b"".join(entries) + bytes(blob), len(keys)

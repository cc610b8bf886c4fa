"""The code cache (host/codecache.h): what start-up compiles from strings.

dataclasses, namedtuple and typing.ForwardRef generate source while modules
import and compile it each time. Once app.bin is written, the packer runs it
once, `app.bin python -I -c TRAINING app`, which imports what a server's
start-up imports and loads the app as the server does, with the host
recording every exec()/eval()/compile() of a string it compiled without a
warning (APPBIN_CODECACHE_RECORD, host/codecache_hook.h). The records become
the member appbin/codecache; the file is then written again with it.

The same run records the regular expressions start-up compiles: what
re._compiler.compile parsed each pattern into (the arguments it handed
_sre.compile), kept only when parsing warned about nothing and those
arguments give a pattern equal to CPython's (same code, flags, groups).
They become entries of the same member (host/codecache.h,
CODECACHE_START_REGEX_*), which the host answers re's compile() from.

A run that fails (the app's import needs a database, a variable...) still
leaves what was recorded before the failure; the packer says so in one
line and packs that. Entries whose filename or source name the app.bin's
own path or the run's scratch directory are left out: they could not be hit
from anywhere else, and the output must not depend on where it was
written. The host fixes the hash seed while recording, and the code objects
are marshalled again canonically, so the member is the same bytes at every
pack of the same input.
"""

import io
import marshal
import os
import re
import signal
import struct
import subprocess
import tempfile

from .imports import RUNTIME_IMPORTS
from .pyc import canonical_marshal, share_equal_frozensets

RECORD_ENV = "APPBIN_CODECACHE_RECORD"
TRAINING_TIMEOUT = 120  # seconds

_RECORD_MAGIC = b"APPBINCR"
_RECORD = struct.Struct("<QiiiiIIIIII")    # hash, start, flags, feature version, optimize,
                                           # filename, source and code lengths,
                                           # PY_VERSION_HEX, optimisation level, 0
REGEX_STR, REGEX_BYTES = -1, -2  # an entry's start for a regular expression
_MAGIC = b"APPBINCC"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIIIQ")        # magic, version, PY_VERSION_HEX, level, count, 0
_ENTRY = struct.Struct("<QiiiiIIIIII")     # hash, start, flags, feature version, optimize,
                                           # (offset, length) of filename, source, code

# What a server's start-up runs before serving: the runtime's imports, then
# the app loaded by the runtime's own function (a factory is called), with
# sys.argv as a server's. It ends with os._exit(0): neither the app's atexit
# handlers nor its threads matter here, nor CPython's exit status after a
# caught KeyboardInterrupt from exec()'d code.
# Regular expressions are recorded by a compile() in front of re's: while
# CPython's compile() runs for a new pattern, re._compiler's _sre global is
# a proxy that keeps the arguments handed to _sre.compile, and warnings.warn
# counts the warnings parsing issued in that thread (then warns as before,
# one frame up: its own). A pattern is kept when nothing warned and those
# arguments (int subclasses made ints, for marshal) give a pattern equal to
# CPython's; each goes to the file at once, so that a run which fails or is
# killed later keeps what it recorded, as the host's records do.
_TRAINING = f"""\
import importlib, marshal, os, sys
spec, factory, native_out, regex_out = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
sys.argv = [sys.executable]
import re._compiler as _re_compiler, _sre, threading, warnings
_regex_compile, _warn, _seen = _re_compiler.compile, warnings.warn, set()
_state = threading.local()
_regex_file = open(regex_out, "wb", buffering=0)
_regex_file.write(marshal.dumps(sys.hexversion))
class _SreCapture:
    def __getattr__(self, name):
        return getattr(_sre, name)
    def compile(self, *args):
        if getattr(_state, "active", False):
            _state.args = args
        return _sre.compile(*args)
def _counting_warn(message, category=None, stacklevel=1, *args, **kwargs):
    if getattr(_state, "active", False):
        _state.warned = True
    return _warn(message, category, stacklevel + 1, *args, **kwargs)
def _plain(value):
    if isinstance(value, int) and type(value) is not bool:
        return int(value)
    if type(value) in (list, tuple):
        return type(value)(map(_plain, value))
    if type(value) is dict:
        return {{_plain(k): _plain(v) for k, v in value.items()}}
    return value
def _recording_compile(p, flags=0):
    key = (type(p), p, flags)
    if type(p) not in (str, bytes) or type(flags) is not int or \\
            flags & _re_compiler.SRE_FLAG_DEBUG or key in _seen or \\
            getattr(_state, "active", False):
        return _regex_compile(p, flags)
    _seen.add(key)
    _state.active, _state.args, _state.warned = True, None, False
    try:
        compiled = _regex_compile(p, flags)
    finally:
        _state.active = False
    args = _state.args
    try:
        if not _state.warned and args and args[0] is p:
            args = _plain(args[1:])
            again = _sre.compile(p, *args)
            if again == compiled and again.groups == compiled.groups and \\
                    again.groupindex == compiled.groupindex:
                _regex_file.write(marshal.dumps((type(p) is bytes, p, flags, args)))
    except Exception:
        pass
    return compiled
_re_compiler._sre = _SreCapture()
_re_compiler.compile = _recording_compile
warnings.warn = _counting_warn
for name in {RUNTIME_IMPORTS!r}:
    importlib.import_module(name)
import _appbin, _appbin_runtime
_appbin_runtime.load_app(spec, factory)
with open(native_out, "w") as f:
    f.write(" ".join(_appbin.native_copies()))
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


class Training:
    """The result of a training run."""

    def __init__(self, member, entries, problems, native=()):
        self.member = member      # the member's bytes, or None when nothing was recorded
        self.entries = entries    # how many entries it holds
        self.problems = problems  # one line each (a failed run, the host's warnings)
        # The shared objects the run loaded (members, in load order): the
        # manifest's startup.native (host/nativeprep.h); empty after a failed run.
        self.native = native


def train(app_bin, app, factory):
    """Runs app.bin's training import; returns a Training."""
    app_bin = os.path.realpath(app_bin)  # as the host names itself (/proc/self/exe)
    problems = []
    data = regexes = b""
    native = ()
    try:
        with tempfile.TemporaryDirectory(prefix="appbin-codecache-") as scratch:
            scratch = os.path.realpath(scratch)
            record = os.path.join(scratch, "record")
            with open(record, "wb") as f:
                f.write(_RECORD_MAGIC)
            native_out = os.path.join(scratch, "native")
            regex_out = os.path.join(scratch, "regexes")
            problems += _run(app_bin, app, factory, scratch, record, native_out, regex_out)
            with open(record, "rb") as f:
                data = f.read()
            if os.path.exists(native_out):
                with open(native_out, encoding="utf-8") as f:
                    native = tuple(f.read().split())
            if os.path.exists(regex_out):
                with open(regex_out, "rb") as f:
                    regexes = f.read()
    except OSError as e:
        problems.append(f"cannot run {app_bin}: {e.strerror or e}")
        scratch = None
    member, entries, skipped = build_member(data, exclude=(app_bin, scratch), regexes=regexes)
    if skipped:
        problems.append(f"{skipped} damaged records left out")
    return Training(member, entries, problems, native)


def _run(app_bin, app, factory, scratch, record, native_out, regex_out):
    """Runs the training import in its own session (whatever it leaves
    running is killed with it); returns the problems, one line each."""
    env = dict(os.environ, **{RECORD_ENV: record})
    out_path = os.path.join(scratch, "stderr")
    with open(out_path, "w+b") as err:
        proc = subprocess.Popen([app_bin, "python", "-I", "-c", _TRAINING, app,
                                 "1" if factory else "0", native_out, regex_out],
                                cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            status = proc.wait(timeout=TRAINING_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass  # nothing left of the session
        if status is None:
            proc.wait()
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines()
    problems = [line[len("app.bin: warning: "):] for line in lines
                if line.startswith("app.bin: warning: ")]
    last = f": {lines[-1]}" if lines else ""
    if status is None:
        problems.append(f"loading {app} did not finish within {TRAINING_TIMEOUT} s")
    elif status < 0:
        problems.append(f"loading {app} was killed by {signal.Signals(-status).name}{last}")
    elif status != 0:
        problems.append(f"loading {app} exited with status {status}{last}")
    return problems


def read_records(data):
    """[(key, code, PY_VERSION_HEX, level)] from a record file; key = (hash,
    start, flags, feature version, optimize, filename, source). A record cut
    short (a killed run) ends the list."""
    if not data.startswith(_RECORD_MAGIC):
        return []
    records, pos = [], len(_RECORD_MAGIC)
    while pos + _RECORD.size <= len(data):
        h, start, flags, feature, optimize, n_file, n_src, n_code, version, level, _ = \
            _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        end = pos + n_file + n_src + n_code
        if end > len(data):
            break
        filename = data[pos:pos + n_file]
        source = data[pos + n_file:pos + n_file + n_src]
        code = data[pos + n_file + n_src:end]
        records.append(((h, start, flags, feature, optimize, filename, source), code, version,
                        level))
        pos = end
    return records


def source_hash(data):
    """host/codecache.c's codecache_hash of `data` (bytes)."""
    mask, mul = (1 << 64) - 1, 0x9E3779B97F4A7C15
    h = 0x243F6A8885A308D3 ^ len(data)
    whole = len(data) - len(data) % 8
    for (word,) in struct.iter_unpack("<Q", data[:whole]):
        h = ((h ^ word) * mul) & mask
        h ^= h >> 29
    h = ((h ^ int.from_bytes(data[whole:], "little")) * mul) & mask
    return h ^ (h >> 32)


def regex_entries(data):
    """(PY_VERSION_HEX, {key: marshalled arguments}) for the training run's
    regular expressions file: marshal of sys.hexversion, then one of
    (is_bytes, pattern, flags, args) per pattern; a record cut short (a
    killed run) ends it. key as read_records' with start
    CODECACHE_START_REGEX_STR or _BYTES."""
    stream = io.BytesIO(data)
    try:
        version = marshal.load(stream)
    except (EOFError, ValueError, TypeError):
        return 0, {}
    entries = {}
    while stream.tell() < len(data):
        try:
            is_bytes, pattern, flags, args = marshal.load(stream)
        except (EOFError, ValueError, TypeError):
            break
        try:
            source = pattern if is_bytes else pattern.encode("utf-8")
        except UnicodeEncodeError:
            continue  # lone surrogates: the host does not look such a pattern up
        key = (source_hash(source), REGEX_BYTES if is_bytes else REGEX_STR, flags, 0, 0, b"",
               source)
        entries[key] = canonical_marshal(marshal.dumps(args))
    return version, entries


def build_member(data, exclude=(), regexes=b""):
    """The appbin/codecache member for a record file's bytes and the
    training run's regular expressions: (bytes or None, entry count, records
    left out as damaged). Only records of the training process's own
    interpreter (its PY_VERSION_HEX, level 0) are kept; records naming a
    path in `exclude` are left out; each code object is marshalled again
    canonically (pyc.py), so that the member does not depend on the
    training process's state."""
    records = read_records(data)
    unique, skipped = {}, 0
    # A path in a pattern is usually escaped (re.escape).
    markers = [os.fsencode(form) for path in exclude if path
               for form in (path, re.escape(path))]
    try:
        regex_version, regex_keys = regex_entries(regexes)
    except (ValueError, TypeError, RuntimeError, IndexError, struct.error):
        regex_version, regex_keys, skipped = 0, {}, 1
    version = records[0][2] if records else regex_version
    for key, code, record_version, level in records:
        if record_version != version or level != 0 or key in unique or \
                any(m in key[5] or m in key[6] for m in markers):
            continue
        try:
            unique[key] = canonical_marshal(marshal.dumps(share_equal_frozensets(
                marshal.loads(code))))
        except (EOFError, ValueError, TypeError, RuntimeError, IndexError, struct.error):
            skipped += 1
    if regex_version == version:
        unique.update((key, args) for key, args in regex_keys.items()
                      if not any(m in key[6] for m in markers))
    if not unique:
        return None, 0, skipped
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
    header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, version, 0, len(keys), 0)
    return header + b"".join(entries) + bytes(blob), len(keys), skipped

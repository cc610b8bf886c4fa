"""appbin's Python-side runtime, frozen into the host.

The C importer (the _appbin module) finds and loads modules; this module holds
what is Python by nature: the path-entry finder behind sys.path entries and
package __path__ inside the archive (pkgutil), importlib.resources' reader,
.pth processing, and loading the ASGI application. The archive is also a
read-only directory tree at "<app.bin>/" (host/archfs*.c): open(), os.stat()
and os.listdir() work on the paths __file__ and __path__ name, so
linecache, tracebacks and warnings read source lines, and importlib.metadata
finds distributions on sys.path, the way they do in a venv.
"""

import sys

import _appbin
import _imp
import posixpath

ARCHIVE = _appbin.archive_path
_PREFIX = ARCHIVE + "/"
_EXT_SUFFIXES = tuple(_imp.extension_suffixes())  # .cpython-3XY-x86_64-linux-gnu.so, .abi3.so, .so


class AppLoadError(Exception):
    """The configured application cannot be found: a message for the user."""


def setup():
    """Finish interpreter setup once the importer is on sys.meta_path."""
    sys.path_hooks.insert(0, _path_hook)
    sys.path_importer_cache.clear()
    for i, finder in enumerate(sys.meta_path):
        if getattr(finder, "__name__", None) == "FrozenImporter":
            _FrozenSiteFinder.frozen = finder
            sys.meta_path.insert(i, _FrozenSiteFinder)
            break
    _process_pth_files()
    if sys.version_info >= (3, 12):
        # Python 3.12+ warns at os.fork() in a process with more than one
        # thread (DeprecationWarning), and the archive's check runs on one of
        # its own while the interpreter starts: a fork waits for that thread
        # to finish, as no python3.13 would have it.
        import posix
        posix.register_at_fork(before=_appbin.verify_wait)


# ---- sys.path entries inside the archive -----------------------------------


def _member_of(path):
    if isinstance(path, str) and path.startswith(_PREFIX):
        return path[len(_PREFIX):].rstrip("/")
    return None


def _path_hook(path):
    """Claims every path inside the archive, existing or not, so that
    zipimport never parses the archive a second time."""
    member = _member_of(path)
    if member is None:
        raise ImportError("not inside the archive", path=path)
    if member and path in sys.path and _appbin.stat(member) == 2:
        # A directory of the archive put on sys.path at run time (setuptools
        # and pkg_resources append setuptools/_vendor): its modules become
        # importable, after those of the entries already there.
        _appbin.add_root(member)
    return ArchivePathFinder(member)


def _module_name(filename):
    """inspect.getmodulename(): the name without its module suffix, or None.
    Not necessarily an identifier: pkgutil lists Django's "0001_initial"."""
    for suffix in (".pyc", ".py") + _EXT_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


class ArchivePathFinder:
    """Path-entry finder for a directory of the archive (what pkgutil and
    importlib's PathFinder see for sys.path entries and package __path__)."""

    def __init__(self, member_dir):
        self.dir = member_dir
        self.path = _PREFIX + member_dir
        self._files = None  # a FileFinder, for _find_aliased

    def __repr__(self):
        return f"ArchivePathFinder({self.path!r})"

    def find_spec(self, fullname, target=None):
        spec = _appbin.importer.find_spec(fullname)
        if spec is None:
            return self._find_aliased(fullname, target)
        base = self.path + "/" + fullname.rpartition(".")[2]
        origin = spec.origin or ""
        if origin.startswith((base + "/", base + ".")):
            return spec
        if any(loc == base for loc in spec.submodule_search_locations or ()):
            return spec
        return self._find_aliased(fullname, target)

    def _find_aliased(self, fullname, target):
        """A module of this directory under a name the index does not give it:
        the directory is the __path__ of a package that a meta-path hook
        imported under another name (setuptools' _distutils_hack makes
        setuptools/_distutils the package "distutils"). The index maps names,
        so the standard file finder reads the directory instead, through the
        archive's file layer (host/archfs*.c) like any directory on disk."""
        parent = fullname.rpartition(".")[0]
        spec = getattr(sys.modules.get(parent), "__spec__", None) if parent else None
        if spec is None or (spec.loader is _appbin.importer and spec.name == parent):
            return None  # the index is authoritative for what it imported
        if self._files is None:
            import _frozen_importlib_external as bootstrap

            self._files = bootstrap.FileFinder(
                self.path, *bootstrap._get_supported_file_loaders())
        return self._files.find_spec(fullname, target)

    def invalidate_caches(self):
        pass

    def iter_modules(self, prefix=""):
        seen = set()
        for name in sorted(_appbin.listdir(self.dir)):
            member = self.dir + "/" + name
            # What pkgutil yields for a directory on disk (its FileFinder
            # branch): modules by suffix, packages with an __init__, no dots.
            if _appbin.stat(member) == 2:
                ispkg = "." not in name and any(
                    _appbin.stat(member + "/__init__" + s) == 1 for s in (".py", ".pyc"))
                modname = name if ispkg else None
            else:
                ispkg, modname = False, _module_name(name)
            if not modname or modname == "__init__" or "." in modname or modname in seen:
                continue
            seen.add(modname)
            yield prefix + modname, ispkg


# ---- .pth files ----------------------------------------------------------------


def _process_pth_files():
    for name in sorted(_appbin.listdir("site-packages")):
        if name.endswith(".pth") and _appbin.stat("site-packages/" + name) == 1:
            _process_pth(name)


def _process_pth(name):
    """Like site.addpackage: path lines add directories, import lines run."""
    import os

    text = _appbin.read("site-packages/" + name).decode("utf-8", "replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            if line.startswith(("import ", "import\t")):
                exec(line)
                continue
            line = line.rstrip()
            if os.path.isabs(line):
                if os.path.isdir(line) and line not in sys.path:
                    sys.path.append(line)
                continue
            member = posixpath.normpath("site-packages/" + line)
            if not member.startswith("..") and _appbin.stat(member) == 2:
                _appbin.add_root(member)
                if _PREFIX + member not in sys.path:
                    sys.path.append(_PREFIX + member)
        except Exception as exc:
            print(f"Error processing line {lineno} of {name}:\n", file=sys.stderr)
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
            print("\nRemainder of file ignored", file=sys.stderr)
            break


# ---- importlib.resources --------------------------------------------------------

_reader_class = None


def _reader_type():
    global _reader_class
    if _reader_class is None:
        import pathlib
        from importlib.resources.abc import TraversableResources
        from importlib.resources.readers import MultiplexedPath

        class ArchiveResourceReader(TraversableResources):
            """importlib.resources for a package in the archive. The archive
            is a read-only directory tree (host/archfs*.c), so a package's
            files are real paths, as FileReader gives for a package on disk:
            as_file() hands out the path itself and nothing is copied."""

            def __init__(self, member_dirs):
                self._paths = [pathlib.Path(_PREFIX + d) for d in member_dirs]

            def files(self):
                if len(self._paths) == 1:
                    return self._paths[0]
                return MultiplexedPath(*self._paths)

            def resource_path(self, resource):
                return str(self.files().joinpath(resource))

        _reader_class = ArchiveResourceReader
    return _reader_class


def resource_reader(fullname, member_dirs):
    """What the importer's get_resource_reader() returns."""
    return _reader_type()(member_dirs)


def adopt_pkg_resources(module, _unused=None):
    """Called once pkg_resources is loaded. It gives loaders it does not know
    a provider that can only read bytes (NullProvider: resource_isdir,
    resource_listdir and resource_exists raise), and finds no distributions
    or namespace packages on path entries whose finder it does not know. The
    archive is a directory tree, so our loader and path-entry finder get what
    packages and directories on disk get."""
    module.register_loader_type(type(_appbin.importer), module.DefaultProvider)
    module.register_finder(ArchivePathFinder, module.find_on_path)
    module.register_namespace_handler(ArchivePathFinder, module.file_ns_handler)
    # The master working set was built while the module ran, without them.
    working_set = module.working_set
    for entry in list(working_set.entries):
        for dist in module.find_distributions(entry, True):
            working_set.add(dist, entry, False)


# ---- sysconfig and site: the archive is the installation -----------------------

# Where app.bin's Python finds things, as an install scheme: the stdlib and
# its extension modules under <app.bin>/stdlib, every distribution under
# <app.bin>/site-packages (sys.prefix is app.bin). What the archive does not
# hold (headers, scripts) keeps the usual shape under the prefix.
_SCHEME = "appbin"
_SCHEME_PATHS = {
    "stdlib": "{installed_base}/stdlib",
    "platstdlib": "{platbase}/stdlib",
    "purelib": "{base}/site-packages",
    "platlib": "{platbase}/site-packages",
    "include": "{installed_base}/include/python{py_version_short}{abiflags}",
    "platinclude": "{installed_platbase}/include/python{py_version_short}{abiflags}",
    "scripts": "{base}/bin",
    "data": "{base}",
}
# Makefile variables naming the stdlib's installed directories.
_STDLIB_CONFIG_VARS = {"LIBDEST": "stdlib", "BINLIBDEST": "stdlib", "DESTLIB": "stdlib",
                       "MACHDESTLIB": "stdlib", "DESTSHARED": "stdlib/lib-dynload"}


def adopt_sysconfig(module, _unused=None):
    """Called once sysconfig is loaded: its default scheme (get_paths(),
    get_path("purelib")...) names the archive's directories, as a venv's
    python names the venv's, and so do the stdlib's config variables."""
    schemes = getattr(module, "_INSTALL_SCHEMES", None)
    preferred = getattr(module, "_get_preferred_schemes", None)
    if not isinstance(schemes, dict) or preferred is None:
        return
    old_default = module.get_default_scheme()
    schemes[_SCHEME] = dict(_SCHEME_PATHS)

    def _get_preferred_schemes():
        return {**preferred(), "prefix": _SCHEME}

    module._get_preferred_schemes = _get_preferred_schemes
    # get_paths() and get_path() took the default scheme's name when defined.
    for func in (getattr(module, "get_paths", None), getattr(module, "get_path", None)):
        defaults = getattr(func, "__defaults__", None)
        if defaults:
            func.__defaults__ = tuple(_SCHEME if d == old_default else d for d in defaults)
    init_posix = getattr(module, "_init_posix", None)
    if init_posix is not None:
        def _init_posix(vars):
            init_posix(vars)
            for name, member in _STDLIB_CONFIG_VARS.items():
                if name in vars:
                    vars[name] = _PREFIX + member

        module._init_posix = _init_posix


class _FrozenSiteFinder:
    """Just before FrozenImporter on sys.meta_path (so asked only about
    modules neither the archive nor the builtins have): the interpreter
    freezes site, which the importer's adopt_<name> hook never sees."""

    frozen = None  # FrozenImporter, set by setup()

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "site":
            return None
        frozen = _FrozenSiteFinder.frozen
        spec = frozen.find_spec(name, path, target)
        if spec is not None and spec.loader is frozen:
            spec.loader = _FrozenSiteLoader(frozen)
        return spec

    @staticmethod
    def invalidate_caches():
        pass


class _FrozenSiteLoader:
    """FrozenImporter for site, that adopts the module once executed."""

    def __init__(self, frozen):
        self.frozen = frozen

    def __getattr__(self, name):  # get_code (runpy: python -m site), is_package...
        return getattr(self.frozen, name)

    def create_module(self, spec):
        return self.frozen.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.frozen
        self.frozen.exec_module(module)
        adopt_site(module)


def adopt_site(module, _unused=None):
    """Called once site is loaded (app.bin never runs site.main()): the
    archive's site-packages is the one site directory, and the user's own is
    never on sys.path."""
    getsitepackages = module.getsitepackages

    def _getsitepackages(prefixes=None):
        if prefixes is None:
            prefixes = module.PREFIXES
        out = []
        for prefix in prefixes:
            if prefix == ARCHIVE:
                if _PREFIX + "site-packages" not in out:
                    out.append(_PREFIX + "site-packages")
            else:
                out.extend(p for p in getsitepackages([prefix]) if p not in out)
        return out

    _getsitepackages.__doc__ = getsitepackages.__doc__
    module.getsitepackages = _getsitepackages
    if module.ENABLE_USER_SITE is None:
        module.ENABLE_USER_SITE = False


# ---- the ASGI application -------------------------------------------------------


def load_app(spec, factory=False):
    """Import MODULE:ATTR (ATTR may be dotted); call it when a factory."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppLoadError(f"app '{spec}' is not MODULE:ATTR")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot import module '{module_name}' for app '{spec}'") from None
        raise
    app = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AppLoadError(f"module '{module_name}' has no attribute '{attr}'") from None
    if factory:
        if not callable(app):
            raise AppLoadError(f"app factory '{spec}' is not callable")
        app = app()
    if not callable(app):
        raise AppLoadError(f"app '{spec}' is not callable (got {type(app).__name__})")
    return app


# ---- logging ---------------------------------------------------------------------
#
# As uvicorn: the loggers "uvicorn" (with a handler on stderr), "uvicorn.error"
# (the server's messages) and "uvicorn.access", configured before the app is
# imported, from --log-config when given. The C side writes its own lines
# directly in the same shapes (asgi_log.c, applog.c) unless a --log-config
# asks for the logging module's handlers (options["log_python"]).

_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_NUMBERS = (5, 10, 20, 30, 40, 50)  # logging's numbers, TRACE as uvicorn's 5
_log_level = 2
_error_logger = None
_access_logger = None
_logging_classes_cache = None
_FORMATTER_NAMES = ("DefaultFormatter", "AccessFormatter", "JsonFormatter")


def _logging_classes():
    """uvicorn.logging's DefaultFormatter and AccessFormatter (same output,
    same colours, same use_colors=None rule), and the JSON formatter."""
    global _logging_classes_cache
    if _logging_classes_cache is not None:
        return _logging_classes_cache
    import copy
    import logging
    import time

    def style(text, code):
        return f"\033[{code}m{text}\033[0m"

    level_colours = {5: "34", 10: "36", 20: "32", 30: "33", 40: "31", 50: "91"}
    status_colours = {1: "97", 2: "32", 3: "33", 4: "31", 5: "91"}

    class DefaultFormatter(logging.Formatter):
        def __init__(self, fmt=None, datefmt=None, style="%", use_colors=None):
            self.use_colors = use_colors if use_colors in (True, False) else sys.stdout.isatty()
            super().__init__(fmt=fmt, datefmt=datefmt, style=style)

        def formatMessage(self, record):
            recordcopy = copy.copy(record)
            levelname = recordcopy.levelname
            separator = " " * (8 - len(levelname))
            if self.use_colors:
                colour = level_colours.get(recordcopy.levelno)
                levelname = style(levelname, colour) if colour else levelname
                if "color_message" in recordcopy.__dict__:
                    recordcopy.msg = recordcopy.__dict__["color_message"]
                    recordcopy.__dict__["message"] = recordcopy.getMessage()
            recordcopy.__dict__["levelprefix"] = levelname + ":" + separator
            return super().formatMessage(recordcopy)

    class AccessFormatter(DefaultFormatter):
        def formatMessage(self, record):
            import http

            recordcopy = copy.copy(record)
            client_addr, method, full_path, http_version, status_code = recordcopy.args[:5]
            try:
                phrase = http.HTTPStatus(int(status_code)).phrase
            except ValueError:
                phrase = ""
            status = f"{status_code} {phrase}"
            request_line = f"{method} {full_path} HTTP/{http_version}"
            if self.use_colors:
                colour = status_colours.get(int(status_code) // 100)
                status = style(status, colour) if colour else status
                request_line = style(request_line, "1")
            recordcopy.__dict__.update(client_addr=client_addr, request_line=request_line,
                                       status_code=status)
            return super().formatMessage(recordcopy)

    class JsonFormatter(logging.Formatter):
        """One JSON object a line: time (UTC, ms), level, logger, then for
        access records client, method, path, http_version, status,
        duration_ms, bytes, request_id, else message (and exc_info)."""

        def __init__(self, fmt=None, datefmt=None, style="%", use_colors=None):
            super().__init__(fmt=fmt, datefmt=datefmt, style=style)

        def format(self, record):
            import json

            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            out = {"time": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname,
                   "logger": record.name}
            args = record.args
            if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) >= 5:
                out.update(client=args[0], method=args[1], path=args[2], http_version=args[3],
                           status=int(args[4]))
                for key in ("duration_ms", "bytes", "request_id"):
                    value = record.__dict__.get(key)
                    if value is not None:
                        out[key] = round(value, 3) if key == "duration_ms" else value
            else:
                out["message"] = record.getMessage()
            if record.exc_info:
                out["exc_info"] = self.formatException(record.exc_info)
            elif record.exc_text:
                out["exc_info"] = record.exc_text
            return json.dumps(out, ensure_ascii=False, separators=(",", ":"))

    _logging_classes_cache = {"DefaultFormatter": DefaultFormatter,
                              "AccessFormatter": AccessFormatter, "JsonFormatter": JsonFormatter}
    return _logging_classes_cache


def __getattr__(name):
    """_appbin_runtime.DefaultFormatter etc., for logging configs."""
    if name in _FORMATTER_NAMES:
        return _logging_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LogConfigError(Exception):
    """--log-config cannot be used: a message for the user."""


def _uvicorn_importable():
    import importlib.util

    try:
        return importlib.util.find_spec("uvicorn.logging") is not None
    except ImportError:
        return False


def _stand_in(name):
    """uvicorn.logging.X -> our X, when the packed venv has no uvicorn."""
    prefix = "uvicorn.logging."
    if isinstance(name, str) and name.startswith(prefix) and name[len(prefix):] in (
            "DefaultFormatter", "AccessFormatter", "ColourizedFormatter"):
        short = name[len(prefix):]
        return "DefaultFormatter" if short == "ColourizedFormatter" else short
    return None


def _load_log_config(path):
    """Applies --log-config as uvicorn does: .json and .yaml/.yml are
    dictConfig, anything else fileConfig (with disable_existing_loggers
    False). A config written for uvicorn works without uvicorn in the app's
    venv: its uvicorn.logging formatters are stood in for."""
    import logging.config

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise LogConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    stand_in = not _uvicorn_importable()
    try:
        if path.endswith((".json", ".yaml", ".yml")):
            if path.endswith(".json"):
                import json

                config = json.loads(raw.decode("utf-8"))
            else:
                try:
                    import yaml
                except ImportError:
                    raise LogConfigError(
                        f"{path} is YAML, and the app's venv has no PyYAML: add pyyaml to it "
                        "or write the config as JSON") from None
                config = yaml.safe_load(raw.decode("utf-8"))
            if not isinstance(config, dict):
                raise LogConfigError(f"{path} does not hold a dictConfig mapping")
            if stand_in:
                for formatter in (config.get("formatters") or {}).values():
                    for key in ("()", "class"):
                        if isinstance(formatter, dict) and _stand_in(formatter.get(key)):
                            formatter[key] = "_appbin_runtime." + _stand_in(formatter[key])
            logging.config.dictConfig(config)
        else:
            import configparser
            import io

            parser = configparser.ConfigParser()
            parser.read_file(io.StringIO(raw.decode("utf-8")), path)
            if stand_in:
                for section in parser.sections():
                    if section.startswith("formatter_"):
                        name = _stand_in(parser.get(section, "class", fallback=None))
                        if name:
                            parser.set(section, "class", "_appbin_runtime." + name)
            logging.config.fileConfig(parser, disable_existing_loggers=False)
    except LogConfigError:
        raise
    except Exception as exc:
        raise LogConfigError(f"invalid logging config {path}: {type(exc).__name__}: {exc}"
                             ) from None


def configure_logging(options):
    """Sets up the uvicorn loggers (before the app is imported) and tells
    the C side, in options, how to log. Raises LogConfigError."""
    global _error_logger, _access_logger
    import logging

    logging.addLevelName(5, "TRACE")
    level = _LEVEL_NUMBERS[options["log_level"]]
    config = options.get("log_config")
    if config:
        _load_log_config(config)
    else:
        classes = _logging_classes()
        colours = options.get("use_colors", -1)
        colours = sys.stderr.isatty() if colours not in (0, 1) else bool(colours)
        json_format = options.get("log_format") == "json"
        error_handler = logging.StreamHandler(sys.stderr)
        access_handler = logging.StreamHandler(sys.stderr)
        if json_format:
            error_handler.setFormatter(classes["JsonFormatter"]())
            access_handler.setFormatter(classes["JsonFormatter"]())
        else:
            error_handler.setFormatter(
                classes["DefaultFormatter"]("%(levelprefix)s %(message)s", use_colors=colours))
            access_handler.setFormatter(classes["AccessFormatter"](
                '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                use_colors=colours))
        for name, handler in (("uvicorn", error_handler), ("uvicorn.access", access_handler)):
            logger = logging.getLogger(name)
            logger.handlers = [handler]
            logger.setLevel(logging.INFO)
            logger.propagate = False
        logging.getLogger("uvicorn.error").setLevel(logging.INFO)
    if not config or options.get("log_level_set"):
        for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
            logging.getLogger(name).setLevel(level)
    _error_logger = logging.getLogger("uvicorn.error")
    _access_logger = logging.getLogger("uvicorn.access")
    if not options.get("access_log", 1):
        _access_logger.handlers = []
        _access_logger.propagate = False
    if config:
        # The C side asks the loggers: which levels, whether access lines go.
        options["log_python"] = 1
        enabled = [i for i, n in enumerate(_LEVEL_NUMBERS) if _error_logger.isEnabledFor(n)]
        options["log_level"] = enabled[0] if enabled else len(_LEVELS)
        options["access_log"] = int(bool(options.get("access_log", 1))
                                    and _access_logger.isEnabledFor(logging.INFO))


def log(level, message):
    """The server's messages (level: 0 trace .. 5 critical), also from C."""
    if _error_logger is None:
        if level >= _log_level:
            name = _LEVELS[level] + ":"
            sys.stderr.write(f"{name:<10}{message}\n")
            sys.stderr.flush()
        return
    _error_logger.log(_LEVEL_NUMBERS[level], message)


def log_exception(message, exc):
    """Logs an exception with its traceback at ERROR (called from C too)."""
    if _error_logger is None:
        if _log_level <= 4:
            import traceback

            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            sys.stderr.write(f"{'ERROR:':<10}{message}\n{''.join(lines)}")
            sys.stderr.flush()
        return
    exc_info = (type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None
    _error_logger.error(message, exc_info=exc_info)


def emit_access(records):
    """Access records from C (with --log-config): uvicorn's message and
    arguments, the duration, body size and request id as extra attributes."""
    logger = _access_logger
    for client, method, path, version, status, ms, nbytes, request_id in records:
        logger.info('%s - "%s %s HTTP/%s" %d', client, method, path, version, status,
                    extra={"duration_ms": ms, "bytes": nbytes, "request_id": request_id})


# ---- serving -----------------------------------------------------------------------


class Lifespan:
    """The ASGI lifespan protocol, as uvicorn runs it: in "auto" mode an app
    that raises before startup completes is taken not to support it."""

    def __init__(self, app, mode, state):
        import asyncio

        self.app, self.mode, self.state = app, mode, state
        self.queue = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.startup_failed = self.shutdown_failed = self.error = False
        self.task = None

    async def startup(self):
        import asyncio

        if self.mode == "off":
            return True
        log(2, "Waiting for application startup.")
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.startup_done.wait()
        if self.startup_failed or (self.error and self.mode == "on"):
            log(4, "Application startup failed. Exiting.")
            return False
        log(2, "Application startup complete.")
        return True

    async def shutdown(self):
        if self.mode == "off" or self.error or self.task is None:
            return True
        log(2, "Waiting for application shutdown.")
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.shutdown_done.wait()
        if self.shutdown_failed or (self.error and self.mode == "on"):
            log(4, "Application shutdown failed. Exiting.")
            return False
        log(2, "Application shutdown complete.")
        return True

    async def _main(self):
        import asyncio

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self.error = True
            if self.startup_failed or self.shutdown_failed:
                return
            if self.startup_done.is_set() and isinstance(exc, asyncio.CancelledError):
                return  # cancelled as the server goes down (after an error while serving)
            if self.mode == "auto":
                log(2, "ASGI 'lifespan' protocol appears unsupported.")
            else:
                log_exception("Exception in 'lifespan' protocol", exc)
        finally:
            self.startup_done.set()
            self.shutdown_done.set()

    async def _receive(self):
        return await self.queue.get()

    async def _send(self, message):
        kind = message.get("type")
        if kind == "lifespan.startup.complete" and not self.startup_done.is_set():
            self.startup_done.set()
        elif kind == "lifespan.startup.failed" and not self.startup_done.is_set():
            self.startup_failed = True
            self.startup_done.set()
            if message.get("message"):
                log(4, message["message"])
        elif kind == "lifespan.shutdown.complete" and self.startup_done.is_set():
            self.shutdown_done.set()
        elif kind == "lifespan.shutdown.failed" and self.startup_done.is_set():
            self.shutdown_failed = True
            self.shutdown_done.set()
            if message.get("message"):
                log(4, message["message"])
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message {kind!r}")


def serve(options):
    """Server mode: returns the process exit status."""
    global _log_level
    import asyncio

    _log_level = options["log_level"]
    try:
        configure_logging(options)
    except LogConfigError as exc:
        log(4, f"--log-config: {exc}")
        return 2
    _catch_early_signals()
    # No cyclic collection while start-up imports: nearly everything it
    # allocates lives as long as the process (and is frozen below), so the
    # collections the allocations would trigger only cost start-up time
    # (about 20 ms of 330 for a FastAPI app). The few cycles it leaves (some
    # 650 objects for FastAPI) are frozen with the rest: a full collection
    # to find them would cost more (28 ms) than they weigh.
    import gc

    gc.disable()
    try:
        try:
            app = load_app(options["app"], options["factory"])
        except AppLoadError as exc:
            log(4, str(exc))
            return 1
        except Exception as exc:  # raised by the app's import: logged like any error line
            if _out_of_fds(exc):
                raise
            log_exception(f"Error loading ASGI app '{options['app']}'", exc)
            return 1
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(_serve(loop, app, options))
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
    except OSError as exc:
        if not _out_of_fds(exc):
            raise
        log(4, _fd_limit_message(exc))
        return 1


def _out_of_fds(exc):
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


def _fd_limit_message(exc):
    """One line for running out of file descriptors, naming the limit."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (f"{exc.strerror or exc}: too few file descriptors (the open-file limit, "
            f"RLIMIT_NOFILE, is {soft}: raise it with ulimit -n, systemd LimitNOFILE= or "
            f"docker run --ulimit nofile=)")


class _Signals:
    """SIGTERM/SIGINT seen so far. The first asks for a graceful stop. While
    draining, a SIGINT (a second Ctrl-C) asks for an immediate stop; a
    SIGTERM does not: process managers and shell wrappers repeat SIGTERM
    (and escalate with SIGKILL after their own grace period), and with
    --workers a group signal reaches a worker twice, directly and relayed by
    the supervisor (which relays SIGTERM whatever it got first)."""

    count = 0
    force_requested = False
    stop = None  # asyncio.Event, once serving
    force = None

    @classmethod
    def received(cls, signum, *_args):
        import signal

        cls.count += 1
        if cls.count > 1 and signum == signal.SIGINT:
            cls.force_requested = True
        again = " again" if cls.count > 1 else ""
        how = "stopping at once" if cls.force_requested else "stopping"
        log(1, f"Received {signal.Signals(signum).name}{again}: {how}")
        if cls.stop is not None:
            cls.stop.set()
        if cls.force_requested and cls.force is not None:
            cls.force.set()


def _catch_early_signals():
    """A signal during the app's import or lifespan startup stops the server
    cleanly once startup is done, instead of killing it half-way. A
    supervised worker starts with both signals blocked (so that none kills
    it before this point): they are delivered now."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _Signals.received)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _cancel_request_tasks(keep):
    import asyncio

    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not current and task is not keep:
            task.cancel()


def _cancel_all_tasks(loop):
    import asyncio

    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _listen(server, options):
    """Binds as configured; returns the URL to announce."""
    if options.get("fd", -1) >= 0:
        server.listen_fd(options["fd"])
        return f"socket fd {options['fd']}"
    if options.get("uds"):
        server.listen_unix(options["uds"])
        return f"unix socket {options['uds']}"
    host = options["host"]
    port = server.listen_tcp(host, options["port"])
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if options.get("ssl_certfile") else "http"
    return f"{scheme}://{shown}:{port}"


async def _serve(loop, app, options):
    import asyncio
    import signal

    from _appbin import Server

    state = {}
    lifespan = Lifespan(app, options["lifespan"], state)
    if not await lifespan.startup():
        return 3
    inherited = options.get("fd", -1) >= 0
    if _Signals.count and not inherited:
        log(2, "Stopped before serving: a signal arrived during startup")
        return 0 if await lifespan.shutdown() else 1
    # No connection before every byte of the archive is verified (the check
    # started with the process; it is long done by now, normally).
    _appbin.verify_wait()
    # With an inherited socket (--fd, or a worker's), connections may have
    # queued while the app started: they are served, then the server drains.
    server = Server(app, loop, options, state)
    try:
        where = _listen(server, options)
    except OSError as exc:
        log(4, _fd_limit_message(exc) if _out_of_fds(exc) else exc.strerror or str(exc))
        await lifespan.shutdown()
        server.close()
        return 1
    server.start()
    # Start-up is done: its objects (modules, the app's routes and models)
    # live as long as the process. Freezing them keeps the collector from
    # walking them again in every full collection, which otherwise shows
    # up as latency spikes; and the archive's pages are no longer needed.
    import gc

    gc.freeze()
    gc.enable()
    _appbin.release_memory()
    log(2, f"appbin running on {where} (Press CTRL+C to quit)")

    _Signals.stop, _Signals.force = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _Signals.received, sig)
    server.on_max_requests = _Signals.stop.set
    if _Signals.count:  # a signal during startup or between startup and here
        _Signals.stop.set()
    if _Signals.force_requested:
        _Signals.force.set()
    await _Signals.stop.wait()

    log(2, "Shutting down")
    closed = server.shutdown()
    forced = asyncio.ensure_future(_Signals.force.wait())
    await asyncio.wait({closed, forced}, timeout=options["timeout_graceful_shutdown"],
                       return_when=asyncio.FIRST_COMPLETED)
    if not closed.done():
        if not forced.done():
            log(4, "Cancel in-flight requests: the graceful shutdown timeout was exceeded")
        server.abort()
        _cancel_request_tasks(keep=lifespan.task)
        try:
            await asyncio.wait_for(asyncio.shield(closed), 5)
        except asyncio.TimeoutError:
            pass
    forced.cancel()
    ok = await lifespan.shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    server.close()
    log(2, "Finished server process")
    return 0 if ok else 1

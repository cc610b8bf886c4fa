"""Command line of appbin-pack."""

import argparse
import sys

from . import VERSION, PackError, UsageError
from .archive import COMPRESSION, LEVELS
from .hosts import select as select_host
from .inputs import parse_app, parse_default
from .pack import Options, pack
from .summary import format_summary

_DESCRIPTION = """\
Packs a venv (Python 3.11, 3.13 or 3.14), the stdlib of the host's Python and
the appbin host into one executable: app.bin = host + zip archive + trailer."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def build_parser():
    """The argument parser of appbin-pack."""
    parser = _Parser(prog="appbin-pack", description=_DESCRIPTION)
    parser.add_argument("--venv", required=True, metavar="DIR",
                        help="the venv to pack (pythonX.Y -m venv, poetry bundle venv, uv venv, ...)")
    parser.add_argument("--app", required=True, metavar="MODULE:ATTR",
                        help="the ASGI application, e.g. my_package.web:app")
    parser.add_argument("--factory", action="store_true",
                        help="ATTR is a factory to call for the application")
    parser.add_argument("-o", "--output", required=True, metavar="APP.BIN",
                        help="the executable to write")
    parser.add_argument("--host", metavar="PATH",
                        help="the bare appbin host executable (default: build/appbin-pack "
                             "picks the one built for the venv's Python version)")
    parser.add_argument("--build-dir", help=argparse.SUPPRESS)  # set by build/appbin-pack
    parser.add_argument("--sources", choices=("keep", "drop"), default="keep",
                        help="keep .py sources beside the .pyc (default) or drop them")
    parser.add_argument("--compression", choices=tuple(COMPRESSION), default="zstd",
                        help="compression of sources, data and metadata: zstd (default; "
                             "small and fast to read), deflate, or stored (the biggest file); "
                             "a member that does not shrink is stored")
    code = parser.add_mutually_exclusive_group()
    code.add_argument("--store-all-code", action="store_const", const="all", dest="store_code",
                      default="imports",
                      help="store every .pyc and shared object uncompressed, not only the "
                           "start-up code the app's imports reach (the default): the biggest "
                           "file, for apps that import much by name at run time")
    code.add_argument("--compress-code", action="store_const", const="none", dest="store_code",
                      help="compress start-up code (.pyc, shared objects) too: the smallest "
                           "file, which starts more slowly (by default the code the app's "
                           "imports reach is stored, to be used in place)")
    parser.add_argument("--no-code-cache", action="store_false", dest="code_cache",
                        help="do not run the packed app.bin once to cache the code its "
                             "start-up compiles from strings (dataclasses, namedtuple, "
                             "typing) and the regular expressions it compiles; that run "
                             "imports the app, as a server's start-up does")
    parser.add_argument("--compression-level", type=int, metavar="N", dest="level",
                        help="zstd 1-22 (default 9), deflate 1-9 (default 6)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="leave out members whose archive path (e.g. site-packages/pkg/"
                             "tests) or a parent directory of it matches GLOB; repeatable")
    parser.add_argument("--default", action="append", default=[], metavar="OPTION=VALUE",
                        dest="defaults", help="a server option default for app.bin; repeatable")
    parser.add_argument("--no-bundle-libs", action="store_false", dest="bundle_libs",
                        help="do not copy the system libraries extension modules need")
    parser.add_argument("--system-lib", action="append", dest="system_libs", metavar="SONAME",
                        help="a library the target system provides, never bundled; repeatable "
                             "(default: libcrypto.so.3 libssl.so.3 libz.so.1, which Debian "
                             "and distroless's base and cc images have); --system-lib none "
                             "bundles them too (for a glibc-only base such as base-nossl)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no size summary")
    parser.add_argument("--version", action="version", version=f"appbin-pack {VERSION}")
    return parser


def parse_options(argv):
    """Parses and checks the command line; returns (Options, quiet). May run
    the packer again under the python of the host it picks (hosts.select)."""
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    parse_app(args.app)
    select_host(args, argv)
    compression = COMPRESSION[args.compression]
    levels = LEVELS[compression]
    if args.level is not None and args.level not in levels:
        allowed = f"levels {levels.start}-{levels.stop - 1}" if len(levels) > 1 else "no level"
        raise UsageError(f"argument --compression-level: {args.compression} takes {allowed}, "
                         f"not {args.level} (see --help)")
    options = Options(
        venv=args.venv, app=args.app, output=args.output, host=args.host,
        factory=args.factory, keep_sources=args.sources == "keep",
        compression=compression, level=args.level, store_code=args.store_code,
        code_cache=args.code_cache,
        excludes=tuple(args.exclude),
        defaults=tuple(parse_default(d) for d in args.defaults), bundle_libs=args.bundle_libs,
        **_system_libs(args.system_libs))
    return options, args.quiet


def _warn(message):
    print(f"appbin-pack: warning: {message}", file=sys.stderr)


def main(argv=None):
    """Runs appbin-pack; returns the exit status."""
    try:
        options, quiet = parse_options(argv)
        result = pack(options, warn=_warn)
    except PackError as e:
        print(f"appbin-pack: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"appbin-pack: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not quiet:
        print(format_summary(options.output, result))
    return 0


def _system_libs(values):
    """--system-lib values as PackOptions keyword arguments (none given: the default)."""
    if values is None:
        return {}
    return {"system_libs": tuple(v for v in values if v != "none")}

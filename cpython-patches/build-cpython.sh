#!/usr/bin/env bash
# Builds CPython X.Y from Debian's source package for the appbin host, cached.
#
#   bash cpython-patches/build-cpython.sh 3.13        # or 3.14
#
# The last line of stdout is the install prefix:
#   ${APPBIN_CACHE:-$HOME/.cache/appbin}/cpython/<X.Y.Z>-<key>
# holding bin/pythonX.Y (with pip, -m venv), lib/pythonX.Y (stdlib,
# lib-dynload) and lib/pythonX.Y/config-X.Y-*/libpythonX.Y.a (static, non-PIE
# objects: what CMakeLists.txt links with -DAPPBIN_PYTHON=<prefix>/bin/pythonX.Y).
#
# <key> is a short hash of: the pinned Debian .dsc's sha256 (below), the Debian
# patch skip list, our patches (cpython-patches/<X.Y>/*.patch, all/*.patch), this
# script and the configure flags. A prefix whose key matches is reused: the script
# then only prints it (no network, no apt). Everything else goes to stderr and to
# <cache>/cpython/logs/<X.Y.Z>-<key>.log; on failure one line names the failed step
# and the log, exit status non-zero.
#
# Environment: APPBIN_CACHE (cache root), APPBIN_CPYTHON_JOBS (make -j, default 2),
# APPBIN_CPYTHON_PGO=0 (no --enable-optimizations: a build without profile
# guidance, in about half the time; see README.md).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
minor=${1:-}

# --- Pinned Debian source packages ------------------------------------------------
# package version suite dsc-sha256. Bump by: apt-cache showsrc pythonX.Y (after this
# script has added the deb-src lines once), copy the version and the .dsc sha256.
case "$minor" in
  3.13) pkg=python3.13 debver=3.13.5-2+deb13u5 suite=trixie
        dsc_sha=4be84e20fb902354fa86955e2fbea6e8bdbd158f54833423488308a9b3532662 ;;
  3.14) pkg=python3.14 debver=3.14.10-1 suite=sid
        dsc_sha=f43aca95f4d225c20dc56fb202306bcb1774afcf62d8b4fb6d8ba33a27c4c029 ;;
  *) echo "usage: $0 3.13|3.14" >&2; exit 2 ;;
esac
upver=${debver%-*}
dsc="${pkg}_${debver}.dsc"

# Static libpython of non-PIE objects (the host links it -no-pie: PIC costs ~20% on
# Python code, see CMakeLists.txt); extension modules still get -fPIC (CCSHARED).
configure_flags=(
  --enable-ipv6 --enable-loadable-sqlite-extensions --with-dbmliborder=gdbm
  --with-computed-gotos --with-system-expat --with-system-libmpdec=no
  --with-ssl-default-suites=openssl --with-ensurepip=install --disable-test-modules
)
# dpkg's specs (as Debian's static build, hardening=-pie): -fno-PIE/-no-pie except
# where -fPIC/-shared is given (a plain -no-pie would turn every -shared link into an
# executable's).
cflags_nodist="-specs=/usr/share/dpkg/no-pie-compile.specs"
ldflags_nodist="-specs=/usr/share/dpkg/no-pie-link.specs"
# PGO (APPBIN_CPYTHON_PGO, on by default). Its profile is what the test
# suite's --pgo subset runs, pass or fail: a test whose outcome depends on the
# machine (test_xml_etree on the builder image's libexpat, say) must not stop
# the build, as 3.13's Makefile would.
# With PGO comes LTO, for libpython alone: the profile-guided objects carry
# GCC's bytecode beside their code (fat objects), which step lto-prelink links
# once into plain code. CPython's own links (bin/python, lib-dynload) use the
# code only (-fno-lto): configure's --with-lto, which LTO-links them all, made
# the build take 1,021 s against 334 s this way.
pgo=${APPBIN_CPYTHON_PGO:-1}
make_args=()
if [ "$pgo" = 1 ]; then
  configure_flags+=(--enable-optimizations)
  make_args=("PROFILE_TASK=-m test --pgo --timeout=1200 || true" "LDFLAGS_NODIST=-fno-lto")
fi

# Debian patches not applied (see README.md for why each).
debian_skip=(
  git-updates.diff patchlevel-noplus.diff
  deb-locations.diff distutils-install-layout.diff sysconfig-debian-schemes.diff
  tkinter-import.diff gdbm-import.diff langpack-gettext.diff multiarch.diff
  ensurepip-disabled.diff destshared-location.diff stable-abi-multiarch.diff
  Add-Debian-specific-documentation-path-to-IDLE-menu.diff no-sphinx-8.2.diff
  link-opt.diff disable-sem-check.diff profiled-build.diff lto-link-flags.diff
)

# Object files of libpython defining functions the host wraps (see step
# no-lto-for-wrapped).
wrapped_objs=(Python/pythonrun.o Python/_warnings.o)

ours=()
for d in "$here/$minor" "$here/all"; do
  [ -d "$d" ] && for p in "$d"/*.patch; do [ -e "$p" ] && ours+=("$p"); done
done

# The compiler, by the name configure knows: it picks the PGO flags by the
# compiler's name (*gcc*, *clang*), and CC=cc (what CMake passes down) gets
# none, silently: a build without profile guidance.
cc=gcc
cache=${APPBIN_CACHE:-$HOME/.cache/appbin}/cpython
key=$( {
  "$cc" --version 2>/dev/null | head -n 1
  echo "$pkg $debver $dsc_sha"
  printf '%s\n' "${debian_skip[@]}"
  for p in "${ours[@]}"; do echo "${p#"$here"/}"; sha256sum <"$p"; done
  grep -v '^[[:space:]]*#' "${BASH_SOURCE[0]}" | sha256sum # comments do not count
  echo "${configure_flags[*]} | $cflags_nodist | $ldflags_nodist"
} | sha256sum | cut -c1-12)
name="$upver-$key"
prefix="$cache/$name"

if [ -x "$prefix/bin/python$minor" ] && [ -f "$prefix/.appbin-complete" ]; then
  echo "$prefix"
  exit 0
fi

mkdir -p "$cache/src" "$cache/logs" "$cache/build"
# One build per key at a time: a second run waits for the first, then reuses it.
exec 9>"$cache/build/$name.lock"
if ! flock -n 9; then
  echo "build-cpython $minor: another run is building $name; waiting for it" >&2
  flock 9
  if [ -x "$prefix/bin/python$minor" ] && [ -f "$prefix/.appbin-complete" ]; then
    echo "$prefix"
    exit 0
  fi
fi
log="$cache/logs/$name.log"
: >"$log"
step=start
say() { echo "build-cpython $minor: $*" | tee -a "$log" >&2; }
fail() { echo "build-cpython $minor: FAILED at step '$step'; log: $log" >&2; exit 1; }
trap fail ERR
run() { "$@" >>"$log" 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
t0=$(date +%s)

# --- 1. build dependencies --------------------------------------------------------
step=apt-deps
deps=(build-essential pkg-config dpkg-dev xz-utils curl ca-certificates
  libssl-dev libsqlite3-dev libffi-dev libbz2-dev liblzma-dev libreadline-dev
  libncurses-dev zlib1g-dev libgdbm-dev libgdbm-compat-dev libexpat1-dev uuid-dev
  libzstd-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  run as_root apt-get update -qq
  run as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. source package --------------------------------------------------------------
step=fetch-source
have_dsc() { [ -f "$cache/src/$dsc" ] && [ "$(sha256sum <"$cache/src/$dsc" | cut -d' ' -f1)" = "$dsc_sha" ]; }
aptopts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20)
if ! have_dsc; then
  srcs=/etc/apt/sources.list.d/appbin-cpython-src.sources
  if [ ! -f "$srcs" ]; then
    say "adding deb-src lines for trixie/forky/sid in $srcs"
    as_root tee "$srcs" >/dev/null <<'EOF'
# Added by appbin's cpython-patches/build-cpython.sh: source packages only
# (python3.13 from trixie, python3.14 from forky/sid). No binary packages.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie forky sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  if ! apt-cache showsrc "$pkg" 2>/dev/null | grep -q "$dsc_sha"; then
    say "apt-get update (deb-src)"
    run as_root timeout 300 apt-get update "${aptopts[@]}" -o Dir::Etc::sourcelist=/dev/null \
      -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::sourcelist="$srcs" \
      -o APT::Get::List-Cleanup=0 || say "apt-get update failed (see log); trying the pool directly"
  fi
  say "downloading $pkg $debver"
  (cd "$cache/src" && run timeout 900 apt-get source --download-only "${aptopts[@]}" "$pkg=$debver") || true
  if ! have_dsc; then
    # apt did not find it: the pool directly (the version pinned may be gone from the
    # index but still in the pool).
    pool="pool/main/p/$pkg"
    # APPBIN_CPYTHON_SOURCE_URL: a directory (http(s):// or file://) holding the .dsc
    # and its files, for machines that reach no Debian mirror with them.
    bases=(${APPBIN_CPYTHON_SOURCE_URL:+"$APPBIN_CPYTHON_SOURCE_URL"} "http://deb.debian.org/debian/$pool")
    for base in "${bases[@]}"; do
      say "trying $base/$dsc"
      if run curl -fsSL --connect-timeout 20 --max-time 60 -o "$cache/src/$dsc.part" "$base/$dsc" &&
        [ "$(sha256sum <"$cache/src/$dsc.part" | cut -d' ' -f1)" = "$dsc_sha" ]; then
        ok=1
        for f in $(awk '/^Checksums-Sha256:/{s=1;next} /^[^ ]/{s=0} s{print $3}' "$cache/src/$dsc.part"); do
          [ -f "$cache/src/$f" ] && continue
          run curl -fsSL --connect-timeout 20 --max-time 900 -o "$cache/src/$f.part" "$base/$f" &&
            mv "$cache/src/$f.part" "$cache/src/$f" || { ok=0; break; }
        done
        [ $ok = 1 ] && mv "$cache/src/$dsc.part" "$cache/src/$dsc" && break
      fi
    done
  fi
  if ! have_dsc; then
    echo "build-cpython $minor: FAILED at step 'fetch-source': $dsc (sha256 $dsc_sha) is not downloadable from deb-src ($suite), the pool or \$APPBIN_CPYTHON_SOURCE_URL; log: $log" >&2
    exit 1
  fi
fi

# --- 3. unpack, Debian patches, ours ------------------------------------------------
step=unpack
bdir="$cache/build/$name"
rm -rf "$bdir"
mkdir -p "$bdir"
run dpkg-source --skip-patches -x "$cache/src/$dsc" "$bdir/src"
src="$bdir/src"

step=debian-patches
applied=() skipped=() failed=()
while read -r p _; do
  case "$p" in '' | '#'*) continue ;; esac
  if printf '%s\n' "${debian_skip[@]}" | grep -qxF "$p"; then skipped+=("$p"); continue; fi
  if (cd "$src" && patch -p1 -N -s --dry-run <"debian/patches/$p" >>"$log" 2>&1); then
    (cd "$src" && run patch -p1 -N -s <"debian/patches/$p")
    applied+=("$p")
  else
    failed+=("$p")
  fi
done <"$src/debian/patches/series"
say "Debian patches: ${#applied[@]} applied, ${#skipped[@]} skipped by list, ${#failed[@]} did not apply${failed[*]:+: ${failed[*]}}"

step=our-patches
for p in "${ours[@]}"; do
  say "applying ${p#"$here"/}"
  (cd "$src" && run patch -p1 -N <"$p")
done

# Builtins as in Debian's libpython (debian/rules __post_configure): the modules the
# python3.X-minimal package lists as "extension", uncommented from Modules/Setup
# (as patched by setup-modules.diff). zlib and pyexpat are among them: the host
# links libz.a and libexpat.a for them.
step=setup-local
builtins=$(awk -v ORS='|' '$2 ~ /^extension$/ {print $1}' "$src/debian/PVER-minimal.README.Debian.in")
grep -E "^#(${builtins}XX)" "$src/Modules/Setup" |
  sed -e 's/^#//' -e 's/-Wl,-Bdynamic//;s/-Wl,-Bstatic//' >"$src/Modules/Setup.local"
say "builtins: $(awk '{print $1}' "$src/Modules/Setup.local" | tr '\n' ' ')"

# --- 4. configure, build, install -----------------------------------------------------
step=configure
say "configure: ${configure_flags[*]}"
(cd "$src" && run env CC="$cc" CFLAGS_NODIST="$cflags_nodist" LDFLAGS_NODIST="$ldflags_nodist" \
  ./configure --prefix="$prefix" "${configure_flags[@]}")

# The host wraps functions defined in these two files at link time (-Wl,--wrap,
# the code cache's hooks: CMakeLists.txt). Across LTO, a call to them from
# another file of libpython would be bound before the linker's wrap sees it;
# without LTO in them, it stays a reference the linker wraps.
step=no-lto-for-wrapped
printf '\n# appbin: %s\n%s\n' "calls into these stay wrappable (-Wl,--wrap)" \
  "${wrapped_objs[*]}: PY_CORE_CFLAGS += -fno-lto" >>"$src/Makefile"

if [ "$pgo" = 1 ]; then
  step=pgo-flags
  pgo_use=$(sed -n 's/^PGO_PROF_USE_FLAG=//p' "$src/Makefile")
  pgo_gen=$(sed -n 's/^PGO_PROF_GEN_FLAG=//p' "$src/Makefile")
  if [ -z "$pgo_use" ] || [ -z "$pgo_gen" ]; then
    say "configure chose no PGO flags for CC=$cc"; false
  fi
  make_args+=("PGO_PROF_USE_FLAG=$pgo_use -flto -ffat-lto-objects")
fi

step=make
say "make (log: $log)"
(cd "$src" && run nice make -j"${APPBIN_CPYTHON_JOBS:-2}" "${make_args[@]}")

step=check-modules
(cd "$src" && run ./python -c "import ssl, sqlite3, ctypes, decimal, lzma, bz2, zlib, uuid, hashlib, pyexpat, readline, dbm.gnu, curses, _ctypes, _decimal")

step=install
rm -rf "$prefix"
(cd "$src" && run nice make install)
py="$prefix/bin/python$minor"
libpy=$(echo "$prefix"/lib/python"$minor"/config-"$minor"-*/libpython"$minor".a)
# Built-ins that link a helper archive of CPython's own (3.13's _sha2 links
# Modules/_hacl/libHacl_Hash_SHA2.a): CPython links it into bin/python only, so its
# members go into libpython, which is all the host links.
step=libpython-helpers
for a in $(grep -o '[^[:space:]]*\.a\b' "$src/Modules/Setup.local" | sort -u); do
  say "adding ${a##*/}'s members to libpython$minor.a"
  rm -rf "$bdir/ar" && mkdir "$bdir/ar"
  (cd "$bdir/ar" && ar x "$src/$a" && ar rs "$libpy" ./*.o >>"$log" 2>&1)
done
# With PGO, libpython's objects are LTO bytecode plus code; the host would link
# only the code unless its own link did whole-program LTO (minutes, every build
# of a host). Done once here instead: one relocatable object of plain code from
# all of them (gcc -r -flinker-output=nolto-rel: cross-file inlining, PGO
# profiles kept; every global symbol stays global, as the host exports them to
# extension modules), beside the files built without LTO. (Without PGO there is
# no bytecode, and this is a plain relocatable link.)
step=lto-prelink
say "LTO link of libpython$minor.a into one object"
rm -rf "$bdir/lto" && mkdir "$bdir/lto"
members=$(ar t "$libpy")
dups=$(sort <<<"$members" | uniq -d)
[ -z "$dups" ] || { say "libpython members with one name: $dups"; false; }
(cd "$bdir/lto" && ar x "$libpy")
# Global symbols of default visibility (what the host exports): the same before
# and after. LTO's partitions add hidden ones, local to the host once linked.
exported() { readelf -sW "$1" | awk '$5 ~ /GLOBAL|WEAK/ && $6 == "DEFAULT" && $7 != "UND" && $8 !~ /^__gnu_lto/ {print $8}' | sort -u; }
plain=() lto=()
for m in $members; do
  case " ${wrapped_objs[*]//Python\//} " in *" $m "*) plain+=("$m") ;; *) lto+=("$m") ;; esac
done
[ ${#plain[@]} = ${#wrapped_objs[@]} ] || { say "libpython$minor.a lacks one of: ${wrapped_objs[*]}"; false; }
(cd "$bdir/lto" && run nice "$cc" -r -O3 -flto="${APPBIN_CPYTHON_JOBS:-2}" -flinker-output=nolto-rel \
  -o libpython-lto.o "${lto[@]}")
exported "$libpy" >"$bdir/lto/before.syms"
(cd "$bdir/lto" && rm -f new.a && run ar rcs new.a libpython-lto.o "${plain[@]}")
exported "$bdir/lto/new.a" >"$bdir/lto/after.syms"
if ! cmp -s "$bdir/lto/before.syms" "$bdir/lto/after.syms"; then
  diff "$bdir/lto/before.syms" "$bdir/lto/after.syms" >>"$log" || true
  say "exported symbols differ after the LTO link (diff in the log)"; false
fi
# (grep without -q: under pipefail, grep -q leaving early fails readelf.)
if readelf -S "$bdir/lto/new.a" | grep '\.gnu\.lto_' >/dev/null; then
  say "LTO bytecode left in libpython$minor.a"; false
fi
mv "$bdir/lto/new.a" "$libpy"
# -O3 -g objects: drop the debug info as Debian's packages do (lib-dynload is packed
# into every app.bin; the host strips itself).
step=strip
run strip --strip-unneeded "$py" "$prefix"/lib/python"$minor"/lib-dynload/*.so
run strip --strip-debug "$libpy"

step=verify
run "$py" -c "
import sysconfig, os, sys
libpl = sysconfig.get_config_var('LIBPL')
assert os.path.exists(os.path.join(libpl, 'libpython$minor.a')), libpl
assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))
import ssl, sqlite3, ctypes, decimal, lzma, bz2, zlib, uuid, hashlib, pyexpat, venv, ensurepip
assert 'zlib' in sys.builtin_module_names and 'pyexpat' in sys.builtin_module_names
print(sys.version)"
run "$py" -m pip --version
# Link libpython the way the host does (CMakeLists.txt: -no-pie, --export-dynamic,
# libexpat.a/libz.a for the built-in pyexpat/zlib) and load shared modules into it.
step=embed-check
cat >"$bdir/embed.c" <<'EOF'
#include <Python.h>
int main(void) {
  Py_Initialize();
  int rc = PyRun_SimpleString("import ssl, sqlite3, ctypes, decimal, lzma, bz2, zlib, uuid, "
                              "hashlib, pyexpat, json, asyncio; hashlib.sha512(b'x').digest()");
  return Py_FinalizeEx() < 0 || rc != 0;
}
EOF
run "$cc" -O2 -I"$prefix/include/python$minor" -o "$bdir/embed" "$bdir/embed.c" -no-pie \
  -Wl,--export-dynamic "$libpy" -l:libexpat.a -l:libz.a -lm -ldl -lpthread -lutil
run env PYTHONHOME="$prefix" "$bdir/embed"
{
  echo "appbin CPython build $name"
  echo "source: $pkg $debver ($suite) dsc sha256 $dsc_sha"
  echo "configure: CFLAGS_NODIST=$cflags_nodist LDFLAGS_NODIST=$ldflags_nodist ${configure_flags[*]}"
  echo "make:$(printf ' "%s"' "${make_args[@]}")"
  echo "libpython$minor.a: libpython-lto.o (gcc -r -flto of the rest), ${wrapped_objs[*]//Python\//}"
  echo "debian patches applied: ${applied[*]}"
  echo "debian patches skipped (list): ${skipped[*]}"
  echo "debian patches not applying: ${failed[*]}"
  echo "our patches: ${ours[*]##*/}"
  echo "built: $(date -u +%FT%TZ) in $(($(date +%s) - t0)) s on $(nproc) cores"
} >"$prefix/APPBIN-BUILD-INFO"
touch "$prefix/.appbin-complete"
rm -rf "$bdir"
say "done in $(($(date +%s) - t0)) s"
echo "$prefix"

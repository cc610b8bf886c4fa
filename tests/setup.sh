#!/usr/bin/env bash
# Installs everything appbin needs on a Debian 12 machine: apt packages, a
# static libzip built from Debian's source package, and the project's tool venv.
# Idempotent: steps that are done already are skipped.
# --deps-only: only what building the host needs (the apt packages above the
# "# --- test tools" line of tests/apt-packages.txt, and the static libzip): no
# test tools, no tool venv. The Dockerfile's build stage runs this.
set -euo pipefail
deps_only=0
[ "${1:-}" = --deps-only ] && deps_only=1
top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build"
mkdir -p "$build"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

mapfile -t pkgs < <(if [ $deps_only = 1 ]; then sed '/^# --- test tools/,$d' "$top/tests/apt-packages.txt"; else cat "$top/tests/apt-packages.txt"; fi |
  grep -v '^\s*#' | grep -v '^\s*$')
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Static libzip (Debian ships only the shared library).
deps="$build/deps"
if [ ! -f "$deps/lib/libzip.a" ]; then
  src_list=/etc/apt/sources.list.d/appbin-deb-src.sources
  if ! apt-get source --print-uris libzip >/dev/null 2>&1; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | as_root tee "$src_list" >/dev/null
    as_root apt-get update -qq
  fi
  rm -rf "$deps/src" && mkdir -p "$deps/src"
  (cd "$deps/src" && apt-get source -qq libzip >/dev/null 2>&1)
  srcdir=$(find "$deps/src" -maxdepth 1 -type d -name 'libzip-*' | head -n1)
  cmake -S "$srcdir" -B "$deps/src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$deps" -DCMAKE_INSTALL_LIBDIR=lib \
    -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DENABLE_BZIP2=OFF -DENABLE_LZMA=OFF -DENABLE_ZSTD=OFF -DENABLE_GNUTLS=OFF \
    -DENABLE_OPENSSL=OFF -DENABLE_MBEDTLS=OFF -DENABLE_COMMONCRYPTO=OFF \
    -DENABLE_WINDOWS_CRYPTO=OFF -DBUILD_TOOLS=OFF -DBUILD_REGRESS=OFF \
    -DBUILD_EXAMPLES=OFF -DBUILD_DOC=OFF >/dev/null
  cmake --build "$deps/src/build" >/dev/null
  cmake --install "$deps/src/build" >/dev/null
  echo "setup: built static libzip into $deps"
fi

[ $deps_only = 1 ] && exit 0

# The project's tool venv (test runners, clients, peers for benchmarks).
venv="$build/tools-venv"
stamp="$venv/.requirements.sha"
want=$(sha256sum "$top/tests/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x "$venv/bin/python" ] || /usr/bin/python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$top/tests/requirements.txt"
  echo "$want" > "$stamp"
fi

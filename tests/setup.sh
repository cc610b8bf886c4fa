#!/usr/bin/env bash
# Installs everything appbin needs on a Debian 12 machine: apt packages and the
# project's tool venv.
# Idempotent: steps that are done already are skipped.
# --deps-only: only what building the host needs (the apt packages above the
# "# --- test tools" line of tests/apt-packages.txt): no
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

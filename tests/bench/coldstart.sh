#!/usr/bin/env bash
# Cold start of app.bin next to the same venv run by Debian's python3.11.
#
# The example app (examples/: FastAPI) is packed twice, with the default
# --compression zstd and with --compression stored, and hyperfine runs, side by
# side in one invocation:
#   venv python   VENV/bin/python -c CODE   (Debian's python3.11 over the venv
#                                             on disk, __pycache__ warm)
#   app.bin       app.bin python -c CODE    (default --compression zstd)
#   app.bin       app.bin python -c CODE    (stored)
# for CODE = "pass" (interpreter start) and "import fastapi" (the app's
# imports), plus `--version` of the bare host and of both app.bin files (no
# interpreter: what reading the trailer and checking the payload's SHA-256
# costs). Prints a markdown table (mean ± σ, min, ratio to the venv python
# for the same CODE) and the sizes; also written to build/bench/coldstart.md
# and, as hyperfine's JSON, build/bench/coldstart.json.
#
# Usage: tests/bench/coldstart.sh [--venv DIR] [--host PATH] [--runs N]
#        [--warmup N] [--out DIR]
#   --venv DIR   the example's venv; default: the newest complete
#                build/test-venvs/poetry-example-* (made by the e2e fixtures),
#                else build/bench/example-venv, made here with pip from
#                examples/requirements.txt (needs the package index)
#   --host PATH  the bare host to pack with (default build/appbin-host)
#   --runs N     hyperfine runs per command (default 40); --warmup N (default 5)
#   --out DIR    where the app.bin files go (default build/bench/coldstart)
# The machine should be otherwise idle: on a shared machine use more runs and
# read σ before the means.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

venv="" host="$top/build/appbin-host" runs=40 warmup=5 out="$top/build/bench/coldstart"
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift ;;
    --host) host=$2; shift ;;
    --runs) runs=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "coldstart: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "coldstart: $*" >&2; }
die() { log "error: $*"; exit 1; }

PYTHON=/usr/bin/python3.11
# The venv's python must write and then use its __pycache__, as it would in
# production: no PYTHONDONTWRITEBYTECODE, PYTHONPYCACHEPREFIX and friends.
for var in $(env | sed -n 's/^\(PYTHON[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
unset APPBIN_LOG_LEVEL
command -v hyperfine >/dev/null || die "hyperfine is not installed (tests/apt-packages.txt)"
[ -x "$PYTHON" ] || die "$PYTHON is missing"
[ -x "$host" ] || die "$host is missing: cmake -S . -B build -G Ninja && ninja -C build"
pack="$top/build/appbin-pack"
[ -x "$pack" ] || pack="$PYTHON -I $top/packager/appbin_pack.py"

# ---- the venv ----------------------------------------------------------------
if [ -z "$venv" ]; then
  for marker in $(ls -td "$top"/build/test-venvs/poetry-example-*/.appbin-complete 2>/dev/null); do
    venv=$(dirname "$marker")
    break
  done
fi
if [ -z "$venv" ]; then
  venv="$top/build/bench/example-venv"
  if [ ! -e "$venv/.complete" ]; then
    log "making $venv with pip (examples/requirements.txt)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
      -r examples/requirements.txt
    scratch=$(mktemp -d)
    cp -r examples/. "$scratch/"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$scratch"
    rm -rf "$scratch"
    touch "$venv/.complete"
  fi
fi
[ -x "$venv/bin/python" ] || die "$venv is not a venv"
log "venv: $venv"

# ---- pack it twice -------------------------------------------------------------
mkdir -p "$out" "$top/build/bench"
zstd="$out/app.bin" stored="$out/app-stored.bin"
$pack --venv "$venv" --app my_package.web:app --host "$host" -o "$zstd" --quiet
$pack --venv "$venv" --app my_package.web:app --host "$host" -o "$stored" --quiet \
  --compression stored

# Each command must work before it is timed; the first venv run also writes
# the venv's __pycache__ (warm from then on).
for cmd in "$venv/bin/python" "$zstd python" "$stored python"; do
  for code in "pass" "import fastapi, my_package.web"; do
    $cmd -c "$code" >/dev/null 2>"$out/check.err" ||
      die "'$cmd -c \"$code\"' failed: $(tail -n 3 "$out/check.err")"
  done
done
rm -f "$out/check.err"
site=$(echo "$venv"/lib/python3.11/site-packages)
ls "$site"/fastapi/__pycache__/*.cpython-311.pyc >/dev/null 2>&1 ||
  die "$site/fastapi/__pycache__ was not written: is the venv writable?"

# ---- time them side by side -------------------------------------------------------
json="$top/build/bench/coldstart.json"
hyperfine --shell=none --style basic --warmup "$warmup" --runs "$runs" --export-json "$json" \
  -n "bare host: --version" "$host --version" \
  -n "app.bin zstd: --version" "$zstd --version" \
  -n "app.bin stored: --version" "$stored --version" \
  -n "venv python: pass" "$venv/bin/python -c pass" \
  -n "app.bin zstd: pass" "$zstd python -c pass" \
  -n "app.bin stored: pass" "$stored python -c pass" \
  -n "venv python: import fastapi" "$venv/bin/python -c 'import fastapi'" \
  -n "app.bin zstd: import fastapi" "$zstd python -c 'import fastapi'" \
  -n "app.bin stored: import fastapi" "$stored python -c 'import fastapi'" >&2

"$PYTHON" -I - "$json" "$zstd" "$stored" "$host" "$venv" "$runs" <<'EOF' | tee "$top/build/bench/coldstart.md"
import json, os, platform, sys
from pathlib import Path

data, zstd, stored, host, venv, runs = sys.argv[1:]
results = {r["command"]: r for r in json.loads(Path(data).read_text())["results"]}


def ms(x):
    return f"{x * 1000:.1f}"


print(f"Cold start, {runs} runs each after warm-up (hyperfine -N); {os.cpu_count()} CPUs, "
      f"Linux {platform.release()}, load average {os.getloadavg()[0]:.2f}.\n")
print("| code | runner | mean ± σ (ms) | min (ms) | ratio to venv python |")
print("| --- | --- | ---: | ---: | ---: |")
for runner in ("bare host", "app.bin zstd", "app.bin stored"):
    r = results[f"{runner}: --version"]
    print(f"| `--version` (no Python) | {runner} | {ms(r['mean'])} ± {ms(r['stddev'])} | "
          f"{ms(r['min'])} | |")
for code in ("pass", "import fastapi"):
    base = results[f"venv python: {code}"]
    for runner in ("venv python", "app.bin zstd", "app.bin stored"):
        r = results[f"{runner}: {code}"]
        ratio = r["mean"] / base["mean"]
        # σ of the ratio by first-order error propagation.
        rel = ((r["stddev"] / r["mean"]) ** 2 + (base["stddev"] / base["mean"]) ** 2) ** 0.5
        print(f"| `-c \"{code}\"` | {runner} | {ms(r['mean'])} ± {ms(r['stddev'])} | "
              f"{ms(r['min'])} | {ratio:.2f} ± {ratio * rel:.2f} |")


def size(path):
    return os.path.getsize(path)


def tree_size(root):
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in filenames)
    return total


site = Path(venv) / "lib" / "python3.11" / "site-packages"
mib = 1024 * 1024
print("\n| file | size (MiB) |")
print("| --- | ---: |")
print(f"| app.bin, `--compression zstd` (default) | {size(zstd) / mib:.1f} |")
print(f"| app.bin, `--compression stored` | {size(stored) / mib:.1f} "
      f"({size(stored) / size(zstd):.0%} of zstd) |")
print(f"| of which the bare host | {size(host) / mib:.1f} |")
print(f"| for comparison: the venv's site-packages (no __pycache__) | {tree_size(site) / mib:.1f} |")
EOF

#!/usr/bin/env bash
# Cold start of app.bin next to the same venv run by the python its host
# links (Debian's python3.11, or the CPython 3.13/3.14 build of
# build/hosts/X.Y), and of the app.bin server next to uvicorn over that venv:
# the ratios of issue 12.
#
# The example app (examples/: FastAPI) is packed four times: with the
# defaults (the start-up code the app's imports reach stored, the rest zstd,
# the code cache), with --store-all-code (every .pyc and shared object
# stored: the biggest file), with --compress-code (everything zstd: the
# smallest file) and with --no-code-cache (the defaults without the
# pack-time code cache), and, side by side in one run:
#   hyperfine  `--version` of the bare host and of app.bin (no interpreter:
#              the trailer, the index digest, the manifest), then
#              VENV/bin/python -c CODE (that python over the venv on
#              disk, __pycache__ warm) against app.bin python -c CODE
#              for CODE = "pass" and "import fastapi";
#   in_turns.py  the same `python -c` commands again in turns (run i of
#              each, then run i + 1 of each: a shared machine's slow
#              minutes weigh on all alike), their medians' ratios;
#   first_response.py  exec to the first 200 on GET /: app.bin against
#              uvicorn[standard] (3.11: the tools venv's; else one installed
#              with pip in build/bench/uvicorn-X.Y; PYTHONPATH = the venv's
#              site-packages), in turns.
# Prints a markdown table of the goals (ratios with their σ where hyperfine
# gives one) and the details; also written to OUT/coldstart.md, with
# hyperfine's JSON in OUT/coldstart.json, the in-turns times in
# OUT/in_turns.json and the servers' times in OUT/first_response.json.
#
# Usage: tests/bench/coldstart.sh [--python-version X.Y] [--venv DIR]
#        [--host PATH] [--runs N] [--warmup N] [--server-runs N] [--out DIR]
#   --python-version X.Y  3.11 (default), 3.13 or 3.14: the host of that
#                version (build/appbin-host, build/hosts/X.Y/appbin-host:
#                cmake -DAPPBIN_PYTHON_VERSIONS=X.Y) and the python its
#                appbin-host.info names
#   --venv DIR   the example's venv; default: the newest complete
#                ~/.cache/appbin/test-venvs/poetry-example-* of that Python
#                (made by the e2e fixtures), else build/bench/example-venv-X.Y,
#                made here with pip from examples/requirements.txt's pins
#                (needs the package index)
#   --host PATH  the bare host to pack with (default: that version's)
#   --runs N     hyperfine runs per command (default 40); --warmup N (default 5)
#   --server-runs N  exec-to-first-200 runs per server (default 20)
#   --out DIR    where the app.bin files and results go (default
#                build/bench/coldstart, build/bench/coldstart-X.Y for 3.13/3.14)
# The machine should be otherwise idle: on a shared machine use more runs and
# read σ before the means.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

venv="" host="" runs=40 warmup=5 server_runs=20 pyver=3.11
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) pyver=$2; shift ;;
    --venv) venv=$2; shift ;;
    --host) host=$2; shift ;;
    --runs) runs=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --server-runs) server_runs=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "coldstart: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "coldstart: $*" >&2; }
die() { log "error: $*"; exit 1; }

case $pyver in
  3.11) host=${host:-$top/build/appbin-host} ;;
  3.13 | 3.14) host=${host:-$top/build/hosts/$pyver/appbin-host} ;;
  *) die "--python-version 3.11, 3.13 or 3.14" ;;
esac
out=${out:-$top/build/bench/coldstart$([ "$pyver" = 3.11 ] || echo "-$pyver")}
# The python whose libpython the host links (the build writes it down).
PYTHON=$(sed -n 's/^python=//p' "$(dirname "$host")/appbin-host.info" 2>/dev/null || true)
[ -n "$PYTHON" ] || [ "$pyver" = 3.11 ] ||
  die "$(dirname "$host")/appbin-host.info names no python: is $host a $pyver host of this build?"
PYTHON=${PYTHON:-/usr/bin/python3.11}
# The venv's python must write and then use its __pycache__, as it would in
# production: no PYTHONDONTWRITEBYTECODE, PYTHONPYCACHEPREFIX and friends.
for var in $(env | sed -n 's/^\(PYTHON[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
unset APPBIN_LOG_LEVEL
command -v hyperfine >/dev/null || die "hyperfine is not installed (tests/apt-packages.txt)"
[ -x "$PYTHON" ] || die "$PYTHON is missing"
[ "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$pyver" ] ||
  die "$host links $PYTHON, not Python $pyver"
[ -x "$host" ] || die "$host is missing: cmake -S . -B build -G Ninja && ninja -C build"
pack="$top/build/appbin-pack"
[ -x "$pack" ] || pack="$PYTHON -I $top/packager/appbin_pack.py"

# ---- the venv ----------------------------------------------------------------
if [ -z "$venv" ]; then
  for marker in $(ls -td "${APPBIN_CACHE:-$HOME/.cache/appbin}"/test-venvs/poetry-example-*/.appbin-complete 2>/dev/null); do
    [ -d "$(dirname "$marker")/lib/python$pyver" ] || continue # each version's suite has one
    venv=$(dirname "$marker")
    break
  done
fi
if [ -z "$venv" ]; then
  venv="$top/build/bench/example-venv-$pyver"
  if [ ! -e "$venv/.complete" ]; then
    log "making $venv with pip (examples/requirements.txt)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    if [ "$pyver" = 3.11 ]; then
      "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
        -r examples/requirements.txt
    else # the same versions (the file's hashes and markers are 3.11's)
      "$venv/bin/pip" install --quiet --disable-pip-version-check \
        $(sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;]*\).*/\1/p' examples/requirements.txt)
    fi
    scratch=$(mktemp -d)
    cp -r examples/. "$scratch/"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$scratch"
    rm -rf "$scratch"
    touch "$venv/.complete"
  fi
fi
[ -x "$venv/bin/python" ] || die "$venv is not a venv"
[ -d "$venv/lib/python$pyver" ] || die "$venv is not a venv of Python $pyver (--python-version)"
log "venv: $venv"

# ---- pack it twice -------------------------------------------------------------
mkdir -p "$out" "$top/build/bench"
app="$out/app.bin" small="$out/app-compress-code.bin" big="$out/app-store-all-code.bin"
nocache="$out/app-no-code-cache.bin"
$pack --venv "$venv" --app my_package.web:app --host "$host" -o "$app" --quiet
$pack --venv "$venv" --app my_package.web:app --host "$host" -o "$small" --quiet --compress-code
$pack --venv "$venv" --app my_package.web:app --host "$host" -o "$big" --quiet --store-all-code
$pack --venv "$venv" --app my_package.web:app --host "$host" -o "$nocache" --quiet --no-code-cache

# Each command must work before it is timed; the first venv run also writes
# the venv's __pycache__ (warm from then on).
for cmd in "$venv/bin/python" "$app python" "$small python" "$big python" "$nocache python"; do
  for code in "pass" "import fastapi, my_package.web"; do
    $cmd -c "$code" >/dev/null 2>"$out/check.err" ||
      die "'$cmd -c \"$code\"' failed: $(tail -n 3 "$out/check.err")"
  done
done
rm -f "$out/check.err"
site=$(echo "$venv"/lib/python$pyver/site-packages)
ls "$site"/fastapi/__pycache__/*.cpython-"${pyver/./}".pyc >/dev/null 2>&1 ||
  die "$site/fastapi/__pycache__ was not written: is the venv writable?"
if [ "$pyver" = 3.11 ]; then
  uvicorn="$top/build/tools-venv/bin/uvicorn"
  [ -x "$uvicorn" ] || die "$uvicorn is missing: bash tests/setup.sh"
else # the tools venv's pin, on this Python
  uvenv="$top/build/bench/uvicorn-$pyver" uvicorn="$top/build/bench/uvicorn-$pyver/bin/uvicorn"
  if [ ! -e "$uvenv/.complete" ]; then
    log "making $uvenv with pip"
    rm -rf "$uvenv"
    "$PYTHON" -m venv "$uvenv"
    "$uvenv/bin/pip" install --quiet --disable-pip-version-check \
      "$(grep '^uvicorn\[standard\]==' tests/requirements.txt)"
    touch "$uvenv/.complete"
  fi
  [ -x "$uvicorn" ] || die "$uvicorn is missing (pip install into $uvenv failed?)"
fi

# ---- time them side by side -------------------------------------------------------
json="$out/coldstart.json"
hyperfine --shell=none --style basic --warmup "$warmup" --runs "$runs" --export-json "$json" \
  -n "bare host: --version" "$host --version" \
  -n "app.bin: --version" "$app --version" \
  -n "app.bin --compress-code: --version" "$small --version" \
  -n "app.bin --store-all-code: --version" "$big --version" \
  -n "app.bin --no-code-cache: --version" "$nocache --version" \
  -n "venv python: pass" "$venv/bin/python -c pass" \
  -n "app.bin: pass" "$app python -c pass" \
  -n "app.bin --compress-code: pass" "$small python -c pass" \
  -n "app.bin --store-all-code: pass" "$big python -c pass" \
  -n "app.bin --no-code-cache: pass" "$nocache python -c pass" \
  -n "venv python: import fastapi" "$venv/bin/python -c 'import fastapi'" \
  -n "app.bin: import fastapi" "$app python -c 'import fastapi'" \
  -n "app.bin --compress-code: import fastapi" "$small python -c 'import fastapi'" \
  -n "app.bin --store-all-code: import fastapi" "$big python -c 'import fastapi'" \
  -n "app.bin --no-code-cache: import fastapi" "$nocache python -c 'import fastapi'" >&2

# The goals' ratios again, the commands in turns (in_turns.py): on a shared
# machine a slow minute then weighs on the venv and on app.bin alike.
turns_json="$out/in_turns.json"
"$PYTHON" -I "$top/tests/bench/in_turns.py" --runs "$runs" --warmup "$warmup" --json "$turns_json" \
  "venv python: pass=$venv/bin/python -c pass" \
  "app.bin: pass=$app python -c pass" \
  "app.bin --compress-code: pass=$small python -c pass" \
  "app.bin --store-all-code: pass=$big python -c pass" \
  "app.bin --no-code-cache: pass=$nocache python -c pass" \
  "venv python: import fastapi=$venv/bin/python -c 'import fastapi'" \
  "app.bin: import fastapi=$app python -c 'import fastapi'" \
  "app.bin --compress-code: import fastapi=$small python -c 'import fastapi'" \
  "app.bin --store-all-code: import fastapi=$big python -c 'import fastapi'" \
  "app.bin --no-code-cache: import fastapi=$nocache python -c 'import fastapi'" >"$out/in_turns.md"

servers_json="$out/first_response.json"
"$PYTHON" -I "$top/tests/bench/first_response.py" --runs "$server_runs" --json "$servers_json" \
  "uvicorn=PYTHONPATH=$site $uvicorn my_package.web:app --port {port} --log-level warning --no-access-log" \
  "app.bin=$app --port {port} --no-access-log" \
  "app.bin --compress-code=$small --port {port} --no-access-log" \
  "app.bin --store-all-code=$big --port {port} --no-access-log" \
  "app.bin --no-code-cache=$nocache --port {port} --no-access-log" >"$out/first_response.md"

APPBIN_BENCH_DIR="$top/tests/bench" "$PYTHON" -I - "$json" "$servers_json" "$app" "$small" "$big" "$host" "$venv" "$runs" \
  "$out/first_response.md" "$turns_json" <<'EOF' | tee "$out/coldstart.md"
import json, os, platform, statistics, sys
from pathlib import Path

sys.path.insert(0, os.environ["APPBIN_BENCH_DIR"])
from in_turns import format_interval

data, servers, app, small, big, host, venv, runs, servers_md, turns_data = sys.argv[1:]
results = {r["command"]: r for r in json.loads(Path(data).read_text())["results"]}
first = json.loads(Path(servers).read_text())["times_ms"]
turns = json.loads(Path(turns_data).read_text())["times_ms"]


def ms(x):
    return f"{x * 1000:.1f}"


def ratio(name, base):
    """Mean ratio of two hyperfine results and its σ (first-order propagation)."""
    r, b = results[name], results[base]
    q = r["mean"] / b["mean"]
    rel = ((r["stddev"] / r["mean"]) ** 2 + (b["stddev"] / b["mean"]) ** 2) ** 0.5
    return f"{q:.2f} ± {q * rel:.2f}"


def median_ratio(name, base, times=first):
    """Ratio of the medians of runs made in turns, with its 95% interval."""
    return format_interval(times[name], times[base])


print(f"Cold start, Python {platform.python_version()}, {runs} runs each after warm-up "
      f"(hyperfine -N), servers "
      f"{len(first['uvicorn'])} runs each in turns; {os.cpu_count()} CPUs, "
      f"Linux {platform.release()}, load average {os.getloadavg()[0]:.2f}.\n")
packs = ("app.bin", "app.bin --store-all-code", "app.bin --compress-code",
         "app.bin --no-code-cache")
print("| goal (issue 12) | " + " | ".join(packs) + " | target |")
print("| --- |" + " ---: |" * (len(packs) + 1))
print("| `--version` (ms) | " + " | ".join(ms(results[f"{p}: --version"]["mean"]) for p in packs)
      + " | <= 2 |")
print("| `python -c pass` / venv python | "
      + " | ".join(ratio(f"{p}: pass", "venv python: pass") for p in packs) + " | <= 1.5 |")
print("| `import fastapi` / venv python | "
      + " | ".join(ratio(f"{p}: import fastapi", "venv python: import fastapi") for p in packs)
      + " | <= 0.9 |")
print("| `python -c pass` / venv python, in turns (medians, 95% interval) | "
      + " | ".join(median_ratio(f"{p}: pass", "venv python: pass", turns) for p in packs)
      + " | <= 1.5 |")
print("| `import fastapi` / venv python, in turns (medians, 95% interval) | "
      + " | ".join(median_ratio(f"{p}: import fastapi", "venv python: import fastapi", turns)
                   for p in packs) + " | <= 0.9 |")
print("| exec to first 200 / uvicorn (medians, 95% interval) | "
      + " | ".join(median_ratio(p, "uvicorn") for p in packs) + " | <= 0.8 |")

print("\n| command | runner | mean ± σ (ms) | min (ms) |")
print("| --- | --- | ---: | ---: |")
for code in ("--version", "pass", "import fastapi"):
    runners = ("bare host",) if code == "--version" else ("venv python",)
    for runner in runners + packs:
        r = results[f"{runner}: {code}"]
        shown = code if code == "--version" else f'-c "{code}"'
        print(f"| `{shown}` | {runner} | {ms(r['mean'])} ± {ms(r['stddev'])} | {ms(r['min'])} |")
print("\nIn turns:\n")
print("| command | runner | median (ms) | min (ms) |")
print("| --- | --- | ---: | ---: |")
for code in ("pass", "import fastapi"):
    for runner in ("venv python",) + packs:
        t = turns[f"{runner}: {code}"]
        print(f'| `-c "{code}"` | {runner} | {statistics.median(t):.1f} | {min(t):.1f} |')
print()
print(Path(servers_md).read_text().rstrip())


def size(path):
    return os.path.getsize(path)


def tree_size(root):
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in filenames)
    return total


site = Path(venv) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
mib = 1024 * 1024
print("\n| file | size (MiB) |")
print("| --- | ---: |")
print(f"| app.bin (defaults: the start-up code stored) | {size(app) / mib:.1f} |")
print(f"| app.bin, `--store-all-code` | {size(big) / mib:.1f} ({size(big) / size(app):.0%}) |")
print(f"| app.bin, `--compress-code` | {size(small) / mib:.1f} "
      f"({size(small) / size(app):.0%}) |")
print(f"| of which the bare host | {size(host) / mib:.1f} |")
print(f"| for comparison: the venv's site-packages (no __pycache__) | {tree_size(site) / mib:.1f} |")
EOF

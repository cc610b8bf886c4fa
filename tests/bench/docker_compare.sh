#!/usr/bin/env bash
# Side-by-side comparison of the two ways to ship the example app in Docker:
#   appbin    the top-level Dockerfile: one /app.bin on distroless base-nossl-debian13
#   baseline  tests/bench/baseline/Dockerfile: a Poetry venv's lib/ + uvicorn on
#             distroless python3-debian13 (the usual published recipe, on the
#             distroless Python base that exists today)
# Both on local bases built from Debian packages (tests/docker/build-bases.sh),
# both on Python 3.13 (--python-version 3.11: app.bin of the 3.11 host against
# the recipe's original python3-debian12, which distroless no longer builds).
#
# Reports: image size, number of files, cold start to the first 200 on GET /
# (from `docker run` to the first answer, polled every 2 ms once `docker run
# -d` returned, median of --runs, the two images started in turns),
# requests/s with wrk on
# loopback (bounded: -d5s -c64 -t2 by default) and memory after the load.
#
# Usage: tests/bench/docker_compare.sh [--no-build] [--static-only] [--runs N]
#        [--duration 5s] [--connections 64] [--json FILE] [--python-version 3.13]
#   --static-only  size and file counts only (no container is started)
# Results also go to build/bench/docker_compare.json.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

build=1 static_only=0 runs=3 duration=5s conns=64 threads=2 pyver=3.13
json="$top/build/bench/docker_compare.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --static-only) static_only=1 ;;
    --runs) runs=$2; shift ;;
    --duration) duration=$2; shift ;;
    --connections) conns=$2; shift ;;
    --json) json=$2; shift ;;
    --python-version) pyver=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker_compare: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# Docker 20.10's own client does BuildKit builds; a newer client needs buildx.
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
fi
export DOCKER_BUILDKIT=1
log() { echo "docker_compare: $*" >&2; }

APPBIN_IMAGE=appbin-bench/appbin:latest
BASELINE_IMAGE=appbin-bench/baseline:latest
secret=()
[ -s /etc/ssl/certs/ca-certificates.crt ] &&
  secret=(--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt)
pip_arg=()
[ -n "${PIP_INDEX_URL:-}" ] && pip_arg=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")

case $pyver in
  3.13) debian=13 ;; 3.11) debian=12 ;;
  *) echo "docker_compare: --python-version 3.13 or 3.11 (a distroless python3 base of it)" >&2; exit 2 ;;
esac
if [ $build = 1 ]; then
  DOCKER=$DOCKER "$top/tests/docker/build-bases.sh" builder-debian12 "builder-debian$debian" \
    distroless-base-nossl-debian13 "distroless-python3-debian$debian"
  t0=$(date +%s)
  "$DOCKER" build -q "${secret[@]}" "${pip_arg[@]}" \
    --build-arg BUILDER_IMAGE=appbin/builder-debian12 \
    --build-arg FINAL_IMAGE=appbin/distroless-base-nossl-debian13:nonroot \
    --build-arg PYTHON_VERSION="$pyver" \
    -t "$APPBIN_IMAGE" . >/dev/null
  t1=$(date +%s)
  "$DOCKER" build -q "${secret[@]}" "${pip_arg[@]}" -f tests/bench/baseline/Dockerfile \
    --build-arg BUILDER_IMAGE="appbin/builder-debian$debian" \
    --build-arg PYTHON_IMAGE="appbin/distroless-python3-debian$debian" \
    --build-arg PYTHON_VERSION="$pyver" \
    -t "$BASELINE_IMAGE" examples >/dev/null
  log "built $APPBIN_IMAGE in $((t1 - t0))s, $BASELINE_IMAGE in $(($(date +%s) - t1))s"
fi

declare -A size files cold rps lat mem samples
file_count() { # IMAGE -> regular files, symlinks etc. (not directories)
  local cid n
  cid=$("$DOCKER" create "$1")
  n=$("$DOCKER" export "$cid" | tar -t | grep -vc '/$')
  "$DOCKER" rm -v "$cid" >/dev/null
  echo "$n"
}

free_port() {
  "${PYTHON:-python3.11}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_and_wait IMAGE CONTAINER_PORT HOST_PORT -> "CID MS": one process
# takes the time from just before `docker run -d` and, once that returned
# (the container runs, its network is up), polls the published port every
# 2 ms until GET / answers 200 (MS -1 if none in 30 s). Until 2026-12-05 the
# poller was a second python started after `docker run -d` returned, its
# own start-up inside both images' times; polling before the return hit
# SYNs lost while the container's network came up (1 s retransmits).
start_and_wait() {
  "${PYTHON:-python3.11}" - "$DOCKER" "$@" <<'EOF'
import socket, subprocess, sys, time
docker, image, cport, hport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
cmd = [docker, "run", "-d", "--read-only", "--cap-drop", "ALL", "--security-opt",
       "no-new-privileges", "-p", f"127.0.0.1:{hport}:{cport}", image]
t0 = time.monotonic()
run = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
cid, ms = run.stdout.strip() or "none", -1
while run.returncode == 0 and time.monotonic() < t0 + 30:
    try:
        with socket.create_connection(("127.0.0.1", hport), timeout=1) as s:
            s.sendall(request)
            if s.recv(12).startswith(b"HTTP/1.1 200"):
                ms = round((time.monotonic() - t0) * 1000)
                break
    except OSError:
        pass
    time.sleep(0.002)
print(cid, ms)
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print -1}'; }

image_of() { [ "$1" = appbin ] && echo "$APPBIN_IMAGE" || echo "$BASELINE_IMAGE"; }
port_of() { [ "$1" = appbin ] && echo 8000 || echo 80; }
present=()
for which in appbin baseline; do
  image=$(image_of $which)
  cold[$which]=n/a rps[$which]=n/a lat[$which]=n/a mem[$which]=n/a size[$which]=0 files[$which]=n/a
  if ! "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
    log "no image $image (build it: run without --no-build)"; continue
  fi
  size[$which]=$("$DOCKER" image inspect -f '{{.Size}}' "$image")
  files[$which]=$(file_count "$image")
  present+=("$which")
done

if [ $static_only = 0 ]; then
  # Cold starts in turns (appbin, baseline, appbin, ...), so that a change of
  # load on the machine during the runs hits both images alike.
  for ((r = 0; r < runs; r++)); do
    for which in "${present[@]}"; do
      read -r cid ms < <(start_and_wait "$(image_of $which)" "$(port_of $which)" "$(free_port)")
      samples[$which]+="$ms "
      "$DOCKER" rm -f -v "$cid" >/dev/null 2>&1 || true
    done
  done
  for which in "${present[@]}"; do
    cold[$which]=$(printf '%s\n' ${samples[$which]} | median)
  done

  for which in "${present[@]}"; do
    hport=$(free_port)
    read -r cid ms < <(start_and_wait "$(image_of $which)" "$(port_of $which)" "$hport")
    if [ "$ms" != -1 ] && command -v wrk >/dev/null; then
      wrk -t1 -c8 -d1s "http://127.0.0.1:$hport/" >/dev/null 2>&1 || true # warm-up
      out=$(timeout 60 wrk -t"$threads" -c"$conns" -d"$duration" --latency "http://127.0.0.1:$hport/" 2>&1 || true)
      rps[$which]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
      lat[$which]=$(awk '$1 == "99%" {print $2}' <<<"$out")
      non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
      [ -n "$non2xx" ] && log "$which: $non2xx non-2xx answers under load"
      mem[$which]=$("$DOCKER" stats --no-stream --format '{{.MemUsage}}' "$cid" | cut -d/ -f1 | tr -d ' ')
    elif [ "$ms" = -1 ]; then
      log "$which never answered 200 on GET /; last logs:"; "$DOCKER" logs --tail 20 "$cid" >&2 || true
    fi
    "$DOCKER" rm -f -v "$cid" >/dev/null 2>&1 || true
  done
fi

mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
printf '\n%-26s %30s %30s\n' "" "appbin" "baseline (venv)"
printf '%-26s %30s %30s\n' "image" "$APPBIN_IMAGE" "$BASELINE_IMAGE"
printf '%-26s %30s %30s\n' "image size" "$(mb "${size[appbin]}")" "$(mb "${size[baseline]}")"
printf '%-26s %30s %30s\n' "files in the image" "${files[appbin]}" "${files[baseline]}"
printf '%-26s %30s %30s\n' "cold start to 200 (ms)" "${cold[appbin]}" "${cold[baseline]}"
printf '%-26s %30s %30s\n' "requests/s (wrk -c$conns)" "${rps[appbin]}" "${rps[baseline]}"
printf '%-26s %30s %30s\n' "p99 latency" "${lat[appbin]}" "${lat[baseline]}"
printf '%-26s %30s %30s\n' "memory after load" "${mem[appbin]}" "${mem[baseline]}"

# Issue 12's ratios: appbin over baseline (targets: cold start <= 0.25,
# memory after load <= 1.00).
mib() { # "41.4MiB" / "980KiB" / "1.1GiB" -> MiB
  awk -v m="$1" 'BEGIN { n = m + 0; if (m ~ /GiB$/) n *= 1024; else if (m ~ /KiB$/) n /= 1024;
                         else if (m ~ /[0-9]B$/) n /= 1048576; printf "%.2f", n }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
cold_ratio=$(ratio "${cold[appbin]}" "${cold[baseline]}")
mem_ratio=n/a
[ "${mem[appbin]}" != n/a ] && [ "${mem[baseline]}" != n/a ] &&
  mem_ratio=$(ratio "$(mib "${mem[appbin]}")" "$(mib "${mem[baseline]}")")
printf '%-26s %30s %30s\n' "cold start ratio" "$cold_ratio" "(target <= 0.25)"
# The runs were made in turns: the ratio of the medians with its 95% interval.
cold_interval=n/a
if [ -n "${samples[appbin]:-}" ] && [ -n "${samples[baseline]:-}" ]; then
  cold_interval=$(APPBIN_BENCH_DIR="$top/tests/bench" "${PYTHON:-python3.11}" - \
    "${samples[appbin]}" "${samples[baseline]}" <<'EOF'
import os, sys
sys.path.insert(0, os.environ["APPBIN_BENCH_DIR"])
from in_turns import format_interval
a, b = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
print(format_interval(a, b) if min(a + b) > 0 else "n/a")
EOF
  )
fi
printf '%-26s %30s %30s\n' "cold start, 95% interval" "$cold_interval" "(medians' ratio)"
printf '%-26s %30s %30s\n' "memory ratio" "$mem_ratio" "(target <= 1.00)"

mkdir -p "$(dirname "$json")"
"${PYTHON:-python3.11}" - "$json" <<EOF
import json, sys
def v(x):
    try: return int(x)
    except ValueError: return x
data = {
  "appbin": {"image": "$APPBIN_IMAGE", "size_bytes": v("${size[appbin]}"), "files": v("${files[appbin]}"),
             "cold_start_ms": v("${cold[appbin]}"), "requests_per_s": v("${rps[appbin]}"),
             "p99": "${lat[appbin]}", "memory": "${mem[appbin]}"},
  "baseline": {"image": "$BASELINE_IMAGE", "size_bytes": v("${size[baseline]}"), "files": v("${files[baseline]}"),
               "cold_start_ms": v("${cold[baseline]}"), "requests_per_s": v("${rps[baseline]}"),
               "p99": "${lat[baseline]}", "memory": "${mem[baseline]}"},
  "wrk": {"threads": $threads, "connections": $conns, "duration": "$duration"},
  "ratios": {"cold_start": "$cold_ratio", "cold_start_interval": "$cold_interval",
             "memory_after_load": "$mem_ratio"},
  "cold_start_runs_ms": {w: [int(x) for x in runs.split()] for w, runs in
                         (("appbin", "${samples[appbin]:-}"), ("baseline", "${samples[baseline]:-}"))},
}
json.dump(data, open(sys.argv[1], "w"), indent=2)
EOF
log "wrote $json"

#!/bin/sh
# Build and run the HTTP connection fuzzer for a bounded time.
#   tests/fuzz/run_http_fuzz.sh [seconds] [extra libFuzzer args...]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
build=$root/build/http-fuzz
cmake -S "$root/tests/unit/http-dev" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang \
  -DAPPBIN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" fuzz_http_conn
mkdir -p "$build/fuzz-corpus"
exec "$build/fuzz_http_conn" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
  -dict="$root/tests/fuzz/http.dict" -print_final_stats=1 "$@" \
  "$build/fuzz-corpus" "$root/tests/fuzz/corpus"

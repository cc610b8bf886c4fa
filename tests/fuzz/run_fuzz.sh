#!/bin/sh
# Build and run a fuzzer for a bounded time, outside tests/all.sh (which runs
# both for 30 s): the same clang build in build-fuzz, the same corpora.
#   tests/fuzz/run_fuzz.sh [seconds] [fuzz_http_conn|fuzz_ws_frame|fuzz_zipindex] [libFuzzer args...]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
name=${1:-fuzz_http_conn}
[ $# -gt 0 ] && shift
build=$root/build-fuzz
CC=clang cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DAPPBIN_FUZZ=ON >/dev/null
cmake --build "$build" --target "$name"
mkdir -p "$build/$name-corpus"
seeds=
[ "$name" = fuzz_http_conn ] && seeds="-dict=$root/tests/fuzz/http.dict $root/tests/fuzz/corpus"
# shellcheck disable=SC2086 # $seeds is two words or none
exec "$build/tests/unit/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
  -print_final_stats=1 "$@" "$build/$name-corpus" $seeds

#!/usr/bin/env bash
# The whole test suite: C unit tests (release and ASan/UBSan builds), the HTTP
# parser fuzzer for a bounded time, end-to-end tests of app.bin with real
# clients, the network fuzzer against a live ASan app.bin, and the Docker
# tests where a Docker engine answers.
# Installs what is missing first (tests/setup.sh).
#   APPBIN_SKIP_DOCKER=1  skip the Docker tests
#   APPBIN_FUZZ_SECONDS=N fuzzing time of each harness (default 25)
#   APPBIN_NET_FUZZ_SECONDS=N network fuzzing time (default 45)
#   APPBIN_PYTHON_VERSIONS="3.11 3.13"  the hosts the end-to-end suite runs
#                         against (default; add 3.14 for the third). 3.13 and
#                         3.14 build CPython once (cpython-patches/, cached in
#                         ~/.cache/appbin) and their host in build/hosts/X.Y.
#   APPBIN_ASAN_PYTHON_VERSIONS="3.11"  the same for the ASan subset
#   APPBIN_REAL_PACKAGES_VERSIONS="3.11"  the versions whose end-to-end run
#                         includes test_real_packages.py (62 PyPI packages:
#                         a venv of ~300 MB per version and ~4 min a run)
#   APPBIN_DOCKER_PYTHON_VERSION=3.11   the Dockerfile's PYTHON_VERSION the
#                         Docker tests build (3.13 is its default)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tests/setup.sh || exit 1

read -ra versions <<<"${APPBIN_PYTHON_VERSIONS:-3.11 3.13}"
read -ra asan_versions <<<"${APPBIN_ASAN_PYTHON_VERSIONS:-3.11}"
real_packages_versions=" ${APPBIN_REAL_PACKAGES_VERSIONS:-3.11} "
# -DAPPBIN_PYTHON_VERSIONS for a build: the versions other than the tree's own 3.11
others() { local v out=(); for v in "$@"; do [ "$v" = 3.11 ] || out+=("$v"); done
  local IFS=';'; echo "${out[*]}"; }
# the build tree of a version's host in build dir $1
host_dir() { if [ "$2" = 3.11 ]; then echo "$1"; else echo "$1/hosts/$2"; fi; }

failed=()
passed=0
step() {
  local name=$1
  shift
  local t0=$SECONDS
  echo "=== $name"
  if "$@"; then
    echo "=== $name: ok ($((SECONDS - t0))s)"
    passed=$((passed + 1))
  else
    echo "=== $name: FAILED ($((SECONDS - t0))s)"
    failed+=("$name")
  fi
}

build() { # build DIR CMAKE_ARGS... (APPBIN_TARGET: one target only)
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null &&
    cmake --build "$dir" ${APPBIN_TARGET:+--target "$APPBIN_TARGET"}
}

step "clang-format" clang-format --dry-run -Werror host/*.c host/*.h tests/unit/*.c tests/unit/*.h \
  tests/fuzz/*.c
step "release build (hosts: ${versions[*]})" build build -DCMAKE_BUILD_TYPE=Release \
  "-DAPPBIN_PYTHON_VERSIONS=$(others "${versions[@]}")"
step "unit tests (release)" ctest --test-dir build --output-on-failure -j2
step "ASan/UBSan build (hosts: ${asan_versions[*]})" build build-asan -DCMAKE_BUILD_TYPE=Debug \
  -DAPPBIN_SANITIZE=ON "-DAPPBIN_PYTHON_VERSIONS=$(others "${asan_versions[@]}")"
step "unit tests (ASan/UBSan)" env ASAN_OPTIONS=detect_leaks=1 \
  ctest --test-dir build-asan --output-on-failure -j2
build_fuzzers() {
  CC=clang APPBIN_TARGET=fuzz_http_conn build build-fuzz -DCMAKE_BUILD_TYPE=Debug -DAPPBIN_FUZZ=ON &&
    cmake --build build-fuzz --target fuzz_ws_frame fuzz_archfs_path fuzz_zipindex &&
    cmake --build build-fuzz --target fuzz_envfile fuzz_codecache
}
step "fuzz build" build_fuzzers
fuzz_seconds=${APPBIN_FUZZ_SECONDS:-25}
# fuzz NAME ARGS...: run build-fuzz/tests/unit/NAME with its own corpus first
# (where libFuzzer writes new inputs; seed corpora in ARGS stay untouched), its
# chatter to a log file (the last lines are shown, more when it finds something).
fuzz() {
  local name=$1 log="build-fuzz/$1.log"
  shift
  mkdir -p "build-fuzz/$name-corpus"
  if "build-fuzz/tests/unit/$name" -max_total_time="$fuzz_seconds" -timeout=10 \
    -rss_limit_mb=1024 "build-fuzz/$name-corpus" "$@" >"$log" 2>&1; then
    tail -n 2 "$log"
  else
    tail -n 60 "$log"
    return 1
  fi
}
step "fuzz http parser (${fuzz_seconds}s)" fuzz fuzz_http_conn -dict=tests/fuzz/http.dict \
  tests/fuzz/corpus
step "fuzz websocket frames (${fuzz_seconds}s)" fuzz fuzz_ws_frame
step "fuzz env file and JSON escaping (${fuzz_seconds}s)" fuzz fuzz_envfile -dict=tests/fuzz/envfile.dict
step "fuzz archive paths (${fuzz_seconds}s)" fuzz fuzz_archfs_path tests/fuzz/corpus-archfs
step "fuzz archive reader (${fuzz_seconds}s)" fuzz fuzz_zipindex
step "fuzz code cache reader (${fuzz_seconds}s)" fuzz fuzz_codecache
# The whole suite against each version's host (its venvs made by that
# version's python; see tests/e2e/hostutil.py).
for v in "${versions[@]}"; do
  skip=()
  [[ "$real_packages_versions" = *" $v "* ]] || skip=(--deselect tests/e2e/test_real_packages.py)
  step "end-to-end tests (Python $v)" env APPBIN_BUILD_DIR="$(host_dir build "$v")" \
    APPBIN_HTTP_TEST_SERVER="$top/build/tests/unit/http-test-server" \
    build/tools-venv/bin/pytest tests/e2e -q -p no:cacheprovider "${skip[@]}"
done
# The C-heavy paths again on the sanitizer build: importer, HTTP, ASGI and
# its eager task steps, the access log, env file and metrics endpoint, the
# code cache, the init of PID 1, TLS, start-up (its copying thread), WebSockets.
for v in "${asan_versions[@]}"; do
  step "end-to-end tests on the ASan host (Python $v)" env APPBIN_BUILD_DIR="$(host_dir build-asan "$v")" \
    APPBIN_HTTP_TEST_SERVER="$top/build-asan/tests/unit/http-test-server" \
    ASAN_OPTIONS=detect_leaks=0 build/tools-venv/bin/pytest -q -p no:cacheprovider -m "not slow" \
    tests/e2e/test_host_importer.py tests/e2e/test_server_http11.py tests/e2e/test_server_asgi.py \
    tests/e2e/test_server_tasks.py tests/e2e/test_http_layer.py tests/e2e/test_server_hardening.py \
    tests/e2e/test_server_ops.py tests/e2e/test_archfs.py tests/e2e/test_codecache.py \
    tests/e2e/test_pid1.py tests/e2e/test_server_tls.py tests/e2e/test_startup.py \
    tests/e2e/test_websocket.py
done
# Real packages whose C libraries open data files by path through archfs
# (libxml2's XSL files for lxml's isoschematron, FreeType's fonts for pillow
# and matplotlib) and Django's admin, on the sanitizer build: about 80 s, 50 s
# of it packing the suite's venv.
step "real packages on the ASan host (Python 3.11)" env APPBIN_BUILD_DIR=build-asan ASAN_OPTIONS=detect_leaks=0 \
  build/tools-venv/bin/pytest -q -p no:cacheprovider tests/e2e/test_real_packages.py \
  -k "test_real_use and (lxml or pillow or matplotlib or django) or test_django_admin"
# A live ASan app.bin (default flags) under mutated requests and WebSocket
# frames from several connections; a crash, sanitizer report or hang fails.
step "network fuzz on the ASan host (${APPBIN_NET_FUZZ_SECONDS:-45}s)" build/tools-venv/bin/python \
  tests/fuzz/net_fuzz.py --seconds "${APPBIN_NET_FUZZ_SECONDS:-45}" --host build-asan/appbin-host
# The same over HTTPS, and mutated ClientHellos and plain bytes to the TLS port.
step "network fuzz over TLS on the ASan host (${APPBIN_NET_TLS_FUZZ_SECONDS:-30}s)" \
  build/tools-venv/bin/python tests/fuzz/net_fuzz.py --tls \
  --seconds "${APPBIN_NET_TLS_FUZZ_SECONDS:-30}" --host build-asan/appbin-host
if [ "${APPBIN_SKIP_DOCKER:-0}" != 1 ] && docker info >/dev/null 2>&1; then
  # The image for Python ${APPBIN_DOCKER_PYTHON_VERSION:-3.11}: a first 3.13/3.14 image builds
  # CPython inside Docker (~30 min on two cores, then cached), too long for CI.
  step "docker tests (Python ${APPBIN_DOCKER_PYTHON_VERSION:-3.11})" \
    env APPBIN_DOCKER_PYTHON_VERSION="${APPBIN_DOCKER_PYTHON_VERSION:-3.11}" \
    build/tools-venv/bin/pytest tests/docker -q -p no:cacheprovider
else
  echo "=== docker tests: skipped (no Docker engine answers, or APPBIN_SKIP_DOCKER=1)"
fi

[ ${#failed[@]} -gt 0 ] && echo "FAILED steps: ${failed[*]}"
echo "steps: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]

#!/usr/bin/env bash
# The host for another Python version, as a build tree of its own:
#   build-version-host.sh X.Y BUILD_DIR BUILD_TYPE SANITIZE(ON|OFF)
# Run by the host-X.Y target of CMakeLists.txt (-DAPPBIN_PYTHON_VERSIONS).
# CPython X.Y comes from cpython-patches/build-cpython.sh (built once, cached
# outside the tree; the last line of its output is the prefix). The tree holds
# appbin-host, appbin-pack (running the packer under that python) and
# appbin-host.info, which the packer of the main tree reads.
set -euo pipefail
version=$1 dir=$2 type=$3 sanitize=${4:-OFF}
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=$(bash "$top/cpython-patches/build-cpython.sh" "$version" | tail -n 1)
python="$prefix/bin/python$version"
if [ ! -x "$python" ]; then
  echo "build-version-host: cpython-patches/build-cpython.sh $version gave no $python" >&2
  exit 1
fi
# The packer compresses with zstandard (Debian's python3-zstandard for 3.11):
# installed once into this python's own site-packages (never packed: the
# packer leaves the stdlib's site-packages out).
if ! "$python" -I -c "import zstandard" 2>/dev/null; then
  "$python" -I -m pip install -q --disable-pip-version-check --no-warn-script-location \
    "zstandard==0.25.0" >&2
fi
cmake -S "$top" -B "$dir" -G Ninja -DAPPBIN_PYTHON="$python" -DAPPBIN_HOST_ONLY=ON \
  -DCMAKE_BUILD_TYPE="$type" -DAPPBIN_SANITIZE="$sanitize" -DAPPBIN_PYTHON_VERSIONS= >/dev/null
cmake --build "$dir"

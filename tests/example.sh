#!/usr/bin/env bash
# Builds everything and serves the example app (examples/) on port 8000:
# installs what is missing (tests/setup.sh), builds the host with CMake,
# bundles the Poetry project with `poetry bundle venv`, packs build/app.bin
# and runs it. Extra arguments go to app.bin (e.g. --host 0.0.0.0).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tests/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
venv=build/example-venv
stamp=$(cat examples/pyproject.toml examples/poetry.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.appbin-stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$venv"
  (cd examples && ../build/tools-venv/bin/poetry bundle venv --no-interaction --only=main \
     --python=/usr/bin/python3.11 "$top/$venv")
  echo "$stamp" > "$venv/.appbin-stamp"
fi
build/appbin-pack --venv "$venv" --app my_package.web:app -o build/app.bin
echo "example: serving build/app.bin on http://127.0.0.1:8000 (Ctrl+C stops it)"
exec build/app.bin --port 8000 "$@"

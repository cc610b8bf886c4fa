#!/usr/bin/env bash
# Compares two CPython builds by instruction counts (callgrind), side by side in one
# run: the figure a cpython-patches/ patch (or a build option) must show.
#
#   bash cpython-patches/compare.sh <pythonA> <pythonB> [site-packages]
#
# Workloads: "startup" (python -c pass), "compute" (pure-Python loops: calls,
# attributes, dicts, strings, json) and, with a site-packages dir of the same minor
# version (e.g. a venv's, with fastapi installed), "import-fastapi". Prints Ir (instructions) per
# workload and build, and B/A.
set -euo pipefail
a=$1 b=$2 site=${3:-}
command -v valgrind >/dev/null || { echo "compare.sh: needs valgrind" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/compute.py" <<'EOF'
import json
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
class P:
    __slots__ = ("x", "y")
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm(self):
        return self.x * self.x + self.y * self.y
def work():
    fib(18)
    s = sum(P(i, i + 1).norm() for i in range(3000))
    d = {}
    for i in range(3000):
        d[f"k{i}"] = str(i) * 3
    doc = json.dumps([{"id": i, "name": f"n{i}", "tags": ["a", "b"], "v": i / 3} for i in range(300)])
    json.loads(doc)
    sorted(d.items(), key=lambda kv: kv[1])
    return s
for _ in range(3):
    work()
EOF
ir() { # python, args...: total instructions
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$@" >/dev/null 2>"$tmp/vg.err" ||
    { cat "$tmp/vg.err" >&2; exit 1; }
  awk '/^(summary|totals):/{print $2; exit}' "$tmp/cg.out"
}
row() { # name, args after python...
  local name=$1; shift
  local ia ib
  ia=$(ir "$a" "$@")
  ib=$(ir "$b" "$@")
  printf '%-16s %14s %14s %6s\n' "$name" "$ia" "$ib" "$(awk -v a="$ia" -v b="$ib" 'BEGIN{printf "%.3f", b/a}')"
}
printf '%-16s %14s %14s %6s\n' workload "Ir A" "Ir B" "B/A"
row startup -I -c pass
row compute -I "$tmp/compute.py"
if [ -n "$site" ]; then
  row import-fastapi -I -c "import sys; sys.path.append('$site'); import fastapi, fastapi.routing"
fi

"""Benchmark of the archive's read-only tree (host/archfs*.c): os.listdir +
open().read() over the files of a few packages, from app.bin's archive and
from the same venv on disk, in the same app.bin process (so only the file
system differs). Reports time per file and the ratio archive/disk.

    build/tools-venv/bin/python tests/bench/archfs_bench.py [--app-bin PATH]
        [--venv DIR] [--packages certifi,pydantic,fastapi] [--rounds 5]
        [--markdown]

Without --app-bin it packs the test venv (build/test-venvs/fastapi-*, made
by the end-to-end tests) with build/appbin-host into build/bench/archfs.bin.
Each round walks every package once in each tree (order alternating), with
the disk tree's pages already cached; medians over rounds are reported.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"

WALK = r"""
import json, os, sys, time
roots, rounds = json.loads(sys.argv[1]), int(sys.argv[2])

def walk(top):
    files = nbytes = 0
    stack = [top]
    while stack:
        d = stack.pop()
        for name in os.listdir(d):
            p = d + "/" + name
            if os.path.isdir(p):
                stack.append(p)
            else:
                with open(p, "rb") as f:
                    nbytes += len(f.read())
                files += 1
    return files, nbytes

out = {"archive": [], "disk": []}
for r in range(rounds + 1):
    for kind in (("archive", "disk") if r % 2 else ("disk", "archive")):
        start = time.perf_counter()
        totals = [walk(top) for top in roots[kind]]
        elapsed = time.perf_counter() - start
        if r:  # round 0 warms both trees
            out[kind].append([elapsed, sum(t[0] for t in totals), sum(t[1] for t in totals)])
print(json.dumps(out))
"""


def pack(venv, output):
    host = BUILD / "appbin-host"
    pack_cmd = BUILD / "appbin-pack"
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(pack_cmd), "--venv", str(venv), "--host", str(host), "-o", str(output),
                    "--quiet"], check=True)
    return output


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app-bin", type=Path)
    ap.add_argument("--venv", type=Path)
    ap.add_argument("--packages", default="certifi,pydantic,fastapi,starlette")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    venv = args.venv or next((p for p in sorted((BUILD / "test-venvs").glob("fastapi-*"))
                              if p.is_dir()), None)
    if venv is None:
        sys.exit("no venv: pass --venv, or run the end-to-end tests once to make build/test-venvs")
    app_bin = args.app_bin or pack(venv, BUILD / "bench" / "archfs.bin")
    app_bin = app_bin.resolve()
    site = venv.resolve() / "lib" / "python3.11" / "site-packages"
    packages = args.packages.split(",")
    roots = {"archive": [f"{app_bin}/site-packages/{p}" for p in packages],
             "disk": [str(site / p) for p in packages]}
    result = subprocess.run([str(app_bin), "python", "-c", WALK, json.dumps(roots),
                             str(args.rounds)], capture_output=True, text=True, check=True)
    runs = json.loads(result.stdout)
    arch, disk = runs["archive"], runs["disk"]
    # The trees differ a little (the packer adds a .pyc beside each .py and
    # drops __pycache__), hence the per-file comparison.
    t_arch = statistics.median(r[0] for r in arch)
    t_disk = statistics.median(r[0] for r in disk)
    per_arch = t_arch / arch[0][1] * 1e6
    per_disk = t_disk / disk[0][1] * 1e6
    rows = [("archive (app.bin)", arch[0][1], arch[0][2], t_arch, per_arch),
            ("disk (venv)", disk[0][1], disk[0][2], t_disk, per_disk)]
    if args.markdown:
        print("| tree | files | bytes | ms per walk | µs per file |")
        print("|---|---|---|---|---|")
        for name, n, b, t, per in rows:
            print(f"| {name} | {n} | {b:,} | {t * 1e3:.1f} | {per:.1f} |")
    else:
        for name, n, b, t, per in rows:
            print(f"{name:18} {n:6} files {b:11,} bytes  {t * 1e3:8.1f} ms  {per:6.1f} µs/file")
    print(f"archive/disk time per file: {per_arch / per_disk:.2f}x "
          f"(packages: {', '.join(packages)}; median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()

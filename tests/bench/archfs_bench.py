"""Benchmark of the archive's read-only tree (host/archfs*.c): os.listdir +
open().read() over the files of a few packages, from app.bin's archive and
from the same venv on disk, in the same app.bin process (so only the file
system differs). Reports time per file and the ratio archive/disk.

    build/tools-venv/bin/python tests/bench/archfs_bench.py [--app-bin PATH]
        [--venv DIR] [--packages certifi,pydantic,fastapi] [--rounds 5]
        [--markdown]

Without --app-bin it packs the test venv (~/.cache/appbin/test-venvs/fastapi-*, made
by the end-to-end tests) with build/appbin-host into build/bench/archfs.bin.
Each round walks every package once in each tree (order alternating), with
the disk tree's pages already cached; medians over rounds are reported.

    build/tools-venv/bin/python tests/bench/archfs_bench.py --boto3 [--app-bin PATH]
        [--venv DIR] [--rounds 5] [--markdown]

An app that loads boto3's models: `import boto3` and clients for ten
services (botocore reads each service's JSON models, endpoint rules and
paginators by path: from the archive under app.bin), under `app.bin python`
and under the venv's python, alternately, a fresh process each; reports the
median time to import and to create the clients, the CPU time of the main
thread and of the process (app.bin's includes the thread that checks the
archive's digests), and memory: VmRSS and VmHWM (peak) after the clients
exist, split into anonymous, file-backed and shared (memfd) pages. The venv defaults to the real-packages suite's
(~/.cache/appbin/test-venvs/real-packages-*), packed into build/bench/real.bin.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
VENVS = Path(os.environ.get("APPBIN_CACHE") or Path.home() / ".cache" / "appbin") / "test-venvs"

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


BOTO3 = r"""
import json, time
t0 = time.perf_counter()
import boto3
t1 = time.perf_counter()
session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                                region_name="eu-west-1")
services = ["s3", "ec2", "dynamodb", "sqs", "sns", "lambda", "iam", "sts", "cloudwatch", "kms"]
clients = [session.client(name) for name in services]
t2 = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kb = {k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")}
print(json.dumps({"import": t1 - t0, "clients": t2 - t1, "thread_cpu": time.thread_time(),
                  "cpu": time.process_time(), **kb}))
"""


def boto3_bench(args):
    venv = args.venv or next((p for p in sorted(VENVS.glob("real-packages-*"))
                              if p.is_dir()), None)
    if venv is None:
        sys.exit("no venv with boto3: pass --venv, or run tests/e2e/test_real_packages.py once")
    app_bin = args.app_bin or BUILD / "bench" / "real.bin"
    if not args.app_bin:
        pack(venv, app_bin, "djproj.asgi:application")
    runs = {"app.bin": [], "venv": []}
    argv = {"app.bin": [str(app_bin.resolve()), "python", "-c", BOTO3],
            "venv": [str(venv / "bin" / "python"), "-c", BOTO3]}
    for r in range(args.rounds + 1):
        for kind in (("app.bin", "venv") if r % 2 else ("venv", "app.bin")):
            out = subprocess.run(argv[kind], capture_output=True, text=True, check=True, cwd="/")
            if r:  # round 0 warms the page cache
                runs[kind].append(json.loads(out.stdout))

    def med(kind, key):
        return statistics.median(x[key] for x in runs[kind])

    keys = ("import", "clients", "thread_cpu", "cpu", "VmRSS", "VmHWM", "RssAnon", "RssFile",
            "RssShmem")
    table = {kind: {k: med(kind, k) for k in keys} for kind in runs}
    if args.markdown:
        print("| python | import boto3 ms | 10 clients ms | main thread CPU ms | process CPU ms "
              "| VmRSS MiB | VmHWM MiB | anon | file | shmem |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, t in table.items():
        row = (*(f"{t[k] * 1e3:.0f}" for k in keys[:4]), *(f"{t[k] / 1024:.1f}" for k in keys[4:]))
        if args.markdown:
            print(f"| {kind} | " + " | ".join(row) + " |")
        else:
            print(f"{kind:8} import {row[0]:>5} ms  clients {row[1]:>5} ms  CPU main thread "
                  f"{row[2]:>5} ms, process {row[3]:>5} ms  VmRSS {row[4]:>6} MiB  "
                  f"VmHWM {row[5]:>6} MiB  (anon {row[6]}, file {row[7]}, shmem {row[8]})")
    a, v = table["app.bin"], table["venv"]
    print(f"app.bin/venv: import {a['import'] / v['import']:.2f}x, clients "
          f"{a['clients'] / v['clients']:.2f}x, main thread CPU "
          f"{a['thread_cpu'] / v['thread_cpu']:.2f}x, process CPU {a['cpu'] / v['cpu']:.2f}x, "
          f"VmRSS {a['VmRSS'] / v['VmRSS']:.2f}x, VmHWM {a['VmHWM'] / v['VmHWM']:.2f}x "
          f"(median of {args.rounds} rounds, alternating, one run)")


def pack(venv, output, app):
    host = BUILD / "appbin-host"
    pack_cmd = BUILD / "appbin-pack"
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(pack_cmd), "--venv", str(venv), "--app", app, "--host", str(host), "-o",
                    str(output), "--quiet"], check=True)
    return output


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app-bin", type=Path)
    ap.add_argument("--venv", type=Path)
    ap.add_argument("--packages", default="certifi,pydantic,fastapi,starlette")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--boto3", action="store_true",
                    help="boto3 client creation and memory, app.bin against the venv")
    args = ap.parse_args()
    if args.boto3:
        boto3_bench(args)
        return
    venv = args.venv or next((p for p in sorted(VENVS.glob("fastapi-*"))
                              if p.is_dir()), None)
    if venv is None:
        sys.exit("no venv: pass --venv, or run the end-to-end tests once to make the test venvs")
    app_bin = args.app_bin or pack(venv, BUILD / "bench" / "archfs.bin", "appbin_testpkg.web:app")
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

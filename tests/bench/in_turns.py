"""Wall-clock time of commands run in turns: run i of every command, then
run i + 1 of every command, so that a shared machine's slow minutes weigh
on all of them alike (hyperfine runs one command's runs back to back).

Usage: in_turns.py [--runs N] [--warmup N] [--json FILE] NAME=COMMAND...
COMMAND is split as a shell would (shlex), run without a shell, its output
discarded; a run that fails stops the script with its exit status. Prints a
markdown table (median, mean, min in ms); --json writes {"times_ms": {NAME:
[ms, ...]}}.
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be at least 1 and --warmup at least 0")
    named = []
    for spec in args.commands:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command.strip():
            ap.error(f"{spec!r}: expected NAME=COMMAND")
        named.append((name, shlex.split(command)))
    times = {name: [] for name, _ in named}
    for i in range(args.warmup + args.runs):
        for name, argv in named:
            start = time.perf_counter()
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            elapsed = (time.perf_counter() - start) * 1000
            if done.returncode != 0:
                sys.exit(f"in_turns.py: {name} exited with status {done.returncode}: "
                         f"{done.stderr.decode(errors='replace').strip()[-500:]}")
            if i >= args.warmup:
                times[name].append(elapsed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"times_ms": times}, f)
    print("| command | median (ms) | mean (ms) | min (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.1f} | {statistics.mean(t):.1f} | {min(t):.1f} |")


if __name__ == "__main__":
    main()

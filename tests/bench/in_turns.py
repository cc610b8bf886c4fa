"""Wall-clock time of commands run in turns: run i of every command, then
run i + 1 of every command, so that a shared machine's slow minutes weigh
on all of them alike (hyperfine runs one command's runs back to back).

Usage: in_turns.py [--runs N] [--warmup N] [--json FILE] NAME=COMMAND...
COMMAND is split as a shell would (shlex), run without a shell, its output
discarded; a run that fails stops the script with its exit status. Prints a
markdown table (median, mean, min in ms); --json writes {"times_ms": {NAME:
[ms, ...]}}. --ratio NAME/BASE (repeatable) also prints the ratio of the two
medians with its 95% interval (median_ratio_interval).
"""

import argparse
import json
import random
import shlex
import statistics
import subprocess
import sys
import time


def median_ratio_interval(times, base, resamples=2000, seed=12):
    """median(times) / median(base), runs paired by round (run i of both
    came from the same minute of the machine), and the 2.5th and 97.5th
    percentiles of that ratio over `resamples` rounds drawn with replacement
    (a paired bootstrap; seeded, so the same data give the same interval)."""
    if len(times) != len(base) or not times:
        raise ValueError("median_ratio_interval: runs of both commands, in turns")
    ratio = statistics.median(times) / statistics.median(base)
    draw = random.Random(seed)
    n = len(times)
    ratios = []
    for _ in range(resamples):
        rounds = [draw.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(times[i] for i in rounds)
                      / statistics.median(base[i] for i in rounds))
    ratios.sort()
    return ratio, ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def format_interval(times, base):
    ratio, low, high = median_ratio_interval(times, base)
    return f"{ratio:.2f} ({low:.2f}-{high:.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--ratio", action="append", default=[], metavar="NAME/BASE")
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
    names = [name for name, _ in named]
    ratios = []
    for spec in args.ratio:
        name, sep, base = spec.rpartition("/")
        if not sep or name not in names or base not in names:
            ap.error(f"--ratio {spec!r}: expected NAME/BASE, two of the commands' names")
        ratios.append((name, base))
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
    for name, base in ratios:
        print(f"\n{name} / {base}: {format_interval(times[name], times[base])} "
              "(ratio of medians, 95% interval)")


if __name__ == "__main__":
    main()

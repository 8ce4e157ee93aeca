"""Summarise a scripts/bench_before_after.sh window: the median of every figure
`fedpace bench` printed, before and after, and their ratio.

    python3 scripts/bench_compare.py OUTDIR [--write docs/benchmarks.md]

With --write, the table replaces the `bench-before-after` block of that file
(scripts/docs_block.py). Figures only one side printed (a workload the other build does
not have) are listed as such. Ratios are after ÷ before; for times and memory lower is
better, for rates higher.
"""

import argparse
import glob
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docs_block import write_block  # noqa: E402

LINE = re.compile(r"^\s+(.*?)\s{2,}([\d.]+)\s*(\S+)(.*)$")
THROUGHPUT = re.compile(
    r"^\s+(bench-\w+)\s+(\d+) threads?\s+([\d.]+) client-epochs/s.*?([\d.]+) per CPU-second"
)
ROUND = re.compile(r"^\s+examples/shakespeare.toml round\s+([\d.]+) s wall, ([\d.]+) s process CPU")
HIGHER_BETTER = ("/s", "per second", "rate", "client-epochs", "scaling")


def figures(path):
    """{(section, label, unit): value} of one `fedpace bench` output."""
    out, section = {}, "header"
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if not line.startswith(" "):
                section = line.split(" (")[0].split(":")[0]
                m = re.search(r"([\d.]+) GFLOP/s on 1 thread", line)
                if m:
                    out[("header", "sgemm 512³ 1 thread", "GFLOP/s")] = float(m.group(1))
                continue
            line = line.split("[ref")[0]
            m = THROUGHPUT.match(line)
            if m:
                w, t, rate, cpu = m.groups()
                out[(section, f"{w} {t} thread(s)", "client-epochs/s")] = float(rate)
                out[(section, f"{w} {t} thread(s)", "client-epochs per CPU-second")] = float(cpu)
                continue
            m = ROUND.match(line)
            if m:
                out[(section, "example round", "s wall")] = float(m.group(1))
                out[(section, "example round", "s process CPU")] = float(m.group(2))
                continue
            m = re.match(r"^\s+(bench-\w+) scaling 1 → 2 threads: ([\d.]+)×", line)
            if m:
                out[(section, f"{m.group(1)} scaling 1 → 2 threads", "×")] = float(m.group(2))
                continue
            m = LINE.match(line)
            if not m:
                continue
            label, value, unit, rest = m.groups()
            label = label.strip()
            if unit.startswith("("):
                unit = ""
            out[(section, label, unit + (" wall" if "wall" in rest[:8] else ""))] = float(value)
            cpu = re.search(r"([\d.]+) ms thread CPU", rest)
            if cpu:
                out[(section, label, "ms thread CPU")] = float(cpu.group(1))
            cpu = re.search(r"([\d.]+) by CPU", rest)
            if cpu:
                out[(section, label, "GFLOP/s by CPU")] = float(cpu.group(1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--write", help="Markdown file whose bench-before-after block to replace")
    a = ap.parse_args()
    runs = {}
    for side in ("before", "after"):
        runs[side] = [figures(p) for p in sorted(glob.glob(os.path.join(a.dir, f"{side}-*.txt")))]
        if not runs[side]:
            sys.exit(f"{a.dir}: no {side}-*.txt (run scripts/bench_before_after.sh first)")
    log = [l.split() for l in open(os.path.join(a.dir, "runlog.txt"))]
    loads = [float(l[1]) for l in log]
    lines = [
        f"Window {log[0][0]} – {log[-1][0]} (UTC), 1-minute load average {min(loads):.2f}–{max(loads):.2f} "
        f"on {os.cpu_count()} cores; {len(runs['before'])} runs of each side, alternating; medians.",
        "",
        "| workload | figure | before | after | after ÷ before |",
        "|---|---|---|---|---|",
    ]
    keys = []
    for r in runs["before"] + runs["after"]:
        keys += [k for k in r if k not in keys]
    for k in keys:
        med = {}
        for side in ("before", "after"):
            vals = [r[k] for r in runs[side] if k in r]
            med[side] = statistics.median(vals) if vals else None
        section, label, unit = k
        if med["before"] is None or med["after"] is None:
            only = "after" if med["before"] is None else "before"
            lines.append(f"| {section} | {label}{f' ({unit})' if unit else ''} | {med['before'] or '—'} | {med['after'] or '—'} | {only} only |")
            continue
        ratio = med["after"] / med["before"] if med["before"] else float("nan")
        better = any(h in unit or h in label for h in HIGHER_BETTER)
        lines.append(
            f"| {section} | {label}{f' ({unit})' if unit else ''} | {med['before']:g} | {med['after']:g} | {ratio:.2f}"
            f" ({'higher' if better else 'lower'} is better) |"
        )
    text = "\n".join(lines)
    print(text)
    if a.write:
        write_block(a.write, "bench-before-after", text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Summarise a window of scripts/peers/final_window.sh: every ratio of issue 16 (docs/
benchmarks.md, "Targets") in one dated table, then the detailed tables of its parts.

    python3 scripts/peers/final_table.py OUTDIR [--write docs/benchmarks.md] [--note TEXT]

OUTDIR holds `epoch/` (scripts/peers/epoch_window.sh), `whole/` (scripts/peers/run.sh
with PARTS=whole) and `throughput-<rep>.txt` (`fedpace bench --workload throughput`) and
`runlog.txt` (UTC time and /proc/loadavg before each part). With --write, the text
replaces the `final-window` block of that file (scripts/docs_block.py). Standard library
only.
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from docs_block import write_block  # noqa: E402
from epoch_table import summary as epoch_summary  # noqa: E402

NUM = r"([0-9]+(?:\.[0-9]+)?)"


def jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def med(v):
    return statistics.median(v) if v else float("nan")


def verdict(values, target):
    """'yes' / 'no' for each measure in `values` (name → ratio) against `target`."""
    ok = [name for name, v in values.items() if v == v and v >= target]
    if len(ok) == len(values):
        return "yes"
    if ok:
        return "by " + " and ".join(ok) + " only"
    return "**no**"


def whole_ratios(d):
    """Per workload: Flower ÷ fedpace by wall and by CPU, per repetition (run.sh's
    monitor.jsonl)."""
    mon = jsonl(os.path.join(d, "monitor.jsonl"))

    def cpu(m):
        tv = m.get("time_v", {})
        try:
            timed = float(tv.get("User time", 0)) + float(tv.get("System time", 0))
        except ValueError:
            timed = 0.0
        return max(m.get("tree_cpu_s", 0.0), timed)

    out = {}
    for w in ("lr", "mlp", "cnn"):
        runs = {}
        for m in mon:
            parts = m["label"].split()
            if len(parts) == 3 and parts[2] == w and m.get("rc", 0) == 0:
                runs.setdefault(parts[1], {})[parts[0]] = (m["wall_s"], cpu(m))
        f, fl = runs.get("fedpace", {}), runs.get("flower", {})
        reps = sorted(set(f) & set(fl))
        if reps:
            out[w] = dict(
                wall=[fl[r][0] / f[r][0] for r in reps],
                cpu=[fl[r][1] / f[r][1] for r in reps],
                fedpace=[f[r][0] for r in reps],
                flower=[fl[r][0] for r in reps],
            )
    return out


def throughput(d):
    """Per workload (bench-lr, bench-mlp): client-epochs/s per core on 1 and 2 threads, the
    scaling by wall and per CPU-second, each repetition."""
    out = {}
    line = re.compile(r"^\s+(bench-\w+)\s+(\d) threads?\s+" + NUM + r" client-epochs/s = \s*" + NUM
                      + r" per core by wall, \s*" + NUM + " per CPU-second", re.M)
    scale = re.compile(r"^\s+(bench-\w+)\s+scaling 1 → 2 threads: " + NUM + r"× by wall.*?, " + NUM
                       + "× per CPU-second", re.M)
    for path in sorted(glob.glob(os.path.join(d, "throughput-*.txt"))):
        text = open(path).read()
        for m in line.finditer(text):
            w = out.setdefault(m.group(1), {})
            w.setdefault(f"per_core_{m.group(2)}", []).append(float(m.group(4)))
            w.setdefault(f"per_cpu_{m.group(2)}", []).append(float(m.group(5)))
        for m in scale.finditer(text):
            w = out.setdefault(m.group(1), {})
            w.setdefault("scaling_wall", []).append(float(m.group(2)))
            w.setdefault("scaling_cpu", []).append(float(m.group(3)))
    return out


def each(v, fmt="{:.2f}"):
    return ", ".join(fmt.format(x) for x in v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--write", help="Markdown file whose final-window block to replace")
    ap.add_argument("--block", default="final-window")
    ap.add_argument("--note", default="", help="a sentence put first (which build, for instance)")
    a = ap.parse_args()
    d = a.dir
    log = [line.split() for line in open(os.path.join(d, "runlog.txt"))]
    loads = [float(x[1]) for x in log]
    epoch_dir, whole_dir = os.path.join(d, "epoch"), os.path.join(d, "whole")
    ep_text, ep = epoch_summary(epoch_dir) if os.path.exists(os.path.join(epoch_dir, "torch.jsonl")) else ("", {})
    wr = whole_ratios(whole_dir)
    tp = throughput(d)
    env = {}
    if os.path.exists(os.path.join(whole_dir, "env.json")):
        env = json.load(open(os.path.join(whole_dir, "env.json")))
    p = []
    p.append(
        (a.note + " " if a.note else "")
        + f"Window {log[0][0]} – {log[-1][0]} (UTC), `scripts/peers/final_window.sh`; 1-minute load "
        f"average {min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} cores before the parts "
        "(each part's own table below gives the load before every run). Ratios are the peer's "
        "time ÷ fedpace's (above 1: fedpace faster), medians over the repetitions, each "
        "repetition's in brackets; \"by CPU\" divides the CPU time each side used (thread CPU "
        "for one epoch or step, process or process-tree CPU for a round or a whole run), which "
        "the machine's other load changes less than wall time."
    )
    if env:
        p.append("")
        p.append(
            f"Machine: {env.get('cores')} cores ({env.get('cpu')}), {env.get('mem_gib')} GiB. "
            f"fedpace at commit {env.get('fedpace_commit')}"
            f"{' with uncommitted changes' if env.get('fedpace_dirty') else ''}; torch {env.get('torch')}, "
            f"flwr {env.get('flwr')}, ray {env.get('ray')}, numpy {env.get('numpy')}."
        )
    p += ["", "| issue 16 target | measured by wall | measured by CPU | met |", "|---|---|---|---|"]

    def epoch_row(key, label, target):
        r = ep.get(key)
        if not r:
            p.append(f"| {label} | not measured | not measured | – |")
            return
        p.append(
            f"| {label} | {r['by_wall']:.2f}× ({each(r['per_rep_wall'])}) | {r['by_cpu']:.2f}× "
            f"({each(r['per_rep_cpu'])}) | {verdict({'wall': r['by_wall'], 'CPU': r['by_cpu']}, target)} |"
        )

    epoch_row("lr", "W-LR client epoch ≥ 10× PyTorch, 1 thread", 10)
    epoch_row("mlp", "W-MLP client epoch ≥ 2× PyTorch, 1 thread", 2)
    epoch_row("cnn", "W-CNN client epoch ≥ 2× PyTorch, 1 thread", 2)
    shares = ep.get("sgemm_share")
    if shares:
        w, c = med([s[0] for s in shares]), med([s[1] for s in shares])
        p.append(
            f"| W-CNN epoch ≥ 85 % of the in-run 1-thread sgemm rate | {w:.0f} % "
            f"({each([s[0] for s in shares], '{} %')}) | {c:.0f} % ({each([s[1] for s in shares], '{} %')}) "
            f"| {verdict({'wall': w, 'CPU': c}, 85)} |"
        )
    else:
        p.append("| W-CNN epoch ≥ 85 % of the in-run 1-thread sgemm rate | not measured | not measured | – |")
    epoch_row("lstm", "char-LSTM training step ≥ 1.5× `nn.LSTM`, 1 thread", 1.5)
    epoch_row("round", "Shakespeare FedAvg round ≥ 1.5× a PyTorch FedAvg round (10 clients × 20 steps, 1 thread)", 1.5)
    for w, name, target in (("mlp", "W-MLP", 30), ("cnn", "W-CNN", 6), ("lr", "W-LR", 300)):
        r = wr.get(w)
        label = f"{name} whole run ≥ {target}× Flower (process start to exit)"
        if not r:
            if w != "lr":
                p.append(f"| {label} | not measured | not measured | – |")
            continue
        bw, bc = med(r["wall"]), med(r["cpu"])
        p.append(
            f"| {label} | {bw:.1f}× ({each(r['wall'], '{:.1f}')}; fedpace {med(r['fedpace']):.2f} s, Flower "
            f"{med(r['flower']):.1f} s) | {bc:.1f}× ({each(r['cpu'], '{:.1f}')}) "
            f"| {verdict({'wall': bw, 'CPU': bc}, target)} |"
        )
    for w, name in (("bench-lr", "W-LR"), ("bench-mlp", "W-MLP")):
        r = tp.get(w)
        if not r:
            p.append(f"| {name} throughput at 10,000 registered clients, scaling 1 → 2 threads ≥ 1.9× "
                     "| not measured | not measured | – |")
            continue
        sw, sc = med(r.get("scaling_wall", [])), med(r.get("scaling_cpu", []))
        p.append(
            f"| {name} throughput at 10,000 registered clients: "
            f"{med(r.get('per_core_1', [])):.0f} client-epochs/s per core on 1 thread, "
            f"{med(r.get('per_core_2', [])):.0f} on 2; scaling 1 → 2 threads ≥ 1.9× "
            f"| {sw:.2f}× ({each(r.get('scaling_wall', []))}) "
            f"| {sc:.2f}× per CPU-second ({each(r.get('scaling_cpu', []))}; 1.0 = parallel costs nothing) "
            f"| {verdict({'wall': sw}, 1.9)} |"
        )
    p.append("")
    p.append(
        "The scaling target is a wall-clock one: it needs both cores idle. Per CPU-second the "
        "scaling says what running clients in parallel costs, whatever the load."
    )
    if ep_text:
        p += ["", "One client epoch, char-LSTM step and Shakespeare round (`scripts/peers/epoch_window.sh`):", "", ep_text]
    if os.path.exists(os.path.join(whole_dir, "env.json")):
        whole = subprocess.run([sys.executable, os.path.join(HERE, "table.py"), whole_dir],
                               capture_output=True, text=True).stdout
        # table.py's heading is a section title; here it is a paragraph.
        whole = re.sub(r"^### (.*)\n", r"Whole runs (`scripts/peers/run.sh`, PARTS=whole): \1.\n", whole)
        p += ["", whole.strip()]
    tfiles = sorted(glob.glob(os.path.join(d, "throughput-*.txt")))
    if tfiles:
        p += ["", "`fedpace bench --workload throughput`, last repetition:", "", "```"]
        text = open(tfiles[-1]).read()
        start = text.find("throughput:")
        p += [text[start:].strip() if start >= 0 else text.strip(), "```"]
    text = "\n".join(p)
    print(text)
    if a.write:
        write_block(a.write, a.block, text)


if __name__ == "__main__":
    main()

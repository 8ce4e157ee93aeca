#!/usr/bin/env python3
"""Summarise a window of scripts/peers/epoch_window.sh: per model, the fedpace and
PyTorch medians over the repetitions (wall and thread CPU), their ratios, each
repetition's ratio, and the load averages of the window.

    python3 scripts/peers/epoch_table.py OUTDIR [--write docs/benchmarks.md]

With --write, the table replaces the `epoch-window` block of that file (another with
--block NAME; scripts/docs_block.py); --note puts a sentence before it.

fedpace figures are read from `fedpace bench` output (the "local epoch, 1 thr." line for
lr/mlp/cnn, "local step, 1 thr." and the Shakespeare round for lstm); PyTorch figures
from torch.jsonl (scripts/peers/torch_epoch.py).
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from docs_block import write_block  # noqa: E402

NUM = r"([0-9]+(?:\.[0-9]+)?)"


def fedpace(path):
    """(wall s, cpu s) of the local epoch/step; for lstm also the round (wall, cpu)."""
    text = open(path).read()
    m = re.search(r"local (?:epoch|step), 1 thr\.\s+" + NUM + r" ms\s+wall, " + NUM + " ms", text)
    out = {"unit": (float(m.group(1)) / 1e3, float(m.group(2)) / 1e3)} if m else {}
    m = re.search(r"round\s+" + NUM + r" s wall, " + NUM + r" s process CPU", text)
    if m:
        out["round"] = (float(m.group(1)), float(m.group(2)))
    m = re.search(r"(\d+) clients in parallel", text)
    if m:
        out["in_parallel"] = int(m.group(1))
    m = re.search(r"CNN epoch rate .*?= (\d+)% / (\d+)% of the 1-thread sgemm", text)
    if m:
        out["sgemm_share"] = (int(m.group(1)), int(m.group(2)))
    m = re.search(r"sgemm 512×512.*?: " + NUM + " GFLOP/s on 1 thread", text)
    if m:
        out["sgemm"] = float(m.group(1))
    return out


def summary(d, note=""):
    """(Markdown text, rows): rows maps lr/mlp/cnn/lstm/round to a dict of the medians
    (seconds), the ratios by wall and by CPU and the per-repetition CPU ratios; "sgemm_share"
    to the per-repetition (wall %, CPU %) of the W-CNN epoch."""
    rows = {}
    torch = [json.loads(line) for line in open(os.path.join(d, "torch.jsonl"))]
    log = [line.split() for line in open(os.path.join(d, "runlog.txt"))]
    loads = [float(x[1]) for x in log]
    lines = [
        (note + " " if note else "")
        + f"Window {log[0][0]} – {log[-1][0]} (UTC), 1-minute load average {min(loads):.2f}–{max(loads):.2f} "
        f"on {os.cpu_count()} cores; medians over the repetitions; ratio = PyTorch ÷ fedpace "
        "(above 1: fedpace faster). Thread CPU is the CPU time of the timing thread "
        "(process CPU for the round), which the machine's other load changes less than wall time.",
        "",
        "| workload | fedpace wall | fedpace CPU | PyTorch wall | PyTorch CPU | ratio by wall | ratio by CPU | ratio by CPU per repetition | reps (fedpace / PyTorch) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "lr": "W-LR client epoch",
        "mlp": "W-MLP client epoch",
        "cnn": "W-CNN client epoch",
        "lstm": "char-LSTM training step",
    }
    for model, tmodel in [("lr", "lr"), ("mlp", "mlp"), ("cnn", "cnn"), ("lstm", "lstm"), ("lstm", "round")]:
        files = sorted(glob.glob(os.path.join(d, f"fedpace-{model}-*.txt")))
        key = "round" if tmodel == "round" else "unit"
        fp = [f[key] for f in map(fedpace, files) if key in f]
        tp = [
            (t["median_s"], t["median_thread_cpu_s"])
            for t in torch
            if t["model"] == tmodel and t["threads"] == 1
        ]
        if not fp or not tp:
            continue
        fw, fc = statistics.median(x[0] for x in fp), statistics.median(x[1] for x in fp)
        tw, tc = statistics.median(x[0] for x in tp), statistics.median(x[1] for x in tp)
        per_rep = [t[1] / f[1] for f, t in zip(fp, tp)]
        scale, unit = (1, "s") if tmodel == "round" else (1e3, "ms")
        if tmodel == "round":
            k = sorted({f.get("in_parallel") for f in map(fedpace, files)} - {None})
            at_once = "/".join(map(str, k)) or "?"
            names["round"] = (
                f"Shakespeare FedAvg round (10 clients × 20 steps; fedpace {at_once} client(s) at a time, "
                "PyTorch one after another on one thread)"
            )
        rows[tmodel] = dict(fedpace_wall=fw, fedpace_cpu=fc, torch_wall=tw, torch_cpu=tc,
                            by_wall=tw / fw, by_cpu=tc / fc, per_rep_cpu=per_rep,
                            per_rep_wall=[t[0] / f[0] for f, t in zip(fp, tp)])
        lines.append(
            f"| {names[tmodel]} | {fw*scale:.2f} {unit} | {fc*scale:.2f} {unit} | {tw*scale:.2f} {unit} | "
            f"{tc*scale:.2f} {unit} | {tw/fw:.2f}× | {tc/fc:.2f}× | {', '.join(f'{r:.2f}' for r in per_rep)} | "
            f"{len(fp)} / {len(tp)} |"
        )
    lines.append("")
    cnn = [fedpace(f) for f in sorted(glob.glob(os.path.join(d, "fedpace-cnn-*.txt")))]
    shares = [f["sgemm_share"] for f in cnn if "sgemm_share" in f]
    if shares:
        rows["sgemm_share"] = shares
        lines.append(
            "W-CNN epoch rate as a share of the 1-thread sgemm rate measured in the same run "
            f"(direct-convolution GFLOP; by wall / by CPU, each repetition): "
            + ", ".join(f"{w} % / {c} %" for w, c in shares)
            + "."
        )
    sgemm = [f["sgemm"] for f in map(fedpace, glob.glob(os.path.join(d, "fedpace-*-*.txt"))) if "sgemm" in f]
    if sgemm:
        lines.append(f"In-run sgemm 512³ on 1 thread: {min(sgemm):.1f}–{max(sgemm):.1f} GFLOP/s.")
    versions = sorted({t.get("torch", "?") for t in torch})
    lines.append(f"PyTorch {', '.join(versions)}; run log: UTC time and /proc/loadavg before every run.")
    return "\n".join(lines), rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--write", help="Markdown file whose block to replace")
    ap.add_argument("--block", default="epoch-window", help="name of that block (default epoch-window)")
    ap.add_argument("--note", default="", help="a sentence put before the table (which build, for instance)")
    a = ap.parse_args()
    text, _ = summary(a.dir, a.note)
    print(text)
    if a.write:
        write_block(a.write, a.block, text)


if __name__ == "__main__":
    main()

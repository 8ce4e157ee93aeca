#!/usr/bin/env python3
"""Summarise a window of scripts/peers/epoch_window.sh: per model, the fedpace and
PyTorch medians over the repetitions (wall and thread CPU), their ratios, each
repetition's ratio, and the load averages of the window.

    python3 scripts/peers/epoch_table.py OUTDIR

fedpace figures are read from `fedpace bench` output (the "local epoch, 1 thr." line for
lr/mlp/cnn, "local step, 1 thr." and the Shakespeare round for lstm); PyTorch figures
from torch.jsonl (scripts/peers/torch_epoch.py).
"""

import glob
import json
import os
import re
import statistics
import sys

NUM = r"([0-9]+(?:\.[0-9]+)?)"


def fedpace(path):
    """(wall s, cpu s) of the local epoch/step; for lstm also the round (wall, cpu)."""
    text = open(path).read()
    m = re.search(r"local (?:epoch|step), 1 thr\.\s+" + NUM + r" ms\s+wall, " + NUM + " ms", text)
    out = {"unit": (float(m.group(1)) / 1e3, float(m.group(2)) / 1e3)} if m else {}
    m = re.search(r"round\s+" + NUM + r" s wall, " + NUM + r" s process CPU", text)
    if m:
        out["round"] = (float(m.group(1)), float(m.group(2)))
    m = re.search(r"CNN epoch rate .*?= (\d+)% / (\d+)% of the 1-thread sgemm", text)
    if m:
        out["sgemm_share"] = (int(m.group(1)), int(m.group(2)))
    m = re.search(r"sgemm 512×512.*?: " + NUM + " GFLOP/s on 1 thread", text)
    if m:
        out["sgemm"] = float(m.group(1))
    return out


def main():
    d = sys.argv[1]
    torch = [json.loads(line) for line in open(os.path.join(d, "torch.jsonl"))]
    loads = [float(line.split()[1]) for line in open(os.path.join(d, "runlog.txt"))]
    times = [line.split()[0] for line in open(os.path.join(d, "runlog.txt"))]
    print(f"window {times[0]} – {times[-1]}, 1-min load {min(loads)}–{max(loads)}")
    rows = []
    for model, tmodel in [("lr", "lr"), ("mlp", "mlp"), ("cnn", "cnn"), ("lstm", "lstm"), ("lstm", "round")]:
        files = sorted(glob.glob(os.path.join(d, f"fedpace-{model}-*.txt")))
        if not files:
            continue
        fp = [fedpace(f) for f in files]
        key = "round" if tmodel == "round" else "unit"
        fp = [f[key] for f in fp if key in f]
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
        rows.append(
            f"{tmodel:<6} fedpace {fw*scale:8.2f} {unit} wall, {fc*scale:8.2f} {unit} CPU | "
            f"PyTorch {tw*scale:8.2f} wall, {tc*scale:8.2f} CPU | ratio {tw/fw:5.2f}× wall, "
            f"{tc/fc:5.2f}× CPU (per rep by CPU {', '.join(f'{r:.2f}' for r in per_rep)}; "
            f"{len(fp)} / {len(tp)} reps)"
        )
    print("\n".join(rows))
    two = [t["median_s"] for t in torch if t["model"] == "round" and t["threads"] == 2]
    fp_round = [
        fedpace(f)["round"][0]
        for f in sorted(glob.glob(os.path.join(d, "fedpace-lstm-*.txt")))
        if "round" in fedpace(f)
    ]
    if two and fp_round:
        print(
            f"round by wall, fedpace (clients in parallel on every core) {statistics.median(fp_round):.2f} s"
            f" vs PyTorch 2 threads {statistics.median(two):.2f} s = {statistics.median(two) / statistics.median(fp_round):.2f}×"
        )
    shares = [fedpace(f).get("sgemm_share") for f in sorted(glob.glob(os.path.join(d, "fedpace-cnn-*.txt")))]
    sgemm = [fedpace(f).get("sgemm") for f in sorted(glob.glob(os.path.join(d, "fedpace-*-*.txt")))]
    if any(shares):
        print(f"CNN epoch share of the in-run 1-thread sgemm rate (wall / CPU): {shares}")
    print(f"in-run sgemm 512³, 1 thread: {min(s for s in sgemm if s)}–{max(s for s in sgemm if s)} GFLOP/s")


if __name__ == "__main__":
    main()

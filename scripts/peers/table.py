#!/usr/bin/env python3
"""Writes the dated markdown table of a scripts/peers/run.sh output directory.

    python3 scripts/peers/table.py OUT_DIR

Medians over repetitions with their range; ratios are the peer's time divided by
fedpace's in the same repetition (interleaved neighbours), listed per repetition, with
their median. Standard library only.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def fmt(x: float, unit: str = "") -> str:
    if x != x:
        return "–"
    if x >= 100:
        s = f"{x:.0f}"
    elif x >= 10:
        s = f"{x:.1f}"
    elif x >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3g}"
    return s + unit


def med_range(v: list[float], unit: str = "") -> str:
    if not v:
        return "–"
    if len(v) == 1:
        return fmt(v[0], unit)
    return f"**{fmt(statistics.median(v), unit)}** ({fmt(min(v))}–{fmt(max(v), unit)})"


def ratios(num: dict[int, float], den: dict[int, float]) -> str:
    reps = sorted(set(num) & set(den))
    r = [num[i] / den[i] for i in reps if den[i] > 0]
    if not r:
        return "–"
    each = ", ".join(fmt(x, "×") for x in r)
    return f"**{fmt(statistics.median(r), '×')}** ({each})"


def load_range(runlog: list[dict], pred) -> str:
    v = [e["loadavg"] for e in runlog if pred(e["label"])]
    if not v:
        return "–"
    return f"{min(v):.2f}–{max(v):.2f}"


def rep_of(label: str) -> int:
    return int(label.split()[0][1:])


def main() -> None:
    out = Path(sys.argv[1])
    env = json.loads((out / "env.json").read_text())
    runlog = lines(out / "runlog.jsonl")
    mon = lines(out / "monitor.jsonl")
    res = lines(out / "results.jsonl")
    reps = sorted({rep_of(e["label"]) for e in runlog})
    first, last = (runlog[0]["utc"], runlog[-1]["utc"]) if runlog else ("?", "?")
    loads = [e["loadavg"] for e in runlog]
    other = [m["other_load_cores"] for m in mon]
    p = print
    p(f"### Side by side, {env['started'][:10]}, {first}–{last} UTC\n")
    p(f"Machine: {env['cores']} cores ({env['cpu']}), {env['mem_gib']} GiB, Linux {env['kernel']}. "
      f"{env['fedpace']} ({env.get('fedpace_bin', 'target/release/fedpace')}), tree at commit "
      f"{env['fedpace_commit']}{' with uncommitted changes' if env['fedpace_dirty'] else ''}; "
      f"Python {env['python']}, "
      f"torch {env['torch']} (CPU only), flwr {env['flwr']}, ray {env['ray']}, numpy {env['numpy']}. "
      f"{len(reps)} interleaved repetition{'s' if len(reps) != 1 else ''} (`scripts/peers/run.sh`).")
    if loads:
        p(f"1-minute load average before each run: {min(loads):.2f}–{max(loads):.2f} "
          f"(median {statistics.median(loads):.2f}); CPU used by other processes during the "
          f"timed whole-process runs: median {statistics.median(other) if other else float('nan'):.2f} "
          f"cores, max {max(other) if other else float('nan'):.2f}.")
    p("Medians over repetitions, **bold**, with their range; ratios are the peer's time ÷ "
      "fedpace's in the same repetition, median and each repetition.\n")

    def by(system: str, w: str, key) -> dict[int, float]:
        return {rep_of(m["label"]): key(m) for m in mon
                if m["label"].split()[1:] == [system, w] and m.get("rc", 0) == 0}

    wall = lambda m: m["wall_s"]  # noqa: E731

    def cpu(m):
        """CPU seconds of the run: the sampled process tree, or /usr/bin/time's user + system
        time when that is larger (a run shorter than one 0.2 s sample)."""
        tv = m.get("time_v", {})
        try:
            timed = float(tv.get("User time", 0)) + float(tv.get("System time", 0))
        except ValueError:
            timed = 0.0
        return max(m.get("tree_cpu_s", 0.0), timed)

    rss = lambda m: int(m["time_v"].get("Maximum resident set size", "0")) / 1024  # noqa: E731
    pss = lambda m: m["peak_tree_pss_mb"]  # noqa: E731
    if any(m["label"].split()[1] == "fedpace" for m in mon):
        p("Whole process, start to exit (fedpace: `fedpace run examples/bench-<w>.toml`, "
          "2 clients in parallel; Flower: `run_simulation`, 2 actors of 1 CPU, 1 torch thread "
          "each; PyTorch: the same clients one after another):\n")
        p("| workload | fedpace | Flower | PyTorch loop, 1 thread | PyTorch loop, 2 threads "
          "| Flower ÷ fedpace | PyTorch 1 thread ÷ fedpace | CPU time, median: fedpace / Flower / "
          "PyTorch 1 thread | CPU time ratios, median: Flower ÷ fedpace / PyTorch ÷ fedpace "
          "| peak memory, median: fedpace (RSS) / Flower (PSS, process tree) / PyTorch 1 thread "
          "(PSS) | load before |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        for w, name in (("lr", "W-LR"), ("mlp", "W-MLP"), ("cnn", "W-CNN")):
            f, fl, t1, t2 = (by(s, w, wall) for s in ("fedpace", "flower", "torch1", "torch2"))
            if not f:
                continue
            fc, flc, t1c = (by(s, w, cpu) for s in ("fedpace", "flower", "torch1"))
            cpus = " / ".join(fmt(statistics.median(list(d.values())), " s") if d else "–"
                              for d in (fc, flc, t1c))
            cratio = " / ".join(
                fmt(statistics.median([d[r] / fc[r] for r in d if r in fc and fc[r] > 0]), "×")
                if any(r in fc and fc[r] > 0 for r in d) else "–" for d in (flc, t1c))
            mem = " / ".join(
                fmt(statistics.median(list(d.values())), " MB") if d else "–"
                for d in (by("fedpace", w, rss), by("flower", w, pss), by("torch1", w, pss)))
            p(f"| {name} | {med_range(list(f.values()), ' s')} | {med_range(list(fl.values()), ' s')} "
              f"| {med_range(list(t1.values()), ' s')} | {med_range(list(t2.values()), ' s')} "
              f"| {ratios(fl, f)} | {ratios(t1, f)} | {cpus} | {cratio} | {mem} "
              f"| {load_range(runlog, lambda l: l.split()[2:] == [w] and l.split()[1] in ('fedpace', 'flower', 'torch1', 'torch2'))} |")
        p()

    pat = re.compile(r"local epoch, 1 thr\.\s+([\d.]+) ms\s+wall, ([\d.]+) ms thread CPU")
    epochs = [e for e in res if e.get("mode") == "epoch"]
    if epochs:
        p("One client epoch (600 samples, batch 32, SGD), 1 thread (fedpace: `fedpace bench "
          "--workload <m>`, client 0 through `local_train`, median of 7; PyTorch: the same step "
          "as above on pre-generated data, median of 10 after a warm-up epoch):\n")
        p("| model | fedpace, wall | fedpace, thread CPU | PyTorch, wall | PyTorch, CPU "
          "| PyTorch ÷ fedpace (wall) | PyTorch ÷ fedpace (CPU) | load before |")
        p("|---|---|---|---|---|---|---|---|")
        for m, name in (("lr", "logistic regression 60→10"), ("mlp", "MLP 784-200-200-10"),
                        ("cnn", "FedAvg CNN")):
            fw, fc = {}, {}
            for r in reps:
                log = out / "logs" / f"r{r}_fedpace-epoch_{m}.txt"
                hit = pat.search(log.read_text()) if log.exists() else None
                if hit:
                    fw[r], fc[r] = float(hit.group(1)), float(hit.group(2))
            t = {rep_of(e["label"]): e["median_ms"] for e in epochs if e["model"] == m}
            tc = {rep_of(e["label"]): e["cpu_median_ms"] for e in epochs
                  if e["model"] == m and "cpu_median_ms" in e}
            if not fw and not t:
                continue
            p(f"| {name} | {med_range(list(fw.values()), ' ms')} | {med_range(list(fc.values()), ' ms')} "
              f"| {med_range(list(t.values()), ' ms')} | {med_range(list(tc.values()), ' ms')} "
              f"| {ratios(t, fw)} | {ratios(tc, fc)} "
              f"| {load_range(runlog, lambda l: l.split()[1] in ('fedpace-epoch', 'torch-epoch') and l.split()[2] == m)} |")
        p()

    lstm = {rep_of(e["label"]): e["median_ms"] for e in res if e.get("mode") == "lstm"}
    lstm_cpu = {rep_of(e["label"]): e["cpu_median_ms"] for e in res
                if e.get("mode") == "lstm" and "cpu_median_ms" in e}
    short, long_ = by("fedpace-lstm", "10", wall), by("fedpace-lstm", "60", wall)
    cshort, clong = (by("fedpace-lstm", s, lambda m: m["tree_cpu_s"]) for s in ("10", "60"))
    step = {r: 1e3 * (long_[r] - short[r]) / 50 for r in set(short) & set(long_)}
    cstep = {r: 1e3 * (clong[r] - cshort[r]) / 50 for r in set(cshort) & set(clong)}
    if step or lstm:
        p("One training step of the LEAF char-LSTM (embedding 8, 2 × LSTM 256, 80 characters, "
          "batch 10), 1 thread (fedpace: (60-step run − 10-step run) ÷ 50 on Shakespeare, "
          "wall and process CPU; PyTorch `nn.LSTM`: median of 200 steps after 20 warm-up steps):\n")
        p("| model | fedpace, wall | fedpace, CPU | PyTorch, wall | PyTorch, CPU "
          "| PyTorch ÷ fedpace (wall) | PyTorch ÷ fedpace (CPU) | load before |")
        p("|---|---|---|---|---|---|---|---|")
        p(f"| char-LSTM step | {med_range(list(step.values()), ' ms')} | {med_range(list(cstep.values()), ' ms')} "
          f"| {med_range(list(lstm.values()), ' ms')} | {med_range(list(lstm_cpu.values()), ' ms')} "
          f"| {ratios(lstm, step)} | {ratios(lstm_cpu, cstep)} "
          f"| {load_range(runlog, lambda l: l.split()[1] in ('fedpace-lstm', 'torch-lstm'))} |")
        p()


if __name__ == "__main__":
    main()

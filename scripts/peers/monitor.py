#!/usr/bin/env python3
"""Run a command under /usr/bin/time -v and sample its whole process tree.

Used by scripts/peers/run.sh for every timed run (fedpace, Flower, the PyTorch loop), so
all three are measured the same way: whole process, start to exit.

    python3 monitor.py [--out=FILE] COMMAND [ARGS...]

Appends one JSON line to FILE (default monitor.jsonl) and prints it after "MONITOR ":
  label             $BENCH_LABEL, else the command
  wall_s            wall time of the command
  tree_cpu_s        CPU seconds of the command's process tree (Ray daemons included)
  other_load_cores  CPU used by everything else on the machine during the run, in cores
  loadavg_before    the 1-minute load average just before the start
  bg_load_before_cores, waited_for_quiet_s
                    other load when the run started, and how long it waited for the
                    machine to be quiet (at most $BENCH_MAX_WAIT seconds, default 180)
  peak_tree_rss_mb, peak_tree_pss_mb
                    max over 0.2 s samples of the tree's summed RSS / PSS
  time_v            selected fields of /usr/bin/time -v (its maximum RSS is that of the
                    largest single process, not of the tree)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()


def cpu_busy_total() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def meminfo_used_mb() -> float:
    d = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, val = line.split(":")
            d[k] = int(val.split()[0])
    return (d["MemTotal"] - d["MemAvailable"]) / 1024


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def children_map() -> dict[int, list[int]]:
    m: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
            ppid = int(s[s.rfind(")") + 2 :].split()[1])
            m.setdefault(ppid, []).append(int(pid))
        except OSError:
            pass
    return m


def tree(root: int) -> list[int]:
    m = children_map()
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(m.get(p, []))
    return out


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        v = s[s.rfind(")") + 2 :].split()
        return int(v[11]) + int(v[12])  # utime + stime of this process only
    except OSError:
        return None


def busy_cores(seconds: float = 1.0) -> float:
    b0, _ = cpu_busy_total()
    time.sleep(seconds)
    b1, _ = cpu_busy_total()
    return (b1 - b0) / HZ / seconds


def wait_for_quiet(thresh: float = 0.3) -> tuple[float, float]:
    """Waits until other load is below `thresh` cores, at most $BENCH_MAX_WAIT s."""
    max_wait = float(os.environ.get("BENCH_MAX_WAIT", "180"))
    t0 = time.perf_counter()
    while True:
        b = busy_cores(2.0)
        if b < thresh or time.perf_counter() - t0 > max_wait:
            return b, time.perf_counter() - t0


def rss_pss_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def measure(cmd: list[str], out: str, label: str | None = None) -> dict:
    """Runs `cmd` under /usr/bin/time -v, sampling its process tree every 0.2 s."""
    label = label or os.environ.get("BENCH_LABEL", " ".join(cmd))
    bg_before, waited = wait_for_quiet()
    load_before = loadavg()
    base_used = meminfo_used_mb()
    busy0, _ = cpu_busy_total()
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    proc = subprocess.Popen(["/usr/bin/time", "-v"] + cmd, stderr=subprocess.PIPE, text=True)
    peak = {"rss": 0, "pss": 0, "sys": 0.0, "nproc": 0}
    ticks: dict[int, int] = {}
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            pids = tree(proc.pid)
            r = p = 0
            for pid in pids:
                t = cpu_ticks(pid)
                if t is not None:
                    ticks[pid] = max(ticks.get(pid, 0), t)
                a, b = rss_pss_kb(pid)
                r += a
                p += b
            peak["rss"] = max(peak["rss"], r)
            peak["pss"] = max(peak["pss"], p)
            peak["nproc"] = max(peak["nproc"], len(pids))
            peak["sys"] = max(peak["sys"], meminfo_used_mb() - base_used)
            stop.wait(0.2)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    busy1, _ = cpu_busy_total()
    stop.set()
    th.join()
    tv = {}
    for line in err.splitlines():
        line = line.strip()
        for key in ("Maximum resident set size", "Percent of CPU", "User time", "System time",
                    "Elapsed (wall clock)", "Exit status"):
            if line.startswith(key):
                tv[key] = line.split(": ", 1)[1] if ": " in line else line
    busy_s = (busy1 - busy0) / HZ
    tree_cpu_s = sum(ticks.values()) / HZ
    res = dict(label=label, started=started, loadavg_before=load_before,
               wall_s=round(wall, 4),
               tree_cpu_s=round(tree_cpu_s, 2),
               tree_cores_busy=round(tree_cpu_s / wall, 2),
               other_load_cores=round(max(0.0, busy_s - tree_cpu_s) / wall, 2),
               bg_load_before_cores=round(bg_before, 2), waited_for_quiet_s=round(waited, 1),
               sys_cores_busy=round(busy_s / wall, 2),
               peak_tree_rss_mb=round(peak["rss"] / 1024, 1),
               peak_tree_pss_mb=round(peak["pss"] / 1024, 1),
               peak_sys_used_mb=round(peak["sys"], 1),
               peak_nproc=peak["nproc"], time_v=tv, rc=proc.returncode)
    with open(out, "a") as f:
        f.write(json.dumps(res) + "\n")
    if proc.returncode != 0:
        tail = [l for l in err.splitlines() if not l.startswith("\t")][-15:]
        print("\n".join(tail), file=sys.stderr)
    print("MONITOR " + json.dumps(res), flush=True)
    return res


def main() -> None:
    out = "monitor.jsonl"
    args = sys.argv[1:]
    if args and args[0].startswith("--out="):
        out = args[0].split("=", 1)[1]
        args = args[1:]
    if not args:
        sys.exit("usage: monitor.py [--out=FILE] COMMAND [ARGS...]")
    res = measure(args, out)
    sys.exit(0 if res["rc"] == 0 else 1)


if __name__ == "__main__":
    main()

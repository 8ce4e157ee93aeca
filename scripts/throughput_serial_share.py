"""Where `fedpace bench --workload throughput` spends CPU outside the client threads,
from a task-clock profile; the figure does not depend on the machine's load.

    perf record -e task-clock -o t.data fedpace bench --workload throughput
    perf script -i t.data -F comm,tid,time > t.txt
    python3 scripts/throughput_serial_share.py t.txt

The bench runs four client pools one after the other (W-LR on 1 and 2 threads, W-MLP
on 1 and 2; threads named `fedpace-client-N`). Within each pool's lifetime the samples
are split into the main thread (the round loop: sampling, checks, aggregation's serial
parts, the metrics line — work during which the client threads wait), rayon's global
pool (the aggregation kernels and other parallel server work, on every core) and the
client threads. For each 2-thread pool the script prints the scaling those shares
allow on two idle cores,

    (C + M + G/2) / (C/2 + M + G/2)

with C, M, G the client, main and global-pool samples (the global pool runs on both
cores in the 1-thread run too). It leaves out the wait for the round's last client,
which the profile cannot see under load.
"""

import re
import sys
from collections import Counter, OrderedDict

LINE = re.compile(r"\s*(.+?)\s+(\d+)\s+([\d.]+):")


def main(path):
    samples = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                samples.append((float(m.group(3)), m.group(1), int(m.group(2))))
    if not samples:
        sys.exit(f"{path}: no samples (expected `perf script -F comm,tid,time` output)")
    main_tid = samples[0][2]
    spans = OrderedDict()
    for t, comm, tid in samples:
        if comm.startswith("fedpace-client"):
            s = spans.setdefault(tid, [t, t])
            s[1] = t
    pools = []
    for tid, (a, b) in spans.items():
        if pools and a < pools[-1][1]:
            pools[-1][1] = max(b, pools[-1][1])
            pools[-1][2].add(tid)
        else:
            pools.append([a, b, {tid}])
    names = ["bench-lr 1 thread", "bench-lr 2 threads", "bench-mlp 1 thread", "bench-mlp 2 threads"]
    for name, (a, b, tids) in zip(names, pools):
        n = Counter()
        for t, _, tid in samples:
            if a <= t <= b:
                n["main" if tid == main_tid else "client" if tid in tids else "global"] += 1
        total = sum(n.values())
        c, m, g = n["client"], n["main"], n["global"]
        line = (
            f"{name:<20} main {100 * m / total:5.2f}%  global pool {100 * g / total:5.2f}%"
            f"  clients {100 * c / total:5.2f}%  ({total} samples)"
        )
        if len(tids) == 2:
            line += f"  → ≤ {(c + m + g / 2) / (c / 2 + m + g / 2):.3f}× on 2 idle cores"
        print(line)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

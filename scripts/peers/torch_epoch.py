#!/usr/bin/env python3
"""PyTorch side of fedpace's per-epoch speed comparison (docs/benchmarks.md, "One client
epoch against PyTorch").

Times, in this process, the local training that fedpace's `fedpace bench` times on its
side, with the same shapes and the same step (index the batch, zero_grad, forward,
cross-entropy, backward, SGD step):

  lr     one client epoch of W-LR: 600 samples × 60 features, 60→10, batch 32
  mlp    one client epoch of W-MLP: 600 × 1×28×28, 784-200-200-10 ReLU, batch 32
  cnn    one client epoch of W-CNN: 600 × 1×28×28, the FedAvg CNN, batch 32
  lstm   one training step of the LEAF Shakespeare char-LSTM: batch 10 × 80 characters,
         embedding 80×8, nn.LSTM(8, 256, num_layers=2, batch_first=True), linear 256→80
         on the last step's output
  round  one FedAvg round of the Shakespeare workload (examples/shakespeare.toml): 10
         clients × 20 steps of the char-LSTM from the global model (load_state_dict, a fresh
         SGD optimiser), then the example-weighted average of their state dicts

Data are seeded standard-normal features / uniform labels (tokens uniform below 80), as
in the project's `bench` source; values differ from fedpace's (different generators),
shapes and distributions do not, so times are comparable. Each repetition is timed with
`time.perf_counter` and `time.thread_time` after one warm-up; the script prints one JSON
line per model with the median, quartiles, every repetition, the UTC time and the load
average at start and end, and appends it to `--out` if given.

Interleave it with `fedpace bench` in one window (see docs/benchmarks.md):

    python scripts/peers/torch_epoch.py --model mlp --threads 1 --reps 15

Needs `pip install torch numpy` (PyPI) in a virtual environment.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLES, BATCH, LR = 600, 32, 0.05
VOCAB, SEQ, LSTM_BATCH, EMB, HIDDEN, LAYERS = 80, 80, 10, 8, 256, 2
ROUND_CLIENTS, ROUND_STEPS, ROUND_LR = 10, 20, 0.8


class LogReg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(60, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class CharLSTM(nn.Module):
    """LEAF's Shakespeare model, as fedpace's `char-lstm` (last step → linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB)
        self.lstm = nn.LSTM(EMB, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.fc = nn.Linear(HIDDEN, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(ids))
        return self.fc(out[:, -1, :])


def dense_data(model: str) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1000)
    shape = (SAMPLES, 60) if model == "lr" else (SAMPLES, 1, 28, 28)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, 10, size=SAMPLES, dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def token_batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = rng.integers(0, VOCAB, size=(LSTM_BATCH, SEQ), dtype=np.int64)
    y = rng.integers(0, VOCAB, size=LSTM_BATCH, dtype=np.int64)
    return torch.from_numpy(ids), torch.from_numpy(y)


def step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> float:
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def epoch_fn(name: str):
    torch.manual_seed(0)
    model = {"lr": LogReg, "mlp": MLP, "cnn": CNN}[name]()
    x, y = dense_data(name)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)

    def run() -> None:
        model.train()
        perm = torch.randperm(SAMPLES, generator=gen)
        for i in range(0, SAMPLES, BATCH):
            idx = perm[i : i + BATCH]
            step(model, opt, x[idx], y[idx])

    return run


def lstm_fn():
    torch.manual_seed(0)
    model = CharLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=ROUND_LR)
    rng = np.random.default_rng(0)
    batches = [token_batch(rng) for _ in range(8)]
    counter = [0]

    def run() -> None:
        x, y = batches[counter[0] % len(batches)]
        counter[0] += 1
        step(model, opt, x, y)

    return run


def round_fn():
    torch.manual_seed(0)
    global_model = CharLSTM()
    client = CharLSTM()
    rng = np.random.default_rng(0)
    # Each client's data: its own batches (the example's 20 steps of batch 10).
    data = [[token_batch(rng) for _ in range(ROUND_STEPS)] for _ in range(ROUND_CLIENTS)]

    def run() -> None:
        start = {k: v.clone() for k, v in global_model.state_dict().items()}
        acc = {k: torch.zeros_like(v) for k, v in start.items()}
        for batches in data:
            client.load_state_dict(start)
            opt = torch.optim.SGD(client.parameters(), lr=ROUND_LR)
            client.train()
            for x, y in batches:
                step(client, opt, x, y)
            for k, v in client.state_dict().items():
                acc[k] += v * (1.0 / ROUND_CLIENTS)
        global_model.load_state_dict(acc)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=["lr", "mlp", "cnn", "lstm", "round"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", help="append the JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = open("/proc/loadavg").read().split()[:3]
    utc = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.model in ("lr", "mlp", "cnn"):
        fn = epoch_fn(args.model)
    elif args.model == "lstm":
        fn = lstm_fn()
    else:
        fn = round_fn()
    for _ in range(args.warmup):
        fn()
    wall, cpu = [], []
    for _ in range(args.reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    q = statistics.quantiles(wall, n=4) if len(wall) > 1 else [wall[0]] * 3
    rec = {
        "system": "pytorch",
        "model": args.model,
        "unit": {"lr": "epoch", "mlp": "epoch", "cnn": "epoch", "lstm": "step", "round": "round"}[
            args.model
        ],
        "threads": args.threads,
        "torch": torch.__version__,
        "median_s": statistics.median(wall),
        "q1_s": q[0],
        "q3_s": q[2],
        "median_thread_cpu_s": statistics.median(cpu),
        "reps": args.reps,
        "wall_s": wall,
        "utc": utc,
        "load_start": load0,
        "load_end": open("/proc/loadavg").read().split()[:3],
        "pid": os.getpid(),
    }
    line = json.dumps(rec)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The peers of docs/benchmarks.md: Flower (flwr 1.42, Ray simulation) and a plain PyTorch
loop on the standard workloads, plus one client epoch and one char-LSTM training step in
PyTorch. Run by scripts/peers/run.sh, interleaved with fedpace; not part of fedpace or CI.

Workloads (docs/benchmarks.md; synthetic, seeded, no downloads):
  cnn : 100 clients x 600 samples of 1x28x28 float32, labels 0..9; CNN of the
        FedAvg paper (conv5x5-32 pad2 + ReLU + maxpool2, conv5x5-64 pad2 + ReLU +
        maxpool2, fc 3136->512 + ReLU, fc 512->10); 10 clients/round, 5 rounds.
  mlp : same data, MLP 784-200-200-10 ("2NN"); 10 clients/round, 5 rounds.
  lr  : 30 clients x 600 samples of 60 float32 features, labels 0..9;
        multinomial logistic regression 60->10; 10 clients/round, 20 rounds.
Local training everywhere: 1 epoch, SGD lr 0.05 (no momentum, no weight decay),
batch 32, shuffled, cross-entropy. Server: FedAvg weighted by num-examples.
No federated or centralised evaluation. The data values differ from fedpace's `bench`
source (another generator), not their distribution or shapes.

Modes
  --mode flower : flwr.simulation.run_simulation (ServerApp + ClientApp, message
                  API strategy flwr.serverapp.strategy.FedAvg) on the Ray backend.
  --mode torch  : the same sampled clients trained one after another in a plain
                  PyTorch loop, FedAvg done in numpy; no Flower, no Ray.
  --mode epoch  : one client epoch (client 0) of --model, one warm-up epoch, then
                  the median of --reps epochs.
  --mode lstm   : training steps of the LEAF char-LSTM (embedding 8, 2 x LSTM 256,
                  vocabulary 80, sequences of 80, batch 10, SGD lr 0.8, next character
                  from the last step), 20 warm-up steps, then --reps steps timed one by one.
$BENCH_TORCH_THREADS sets PyTorch's intra-op threads (default 1).

Each run appends a JSON line to --out and prints it after "RESULT ". `--measure` re-runs
the same command under monitor.py (whole process, process tree sampled).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

T_SCRIPT_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

T_AFTER_TORCH_IMPORT = time.perf_counter()

# ---------------------------------------------------------------- workload ---
WORKLOADS = {
    "cnn": dict(num_clients=100, samples=600, per_round=10, rounds=5),
    "mlp": dict(num_clients=100, samples=600, per_round=10, rounds=5),
    "lr": dict(num_clients=30, samples=600, per_round=10, rounds=20),
}
LR = 0.05
BATCH = 32
EPOCHS = 1
DATA_SEED = 1000
MODEL_SEED = 0
SAMPLE_SEED = 42


class CNN(nn.Module):
    """CNN of McMahan et al. (2017) for MNIST."""

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


class MLP(nn.Module):
    """The '2NN' of McMahan et al.: 784-200-200-10."""

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


class LogReg(nn.Module):
    """Multinomial logistic regression 60 -> 10 (softmax in the loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(60, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def make_model(name: str) -> nn.Module:
    return {"cnn": CNN, "mlp": MLP, "lr": LogReg}[name]()


def client_data(name: str, cid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random data of one client (regenerated on every call, ~ms)."""
    n = WORKLOADS[name]["samples"]
    rng = np.random.default_rng(DATA_SEED + cid)
    shape = (n, 60) if name == "lr" else (n, 1, 28, 28)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def local_train(model: nn.Module, name: str, cid: int, rnd: int) -> tuple[int, float]:
    """1 epoch of minibatch SGD on client `cid`'s data; returns (num_examples, mean loss)."""
    x, y = client_data(name, cid)
    return train_epochs(model, x, y, torch.Generator().manual_seed(rnd * 100003 + cid))


def train_epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 g: torch.Generator) -> tuple[int, float]:
    n = x.shape[0]
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    total = 0.0
    for _ in range(EPOCHS):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
    return n, total / (n * EPOCHS)


def initial_state(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(MODEL_SEED)
    return make_model(name).state_dict()


def set_threads() -> int:
    t = int(os.environ.get("BENCH_TORCH_THREADS", "1"))
    torch.set_num_threads(t)
    return t


# ------------------------------------------------------------ plain torch ---
def run_torch(name: str) -> dict:
    threads = set_threads()
    w = WORKLOADS[name]
    sampler = random.Random(SAMPLE_SEED)
    glob = {k: v.numpy().copy() for k, v in initial_state(name).items()}
    t0 = time.perf_counter()
    rounds, train_only = [], 0.0
    for rnd in range(1, w["rounds"] + 1):
        tr = time.perf_counter()
        cids = sampler.sample(range(w["num_clients"]), w["per_round"])
        results = []
        for cid in cids:
            model = make_model(name)
            model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in glob.items()})
            tt = time.perf_counter()
            n, _ = local_train(model, name, cid, rnd)
            train_only += time.perf_counter() - tt
            results.append(({k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, n))
        tot = sum(n for _, n in results)
        glob = {k: sum(sd[k] * (n / tot) for sd, n in results).astype(np.float32) for k in glob}
        rounds.append(time.perf_counter() - tr)
    total = time.perf_counter() - t0
    return dict(mode="torch", model=name, torch_threads=threads, rounds=w["rounds"],
                loop_s=total, round_s=rounds, local_train_only_s=train_only,
                import_torch_s=T_AFTER_TORCH_IMPORT - T_SCRIPT_START,
                script_s=time.perf_counter() - T_SCRIPT_START)


# ---------------------------------------------------------------- flower ---
def run_flower(name: str, client_cpus: float) -> dict:
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    t_import = time.perf_counter()
    w = WORKLOADS[name]
    marks: dict = {"configure": [], "aggregated": []}

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            marks["configure"].append(time.perf_counter())
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            out = super().aggregate_train(server_round, replies)
            marks["aggregated"].append(time.perf_counter())
            return out

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        set_threads()
        cid = int(context.node_config["partition-id"])
        model = make_model(name)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        rnd = int(msg.content["config"]["server-round"])
        n, loss = local_train(model, name, cid, rnd)
        content = RecordDict({
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": n}),
        })
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        marks["main"] = time.perf_counter()
        random.seed(SAMPLE_SEED)  # FedAvg samples nodes with random.sample
        strategy = TimedFedAvg(
            fraction_train=w["per_round"] / w["num_clients"],
            fraction_evaluate=0.0,
            min_train_nodes=w["per_round"],
            min_evaluate_nodes=0,
            min_available_nodes=w["num_clients"],
        )
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_state(name)),
                       num_rounds=w["rounds"], train_config=ConfigRecord({"lr": LR}))
        marks["main_end"] = time.perf_counter()

    backend_config = {
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False},
    }
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app,
                   num_supernodes=w["num_clients"], backend_config=backend_config)
    t1 = time.perf_counter()
    rounds = [b - a for a, b in zip(marks["configure"], marks["aggregated"])]
    return dict(mode="flower", flwr=flwr.__version__, model=name,
                client_num_cpus=client_cpus, actors=int(2 // client_cpus),
                torch_threads_per_actor=int(os.environ.get("BENCH_TORCH_THREADS", "1")),
                rounds=w["rounds"],
                run_simulation_s=t1 - t0,
                startup_to_main_s=marks.get("main", t1) - t0,
                first_configure_after_main_s=marks["configure"][0] - marks["main"] if marks["configure"] else None,
                strategy_loop_s=(marks["aggregated"][-1] - marks["configure"][0]) if marks["aggregated"] else None,
                round_s=rounds,
                teardown_s=t1 - marks.get("main_end", t1),
                import_torch_s=T_AFTER_TORCH_IMPORT - T_SCRIPT_START,
                import_flwr_s=t_import - T_AFTER_TORCH_IMPORT,
                script_s=time.perf_counter() - T_SCRIPT_START)


# ----------------------------------------------------- epoch and LSTM step ---
def run_epoch(name: str, reps: int) -> dict:
    """One client epoch (client 0's data generated beforehand, as fedpace's is)."""
    threads = set_threads()
    torch.manual_seed(MODEL_SEED)
    model = make_model(name)
    x, y = client_data(name, 0)
    times, cpu = [], []
    for rep in range(reps + 1):
        g = torch.Generator().manual_seed(rep)
        t, c = time.perf_counter(), time.process_time()
        train_epochs(model, x, y, g)
        if rep > 0:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return dict(mode="epoch", model=name, torch_threads=threads, reps=reps,
                median_ms=1e3 * float(np.median(times)), min_ms=1e3 * min(times),
                max_ms=1e3 * max(times), cpu_median_ms=1e3 * float(np.median(cpu)))


class CharLSTM(nn.Module):
    """The LEAF Shakespeare model: embedding 8, 2 x LSTM 256, linear on the last step."""

    def __init__(self, vocab: int = 80, emb: int = 8, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.fc(out[:, -1, :])


def run_lstm(reps: int) -> dict:
    threads = set_threads()
    torch.manual_seed(MODEL_SEED)
    model = CharLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.8)
    g = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randint(0, 80, (reps + 20, 10, 80), generator=g)
    y = torch.randint(0, 80, (reps + 20, 10), generator=g)
    times, cpu = [], []
    for i in range(reps + 20):
        t, c = time.perf_counter(), time.process_time()
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
        if i >= 20:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return dict(mode="lstm", torch_threads=threads, reps=reps,
                median_ms=1e3 * float(np.median(times)), mean_ms=1e3 * float(np.mean(times)),
                min_ms=1e3 * min(times), max_ms=1e3 * max(times),
                cpu_median_ms=1e3 * float(np.median(cpu)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["flower", "torch", "epoch", "lstm"], required=True)
    p.add_argument("--model", choices=list(WORKLOADS), default="lr")
    p.add_argument("--client-cpus", type=float, default=1.0,
                   help="Ray num_cpus per ClientApp (2 CPUs total: 1.0 -> 2 actors)")
    p.add_argument("--reps", type=int, default=10, help="epoch: epochs; lstm: steps")
    p.add_argument("--out", default="results.jsonl")
    p.add_argument("--measure", action="store_true",
                   help="run the same command under monitor.py (whole process, tree sampled)")
    p.add_argument("--monitor-out", default="monitor.jsonl")
    a = p.parse_args()
    if a.measure:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import monitor

        child = [x for x in sys.argv[1:] if x != "--measure"]
        res = monitor.measure([sys.executable, os.path.abspath(__file__)] + child, a.monitor_out)
        sys.exit(0 if res["rc"] == 0 else 1)
    if a.mode == "torch":
        res = run_torch(a.model)
    elif a.mode == "flower":
        res = run_flower(a.model, a.client_cpus)
    elif a.mode == "epoch":
        res = run_epoch(a.model, a.reps)
    else:
        res = run_lstm(a.reps)
    res["label"] = os.environ.get("BENCH_LABEL", "")
    res["torch"] = torch.__version__
    res["python"] = sys.version.split()[0]
    with open(a.out, "a") as f:
        f.write(json.dumps(res) + "\n")
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()

"""Golden numbers for crates/nn/tests/golden.rs, produced with PyTorch.

One local epoch of plain SGD (lr 0.05, batch 8, 32 samples, fixed order, no shuffle)
from a fixed initialisation, for: a small MLP (every final parameter stored), the
FedAvg 2NN MLP and CNN, and the LEAF char-LSTM (losses, per-tensor norms/sums and a
strided sample of final values stored). The gradient of the first step (first batch,
initial parameters) is stored the same way under "grads0", so that every tensor's
gradient is checked directly, not only through the parameters it moved.

Initial values and data come from closed-form formulas (no RNG), which the Rust test
reproduces exactly:

    tensor k (in parameter order), element i:  scale_k * sin(0.1 + 0.7 i + 1.3 k)
        scale_k = 1/sqrt(numel / shape[0]) for tensors of rank >= 2, else 0.05
    dense input, flat index n over [32, 1, 28, 28]:  sin(0.37 n + 0.11)
    dense labels:  (7 s + 3) mod 10
    tokens [32, 80]:  (31 s + 17 t + (s t mod 7)) mod 80,  labels (13 s + 5) mod 80

Values are computed in float64 and rounded to float32 on both sides.

Run (Python with torch and numpy installed, e.g. `pip install torch numpy`):  python crates/nn/tests/golden/make_golden.py
(writes the *.json files beside this script; PyTorch 2.15 CPU, 1 thread).
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
HERE = os.path.dirname(os.path.abspath(__file__))
N, BATCH, LR = 32, 8, 0.05


def formula_init(model):
    with torch.no_grad():
        for k, (_, p) in enumerate(model.named_parameters()):
            i = np.arange(p.numel(), dtype=np.float64)
            scale = 1.0 / math.sqrt(p.numel() / p.shape[0]) if p.dim() >= 2 else 0.05
            v = scale * np.sin(0.1 + 0.7 * i + 1.3 * k)
            p.copy_(torch.from_numpy(v.astype(np.float32)).reshape(p.shape))


def dense_data():
    n = np.arange(N * 784, dtype=np.float64)
    x = np.sin(0.37 * n + 0.11).astype(np.float32).reshape(N, 1, 28, 28)
    y = np.array([(7 * s + 3) % 10 for s in range(N)], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def token_data(seq_len=80, vocab=80):
    x = np.array(
        [[(31 * s + 17 * t + (s * t) % 7) % vocab for t in range(seq_len)] for s in range(N)],
        dtype=np.int64,
    )
    y = np.array([(13 * s + 5) % vocab for s in range(N)], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


class Mlp(nn.Module):
    def __init__(self, d, hidden, c):
        super().__init__()
        sizes = [d] + hidden + [c]
        self.layers = len(sizes) - 1
        for l in range(self.layers):
            setattr(self, f"fc{l + 1}", nn.Linear(sizes[l], sizes[l + 1]))

    def forward(self, x):
        x = x.flatten(1)
        for l in range(self.layers):
            x = getattr(self, f"fc{l + 1}")(x)
            if l + 1 < self.layers:
                x = F.relu(x)
        return x


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(3136, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class CharLstm(nn.Module):
    def __init__(self, vocab=80, emb=8, hidden=256, layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x):
        out, _ = self.lstm(self.embedding(x))
        return self.fc(out[:, -1, :])


def epoch(model, x, y):
    formula_init(model)
    init_norms = {n: float(p.detach().double().norm()) for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses, grads0 = [], None
    for start in range(0, N, BATCH):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[start : start + BATCH]), y[start : start + BATCH])
        loss.backward()
        if grads0 is None:
            grads0 = summary({n: p.grad for n, p in model.named_parameters()}, False)
        opt.step()
        losses.append(loss.item())
    return init_norms, losses, grads0


def summary(tensors, full):
    """Shape, norm, sum and a strided sample (or every value) of each named tensor."""
    out = {}
    for name, p in tensors.items():
        v = p.detach().flatten().double().numpy()
        stride = max(1, len(v) // 64)
        idx = list(range(0, len(v), stride))[:64]
        entry = {
            "shape": list(p.shape),
            "norm": float(np.linalg.norm(v)),
            "sum": float(v.sum()),
            "sample_index": idx,
            "sample": [float(v[i]) for i in idx],
        }
        if full:
            entry["values"] = [float(f"{a:.9g}") for a in v.astype(np.float32)]
        out[name] = entry
    return out


def write(name, model, x, y, full, extra):
    init_norms, losses, grads0 = epoch(model, x, y)
    doc = {
        "generator": "make_golden.py, torch " + torch.__version__,
        "lr": LR,
        "batch": BATCH,
        "samples": N,
        "losses": losses,
        "init_norms": init_norms,
        "params": summary(dict(model.named_parameters()), full),
        "grads0": grads0,
    }
    doc.update(extra)
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(name, "losses", losses)


if __name__ == "__main__":
    x, y = dense_data()
    write("mlp_small.json", Mlp(784, [16, 12], 10), x, y, True, {"hidden": [16, 12]})
    write("mlp.json", Mlp(784, [200, 200], 10), x, y, False, {"hidden": [200, 200]})
    write("cnn.json", Cnn(), x, y, False, {})
    tx, ty = token_data()
    write("char_lstm.json", CharLstm(), tx, ty, False, {"seq_len": 80, "vocab": 80})

"""Independent NumPy re-derivation of Flower 1.42's server optimisers (docs/algorithms.md,
Appendix F), and of the paper rules (Reddi et al. 2021, Algorithm 2), for
fedpace-optim's server golden test. Flower itself is not imported: the rules below are
re-written from the appendix's description, with NumPy ≥ 2 (NEP 50) semantics, which
Flower runs under (Python-float scalars do not promote float32 arrays; FedAdam's
`np.sqrt`/`np.power` step size is a float64 NumPy scalar, so its model turns float64
after round 1, as the appendix notes).

Run (Python with torch and numpy installed, e.g. `pip install torch numpy`):  python crates/optim/tests/golden/flower_server.py
Writes flower_server.json beside this file; tests/golden_server.rs replays it.

Protocol per round t = 1..R (t is Flower's `server_round`): every client starts from
the current global model; the aggregate of the clients' returned float32 models is
`avg = float32(x_t) + d_t`, with a fixed sequence d_t; the strategy then computes its
own `Δ_t = avg − x_t` and steps. fedpace receives `mean_delta = d_t` and `round = t`.
"""
import json
import math
import os

import numpy as np

ROUNDS = 8
SHAPES = [(2, 3), (4,)]


def arrays(f):
    out, k = [], 0
    for shape in SHAPES:
        n = math.prod(shape)
        out.append(np.array([f(k + i) for i in range(n)], dtype=np.float32).reshape(shape))
        k += n
    return out


X0 = arrays(lambda i: 0.4 + 0.5 * math.cos(1.1 * i))


def delta(t):
    # last coordinate stays 0 in every round (exercises sign(0) and 0/τ paths)
    return arrays(lambda i: 0.0 if i == 9 else 0.05 * math.sin(0.8 * i + 1.7 * t) + 0.01 * math.cos(i * t))


def flat(ts):
    return [float(x) for a in ts for x in np.asarray(a).reshape(-1).tolist()]


def aggregate(x, t):
    return [np.asarray(xi, dtype=np.float32) + di for xi, di in zip(x, delta(t))]


# ---- Flower rules (Appendix F) ----------------------------------------------------


def flower_fedavgm(lr, momentum):
    x, m, out = [a.copy() for a in X0], None, []
    for t in range(1, ROUNDS + 1):
        avg = aggregate(x, t)
        g = [xi - ai for xi, ai in zip(x, avg)]  # pseudo-gradient x_t − avg
        if momentum > 0.0:
            m = g if m is None else [momentum * mi + gi for mi, gi in zip(m, g)]
            g = m
        x = [xi - lr * gi for xi, gi in zip(x, g)]
        out.append(flat(x))
    return out


def flower_fedopt(kind, eta, beta1, beta2, tau):
    x, m, v, out = [a.copy() for a in X0], None, None, []
    if kind == "adagrad":
        beta1 = 0.0
    for t in range(1, ROUNDS + 1):
        avg = aggregate(x, t)
        d = [ai - xi for ai, xi in zip(avg, x)]  # Δ_t = avg − x_t
        if m is None:
            m = [np.zeros_like(di) for di in d]
        m = [beta1 * mi + (1 - beta1) * di for mi, di in zip(m, d)]
        if v is None:
            v = [np.zeros_like(di) for di in d]
        if kind == "adagrad":
            v = [vi + np.multiply(di, di) for vi, di in zip(v, d)]
        elif kind == "adam":
            v = [beta2 * vi + (1 - beta2) * np.multiply(di, di) for vi, di in zip(v, d)]
        elif kind == "yogi":
            v = [vi - (1.0 - beta2) * np.multiply(di, di) * np.sign(vi - np.multiply(di, di))
                 for vi, di in zip(v, d)]
        if kind == "adam":
            step = eta * np.sqrt(1 - np.power(beta2, t + 1.0)) / (1 - np.power(beta1, t + 1.0))
        else:
            step = eta
        x = [xi + step * mi / (np.sqrt(vi) + tau) for xi, mi, vi in zip(x, m, v)]
        out.append(flat(x))
    return out


# ---- paper rules (Reddi et al. 2021, Algorithm 2), in float64 ---------------------------


def paper_fedopt(kind, eta, beta1, beta2, tau):
    x = [a.astype(np.float64) for a in X0]
    m = [np.zeros_like(a) for a in x]
    v = [np.full_like(a, tau * tau) for a in x]
    if kind == "adagrad":
        beta1 = 0.0
    out = []
    for t in range(1, ROUNDS + 1):
        d = [di.astype(np.float64) for di in delta(t)]
        m = [beta1 * mi + (1 - beta1) * di for mi, di in zip(m, d)]
        if kind == "adagrad":
            v = [vi + di * di for vi, di in zip(v, d)]
        elif kind == "adam":
            v = [beta2 * vi + (1 - beta2) * di * di for vi, di in zip(v, d)]
        else:
            v = [vi - (1 - beta2) * di * di * np.sign(vi - di * di) for vi, di in zip(v, d)]
        x = [xi + eta * mi / (np.sqrt(vi) + tau) for xi, mi, vi in zip(x, m, v)]
        out.append(flat(x))
    return out


CASES = [
    # name, rule, kind, (server_lr, beta1 | momentum, beta2, tau)
    ("fedavgm", "flower", "avgm", dict(server_lr=1.0, momentum=0.9)),
    ("fedavgm-lr", "flower", "avgm", dict(server_lr=0.5, momentum=0.0)),
    ("fedadagrad", "flower", "adagrad", dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)),
    ("fedadam", "flower", "adam", dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)),
    ("fedadam-legacy-tau", "flower", "adam", dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-9)),
    ("fedyogi", "flower", "yogi", dict(server_lr=1e-2, beta1=0.9, beta2=0.99, tau=1e-3)),
    ("paper-fedadagrad", "paper", "adagrad", dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)),
    ("paper-fedadam", "paper", "adam", dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)),
    ("paper-fedyogi", "paper", "yogi", dict(server_lr=1e-2, beta1=0.9, beta2=0.99, tau=1e-3)),
]


def main():
    cases = []
    for name, rule, kind, hp in CASES:
        if kind == "avgm":
            out = flower_fedavgm(hp["server_lr"], hp["momentum"])
        elif rule == "flower":
            out = flower_fedopt(kind, hp["server_lr"], hp["beta1"], hp["beta2"], hp["tau"])
        else:
            out = paper_fedopt(kind, hp["server_lr"], hp["beta1"], hp["beta2"], hp["tau"])
        cases.append(dict(name=name, rule=rule, kind=kind, hyper=hp, params=out))
    doc = dict(
        generator="tests/golden/flower_server.py",
        numpy=np.__version__,
        shapes=SHAPES,
        x0=flat(X0),
        deltas=[flat(delta(t)) for t in range(1, ROUNDS + 1)],
        cases=cases,
    )
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flower_server.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

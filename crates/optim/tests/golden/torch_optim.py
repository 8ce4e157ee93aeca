"""Golden numbers for fedpace-optim's client optimisers, from torch.optim.

Run (Python with torch and numpy installed, e.g. `pip install torch numpy`):  python crates/optim/tests/golden/torch_optim.py
Writes torch_optim.json beside this file; tests/golden_torch.rs replays every case.

Layout: two tensors, w [3, 2] in group "body" and b [3] in group "head", flattened in
that order. Each group is a torch param group with its own lr, so the per-group rates
of fedpace are checked too. Gradients are a fixed sequence (not the gradient of any
loss), set on .grad before each optimizer.step(). Everything is float32 on the CPU.
"""
import json
import math
import os

import torch

STEPS = 6
SHAPES = [(3, 2), (3,)]
LRS = [0.05, 0.2]  # body, head


def grads(t):
    out = []
    k = 0
    for shape in SHAPES:
        n = math.prod(shape)
        vals = [math.sin(1.3 * (k + i) + 0.7 * t) * (1.0 + 0.2 * t) + 0.05 * (k + i) for i in range(n)]
        out.append(torch.tensor(vals, dtype=torch.float32).reshape(shape))
        k += n
    return out


def params0():
    out = []
    k = 0
    for shape in SHAPES:
        n = math.prod(shape)
        vals = [0.5 + 0.3 * math.cos(0.9 * (k + i)) for i in range(n)]
        out.append(torch.tensor(vals, dtype=torch.float32).reshape(shape))
        k += n
    return out


def flat(ts):
    return [float(x) for t in ts for x in t.detach().reshape(-1).tolist()]


CASES = [
    # name, fedpace OptimizerSpec (JSON), torch class, torch kwargs
    ("sgd-weight-decay", {"name": "sgd", "weight_decay": 0.1}, torch.optim.SGD, dict(weight_decay=0.1)),
    ("momentum", {"name": "momentum", "momentum": 0.9}, torch.optim.SGD, dict(momentum=0.9)),
    ("nesterov", {"name": "momentum", "momentum": 0.9, "nesterov": True}, torch.optim.SGD,
     dict(momentum=0.9, nesterov=True)),
    ("momentum-weight-decay", {"name": "momentum", "momentum": 0.8, "weight_decay": 0.05},
     torch.optim.SGD, dict(momentum=0.8, weight_decay=0.05)),
    ("nesterov-weight-decay", {"name": "momentum", "momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
     torch.optim.SGD, dict(momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("adam", {"name": "adam"}, torch.optim.Adam, dict()),
    ("adam-betas-eps", {"name": "adam", "beta1": 0.8, "beta2": 0.99, "eps": 1e-3}, torch.optim.Adam,
     dict(betas=(0.8, 0.99), eps=1e-3)),
    ("adam-l2", {"name": "adam", "weight_decay": 0.1}, torch.optim.Adam, dict(weight_decay=0.1)),
    ("adamw", {"name": "adamw", "weight_decay": 0.1}, torch.optim.AdamW, dict(weight_decay=0.1)),
    ("adamw-default", {"name": "adamw"}, torch.optim.AdamW, dict()),
    ("amsgrad", {"name": "amsgrad", "beta2": 0.9}, torch.optim.Adam, dict(amsgrad=True, betas=(0.9, 0.9))),
    ("adagrad", {"name": "adagrad"}, torch.optim.Adagrad, dict()),
    ("adagrad-init-eps-wd", {"name": "adagrad", "initial_accumulator": 0.1, "eps": 1e-3, "weight_decay": 0.05},
     torch.optim.Adagrad, dict(initial_accumulator_value=0.1, eps=1e-3, weight_decay=0.05)),
]


def run(cls, kwargs):
    ps = [torch.nn.Parameter(p.clone()) for p in params0()]
    opt = cls([{"params": [ps[0]], "lr": LRS[0]}, {"params": [ps[1]], "lr": LRS[1]}], **kwargs)
    gs, out = [], []
    for t in range(STEPS):
        g = grads(t)
        for p, gi in zip(ps, g):
            p.grad = gi.clone()
        opt.step()
        gs.append(flat(g))
        out.append(flat(ps))
    return gs, out


def main():
    torch.use_deterministic_algorithms(True)
    cases = []
    for name, spec, cls, kwargs in CASES:
        gs, out = run(cls, kwargs)
        cases.append(dict(name=name, optimizer=spec, lrs=LRS, params0=flat(params0()), grads=gs, params=out))
    doc = dict(generator="tests/golden/torch_optim.py", torch=torch.__version__, cases=cases)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_optim.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

"""Golden numbers for the update rules of the hypernetwork methods (docs/hypernetworks.md):
the hypernetwork policy's score-function step, pFedHN's hypernetwork update and FedL2P's
first-order hypergradient with its server step.

Run (plain Python 3, no packages):  python3 crates/algos/tests/golden/hypernetworks.py
Writes hypernetworks.json beside this file; the unit tests in crates/algos/src/
(policies/hypernet.rs, pfedhn.rs, fedl2p.rs) replay every case.

Each rule is written here from the spec in docs/hypernetworks.md, in float64, with its own
dense-network forward and backward pass; every back-propagated gradient is checked against
central finite differences before anything is written (the script stops if one is off).
The networks' parameters are fixed values (a sine pattern), chosen so that some ReLUs are
active and some are not; the script asserts both occur.
"""
import json
import math
import os
import struct


def f32(x):
    """Rounds to float32, as the values a test feeds in (reports' losses are f32)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def pattern(n, scale, phase):
    return [f32(scale * math.sin(1.618 * i + phase)) for i in range(n)]


# ---------------------------------------------------------------------------------------
# A dense network: layers z_i = W_i a_{i-1} + b_i (W row-major [out, in]), a_i = act(z_i);
# parameters flat, layer by layer, W then b (the layout of fedpace_algos::hypernet::Mlp).


class Mlp:
    def __init__(self, sizes, acts):
        self.sizes, self.acts = sizes, acts
        self.offsets = []
        at = 0
        for i in range(len(sizes) - 1):
            self.offsets.append(at)
            at += sizes[i] * sizes[i + 1] + sizes[i + 1]
        self.len = at

    def forward(self, p, x):
        acts = [list(x)]
        for i, act in enumerate(self.acts):
            fi, fo, w = self.sizes[i], self.sizes[i + 1], self.offsets[i]
            b = w + fi * fo
            z = [sum(p[w + o * fi + j] * acts[i][j] for j in range(fi)) + p[b + o] for o in range(fo)]
            acts.append([max(v, 0.0) for v in z] if act == "relu" else z)
        return acts

    def backward(self, p, acts, d_out):
        """(∂L/∂params, ∂L/∂input) for ∂L/∂output = d_out."""
        g = [0.0] * self.len
        dy = list(d_out)
        for i in reversed(range(len(self.acts))):
            fi, fo, w = self.sizes[i], self.sizes[i + 1], self.offsets[i]
            b = w + fi * fo
            if self.acts[i] == "relu":
                dy = [d if a > 0 else 0.0 for d, a in zip(dy, acts[i + 1])]
            dx = [0.0] * fi
            for o in range(fo):
                g[b + o] += dy[o]
                for j in range(fi):
                    g[w + o * fi + j] += dy[o] * acts[i][j]
                    dx[j] += dy[o] * p[w + o * fi + j]
            dy = dx
        return g, dy


def check_fd(name, f, x, grad, h=1e-6, tol=1e-6):
    """Central differences of the scalar f at x against grad."""
    for i in range(len(x)):
        a, b = list(x), list(x)
        a[i] += h
        b[i] -= h
        fd = (f(a) - f(b)) / (2 * h)
        assert abs(fd - grad[i]) <= tol * max(1.0, abs(fd)), f"{name}[{i}]: fd {fd} vs {grad[i]}"


def relu_mix(net, p, xs):
    """Asserts that the hidden ReLUs are active for some inputs and inactive for others."""
    states = set()
    for x in xs:
        acts = net.forward(p, x)
        for i, act in enumerate(net.acts):
            if act == "relu":
                states.update(v > 0 for v in acts[i + 1])
    assert states == {True, False}, "pick parameters with both active and inactive ReLUs"


def adam(params, grad, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    """PyTorch's Adam (bias-corrected, ε outside the root)."""
    state["t"] += 1
    t = state["t"]
    out = []
    for i, (p, g) in enumerate(zip(params, grad)):
        state["m"][i] = b1 * state["m"][i] + (1 - b1) * g
        state["v"][i] = b2 * state["v"][i] + (1 - b2) * g * g
        mh = state["m"][i] / (1 - b1**t)
        vh = math.sqrt(state["v"][i]) / math.sqrt(1 - b2**t)
        out.append(p - lr * mh / (vh + eps))
    return out


def clip_norm(g, c):
    n = math.sqrt(sum(v * v for v in g))
    return ([v * c / n for v in g], n) if n > c else (list(g), n)


# ---------------------------------------------------------------------------------------
# 1. The hypernetwork policy (docs: "The hypernetwork policy"): features = ["log-size"],
#    embedding_dim = 1, hidden = 3, outputs = ["lr", "groups"] with two groups (3 outputs),
#    sigma 0.1, lr 0.01 (Adam), embedding_lr 0.05, clip 1, baseline_decay 0.5.
#    Two clients, n = 10 and 30 (n̄ = 20). Round 1 sets the baselines; rounds 2 and 3 give
#    gradients, applied at the first plan of rounds 3 and 4.


def hypernet_case():
    sigma, lr, lr_e, clip, decay = 0.1, 0.01, 0.05, 1.0, 0.5
    net = Mlp([2, 3, 3, 3], ["relu", "relu", "id"])
    psi = pattern(net.len, 0.8, 0.4)
    sizes = {0: 10, 1: 30}
    mean_n = 20.0
    logsize = {k: f32(math.log(n / mean_n)) for k, n in sizes.items()}
    # (loss_before, loss_after) per round and client.
    reports = {
        1: {0: (2.0, 1.5), 1: (1.0, 0.9)},
        2: {0: (2.0, 1.2), 1: (1.0, 0.95)},
        3: {0: (1.8, 1.5), 1: (1.0, 0.7)},
    }
    # ξ per round and client (the tests set them in place of the seeded draws).
    xis = {
        2: {0: pattern(3, 0.1, 1.1), 1: pattern(3, 0.1, 2.3)},
        3: {0: pattern(3, 0.1, 0.2), 1: pattern(3, 0.1, 3.7)},
    }
    emb = {0: 0.0, 1: 0.0}
    baseline = {}
    scale = None
    adam_state = {"t": 0, "m": [0.0] * net.len, "v": [0.0] * net.len}
    out = {"psi0": list(psi), "xi": {str(r): {str(k): v for k, v in x.items()} for r, x in xis.items()}}
    steps = []
    relu_mix(net, psi, [[logsize[0], 0.0], [logsize[1], 0.0], [0.3, -1.0], [-2.0, 1.0]])
    for rnd in (1, 2, 3):
        grad = [0.0] * net.len
        egrad = {}
        count = 0
        for k in (0, 1):
            before, after = (f32(v) for v in reports[rnd][k])
            signal = -(before - after)
            b = baseline.get(k)
            baseline[k] = signal if b is None else decay * b + (1 - decay) * signal
            if b is None:
                continue
            adv = signal - b
            scale = abs(adv) if scale is None else 0.9 * scale + 0.1 * abs(adv)
            x = [logsize[k], emb[k]]
            xi = xis[rnd][k]
            d_out = [(adv / scale) * v / sigma for v in xi]
            acts = net.forward(psi, x)
            g, dx = net.backward(psi, acts, d_out)
            # ∂/∂ψ and ∂/∂x of ⟨d_out, H_ψ(x)⟩, by finite differences.
            check_fd("hypernet ψ", lambda q: sum(a * b for a, b in zip(d_out, net.forward(q, x)[-1])), psi, g)
            check_fd("hypernet x", lambda y: sum(a * b for a, b in zip(d_out, net.forward(psi, y)[-1])), x, dx)
            grad = [a + b for a, b in zip(grad, g)]
            egrad[k] = egrad.get(k, 0.0) + dx[1]
            count += 1
        if count == 0:
            continue
        mean = [v / count for v in grad]
        clipped, norm = clip_norm(mean, clip)
        psi = adam(psi, clipped, adam_state, lr)
        for k, g in sorted(egrad.items()):
            g = max(-clip, min(clip, g))  # one value: its norm is |g|
            emb[k] -= lr_e * g
        steps.append({
            "after_round": rnd,
            "mean_grad_norm": norm,
            "psi": psi,
            "embeddings": [emb[0], emb[1]],
            "baselines": [baseline[0], baseline[1]],
            "scale": scale,
        })
    out["steps"] = steps
    out["logsize"] = [logsize[0], logsize[1]]
    return out


# ---------------------------------------------------------------------------------------
# 2. pFedHN (docs: "pFedHN"): embeddings e = 2, hidden 3, one hidden block, a target model
#    of d = 4 values: Linear(2, 3) → ReLU → Linear(3, 3) → Linear(3, 4). SGD with momentum
#    0.9 and weight decay 1e-3 at lr 0.05 on φ; the embedding table the same at 0.1
#    (momentum and decay on every row, a zero gradient on rows not trained); the gradients
#    (∇φ, ∇v) clipped together to norm 3. Three client updates: 0, 1, 0; the third clips.


def pfedhn_case():
    lr, lr_e, mom, wd, clip = 0.05, 0.1, 0.9, 1e-3, 3.0
    net = Mlp([2, 3, 3, 4], ["relu", "id", "id"])
    phi = pattern(net.len, 0.6, 0.9)
    rows = {0: [0.7, -0.4], 1: [-1.2, 0.5]}
    relu_mix(net, phi, [rows[0], rows[1]])
    deltas = [
        (0, [0.2, -0.4, 0.1, 0.05]),
        (1, [-0.3, 0.1, 0.25, -0.15]),
        (0, [4.0, -3.0, 2.5, 5.0]),
    ]
    buf_phi = [0.0] * net.len
    buf_rows = {0: [0.0, 0.0], 1: [0.0, 0.0]}
    out = {"phi0": list(phi), "rows0": [list(rows[0]), list(rows[1])], "updates": [], "steps": []}
    for k, delta in deltas:
        v = rows[k]
        acts = net.forward(phi, v)
        d_out = [-d for d in delta]  # Δθ = θ − θ̃ = −delta
        g, gv = net.backward(phi, acts, d_out)
        check_fd("pfedhn φ", lambda q: sum(a * b for a, b in zip(d_out, net.forward(q, v)[-1])), phi, g)
        check_fd("pfedhn v", lambda y: sum(a * b for a, b in zip(d_out, net.forward(phi, y)[-1])), v, gv)
        joint, norm = clip_norm(g + gv, clip)
        g, gv = joint[: net.len], joint[net.len:]
        # φ: d = g + λφ, b ← μb + d, φ ← φ − lr·b (PyTorch SGD, no dampening).
        for i in range(net.len):
            d = g[i] + wd * phi[i]
            buf_phi[i] = mom * buf_phi[i] + d
            phi[i] -= lr * buf_phi[i]
        for rid in (0, 1):
            for j in range(2):
                d = (gv[j] if rid == k else 0.0) + wd * rows[rid][j]
                buf_rows[rid][j] = mom * buf_rows[rid][j] + d
                rows[rid][j] -= lr_e * buf_rows[rid][j]
        out["updates"].append({"client": k, "delta": delta})
        out["steps"].append({
            "grad_norm": norm,
            "clipped": norm > clip,
            "phi": list(phi),
            "rows": [list(rows[0]), list(rows[1])],
            "theta": [net.forward(phi, rows[0])[-1], net.forward(phi, rows[1])[-1]],
        })
    assert [s["clipped"] for s in out["steps"]] == [False, False, True]
    return out


# ---------------------------------------------------------------------------------------
# 3. FedL2P (docs: "FedL2P"): a model of two groups of one weight each ("body" w_a, "head"
#    w_b), loss per sample ½(w_a − t_a)² + ½(w_b − t_b)² where (t_a, t_b) are the sample's two
#    features, mean over the batch. Client: statistics s at the global model x, multipliers
#    r = clamp(exp(f_λ(s)), 0.01, 100), K = 3 full-batch SGD steps at η·m_g·r_g (η = 0.1,
#    plan multipliers m = (1, 0.5)), validation (= training, the stand-in) loss before and
#    after, h_g = ⟨∇_g L(θ_K), θ_K,g − x_g⟩, meta-gradient J_λᵀh clamped to ±0.05. Server:
#    the mean of two clients' meta-gradients weighted by their validation sizes, one Adam
#    step at 0.01.


def fedl2p_client(net, lam, samples, labels, classes, x, eta, m, steps, clip):
    n = len(samples)

    def loss(w):
        return sum(0.5 * (w[0] - t[0]) ** 2 + 0.5 * (w[1] - t[1]) ** 2 for t in samples) / n

    def grad(w):
        return [sum(w[g] - t[g] for t in samples) / n for g in range(2)]

    values = [v for t in samples for v in t]
    mean = sum(values) / len(values)
    std = math.sqrt(max(sum(v * v for v in values) / len(values) - mean * mean, 0.0))
    counts = [labels.count(c) for c in range(classes)]
    ent = -sum(c / n * math.log(c / n) for c in counts if c > 0) / math.log(max(classes, 2))
    ln = lambda v: max(-20.0, min(20.0, math.log(v + 1e-8)))
    g0 = grad(x)
    stats = [ln(n), mean, std, ent, ln(loss(x))] + [ln(abs(v)) for v in g0]  # rms of one value
    acts = net.forward(lam, stats)
    o = acts[-1]
    r = [min(max(math.exp(v), 0.01), 100.0) for v in o]
    theta = list(x)
    for _ in range(steps):
        gk = grad(theta)
        theta = [theta[g] - eta * m[g] * r[g] * gk[g] for g in range(2)]
    before, after = loss(x), loss(theta)
    gv = grad(theta)
    h = [gv[g] * (theta[g] - x[g]) for g in range(2)]
    mg, _ = net.backward(lam, acts, h)
    check_fd("fedl2p λ", lambda q: sum(a * b for a, b in zip(h, net.forward(q, stats)[-1])), lam, mg)

    # The exact derivative of the K-step path, for the docs (not asserted by the tests):
    # ∂L(θ_K)/∂ln r_g by finite differences with the gradients not held fixed.
    def unrolled(lnr):
        th = list(x)
        for _ in range(steps):
            gk = grad(th)
            th = [th[g] - eta * m[g] * math.exp(lnr[g]) * gk[g] for g in range(2)]
        return loss(th)

    lnr = [math.log(v) for v in r]
    exact = []
    for g in range(2):
        a, b = list(lnr), list(lnr)
        a[g] += 1e-6
        b[g] -= 1e-6
        exact.append((unrolled(a) - unrolled(b)) / 2e-6)
    clamped = [max(-clip, min(clip, v)) for v in mg]
    return {
        "stats": stats,
        "multipliers": r,
        "theta": theta,
        "val_loss_before": before,
        "val_loss_after": after,
        "hypergrad": h,
        "exact_unrolled_derivative": exact,
        "meta_grad": clamped,
        "clamped": sum(1 for a, b in zip(mg, clamped) if a != b),
        "weight": n,
    }


def fedl2p_case():
    net = Mlp([7, 3, 3, 2], ["relu", "relu", "id"])
    lam = pattern(net.len, 0.4, 0.1)
    clients = [
        {"features": [[1.0, 3.0], [2.0, 5.0], [0.5, 4.0]], "labels": [0, 1, 1]},
        {"features": [[-1.0, 2.0], [0.0, 1.0]], "labels": [1, 1]},
    ]
    x = [0.25, -0.5]
    out = {"lambda0": list(lam), "x": x, "eta": 0.1, "plan_multipliers": [1.0, 0.5], "steps": 3,
           "clip": 0.05, "clients": []}
    total, mean = 0.0, [0.0] * net.len
    for c in clients:
        samples = [[f32(v) for v in s] for s in c["features"]]
        res = fedl2p_client(net, lam, samples, c["labels"], 2, x, 0.1, [1.0, 0.5], 3, 0.05)
        out["clients"].append(dict(c, result=res))
        total += res["weight"]
        mean = [a + res["weight"] * b for a, b in zip(mean, res["meta_grad"])]
    relu_mix(net, lam, [c["result"]["stats"] for c in out["clients"]] + [[0.0] * 7, [-1.0] * 7])
    mean = [v / total for v in mean]
    state = {"t": 0, "m": [0.0] * net.len, "v": [0.0] * net.len}
    out["server_mean_grad"] = mean
    out["lambda1"] = adam(lam, mean, state, 0.01)
    assert any(c["result"]["clamped"] for c in out["clients"]), "pick a clip that clamps some"
    return out


def main():
    out = {
        "about": "written by hypernetworks.py beside this file; do not edit",
        "hypernet": hypernet_case(),
        "pfedhn": pfedhn_case(),
        "fedl2p": fedl2p_case(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hypernetworks.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()

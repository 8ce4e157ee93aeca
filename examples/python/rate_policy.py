# %% [markdown]
# # A personalised learning rate in ten lines of Python
#
# fedpace runs the federation — sampling, local training, aggregation, evaluation — in
# Rust. You write the one thing you want to try: how fast each client learns. The
# policy below is called for every sampled client (`plan`) and sees every client's
# report after training (`observe`); everything else runs at Rust speed.
#
# Run it as a script (`python examples/python/rate_policy.py`) or cell by cell in
# Jupyter / VS Code (the `# %%` markers). Install the package first (README, "Python"):
# `scripts/python-wheel.sh`, then use `target/py-test-venv/bin/python`.

# %%
import numpy as np

import fedpace


class ProgressRate:
    """Clients whose loss fell most in their last round take bigger steps next time."""

    def __init__(self):
        self.gain = {}

    def plan(self, round, client, base):
        return base.lr * self.gain.get(client.id, 1.0)

    def observe(self, round, client, report):
        ratio = report.loss_after / max(report.loss_before, 1e-8)
        self.gain[client.id] = min(2.0, max(0.5, 1.5 - ratio))


# %% [markdown]
# ## Data: your own arrays, split by a built-in partitioner
#
# Three Gaussian blobs in the plane, 3,000 samples pooled, split over 20 clients with a
# Dirichlet(α = 0.3) label skew; 600 more samples are a test set the server holds.

# %%
rng = np.random.default_rng(0)
centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])


def blobs(n):
    y = rng.integers(0, 3, n)
    return centres[y] + 0.9 * rng.standard_normal((n, 2)), y


x, y = blobs(3000)
blob_data = fedpace.data.from_arrays(
    x,
    y,
    partition={"kind": "dirichlet", "alpha": 0.3},
    num_clients=20,
    test=blobs(600),
    name="blobs",
)
print(blob_data.description)

# %% [markdown]
# ## The experiment: a dict (or a TOML file, or TOML text)

# %%
experiment = {
    "name": "progress-rate",
    "rounds": 30,
    "data": {"source": "blobs"},
    "model": {"name": "logistic-regression"},
    "client": {"lr": 0.05, "batch_size": 16, "epochs": 1},
    "strategy": {"name": "fedavg", "clients_per_round": 8},
    "eval": {"every": 5},
}

run = fedpace.run(experiment, data=blob_data, policy=ProgressRate(), seed=1)
print(run)

# %% [markdown]
# ## What came out
#
# `run.metrics` has a row per round, `run.client_rounds` a row per client and round
# (the rate your policy chose, the losses before and after), `run.clients` a row per
# client; pandas DataFrames when pandas is installed. `run.model` holds the final
# weights as NumPy arrays (views of fedpace's memory, no copy).

# %%
print(run.summary["global"], run.summary["personalized"]["mean_accuracy"])
rows = run.client_rounds if isinstance(run.client_rounds, list) else run.client_rounds.to_dict("records")
print("rates chosen:", min(r["lr"] for r in rows), "to", max(r["lr"] for r in rows))
print({name: w.shape for name, w in run.model.items()})

# %% [markdown]
# ## The same experiment with every client at the base rate
#
# One seed says little: compare policies on paired seeds (`seed=0..9`) before claiming
# anything (docs/study-rates.md).

# %%
uniform = fedpace.run(experiment, data=blob_data, set={"policy": {"name": "constant"}}, seed=1)
print("constant:", uniform.summary["global"]["accuracy"], "progress-rate:", run.summary["global"]["accuracy"])

# %% [markdown]
# ## TensorBoard
#
# Write the run directory with TensorBoard events, then `tensorboard --logdir runs/`.

# %%
import tempfile  # noqa: E402

out = tempfile.mkdtemp(prefix="fedpace-")
fedpace.run(
    experiment,
    data=blob_data,
    policy=ProgressRate(),
    set={"output.tensorboard": True},
    out=f"{out}/progress-rate",
    progress=False,
)
print("TensorBoard events in", f"{out}/progress-rate/tensorboard")

"""Writes the study files of the study of record (docs/study-rates.md): one `fedpace study`
file per benchmark and model, every variant in it, the tuned uniform rate the baseline.

    python3 scripts/study_record.py OUT_DIR BENCHMARK MODEL TIER [SEEDS [ONLY]]

BENCHMARK: synthetic | mnist | fmnist (base configs in examples/study-rates/);
MODEL: lr | mlp; TIER: core (the variants every benchmark runs) | full (core + pFedHN,
FedL2P, clip-updates) | short (core without the hypernetwork policy and the tuned FedHyper)
| min (uniform and the tuning-free methods, then normalisation off); ONLY: a comma list
of variant names to keep (the collection of a study cut short by time); SEEDS: report seeds, e.g. "0-9" (default 0-9).
Prints the path of the file written (OUT_DIR/<benchmark>-<model>.toml). Standard library
only; the same arguments always write the same file, so `fedpace study --resume` reuses
every run already finished.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# The base rate grid of every tuned variant (5 points, log-spaced), per benchmark: the same
# grid for every variant, so every tuned variant has the same 5 trials × selection seeds.
GRIDS = {
    "synthetic": (0.003, 0.3),
    "mnist": (0.01, 1.0),
    "fmnist": (0.01, 1.0),
}
SELECTION_SEEDS = [100, 101]
ROUNDS = 100
CLIENTS_PER_ROUND = 10

OFF = 'strategy.normalize="off"'

# (name, tuned, set): the variants. Tuned ones search `client.lr` over the benchmark's grid
# at the study's single budget; untuned ones run at their defaults (client.lr = 0.05, the
# project default, where they have a base rate at all).
CORE = [
    ("uniform", True, []),
    ("uniform-off", True, [OFF]),
    ("fednova", True, ['strategy.name="fednova"']),
    # Tuning-free, zero tuning budget.
    ("delta-sgd", False, ['policy={name="curvature", eta_init=0.2}']),
    ("delta-sgd-off", False, ['policy={name="curvature", eta_init=0.2}', OFF]),
    ("fedex", False, ['strategy.name="fedex"']),
    ("fedex-off", False, ['strategy.name="fedex"', OFF]),
    ("fedhyper-default", False, ['strategy.name="fedhyper"']),
    ("fedhyper-default-off", False, ['strategy.name="fedhyper"', OFF]),
    ("meta-rates-default", False, ['strategy.name="meta-rates"']),
    ("meta-rates-default-off", False, ['strategy.name="meta-rates"', OFF]),
    ("hypernet-default", False, ['policy={name="hypernet"}']),
    ("hypernet-default-off", False, ['policy={name="hypernet"}', OFF]),
    # Personalised rates at equal budget (the same 5-point grid of the base rate).
    ("by-data-size", True, ['policy.name="by-data-size"']),
    ("by-data-size-off", True, ['policy.name="by-data-size"', OFF]),
    ("meta-rates", True, ['strategy.name="meta-rates"']),
    ("meta-rates-off", True, ['strategy.name="meta-rates"', OFF]),
    ("hypernet", True, ['policy={name="hypernet"}']),
    ("hypernet-off", True, ['policy={name="hypernet"}', OFF]),
    ("fedhyper", True, ['strategy.name="fedhyper"']),
    ("fedhyper-off", True, ['strategy.name="fedhyper"', OFF]),
]
EXTRA = [
    ("clip-updates", True, ['policy.name="clip-updates"']),
    ("clip-updates-off", True, ['policy.name="clip-updates"', OFF]),
    ("pfedhn", True, ['strategy.name="pfedhn"']),
    ("fedl2p", True, ['strategy.name="fedl2p"']),
]
# The shorter list for the costlier MLP: uniform, FedNova, the tuning-free methods but the
# hypernetwork policy, and the heuristic and meta-learned rates at equal budget, each both
# ways.
SHORT = [
    v
    for v in CORE
    if not v[0].startswith("hypernet") and not v[0].startswith("fedhyper-off") and v[0] != "fedhyper"
]
# The shortest list, in order of priority (the MLP when time is short): the tuned uniform
# rate and the tuning-free methods at their defaults, then normalisation off.
MIN_ORDER = ["uniform", "fedex", "fedhyper-default", "meta-rates-default", "delta-sgd",
             "uniform-off", "delta-sgd-off", "fedex-off"]
MINIMAL = [next(v for v in CORE if v[0] == n) for n in MIN_ORDER]
MODELS = {
    "lr": [],
    "mlp": ['model={name="mlp", hidden=[200, 200]}'],
}


def seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "]"


def study(bench: str, model: str, tier: str, report_seeds: list[int], only: list[str]) -> str:
    lo, hi = GRIDS[bench]
    budget = 5 * len(SELECTION_SEEDS) * ROUNDS * CLIENTS_PER_ROUND  # epochs = 1
    variants = {"core": CORE, "full": CORE + EXTRA, "short": SHORT, "min": MINIMAL}[tier]
    if only:
        variants = [v for v in variants if v[0] in only]
    lines = [
        f"# Study of record (docs/study-rates.md), written by scripts/study_record.py:",
        f"# {bench}, model {model}, tier {tier}.",
        f'name = "record-{bench}-{model}"',
        f"seeds = {report_seeds}",
        'baseline = "uniform"',
        "parallel = 2",
        "",
        "[tuning]",
        f"budget = {budget}                  # 5 rates × {len(SELECTION_SEEDS)} seeds × {ROUNDS} rounds × {CLIENTS_PER_ROUND} client-epochs",
        f"seeds = {SELECTION_SEEDS}",
        'objective = "val_personalized_mean"',
        "",
        "[[benchmark]]",
        f'name = "{bench}-{model}"',
        f'config = "{os.path.join(ROOT, "examples", "study-rates", bench + ".toml")}"',
        f"set = {toml_list(MODELS[model])}",
    ]
    for name, tuned, sets in variants:
        lines += ["", "[[variant]]", f'name = "{name}"', f"set = {toml_list(sets)}"]
        if tuned:
            lines += [
                "[variant.tune]",
                'method = { name = "grid" }',
                f"space = {{ client.lr = {{ log = [{lo}, {hi}], grid = 5 }} }}",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out, bench, model, tier = sys.argv[1:5]
    report_seeds = seeds(sys.argv[5] if len(sys.argv) > 5 else "0-9")
    only = [v for v in (sys.argv[6] if len(sys.argv) > 6 else "").split(",") if v]
    if bench not in GRIDS or model not in MODELS or tier not in ("core", "full", "short", "min"):
        sys.exit(f"usage: {__doc__}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{bench}-{model}.toml")
    text = study(bench, model, tier, report_seeds, only)
    old = open(path).read() if os.path.exists(path) else None
    if old != text:
        with open(path, "w") as f:
            f.write(text)
    print(path)


if __name__ == "__main__":
    main()

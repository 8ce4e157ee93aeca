"""Reference values for fedpace-privacy's RDP accountant, computed with Google's dp_accounting.

Regenerate (writes rdp_reference.json beside this script):

    python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting==0.6.0
    /tmp/dpvenv/bin/python crates/privacy/tests/golden/rdp_reference.py

Every epsilon here uses dp_accounting's default order list (RdpAccountant()),
Poisson-sampled Gaussian events and the add-or-remove-one neighbouring relation.
"""

import json
import math
import os
from importlib import metadata

import dp_accounting
from dp_accounting import mechanism_calibration
from dp_accounting.rdp import rdp_privacy_accountant as rdp

# (q, sigma, order): single-step RDP, integer and fractional orders.
RDP_POINTS = [
    (0.01, 2.5, 1.5), (0.01, 2.5, 2.5), (0.01, 2.5, 5.0), (0.01, 2.5, 50.0), (0.01, 2.5, 100.0),
    (0.1, 1.0, 3.14159), (0.001, 0.8, 1.7), (0.5, 2.0, 10.5), (0.99, 0.1, 256.0),
    (1e-5, 0.1, 256.1), (1e-4, 1.0, 1.5), (0.01, 10.0, 20.0), (0.1, 100.0, 20.5),
    (0.2, 1.2, 1.1), (0.05, 0.9, 63.0),
]

# (q, sigma, steps, delta): epsilon over the default orders.
EPSILON_POINTS = [
    (0.01, 1.0, 1000, 1e-5),
    (256 / 60000, 1.1, 14062, 1e-5),
    (1e-4, 1.0, 2000, 1e-6),
    (0.001, 0.5, 100, 1e-5),
    (0.1, 1.0, 100, 1e-5),
    (0.05, 0.8, 500, 1e-6),
    (1.0, 5.0, 50, 1e-5),
    (0.02, 1.3, 2000, 1e-5),
    (0.3, 2.0, 20, 1e-3),
    (0.005, 0.7, 5000, 1e-8),
    (0.5, 10.0, 1, 1e-5),
    (0.001, 3.0, 10000, 1e-5),
    (100 / 763430, 1.0, 3000, 1e-9),
    (0.01, 2.0, 100, 1e-5),
]

# (q, steps, target_epsilon, delta): noise multiplier reaching the target.
CALIBRATION_POINTS = [
    (0.01, 1000, 2.0, 1e-5),
    (0.1, 100, 1.0, 1e-6),
    (1.0, 10, 8.0, 1e-5),
    (0.001, 10000, 0.5, 1e-5),
]


def event(q, sigma, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def main():
    out = {
        "generator": f"dp_accounting {metadata.version('dp-accounting')}",
        "rdp_points": [],
        "epsilon_points": [],
        "calibration_points": [],
    }
    for q, sigma, order in RDP_POINTS:
        value = rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, [order])[0]
        # JSON has no infinity; write it as the string "inf".
        value = float(value) if math.isfinite(value) else "inf"
        out["rdp_points"].append({"q": q, "sigma": sigma, "order": order, "rdp": value})
    for q, sigma, steps, delta in EPSILON_POINTS:
        acc = rdp.RdpAccountant()
        acc.compose(event(q, sigma, steps))
        eps, order = acc.get_epsilon_and_optimal_order(delta)
        out["epsilon_points"].append({"q": q, "sigma": sigma, "steps": steps, "delta": delta,
                                      "epsilon": float(eps), "order": float(order)})
    for q, steps, target, delta in CALIBRATION_POINTS:
        sigma = mechanism_calibration.calibrate_dp_mechanism(
            rdp.RdpAccountant, lambda s, q=q, steps=steps: event(q, s, steps), target, delta,
            tol=1e-9)
        out["calibration_points"].append({"q": q, "steps": steps, "epsilon": target,
                                          "delta": delta, "noise_multiplier": float(sigma)})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rdp_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

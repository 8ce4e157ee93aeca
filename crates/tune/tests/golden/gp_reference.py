"""Golden numbers for crates/tune/src/gp.rs, from scikit-learn and scipy.

Run: python3 -m venv venv && venv/bin/pip install numpy scipy scikit-learn
     venv/bin/python gp_reference.py > gp.txt
Versions used: numpy 2, scipy 1.17.1, scikit-learn 1.9.1.
"""
import numpy as np
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

X = np.array([[0.1, 0.8], [0.4, 0.3], [0.7, 0.5], [0.9, 0.1], [0.25, 0.6]])
y = np.array([0.3, -0.5, 1.2, 0.1, 0.7])
kernel = ConstantKernel(1.5, "fixed") * Matern(length_scale=[0.3, 0.5], length_scale_bounds="fixed", nu=2.5)
# alpha is the noise variance on the training diagonal; prediction is of the latent f.
gp = GaussianProcessRegressor(kernel, alpha=0.01, optimizer=None, normalize_y=False).fit(X, y)

print("# log marginal likelihood, then: x0 x1 mean sd EI(best=1.2, xi=0.01)")
print(f"{gp.log_marginal_likelihood_value_:.15e}")
tests = np.array([[0.1, 0.8], [0.5, 0.5], [0.0, 0.0], [0.65, 0.45], [1.0, 1.0], [0.3, 0.2]])
mean, sd = gp.predict(tests, return_std=True)
for x, m, s in zip(tests, mean, sd):
    gain = m - 1.2 - 0.01
    z = gain / s
    ei = gain * norm.cdf(z) + s * norm.pdf(z)
    print(f"{x[0]} {x[1]} {m:.15e} {s:.15e} {ei:.15e}")

"""
The effect of the learning rate
===============================

Too low and training crawls; too high and it oscillates, then diverges.  On a
quadratic loss the border is exact: gradient descent with learning rate
:math:`\\eta` multiplies the error along each eigenvector of the Hessian
(eigenvalue :math:`\\lambda`) by :math:`1 - \\eta\\lambda` per step, so it
converges if and only if :math:`|1 - \\eta L| < 1`, that is
:math:`\\eta < 2/L`, where :math:`L` is the largest eigenvalue (the
curvature of the steepest direction).

Here the problem is least squares on two correlated features of
scikit-learn's diabetes data (``s1`` and ``s2``, correlation 0.90), so the
loss surface is a long, narrow valley and the whole trajectory can be drawn.
We train with :class:`etakit.SGD` on the full data set (plain gradient
descent) at four learning rates:

* :math:`0.1/L`, too low: the error shrinks by only
  :math:`1 - 0.1\\,\\mu/L` per step along the flat direction
  (:math:`\\mu` the smallest eigenvalue); after 40 steps the loss is still
  above a third of its starting gap;
* :math:`1/L`, good: no oscillation, and 99% of the gap closed in 40 steps;
* :math:`2/(L+\\mu)`, here :math:`1.9/L`, the best constant rate for a
  quadratic: the steep direction overshoots and flips sign every step
  (factor :math:`1 - 1.9 = -0.9`), but the flat direction, which limits
  convergence, moves 1.9 times faster, so this run ends lowest;
* :math:`2.1/L`, past the limit: the factor is :math:`-1.1`, so the error
  grows by 1.1 and the loss by :math:`1.1^2 = 1.21` per step.

The best rate sits just below the point of divergence; that is why a
learning-rate finder that reads only the loss curve is tempted to overshoot
(see :doc:`plot_lr_find`).  The example asserts each of these statements on the runs it plots.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes

import etakit

data = load_diabetes()
cols = [data.feature_names.index("s1"), data.feature_names.index("s2")]
X = data.data[:, cols]
X = (X - X.mean(0)) / X.std(0)
y = (data.target - data.target.mean()) / data.target.std()
n = len(y)


def loss(w):
    r = X @ w - y
    return float(r @ r) / n


def grad(w):
    return 2.0 * X.T @ (X @ w - y) / n


H = 2.0 * X.T @ X / n                      # the Hessian of this quadratic
mu, L = np.linalg.eigvalsh(H)
w_star = np.linalg.solve(H, 2.0 * X.T @ y / n)
f_star = loss(w_star)
print(f"L = {L:.3f}, mu = {mu:.3f}, condition number {L / mu:.1f}, stability limit 2/L = {2 / L:.3f}")


def train(lr, steps, w0=(-1.5, 2.5)):
    """Full-batch gradient descent with etakit.SGD; returns the path and the loss gaps."""
    w = np.array(w0, dtype=np.float64)
    opt = etakit.SGD([w], lr=lr)
    path, gaps = [w.copy()], [loss(w) - f_star]
    for _ in range(steps):
        opt.step([grad(w)])                 # w is updated in place
        path.append(w.copy())
        gaps.append(loss(w) - f_star)
    return np.array(path), np.array(gaps)


# %%
# Four learning rates, the same start
# -----------------------------------
steps = 40
runs = {
    "0.1/L (too low)": 0.1 / L,
    "1/L (good)": 1.0 / L,
    "2/(L+mu) (best, oscillates)": 2.0 / (L + mu),
    "2.1/L (diverges)": 2.1 / L,
}
results = {name: train(lr, steps) for name, lr in runs.items()}

# etakit's step is plain gradient descent: the same path as w - lr * grad(w)
w = np.array([-1.5, 2.5])
for _ in range(steps):
    w = w - (1.0 / L) * grad(w)
np.testing.assert_allclose(results["1/L (good)"][0][-1], w, rtol=1e-12)

# what the text says, checked on these runs
low, good, osc, high = (results[k][1] for k in runs)
assert low[-1] > low[0] / 3 and good[-1] < 0.01 * good[0]
assert osc[-1] < good[-1], "2/(L+mu) ends lower than 1/L"
assert abs(2.0 / (L + mu) * L - 1.9) < 0.01       # 2/(L+mu) is 1.9/L on this problem
top = np.linalg.eigh(H)[1][:, 1]          # the steep direction
signs = np.sign((results["2/(L+mu) (best, oscillates)"][0] - w_star) @ top)
assert np.all(signs[1:] != signs[:-1]), "2/(L+mu) flips sign along the steep direction every step"
growth = high[-1] / high[-2]
print(f"loss growth per step at 2.1/L: {growth:.4f} (predicted 1.21)")
assert abs(growth - 1.21) < 0.005 and high[-1] > 100 * high[0]

# %%
# Loss curves and trajectories
# ----------------------------
# Left: the loss above its minimum, log scale.  Right: the loss contours and
# the path of each run from the same start (the diverging run's first 25
# steps: it bounces across the valley, further each time, and leaves the
# picture).

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
colors = ["tab:blue", "tab:green", "tab:orange", "tab:red"]
for (name, (path, gaps)), c in zip(results.items(), colors):
    ax1.semilogy(gaps, color=c, label=f"lr = {name}")
ax1.set_xlabel("step")
ax1.set_ylabel("loss - minimum")
ax1.set_title("loss curves")
ax1.legend()

g1, g2 = np.meshgrid(np.linspace(-2.5, 3.0, 200), np.linspace(-2.5, 3.0, 200))
W = np.stack([g1.ravel(), g2.ravel()], 1)
Z = ((W @ X.T - y) ** 2).mean(1).reshape(g1.shape)
ax2.contour(g1, g2, Z - f_star, levels=np.geomspace(1e-3, 30, 14), colors="0.75", linewidths=0.8)
for (name, (path, _)), c in zip(results.items(), colors):
    shown = path[:26] if "diverges" in name else path        # later steps are far off the picture
    ax2.plot(shown[:, 0], shown[:, 1], ".-", color=c, lw=1, ms=3, label=name)
ax2.plot(*w_star, "k*", ms=12, label="minimum")
ax2.set_xlim(-2.5, 3.0)
ax2.set_ylim(-2.5, 3.0)
ax2.set_xlabel("weight of s1")
ax2.set_ylabel("weight of s2")
ax2.set_title("trajectories")
fig.tight_layout()

# %%
# Where the limit is: 2/L
# -----------------------
# Loss after 100 steps, relative to the start, for learning rates around the
# limit.  Every rate below :math:`2/L` (dashed line) ends lower than it
# started; every rate above it ends higher, and the further above, the faster
# it grows: the loss after 100 steps is close to :math:`|1-\eta L|^{200}`.
# The lowest point of the curve is just below the limit, near
# :math:`2/(L+\mu)` (dotted).

ratios = np.concatenate([np.geomspace(0.05, 1.96, 25), np.geomspace(2.04, 2.6, 8)])
final = np.array([train(r / L, 100)[1][-1] / train(r / L, 0)[1][0] for r in ratios])
assert np.all(final[ratios < 2] < 1) and np.all(final[ratios > 2] > 1)
assert 1.6 < ratios[np.argmin(final)] < 2.0, "the lowest point is just below the limit, near 2/(L+mu)"
above = ratios > 2.2
np.testing.assert_allclose(np.log(final[above]), 200 * np.log(ratios[above] - 1), rtol=0.05)

fig, ax = plt.subplots(figsize=(7, 4))
ax.semilogy(ratios, final, "o-", ms=4)
ax.axvline(2.0, color="k", ls="--", label="2/L: the stability limit")
ax.axvline(2 * L / (L + mu), color="tab:orange", ls=":", label="2/(L+mu): the best constant rate")
ax.axhline(1.0, color="0.6", lw=0.8)
ax.set_xlabel("learning rate × L")
ax.set_ylabel("loss gap after 100 steps / at start")
ax.set_title("gradient descent converges below 2/L and diverges above")
ax.legend()
fig.tight_layout()
plt.show()

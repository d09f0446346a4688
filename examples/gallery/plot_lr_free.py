"""
Learning-rate-free optimizers against a tuned grid
==================================================

Nine of etakit's rules choose their own step size.  Prodigy, D-Adaptation
(Adam, SGD, AdaGrad) and DoG / L-DoG estimate it from how far the weights
have moved and from the gradients seen; their ``lr`` is only a multiplier,
default 1.  The three Schedule-Free rules replace the *schedule*, not the
learning rate: they still take one (default 0.0025 for AdamW and RAdam, 1.0
for SGD).

The problem: an MLP (64-64-10) on scikit-learn's digits, 200 minibatch steps
of 64, from the same weights and the same minibatches for every run.  The
baseline is what tuning buys: a grid of 11 constant learning rates, two per
decade from 1e-4 to 10, for Adam and for SGD with momentum 0.9.  The score
is the *normalised regret* of the final full-data training loss,
(loss - best of grid) / (initial loss - best of grid): 0 is as good as the
best tuned rate, 1 no better than not training, below 0 better than the grid.

What this run shows (and asserts): Prodigy and D-Adapt Adam, with their
defaults, do as well as the best grid point (regret below 0.02); DoG, L-DoG
and D-Adapt AdaGrad come within 0.1; Schedule-Free at its default rate is
good for SGD and poor for RAdam (it needs its learning rate chosen); and
D-Adapt SGD lags far behind on this network, as it does on the MLPs of the
benchmark suite (:doc:`/benchmarks`).  Prodigy's estimated step size climbs
from ``d0 = 1e-6`` to within a factor of 10 of the best grid rate.
"""

import matplotlib.pyplot as plt
import numpy as np

import etakit
from etakit.demo import MLP, load_digits_split

Xtr, ytr, Xte, yte = load_digits_split(seed=0)
STEPS, BATCH, SIZES = 200, 64, [64, 64, 10]


def run(make):
    """Train from the same start on the same minibatches; return the final full-data loss and the optimizer."""
    net = MLP(SIZES, seed=0)
    rng = np.random.default_rng(1)
    opt = make(net.params)
    trace = []
    if hasattr(opt, "train"):                  # schedule-free: train at y, evaluate at the average x
        opt.train()
    for _ in range(STEPS):
        idx = rng.integers(0, len(ytr), BATCH)
        _, grads = net.loss_and_grad(net.params, Xtr[idx], ytr[idx])
        opt.step(grads)
        trace.append(opt.param_groups[0].get("d", np.nan))
    if hasattr(opt, "eval"):
        opt.eval()
    return net.loss_and_grad(net.params, Xtr, ytr)[0], np.array(trace)


initial = MLP(SIZES, seed=0).loss_and_grad(MLP(SIZES, seed=0).params, Xtr, ytr)[0]

# %%
# The grid: what tuning buys
# --------------------------

grid = np.geomspace(1e-4, 10, 11)
adam = np.array([run(lambda p, lr=lr: etakit.Adam(p, lr=lr))[0] for lr in grid])
sgdm = np.array([run(lambda p, lr=lr: etakit.SGD(p, lr=lr, momentum=0.9))[0] for lr in grid])
best = min(np.nanmin(adam), np.nanmin(sgdm))
best_lr = grid[np.nanargmin(adam)]
print(f"initial loss {initial:.3f}; best of grid {best:.4f} (Adam's best lr {best_lr:.3g})")

# %%
# The learning-rate-free rules, with their defaults
# -------------------------------------------------

names = ["Prodigy", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad", "DoG", "LDoG",
         "ScheduleFreeAdamW", "ScheduleFreeSGD", "ScheduleFreeRAdam"]
final, traces = {}, {}
for name in names:
    final[name], traces[name] = run(getattr(etakit, name))
regret = {n: (final[n] - best) / (initial - best) for n in names}
for n in names:
    print(f"{n:>18}: final loss {final[n]:.4f}, regret {regret[n]:+.3f}")

assert all(np.isfinite(final[n]) and final[n] < initial for n in names), "no divergence"
assert regret["Prodigy"] < 0.02 and regret["DAdaptAdam"] < 0.02
assert max(regret["DoG"], regret["LDoG"], regret["DAdaptAdaGrad"]) < 0.1
assert regret["ScheduleFreeSGD"] < 0.05 < 0.3 < regret["ScheduleFreeRAdam"]
assert regret["DAdaptSGD"] > 0.3
d = traces["Prodigy"]
assert d[0] < 1e-5 and best_lr / 10 < d[-1] < best_lr * 10

# %%
# The picture
# -----------
# Left: final loss against the learning rate for the two grids (a rate too
# high diverges to the right), and each learning-rate-free rule as a
# horizontal line at its final loss.  Right: Prodigy's step size ``d`` over
# the run, against the grid's best Adam rate.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.6, 1]})
ax1.loglog(grid, adam, "ko-", label="Adam, constant lr (grid)")
ax1.loglog(grid, sgdm, "s-", color="0.55", label="SGD momentum 0.9 (grid)")
for i, n in enumerate(names):
    ax1.axhline(final[n], color=f"C{i}", lw=1.4, ls="-" if i < 6 else "--", label=f"{n} ({regret[n]:+.3f})")
ax1.set_xlabel("learning rate (grid)")
ax1.set_ylabel("final training loss (full data)")
ax1.set_title("defaults of the learning-rate-free rules against a tuned grid")
ax1.legend(fontsize=7, ncol=2)

ax2.semilogy(np.arange(1, STEPS + 1), d, "C0", label="Prodigy's d")
ax2.axhline(best_lr, color="k", ls=":", label=f"best Adam rate of the grid ({best_lr:.2g})")
ax2.set_xlabel("step")
ax2.set_ylabel("step size")
ax2.set_title("Prodigy finds its step size")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

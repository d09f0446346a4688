"""
lr_find step by step
====================

:func:`etakit.lr_find` is an LR range test: it trains briefly while the
learning rate grows exponentially, reads a learning rate off the loss curve,
and then *confirms* it with short training runs.  This example follows each
step on etakit's demo problem, a small MLP (64-128-10, :class:`etakit.demo.MLP`)
on scikit-learn's bundled handwritten digits, trained with AdamW on
minibatches of 64, and then trains at each suggestion.

What the pictures show, and what the example asserts:

1. **The sweep.**  The loss recorded before each step, from ``start_lr`` to
   ``end_lr``: flat while the rate is too small to move the weights, falling,
   then rising once the rate is too high.
2. **The curve, without lag.**  The sweep stops on a causal moving average
   (fastai's), which lags the loss: its lowest point comes at a higher
   learning rate than that of the centred smoothing read after the sweep.
3. **The candidate** is where the centred curve has made 80% of its drop
   from the starting level to its lowest point.
4. **Confirmation.**  Short runs (30 steps, from the original weights) at a
   constant 1.5 times the candidate; a failing run halves the candidate, and
   while the run at 1.5 times a *doubled* candidate passes and ends lower,
   the candidate doubles.  The suggestion is therefore the candidate times a
   power of two, and its own run passed.
5. **The training that follows**: AdamW with a warmup-cosine schedule
   peaking at each suggestion, 15 epochs.  Every suggestion trains to at
   least 97% held-out accuracy on this forgiving problem, the default
   (``"robust"``) one included.  The classic mistake, a peak at the rate of
   the sweep's lowest loss itself (ten times the ``"minimum"`` suggestion),
   ends with more than 1.5 times the default's training loss.
"""

import math

import matplotlib.pyplot as plt
import numpy as np

import etakit
from etakit import schedules as S
from etakit.demo import MLP, load_digits_split

Xtr, ytr, Xte, yte = load_digits_split(seed=0)
rng = np.random.default_rng(0)
net = MLP([64, 128, 10], seed=0)
BATCH = 64


def loss_and_grad(params):
    """One minibatch: lr_find calls this once per step."""
    idx = rng.integers(0, len(ytr), BATCH)
    return net.loss_and_grad(params, Xtr[idx], ytr[idx])


before = [p.copy() for p in net.params]
res = etakit.lr_find(loss_and_grad, net.params, optimizer=etakit.AdamW, start_lr=1e-5, end_lr=10.0,
                     num_steps=100, progress=False, weight_decay=1e-4)
print(res)
# the sweep trained the network; lr_find put every weight back, bit for bit
assert all(np.array_equal(a, b) for a, b in zip(before, net.params))

# %%
# Steps 1 to 3: the sweep, the smoothing, the candidate
# -----------------------------------------------------

i_ma, i_trend = int(np.nanargmin(res.smoothed_losses)), int(np.nanargmin(res.trend))
assert res.lrs[i_ma] > res.lrs[i_trend], "the moving average's minimum lags the centred curve's"
n0 = max(1, min(10, len(res.lrs) // 10))
start_level = float(np.median(res.losses[:n0]))
lowest = float(np.nanmin(res.trend))
level80 = start_level - 0.8 * (start_level - lowest)
j = int(np.argmax(res.trend <= level80))
assert res.candidate == res.lrs[j - 1], "the candidate: the step before the curve reaches 80% of its drop"

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3))
ax1.semilogx(res.lrs, res.losses, color="0.6", lw=1, label="loss at each step of the sweep")
ax1.semilogx(res.lrs, res.smoothed_losses, "C0--", lw=1.2, label="moving average (the sweep stops on it)")
ax1.semilogx(res.lrs, res.trend, "C0", lw=2, label="centred smoothing (read after the sweep)")
ax1.plot(res.lrs[i_ma], res.smoothed_losses[i_ma], "C0v", ms=8)
ax1.plot(res.lrs[i_trend], res.trend[i_trend], "C0o", ms=8)
ax1.set_title("1-2: the sweep; the moving average's lowest point (▼) lags")
ax1.set_ylim(0, 1.6 * start_level)          # the divergence spike at the end goes off the top
ax1.set_xlabel("learning rate")
ax1.set_ylabel("minibatch loss")
ax1.legend(fontsize=8)

ax2.semilogx(res.lrs, res.trend, "C0", lw=2)
for y, text, va in ((start_level, "starting level", "bottom"), (lowest, "lowest point", "top"),
                    (level80, "80% of the drop", "bottom")):
    ax2.axhline(y, color="0.5", ls=":", lw=1)
    ax2.text(res.lrs[0], y, text, va=va, fontsize=8)
ax2.axvline(res.candidate, color="C1", lw=2, label=f"candidate {res.candidate:.3g}")
ax2.set_title("3: the candidate")
ax2.set_xlabel("learning rate")
ax2.legend(fontsize=8)
fig.tight_layout()

# %%
# Step 4: confirmation runs
# -------------------------

for run in res.confirm_runs:
    print(f"run at lr {run['lr']:.3g}: {'passed' if run['ok'] else 'failed'} ({run['reason']}), "
          f"final level {run.get('level', float('nan')):.3f}")
ratio = res.suggestion / res.candidate
assert abs(math.log2(ratio) - round(math.log2(ratio))) < 1e-9, "the suggestion is the candidate times 2^j"
assert any(r["ok"] and math.isclose(r["lr"], 1.5 * res.suggestion) for r in res.confirm_runs)
assert res.extra_steps == sum(r["steps"] for r in res.confirm_runs)

# the summary picture lr_find draws itself (res.plot), with every suggestion and run marked
fig, ax = plt.subplots(figsize=(8, 4.6))
res.plot(ax=ax)

# %%
# Step 5: the training that follows
# ---------------------------------
# AdamW with a warmup-cosine schedule that peaks at each suggestion (the
# schedule ``etakit demo`` uses), from the same initial weights and minibatches.

EPOCHS = 15
steps_per_epoch = len(ytr) // BATCH
total = EPOCHS * steps_per_epoch


def train(peak):
    model = MLP([64, 128, 10], seed=0)
    order = np.random.default_rng(1)
    lr = S.warmup_cosine(peak, warmup_steps=total // 20, total_steps=total, min_lr=peak / 100)
    opt = etakit.AdamW(model.params, lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(EPOCHS):
        perm = order.permutation(len(ytr))
        epoch = []
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            loss, grads = model.loss_and_grad(model.params, Xtr[idx], ytr[idx])
            opt.step(grads)
            epoch.append(loss)
        losses.append(np.mean(epoch))
    return np.array(losses), model.accuracy(Xte, yte)


peaks = dict(res.suggestions)
peaks["the sweep's lowest loss"] = 10 * res.suggestions["minimum"]    # "minimum" is that rate / 10
runs = {name: train(lr) for name, lr in peaks.items()}
for name, (losses, acc) in runs.items():
    print(f"{name:>30}: peak lr {peaks[name]:.3g}, final training loss {losses[-1]:.4f}, held-out {acc:.1%}")
assert all(acc >= 0.97 for name, (_, acc) in runs.items() if name in res.suggestions)
assert runs["the sweep's lowest loss"][0][-1] > 1.5 * runs["robust"][0][-1]

fig, ax = plt.subplots(figsize=(8, 4.3))
for name, (losses, acc) in runs.items():
    ax.semilogy(np.arange(1, EPOCHS + 1), losses, "o-", ms=3,
                label=f"{name}: peak {peaks[name]:.2g}, held-out {acc:.1%}")
ax.set_xlabel("epoch")
ax.set_ylabel("training loss (epoch mean)")
ax.set_title("AdamW + warmup-cosine peaking at each suggestion")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

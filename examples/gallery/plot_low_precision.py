"""
Low-precision optimizer state
=============================

Adam keeps two numbers per parameter, so in float32 its state takes twice
the memory of the model.  The element-wise rules can keep their state in
fewer bytes, per parameter group (``state_dtype=``):

* ``"bfloat16"``: 2 bytes per number, rounded to nearest even, or
  stochastically with ``stochastic_rounding=True``;
* ``"int8"``: bitsandbytes' 8-bit blockwise format, one byte per number plus
  one float32 scale per block of 256 numbers (tensors smaller than
  ``min_8bit_size``, 4096 elements by default, keep float32 state).

Each step decodes a chunk of state to float32, runs the float32 update and
encodes it back, so the arithmetic is float32's; only the stored state is
rounded.  This example measures the three things that matter: the memory
(asserted exactly: 8, 4 and 2.03 bytes of Adam state per parameter), the
time of a step (measured here, on whatever machine builds these pages: see
:doc:`/benchmarks` for careful numbers), and training quality (asserted:
every format ends within 1.5 points of float32's held-out accuracy on the
demo problem).  The last section shows bfloat16 *parameters*, where how the
float32 update is written back decides whether small updates survive.
"""

import functools

import matplotlib.pyplot as plt
import ml_dtypes
import numpy as np

import etakit
from etakit import schedules as S
from etakit.bench import measure
from etakit.demo import MLP, load_digits_split

FORMATS = {
    "float32": dict(state_dtype="float32"),
    "bfloat16": dict(state_dtype="bfloat16"),
    "bfloat16, stochastic": dict(state_dtype="bfloat16", stochastic_rounding=True),
    "int8": dict(state_dtype="int8"),
}

# %%
# Memory
# ------
# The bytes of optimizer state per parameter, read from the state dict.

n = 1 << 20
g = (np.random.default_rng(0).standard_normal(n) * 1e-2).astype(np.float32)
state_bytes, opts = {}, {}
for name, kw in FORMATS.items():
    opt = etakit.Adam([np.zeros(n, np.float32)], lr=1e-3, **kw)
    opt.step([g])
    arrays = [v for v in opt.state_dict()["state"][0].values() if isinstance(v, np.ndarray) and v.size > 1]
    state_bytes[name] = sum(a.nbytes for a in arrays) / n
    opts[name] = opt
    print(f"{name:>22}: {state_bytes[name]:.4f} bytes of state per parameter "
          f"({', '.join(f'{a.dtype}' for a in arrays)})")
assert state_bytes["float32"] == 8 and state_bytes["bfloat16"] == 4
assert state_bytes["int8"] == 2 + 2 * 4 / 256          # two uint8 codes + two float32 scales per 256

# %%
# Speed
# -----
# Medians of interleaved runs of one Adam step on a 1M-element float32
# tensor, one thread (the bytes a step moves: 28 per element with float32
# state, 20 with bfloat16, 16.06 with int8).  One thread, because a machine
# busy with other work (as a documentation build often is) makes two-thread
# timings erratic.

threads = etakit.get_num_threads()
etakit.set_num_threads(1)
times = measure({name: functools.partial(o.step, [g]) for name, o in opts.items()}, repeats=7, min_time=0.02)
etakit.set_num_threads(threads)
for name, t in times.items():
    print(f"{name:>22}: {t * 1e6:8.1f} us per step")

# %%
# Training quality
# ----------------
# etakit's demo problem: an MLP 64-128-10 on scikit-learn's digits, AdamW
# with a warmup-cosine schedule, 20 epochs, the same weights and minibatches
# for every format.  Its first weight matrix (8,192 elements) gets int8 state;
# the smaller tensors keep float32.

Xtr, ytr, Xte, yte = load_digits_split(seed=0)
EPOCHS, BATCH = 20, 64
steps = len(ytr) // BATCH
curves, accuracy = {}, {}
for name, kw in FORMATS.items():
    net = MLP([64, 128, 10], seed=0)
    order = np.random.default_rng(1)
    opt = etakit.AdamW(net.params, lr=S.warmup_cosine(0.01, 20, EPOCHS * steps, min_lr=1e-4), weight_decay=1e-4,
                       **kw)
    losses = []
    for _ in range(EPOCHS):
        perm = order.permutation(len(ytr))
        losses.append(np.mean([opt.step(grads) or loss for loss, grads in
                               (net.loss_and_grad(net.params, Xtr[idx], ytr[idx])
                                for idx in (perm[i * BATCH:(i + 1) * BATCH] for i in range(steps)))]))
    curves[name], accuracy[name] = np.array(losses), net.accuracy(Xte, yte)
    print(f"{name:>22}: final training loss {losses[-1]:.4f}, held-out accuracy {accuracy[name]:.1%}")
assert all(abs(accuracy[k] - accuracy["float32"]) <= 0.015 for k in FORMATS)

# %%
# The picture
# -----------

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
names = list(FORMATS)
colors = [f"C{i}" for i in range(len(names))]
axes[0].bar(names, [state_bytes[k] for k in names], color=colors)
axes[0].set_ylabel("bytes of Adam state per parameter")
axes[0].set_title("memory (exact)")
axes[1].bar(names, [times[k] * 1e6 for k in names], color=colors)
axes[1].set_ylabel("µs per step, 1M elements, 1 thread")
axes[1].set_title("speed (measured by this build)")
for ax in axes[:2]:
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
for k, c in zip(names, colors):
    axes[2].semilogy(np.arange(1, EPOCHS + 1), curves[k], color=c, label=f"{k}: {accuracy[k]:.1%} held-out")
axes[2].set_xlabel("epoch")
axes[2].set_ylabel("training loss")
axes[2].set_title("AdamW on digits")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# bfloat16 parameters
# -------------------
#
# The parameters themselves can be bfloat16 (``ml_dtypes.bfloat16`` arrays,
# or ``torch.bfloat16`` tensors in :mod:`etakit.torch`).  The update is
# computed in float32 and written back, and how it is written back decides
# whether small updates survive.  Near 1.0 a bfloat16 step is 2**-7 = 0.0078,
# so an update of 1e-4 is 1/78 of a step: rounded to nearest (``kahan=False``,
# what ``torch.optim`` does) it is lost every time.  Kahan summation (the
# default) keeps what rounding lost in a bfloat16 compensation buffer and adds
# it back at the next step; stochastic rounding (``stochastic_rounding=True``)
# rounds up with probability 1/78, so the updates survive on average.  Here
# 2000 such updates should move 1.0 to 1.2 (asserted below).

BF16 = ml_dtypes.bfloat16
modes = {"to nearest (kahan=False)": dict(kahan=False), "Kahan (default)": {},
         "stochastic rounding": dict(stochastic_rounding=True)}
paths = {}
for name, kw in modes.items():
    w = np.ones(1024, BF16)
    opt = etakit.SGD([w], lr=1e-4, maximize=True, **kw)     # + 1e-4 per step
    g = [np.ones(1024, BF16)]
    path = []
    for _ in range(2000):
        opt.step(g)
        path.append(float(w.astype(np.float32).mean()))
    paths[name] = np.array(path)
    print(f"{name:>26}: mean parameter after 2000 steps {path[-1]:.4f} (exact: 1.2000)")
assert paths["to nearest (kahan=False)"][-1] == 1.0                       # every update lost
assert abs(paths["Kahan (default)"][-1] - 1.2) <= 2**-7                    # within one bfloat16 step
assert abs(paths["stochastic rounding"][-1] - 1.2) <= 2**-7

fig, ax = plt.subplots(figsize=(7, 4))
steps = np.arange(1, 2001)
ax.plot(steps, 1.0 + 1e-4 * steps, "k:", label="exact (float64)")
for (name, path), c in zip(paths.items(), ["C3", "C0", "C2"]):
    ax.plot(steps, path, color=c, label=name)
ax.set_xlabel("step")
ax.set_ylabel("mean of 1024 bfloat16 parameters")
ax.set_title("SGD updates of 1e-4 on bfloat16 parameters near 1.0")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

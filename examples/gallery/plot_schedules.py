"""
Every schedule, and the PyTorch class it matches
================================================

:mod:`etakit.schedules` has the learning-rate schedules users already know.
Each is a pure function of the step count ``k`` (completed optimizer steps,
from 0), evaluated in C, so the optimizer calls no Python per step and a
resumed run applies exactly the same values.

Each panel below plots one schedule over 1,000 steps.  Where PyTorch has the
schedule, the dots are ``torch.optim.lr_scheduler``'s learning rates for the
same arguments, stepped once per optimizer step, and the example asserts that
they agree to ``rtol=1e-9``.  The two schedules from transformers are checked
against transformers' formulas, written out below.  Past its end a schedule
holds its final value where PyTorch would rise again (``cosine``) or raise
(``one_cycle``).
"""

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import etakit
from etakit import schedules as S

N = 1000
lrs = torch.optim.lr_scheduler


def torch_lrs(make, n=N, lr=0.1):
    """The learning rate of each of n steps of a torch optimizer driven by a torch scheduler."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    return np.array(out)


def transformers_warmup_cosine(k, peak, warmup, total):
    # transformers.get_cosine_schedule_with_warmup's lr_lambda, times peak
    if k < warmup:
        return peak * k / max(1, warmup)
    progress = (k - warmup) / max(1, total - warmup)
    return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def transformers_inverse_sqrt(k, peak, warmup):
    # transformers.get_inverse_sqrt_schedule's lr_lambda (timescale = warmup), times peak
    if k < warmup:
        return peak * k / max(1, warmup)
    return peak / math.sqrt((k + warmup - warmup) / warmup)


# (schedule, what it matches, the matching sequence or None)
PANELS = [
    (S.constant(0.1), "constant", None),
    (S.linear(0.1, 0.01, 800), "linear ramp", None),
    (S.step(0.1, 200, 0.5), "StepLR", torch_lrs(lambda o: lrs.StepLR(o, 200, 0.5))),
    (S.multistep(0.1, [300, 600, 800], 0.3), "MultiStepLR",
     torch_lrs(lambda o: lrs.MultiStepLR(o, [300, 600, 800], 0.3))),
    (S.exponential(0.1, 0.997), "ExponentialLR", torch_lrs(lambda o: lrs.ExponentialLR(o, 0.997))),
    (S.polynomial(0.1, 800, 2.0), "PolynomialLR", torch_lrs(lambda o: lrs.PolynomialLR(o, 800, 2.0))),
    (S.cosine(0.1, 1000, 1e-3), "CosineAnnealingLR",
     torch_lrs(lambda o: lrs.CosineAnnealingLR(o, T_max=1000, eta_min=1e-3))),
    (S.cosine_restarts(0.1, 100, period_mult=2), "CosineAnnealingWarmRestarts",
     torch_lrs(lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=2))),
    (S.one_cycle(0.1, 1000), "OneCycleLR", torch_lrs(lambda o: lrs.OneCycleLR(o, max_lr=0.1, total_steps=1000))),
    (S.one_cycle_momentum(1000), "OneCycleLR's momentum",
     None),  # checked below against the momentum torch's OneCycleLR sets
    (S.cyclic(0.01, 0.1, 125, mode="triangular2"), "CyclicLR (triangular2)",
     torch_lrs(lambda o: lrs.CyclicLR(o, 0.01, 0.1, step_size_up=125, mode="triangular2"))),
    (S.inverse_sqrt(0.1, 100), "transformers' inverse_sqrt",
     np.array([transformers_inverse_sqrt(k, 0.1, 100) for k in range(N)])),
    (S.warmup_cosine(0.1, 100, 1000), "transformers' cosine with warmup",
     np.array([transformers_warmup_cosine(k, 0.1, 100, 1000) for k in range(N)])),
    (S.wsd(0.1, 100, 600, 300, decay="1-sqrt"), "warmup-stable-decay", None),
    (S.piecewise_constant([250, 500], [0.1, 0.05, 0.01]), "piecewise constant", None),
    (S.join([S.constant(0.02), S.cosine(0.1, 800)], boundaries=[200]), "optax's join_schedules", None),
    (S.warmup(S.exponential(0.1, 0.998), 150), "warmup(any schedule)", None),
    (0.5 * S.cosine_restarts(0.1, 250, decay=0.6), "0.5 × cosine_restarts(decay=0.6)", None),
]

# the momentum half of OneCycleLR: torch sets it on the optimizer group
p = torch.zeros(1, requires_grad=True)
opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
sched = lrs.OneCycleLR(opt, max_lr=0.1, total_steps=N)
momenta = []
for _ in range(N):
    momenta.append(opt.param_groups[0]["momentum"])
    p.grad = torch.ones(1)
    opt.step()
    sched.step()
PANELS[9] = (PANELS[9][0], PANELS[9][1], np.array(momenta))

# %%
# The schedules, checked
# ----------------------
# ``s.values(n)`` evaluates a schedule for n steps in C.  An optimizer given a
# schedule applies exactly these values: :meth:`etakit.Optimizer.current_lr`
# reports what its next step uses.

for s, _, expected in PANELS:
    v = s.values(N)
    if expected is not None:
        np.testing.assert_allclose(v, expected, rtol=1e-9, atol=1e-12)
    assert v[0] == s(0) and v[-1] == s(N - 1)

opt = etakit.SGD([np.zeros(4)], lr=PANELS[8][0])        # the 1cycle schedule
applied = []
for _ in range(N):
    applied.append(opt.current_lr()[0])
    opt.step([np.ones(4)])
np.testing.assert_array_equal(applied, PANELS[8][0].values(N))

# past the end, cosine holds min_lr where CosineAnnealingLR climbs back up
tail = torch_lrs(lambda o: lrs.CosineAnnealingLR(o, T_max=1000, eta_min=1e-3), n=2000)
assert S.cosine(0.1, 1000, 1e-3)(1999) == 1e-3 and tail[1999] > 0.09
print(f"k = 1999: etakit cosine {S.cosine(0.1, 1000, 1e-3)(1999):.4g}, CosineAnnealingLR {tail[1999]:.4g}")

# %%
# The picture
# -----------

fig, axes = plt.subplots(6, 3, figsize=(12, 17), sharex=True)
k = np.arange(N)
for ax, (s, matches, expected) in zip(axes.flat, PANELS):
    ax.plot(k, s.values(N), lw=1.8, label="etakit")
    if expected is not None:
        ax.plot(k[::40], expected[::40], "o", ms=3.5, color="tab:red", label="reference")
    ax.set_title(f"{s.label()}\n{'matches: ' if expected is not None else ''}{matches}", fontsize=8.5)
    ax.tick_params(labelsize=7)
    ax.set_ylim(bottom=0)
axes.flat[2].legend(fontsize=7)
for ax in axes[-1]:
    ax.set_xlabel("step k")
fig.tight_layout()
plt.show()

"""Shared test helpers: a pure-numpy driver over etakit.reference that
mirrors an etakit optimizer's groups and state, and parameter factories."""
import numpy as np
import pytest

import etakit
from etakit import reference
from etakit._step import RuleSpec

# One parameter list that covers the sizes that matter: empty, one element,
# odd sizes, and a total above the kernel's threading threshold.
SIZES = [(0,), (1,), (17,), (3, 7, 11), (2 * etakit._core.parallel_min() + 5,), (3,)]
# The same for rules that update matrices only (Muon): empty, 1 x 1, tall, wide,
# square, and one (thin: its matrix products stay cheap) that takes the total
# above the threshold.
MATRIX_SIZES = [(0, 5), (1, 1), (17, 3), (3, 7), (8, (2 * etakit._core.parallel_min() + 5) // 8 + 1), (6, 6)]


def matrix_only(kind):
    """Whether optimizer ``kind`` takes 2-D parameters only (its C rule says so)."""
    return RuleSpec.of(etakit.OPTIMIZERS[kind]).matrix_only


def shape_of(kind, n):
    """A parameter shape of n elements that optimizer ``kind`` accepts: (n,), or (1, n) for matrix-only rules."""
    return (1, n) if matrix_only(kind) else (n,)


def sizes_for(kind):
    return MATRIX_SIZES if matrix_only(kind) else SIZES


class ReferenceOptimizer:
    """Drives etakit.reference the way etakit's optimizer drives the kernels.

    ``kind`` is an optimizer class name; ``groups`` is [(indices, hyperparameters)],
    the hyperparameters completed by the class's defaults."""

    def __init__(self, kind, params, groups):
        cls = etakit.OPTIMIZERS[kind]
        self.rule = cls.rule
        self.spec = RuleSpec.of(cls)
        # the per-group scalars (Prodigy's d...) start from each group's own keys, not the class defaults
        self.class_defaults = cls([np.zeros(shape_of(kind, 1))]).defaults
        self.defaults = {k: v for k, v in self.class_defaults.items() if k not in self.spec.group_state}
        self.params, self.groups = params, groups
        self.state = [dict() for _ in params]
        self.steps = [0] * len(params)
        # Per-group scalars.  Prodigy and D-Adaptation step the whole optimizer at once
        # (reference.<rule>_groups, through reference.step_groups).  DoG's (rbar, G, eta) come from sums
        # over the group before its tensors step (reference.group_reductions); schedule-free's (k, lr_max,
        # ...) are passed to every tensor's step as they were before it, then advanced once per group
        # (reference.group_step).
        self.whole = hasattr(reference, f"{self.rule}_groups")
        self.advances = hasattr(reference, f"{self.rule}_advance")
        self.group_names = self.spec.group_state if self.advances else []
        self.group_state = [] if not self.whole else [{} for _ in groups]

    def step(self, grads):
        if self.whole:
            return self._step_whole(grads)
        while len(self.group_state) < len(self.groups):
            self.group_state.append({n: self.class_defaults.get(n, 0.0) for n in self.group_names})
        full = [{**self.defaults, **hp, **(gs if self.advances else {})}
                for (_, hp), gs in zip(self.groups, self.group_state)]
        order = [(i, f) for (idx, _), f in zip(self.groups, full) for i in idx]
        extra = reference.call_reductions(self.rule, [grads[i] for i, _ in order], [hp for _, hp in order])
        grouped = []
        for (idx, hp), gs in zip(self.groups, self.group_state):
            grouped += reference.group_reductions(self.rule, [self.params[i] for i in idx], [grads[i] for i in idx],
                                                  [self.state[i] for i in idx], gs, {**self.defaults, **hp})
        for (i, hp), kw, gkw in zip(order, extra, grouped):
            self.steps[i] += 1
            reference.step_rule(self.rule, self.params[i], grads[i], self.state[i], step=self.steps[i], **hp, **kw,
                                **gkw)
        for gs, f in zip(self.group_state, full):
            reference.group_step(self.rule, gs, f)

    def _step_whole(self, grads):
        order = [i for idx, _ in self.groups for i in idx]
        for i in order:
            self.steps[i] += 1
        groups = []
        for (idx, hp), scalars in zip(self.groups, self.group_state):
            g = {**self.defaults, **hp, **scalars}
            missing = [n for n in self.spec.group_state if n not in g]
            if missing:
                g.update(self.spec.group_state_start(g, missing))
            groups.append({**g, "params": [self.params[i] for i in idx]})
        reference.step_groups(self.rule, groups, [grads[i] for i in order], [self.state[i] for i in order],
                              [self.steps[i] for i in order])
        for scalars, g in zip(self.group_state, groups):
            scalars.update({n: g[n] for n in self.spec.group_state})


def make_params(rng, dtype, sizes=None, kind=None):
    """Parameters of the given shapes (default: those of SIZES that optimizer ``kind`` accepts)."""
    return [rng.standard_normal(s).astype(dtype) for s in (sizes or (sizes_for(kind) if kind else SIZES))]


def make_grads(rng, params):
    return [(rng.standard_normal(p.shape) + 0.3 * p).astype(p.dtype) for p in params]


def ready(opt):
    """Put an optimizer that has modes (schedule-free: etakit's and the reference's) in train mode,
    where it can step; returns it."""
    train = getattr(opt, "train", None)
    if train is not None:
        train()
    return opt


def run_trajectory(kind, hp, dtype, seed, steps=30):
    """Build ``etakit.<kind>(params, **hp)`` on SIZES and step it with seeded gradients."""
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype, kind=kind)
    opt = ready(getattr(etakit, kind)(params, **hp))
    for _ in range(steps):
        opt.step(make_grads(rng, params))
    return params, opt


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def threads():
    """Restore the thread count after a test changes it."""
    old = etakit.get_num_threads()
    yield
    etakit.set_num_threads(old)


@pytest.fixture
def simd():
    old = etakit.simd_variant()
    yield etakit._core.set_simd_variant
    etakit._core.set_simd_variant(old)

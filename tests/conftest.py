"""Shared test helpers: a pure-numpy driver over etakit.reference that
mirrors an etakit optimizer's groups and state, and parameter factories."""
import numpy as np
import pytest

import etakit
from etakit import reference

# One parameter list that covers the sizes that matter: empty, one element,
# odd sizes, and a total above the kernel's threading threshold.
SIZES = [(0,), (1,), (17,), (3, 7, 11), (2 * etakit._core.parallel_min() + 5,), (3,)]


class ReferenceOptimizer:
    """Drives etakit.reference the way etakit's optimizer drives the kernels.

    ``kind`` is an optimizer class name; ``groups`` is [(indices, hyperparameters)],
    the hyperparameters completed by the class's defaults."""

    def __init__(self, kind, params, groups):
        cls = etakit.OPTIMIZERS[kind]
        self.rule = cls.rule
        self.defaults = cls([np.zeros(1)]).defaults
        self.params, self.groups = params, groups
        self.state = [dict() for _ in params]
        self.steps = [0] * len(params)

    def step(self, grads):
        hps = {i: {**self.defaults, **hp} for idx, hp in self.groups for i in idx}
        order = sorted(hps)
        extra = reference.global_inputs(self.rule, [grads[i] for i in order], [hps[i] for i in order])
        for idx, hp in self.groups:
            for i in idx:
                self.steps[i] += 1
                reference.step_rule(self.rule, self.params[i], grads[i], self.state[i], step=self.steps[i],
                                    **hps[i], **extra)


def make_params(rng, dtype, sizes=SIZES):
    return [rng.standard_normal(s).astype(dtype) for s in sizes]


def make_grads(rng, params):
    return [(rng.standard_normal(p.shape) + 0.3 * p).astype(p.dtype) for p in params]


def run_trajectory(kind, hp, dtype, seed, steps=30):
    """Build ``etakit.<kind>(params, **hp)`` on SIZES and step it with seeded gradients."""
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype)
    opt = getattr(etakit, kind)(params, **hp)
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

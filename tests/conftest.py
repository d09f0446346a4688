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
    """Drives etakit.reference the way etakit's optimizer drives the kernels."""

    def __init__(self, kind, params, groups):
        self.kind, self.params, self.groups = kind, params, groups  # groups: [(indices, hp)]
        self.state = [dict() for _ in params]
        self.steps = [0] * len(params)

    def step(self, grads):
        for idx, hp in self.groups:
            for i in idx:
                self._one(i, self.params[i], grads[i], hp)

    def _zeros(self, i, name, fill=0.0):
        st = self.state[i]
        if name not in st:
            st[name] = np.full_like(self.params[i], fill)
        return st[name]

    def _one(self, i, p, g, hp):
        self.steps[i] += 1
        k = self.steps[i]
        if self.kind == "SGD":
            first = False
            buf = None
            if hp.get("momentum", 0.0) != 0:
                first = "momentum_buffer" not in self.state[i]
                buf = self._zeros(i, "momentum_buffer")
            reference.sgd_step(p, g, buf, first_step=first, **hp)
        elif self.kind in ("Adam", "AdamW"):
            hp = dict(hp)
            if self.kind == "AdamW":
                hp.setdefault("weight_decay", 1e-2)
            ams = hp.get("amsgrad", False)
            reference.adam_step(p, g, self._zeros(i, "exp_avg"), self._zeros(i, "exp_avg_sq"),
                                self._zeros(i, "max_exp_avg_sq") if ams else None, step=k,
                                decoupled_weight_decay=self.kind == "AdamW", **hp)
        elif self.kind == "RMSprop":
            buf = self._zeros(i, "momentum_buffer") if hp.get("momentum", 0.0) > 0 else None
            ga = self._zeros(i, "grad_avg") if hp.get("centered", False) else None
            reference.rmsprop_step(p, g, self._zeros(i, "square_avg"), buf, ga, **hp)
        elif self.kind == "Adagrad":
            hp = dict(hp)
            init = hp.pop("initial_accumulator_value", 0.0)
            reference.adagrad_step(p, g, self._zeros(i, "sum", init), step=k, **hp)
        else:
            raise AssertionError(self.kind)


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

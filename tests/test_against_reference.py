"""Every optimizer and option combination against etakit.reference.

The kernels are specified to be bit-identical to the reference (same
operations, same order, same precision), so trajectories are compared with
exact equality over 100 steps, for float32 and float64, on a parameter list
that has empty, one-element, odd-sized and multi-dimensional tensors, two
groups with different hyperparameters, and a total size above the threading
threshold."""
import numpy as np
import pytest

import etakit
from conftest import ReferenceOptimizer, make_grads, make_params, ready, shape_of
from rule_cases import CASES, PARAMS, SECOND_GROUP

STEPS = 100



def _second_group(kind, hp):
    """A second group with visibly different hyperparameters."""
    hp2 = dict(hp)
    if kind in SECOND_GROUP:
        hp2.update(SECOND_GROUP[kind](hp))
        return hp2
    hp2["lr"] = hp.get("lr", getattr(etakit, kind)([np.zeros(shape_of(kind, 1))]).defaults["lr"]) * 0.5
    return hp2


def run_pair(kind, hp, dtype, rng, steps=STEPS, hp_change=None):
    params = make_params(rng, dtype, kind=kind)
    mine = [p.copy() for p in params]
    theirs = [p.copy() for p in params]
    hp2 = _second_group(kind, hp)
    split = 3
    opt = ready(getattr(etakit, kind)([{"params": mine[:split]}, {"params": mine[split:], **hp2}], **hp))
    ref = ReferenceOptimizer(kind, theirs, [(range(split), hp), (range(split, len(params)), hp2)])
    for k in range(steps):
        if hp_change is not None and k == steps // 2:
            hp_change(opt, ref)
        grads = make_grads(rng, theirs)
        opt.step(grads)
        ref.step(grads)
    return opt, ref, mine, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,case", PARAMS)
def test_matches_reference_bit_for_bit(kind, case, dtype, rng):
    opt, ref, mine, theirs = run_pair(kind, CASES[kind][case], dtype, rng)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_array_equal(a, b, err_msg=f"{kind} case {case} param {i}")
    sd = opt.state_dict()["state"]
    for i, st in enumerate(ref.state):
        for name, arr in st.items():
            np.testing.assert_array_equal(sd[i][name], arr, err_msg=f"state {name} of param {i}")
        assert sd[i]["step"] == STEPS


@pytest.mark.parametrize("kind", ["SGD", "Adam", "RMSprop"])
def test_hyperparameters_changed_between_steps_take_effect(kind, rng):
    """Changing lr (and switching on an option that needs new state) mid-run
    is honoured from the next step, as in PyTorch."""
    hp = dict(lr=1e-2)

    def change(opt, ref):
        extra = {"SGD": dict(momentum=0.9), "Adam": dict(amsgrad=False, weight_decay=0.1),
                 "RMSprop": dict(momentum=0.5, centered=True)}[kind]
        for (idx, rhp), group in zip(ref.groups, opt.param_groups):
            group["lr"] *= 3
            group.update(extra)
            rhp["lr"] *= 3
            rhp.update(extra)

    _, ref, mine, theirs = run_pair(kind, hp, np.float64, rng, steps=40, hp_change=change)
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(a, b)


def test_single_large_tensor_float32(rng):
    n = 4 * etakit._core.parallel_min() + 3
    p = rng.standard_normal(n).astype(np.float32)
    q = p.copy()
    opt = etakit.AdamW([p], lr=1e-2, amsgrad=True)
    ref = ReferenceOptimizer("AdamW", [q], [(range(1), dict(lr=1e-2, amsgrad=True))])
    for _ in range(20):
        g = rng.standard_normal(n).astype(np.float32)
        opt.step([g])
        ref.step([g])
    np.testing.assert_array_equal(p, q)


def test_mixed_dtypes_in_one_optimizer(rng):
    ps = [rng.standard_normal(50).astype(np.float32), rng.standard_normal(70001)]
    qs = [p.copy() for p in ps]
    opt = etakit.Adam(ps, lr=1e-2)
    ref = ReferenceOptimizer("Adam", qs, [(range(2), dict(lr=1e-2))])
    for _ in range(10):
        gs = make_grads(rng, qs)
        opt.step(gs)
        ref.step(gs)
    for a, b in zip(ps, qs):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_converges_on_a_quadratic():
    """A behavioural check independent of the reference: minimise |A x - b|^2."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 10))
    x_star = rng.standard_normal(10)
    b = A @ x_star
    for cls, kw in [(etakit.SGD, dict(lr=5e-3, momentum=0.9)), (etakit.Adam, dict(lr=5e-2)),
                    (etakit.RMSprop, dict(lr=1e-2)), (etakit.Adagrad, dict(lr=0.5)),
                    (etakit.AdamW, dict(lr=5e-2, weight_decay=0.0))]:
        x = np.zeros(10)
        opt = cls([x], **kw)
        for _ in range(3000):
            opt.step([2 * A.T @ (A @ x - b) / len(b)])
        assert np.linalg.norm(x - x_star) < 1e-2 * np.linalg.norm(x_star), cls.__name__

"""Every rule against its reference implementation (torch.optim or the package its class names).

The numpy optimizer and the reference step the same parameters with the
same gradients for 100 steps, for every option combination of
tests/rule_cases.py; parameters and state must agree (float64: rtol 1e-9;
float32: within accumulated rounding).  Skipped when torch or the reference
package is not installed (CI installs them: the ``reference`` extra)."""
import numpy as np
import pytest

import etakit
from conftest import matrix_only, ready
from rule_cases import (CASES, PARAMS, STATE_LAYOUT_DIFFERS, float32_in_reference, reference_class,
                        torch_default_dtype)

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (7,), (2, 3, 2), (1,)]
MATRIX_SHAPES = [(4, 3), (3, 5), (6, 6), (1, 2)]     # for rules that update matrices only
STEPS = 100
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def run_both(kind, hp, dtype, monkeypatch, steps=STEPS, seed=0):
    ref_cls = reference_class(kind, monkeypatch)
    if ref_cls is None:
        pytest.skip(f"the reference implementation of {kind} is not installed")
    # scalar state the reference keeps in torch's default dtype follows the run's dtype
    with torch_default_dtype(torch, torch.float64 if dtype == np.float64 else torch.float32):
        return _run_both(ref_cls, kind, hp, dtype, steps, seed)


def _run_both(ref_cls, kind, hp, dtype, steps, seed):
    rng = np.random.default_rng(seed)
    shapes = MATRIX_SHAPES if matrix_only(kind) else SHAPES
    mine = [rng.standard_normal(s).astype(dtype) for s in shapes]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in mine]
    opt = ready(getattr(etakit, kind)(mine, **hp))
    ref = ready(ref_cls(theirs, **hp))
    for _ in range(steps):
        # a noisy quadratic, read at the reference's parameters: both get the same gradients
        grads = [(rng.standard_normal(s) + 0.5 * t.detach().numpy()).astype(dtype) for s, t in zip(shapes, theirs)]
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())     # some references change .grad in place
        with torch.no_grad():
            ref.step()
        opt.step(grads)
    return opt, ref, mine, theirs


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,case", PARAMS)
def test_trajectory_matches_the_reference_implementation(kind, case, dtype, monkeypatch):
    hp = CASES[kind][case]
    opt, ref, mine, theirs = run_both(kind, hp, dtype, monkeypatch)
    tol = TOL[dtype]
    if kind == "Lion" and dtype == np.float32:
        # a sign of an interpolation within rounding of zero can differ: a few elements off by 2 lr
        tol = dict(rtol=2e-4, atol=4 * hp["lr"])
    if dtype == np.float64 and float32_in_reference(kind, hp):
        # the reference rounds a scalar to float32 (LAMB's pre_norm): see float32_in_reference
        tol = dict(rtol=1e-6, atol=1e-8)
    for i, (a, t) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, t.detach().numpy(), **tol, err_msg=f"{kind} {hp} param {i}")
    ours = opt.state_dict()["state"]
    for i, t in enumerate(theirs):
        for name, value in ref.state[t].items():
            if name == "step" or not isinstance(value, torch.Tensor) or name not in ours[i]:
                continue
            np.testing.assert_allclose(np.asarray(ours[i][name]), value.double().numpy(), **tol,
                                       err_msg=f"{kind} {hp} state {name!r} of param {i}")


@pytest.mark.parametrize("kind", list(CASES))
def test_state_names_are_the_reference_s(kind, monkeypatch):
    """The state a checkpoint carries has the reference's names (so it moves between the two)."""
    if kind in STATE_LAYOUT_DIFFERS:
        pytest.skip(STATE_LAYOUT_DIFFERS[kind])
    hp = CASES[kind][-1]
    opt, ref, _, theirs = run_both(kind, hp, np.float64, monkeypatch, steps=2)
    ours = opt.state_dict()["state"][0]
    theirs_names = {k for k, v in ref.state[theirs[0]].items() if isinstance(v, torch.Tensor) and v.dim() > 0}
    ours_names = {k for k, v in ours.items() if np.ndim(v) > 0}
    assert ours_names == theirs_names


def test_every_c_rule_has_an_optimizer_class_and_a_case():
    rules = {cls.rule for cls in etakit.OPTIMIZERS.values()}
    assert rules == set(etakit._core.rule_names())
    assert set(CASES) == set(etakit.OPTIMIZERS)

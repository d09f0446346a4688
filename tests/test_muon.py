"""Muon: what the generic tests cannot see.

The generic tests compare etakit.Muon bit for bit with etakit.reference and,
in float64 at rtol 1e-9, with a torch.optim.Muon whose bfloat16 cast is
switched off (tests/rule_cases.py, ROUNDING_OFF).  Here: the stock
torch.optim.Muon (orthogonalisation in bfloat16) at a tolerance suited to
bfloat16, the orthogonalisation itself, 2-D parameters only, the checks
torch makes at other places, and a failure between the two C passes."""
import numpy as np
import pytest

import etakit
from etakit import reference
from etakit._step import RuleSpec

torch = pytest.importorskip("torch")
import etakit.torch as et  # noqa: E402


def _pair(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    mine = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return rng, mine, [torch.tensor(p.copy(), requires_grad=True) for p in mine]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hp", [dict(lr=0.02), dict(lr=0.02, nesterov=False, adjust_lr_fn="match_rms_adamw")])
def test_stock_torch_muon_within_bfloat16_rounding(hp, dtype):
    """torch orthogonalises in bfloat16 (8 significant bits, relative rounding 2**-9): over 5 steps the
    parameters differ by up to about lr * 2e-2 per step (seen: 1.7e-3 for lr 0.02), a few percent of
    how far they moved."""
    shapes = [(16, 8), (8, 24), (12, 12)]
    rng, mine, theirs = _pair(shapes, dtype)
    opt, ref = etakit.Muon(mine, **hp), torch.optim.Muon(theirs, **hp)
    start = [p.copy() for p in mine]
    for _ in range(5):
        grads = [(rng.standard_normal(s) + 0.5 * t.detach().numpy()).astype(dtype) for s, t in zip(shapes, theirs)]
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        ref.step()
        opt.step(grads)
    for p, t, p0 in zip(mine, theirs, start):
        diff = np.abs(p - t.detach().numpy()).max()
        moved = np.abs(p - p0).max()
        assert diff < 0.05 * moved, (diff, moved)
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=0, atol=5 * hp["lr"] * 4e-2)


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (25, 25), (1, 40), (40, 1)])
def test_orthogonalisation_pushes_singular_values_into_the_band(shape):
    """The quintic's singular values land in about [0.68, 1.13] (Keller Jordan's coefficients), the
    singular vectors are kept, and a tall matrix is the transpose of the wide one."""
    rng = np.random.default_rng(1)
    k = min(shape)
    q1 = np.linalg.qr(rng.standard_normal((shape[0], k)))[0]
    q2 = np.linalg.qr(rng.standard_normal((shape[1], k)))[0]
    G = q1 @ np.diag(np.geomspace(1, 5e-2, k)) @ q2.T      # condition 20: 5 iterations reach the band
    O = reference.zeropower_via_newtonschulz(G)
    u, s, vt = np.linalg.svd(G, full_matrices=False)
    so = np.linalg.svd(O, compute_uv=False)
    assert so.min() > 0.6 and so.max() < 1.25, so
    # O = U f(S) V^T with the same U, V: U^T O V is diagonal
    core = u.T @ O @ vt.T
    np.testing.assert_allclose(core, np.diag(np.diag(core)), atol=1e-10)
    np.testing.assert_allclose(reference.zeropower_via_newtonschulz(G.T), O.T, rtol=1e-12, atol=1e-14)
    assert O.shape == shape and len(so) == k


def test_orthogonalisation_writes_into_out_and_leaves_g():
    rng = np.random.default_rng(2)
    G = rng.standard_normal((5, 9)).astype(np.float32)
    keep = G.copy()
    O = reference.zeropower_via_newtonschulz(G)
    assert O.dtype == np.float32 and np.array_equal(G, keep)
    out = reference.zeropower_via_newtonschulz(G, out=G)
    assert out is G and np.array_equal(G, O)
    z = np.zeros((3, 4))
    np.testing.assert_array_equal(reference.zeropower_via_newtonschulz(z), z)   # |G| = 0: divided by eps


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2, 2)), np.zeros(())])
def test_only_matrices_numpy(bad):
    with pytest.raises(ValueError, match=r"params\[1\] has shape .*Muon updates 2-D parameters"):
        etakit.Muon([np.zeros((2, 2)), bad])
    opt = etakit.Muon([np.zeros((2, 2))])
    with pytest.raises(ValueError, match="2-D parameters"):
        opt.add_param_group({"params": [bad]})
    assert len(opt.param_groups) == 1
    w = np.ones((2, 3))
    opt = etakit.Muon([w])
    opt.step([np.ones((2, 3))])
    opt.param_groups[0]["params"][0] = bad          # a replaced parameter is checked too
    with pytest.raises(ValueError, match="2-D parameters"):
        opt.step([np.ones_like(bad)])


def test_only_matrices_torch():
    model = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\] has shape \(3,\).*2-D"):
        et.Muon(model.parameters())
    opt = et.Muon([model.weight])
    with pytest.raises(ValueError, match="2-D"):
        opt.add_param_group({"params": [model.bias]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="2D parameters"):    # as torch.optim.Muon does
        torch.optim.Muon(model.parameters())


def test_adjust_lr_fn_is_a_name():
    w = np.zeros((2, 3))
    for bad in ["adamw", 1, 0, True, ["original"]]:
        with pytest.raises(ValueError, match=r"Invalid adjust_lr_fn for defaults: .* \(expected one of None, "
                                             r"'original', 'match_rms_adamw'\)"):
            etakit.Muon([w], adjust_lr_fn=bad)
        with pytest.raises(ValueError, match="adjust_lr_fn"):
            et.Muon([torch.zeros(2, 3, requires_grad=True)], adjust_lr_fn=bad)
    # None is "original"
    a, b = np.ones((4, 2)), np.ones((4, 2))
    g = np.arange(8.0).reshape(4, 2)
    etakit.Muon([a], adjust_lr_fn=None).step([g])
    etakit.Muon([b], adjust_lr_fn="original").step([g])
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("kw,exc,match", [
    (dict(ns_steps=100), ValueError, "ns_steps.*<= 99"),        # torch: "must be less than 100", at the step
    (dict(ns_steps=-1), ValueError, "ns_steps"),
    (dict(ns_steps=5.0), TypeError, "ns_steps must be an integer"),
    (dict(ns_coefficients=(3.4, -4.7)), TypeError, r"ns_coefficients must be a tuple of 3"),
    (dict(ns_coefficients=(3.4, float("nan"), 2.0)), ValueError, r"ns_coefficients\[1\]"),
    (dict(eps=-1e-7), ValueError, "eps"),
    (dict(momentum=-0.1), ValueError, "momentum"),
])
def test_checks(kw, exc, match):
    with pytest.raises(exc, match=match):
        etakit.Muon([np.zeros((2, 2))], **kw)


def test_momentum_above_one_is_accepted_as_by_torch():
    """torch.optim.Muon checks momentum >= 0 only; so does etakit (the lerp weight 1 - momentum < 0)."""
    rng, mine, theirs = _pair([(3, 4)], np.float64)
    opt, ref = etakit.Muon(mine, momentum=1.2, lr=0.01), torch.optim.Muon(theirs, momentum=1.2, lr=0.01)
    g = rng.standard_normal((3, 4))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
        for _ in range(3):
            theirs[0].grad = torch.from_numpy(g.copy())
            ref.step()
            opt.step([g])
    np.testing.assert_allclose(mine[0], theirs[0].detach().numpy(), rtol=1e-12)


def test_a_failure_between_the_passes_writes_nothing(monkeypatch):
    """Parameters and momentum change only in the second C pass, after the orthogonalisation:
    an error there (MemoryError from numpy, say) leaves the optimizer as it was."""
    w = np.ones((3, 4))
    opt = etakit.Muon([w], lr=0.1)
    g = np.arange(12.0).reshape(3, 4)
    opt.step([g])
    before, sd = w.copy(), opt.state_dict()

    def fail(*args, **kwargs):
        raise MemoryError("no room for the matrix products")
    monkeypatch.setattr(etakit.optim, "zeropower_via_newtonschulz", fail)
    with pytest.raises(MemoryError):
        opt.step([g])
    assert w.tobytes() == before.tobytes() and opt.step_count == 1
    after = opt.state_dict()
    assert after["state"][0]["step"] == 1
    np.testing.assert_array_equal(after["state"][0]["momentum_buffer"], sd["state"][0]["momentum_buffer"])
    monkeypatch.undo()
    opt.step([g])
    ref = etakit.Muon([np.ones((3, 4))], lr=0.1)
    ref.load_state_dict(sd)
    ref.param_groups[0]["params"][0][...] = before
    ref.step([g])
    assert w.tobytes() == ref.param_groups[0]["params"][0].tobytes()


def test_the_work_buffer_is_not_state():
    """The update being orthogonalised lives in a work slot: never in a checkpoint, refused from one."""
    spec = RuleSpec.of(etakit.Muon)
    assert spec.slot_names == ("momentum_buffer", "update") and spec.state_names == ("momentum_buffer",)
    w = np.ones((2, 3))
    opt = etakit.Muon([w])
    opt.step([np.ones((2, 3))])
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "momentum_buffer"}
    sd["state"][0]["update"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown entry 'update'"):
        etakit.Muon([np.ones((2, 3))]).load_state_dict(sd)
    p = torch.nn.Parameter(torch.ones(2, 3))
    topt = et.Muon([p])
    p.grad = torch.ones(2, 3)
    topt.step()
    assert set(topt.state[p]) == {"momentum_buffer"}


def test_torch_drop_in_skips_parameters_without_gradient_and_keeps_no_step():
    a, b = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(2, 2))
    opt = et.Muon([a, b], lr=0.1)
    a.grad = torch.ones(3, 2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2, 2)) and len(opt.state[b]) == 0
    assert set(opt.state[a]) == {"momentum_buffer"}          # torch.optim.Muon keeps no step count
    b.grad = torch.ones(2, 2)
    opt.step()
    assert bool((b < 1).all())


def test_minimize_offers_no_matrix_only_method():
    with pytest.raises(ValueError, match="method must be one of"):
        etakit.minimize(lambda x: float(x @ x), np.ones(3), jac=lambda x: 2 * x, method="muon")

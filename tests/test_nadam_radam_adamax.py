"""What the generic tests cannot see of NAdam, RAdam and Adamax: NAdam's scalar
``mu_product`` (advanced once per step, float64, checkpoints from torch's
float32 default), RAdam's switch to the rectified step, Adamax's NaN-propagating
maximum, and torch's signatures."""
import copy
import inspect

import numpy as np
import pytest

import etakit
from conftest import make_grads, make_params
from rule_cases import torch_default_dtype


def _mu(t, beta1=0.9, momentum_decay=4e-3):
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_mu_product_advances_once_per_step_whatever_the_threads(nthreads, threads):
    etakit.set_num_threads(nthreads)
    rng = np.random.default_rng(3)
    params = make_params(rng, np.float32)          # empty, small and above-threshold tensors
    opt = etakit.NAdam([{"params": params[:2], "betas": (0.5, 0.9)}, {"params": params[2:]}])
    want = [1.0, 1.0]
    for t in range(1, 8):
        opt.step(make_grads(rng, params))
        want = [want[0] * _mu(t, 0.5), want[1] * _mu(t)]
    state = opt.state_dict()["state"]
    for i in range(len(params)):
        mp = state[i]["mu_product"]
        assert mp.shape == () and mp.dtype == np.float64
        assert float(mp) == want[0 if i < 2 else 1]


def test_a_refused_step_leaves_mu_product_alone():
    w = np.ones(3)
    opt = etakit.NAdam([w])
    opt.step([np.ones(3)])
    before = float(opt.state_dict()["state"][0]["mu_product"])
    opt.param_groups[0]["momentum_decay"] = -1.0
    with pytest.raises(ValueError, match="momentum_decay"):
        opt.step([np.ones(3)])
    assert float(opt.state_dict()["state"][0]["mu_product"]) == before


def test_numpy_checkpoint_with_a_float32_mu_product_is_taken_as_float64():
    w = np.zeros(3)
    opt = etakit.NAdam([w])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["mu_product"] = np.float32(sd["state"][0]["mu_product"])[()]
    opt2 = etakit.NAdam([w.copy()])
    opt2.load_state_dict(sd)
    mp = opt2.state_dict()["state"][0]["mu_product"]
    assert mp.dtype == np.float64 and mp == np.float32(_mu(1))
    with pytest.raises(etakit.StateError, match="mu_product"):
        sd["state"][0]["mu_product"] = np.ones(2)
        opt2.load_state_dict(sd)


def test_radam_switches_to_the_rectified_step_after_rho_t_passes_5():
    """beta2 = 0.999: rho_t <= 5 for the first five steps (w -= lr * m / (1 - beta1^t)), > 5 from the sixth."""
    beta1, beta2, lr = 0.9, 0.999, 0.1
    rho_inf = 2 / (1 - beta2) - 1
    rho = [rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t) for t in range(1, 8)]
    assert [r > 5 for r in rho] == [False] * 5 + [True] * 2
    w = np.zeros(1)
    opt = etakit.RAdam([w], lr=lr)
    m = 0.0
    for t in range(1, 8):
        before = w.copy()
        opt.step([np.ones(1)])
        m = m + (1 - beta1) * (1 - m)
        plain = -lr * m / (1 - beta1 ** t)
        if t <= 5:
            assert w[0] - before[0] == pytest.approx(plain, rel=1e-12)
        else:                       # |g| = 1 throughout: the adaptive factor is ~1, the rectification < 1
            assert abs(w[0] - before[0]) < abs(plain) * 0.5


def test_adamax_infinity_norm_is_torch_s():
    torch = pytest.importorskip("torch")
    w = np.array([1.0, -2.0, 3.0, 0.5])
    t = torch.tensor(w.copy(), requires_grad=True)
    opt = etakit.Adamax([w], lr=0.1, eps=1e-3)
    ref = torch.optim.Adamax([t], lr=0.1, eps=1e-3)
    with np.errstate(invalid="ignore"):
        for g in ([0.5, -0.0, np.nan, 2.0], [0.1, 0.2, 0.3, -4.0], [0.0, 0.0, 0.0, 0.0]):
            g = np.array(g)
            t.grad = torch.tensor(g.copy())
            ref.step()
            opt.step([g])
    np.testing.assert_allclose(w, t.detach().numpy(), rtol=1e-12)           # NaN where torch has NaN
    np.testing.assert_allclose(opt.state_dict()["state"][0]["exp_inf"], ref.state[t]["exp_inf"].numpy(), rtol=1e-12)
    assert np.isnan(w[2]) and np.isfinite(np.delete(w, 2)).all()


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
def test_signature_follows_torch(name):
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    ours = inspect.signature(getattr(et, name)).parameters
    positional = [n for n, p in theirs.items() if p.kind == p.POSITIONAL_OR_KEYWORD and n != "foreach"]
    assert [n for n, p in ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD] == positional
    for n, p in theirs.items():
        if n in ("foreach", "capturable", "differentiable"):
            continue
        assert n in ours and ours[n].default == p.default, n
    with pytest.raises(TypeError):      # maximize is keyword-only, as in torch
        getattr(etakit, name)([np.zeros(1)], *[p.default for n, p in ours.items() if n in positional[1:]], True)


def _model(dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Linear(5, 3).to(dtype)


def _train(model, opt, steps, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=g, dtype=model.weight.dtype)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_torch_checkpoint_with_default_dtype_mu_product_loads(dtype_name):
    """torch keeps mu_product in its default dtype (float32 here): etakit.torch takes it as float64."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    dtype = getattr(torch, dtype_name)
    with torch_default_dtype(torch, torch.float32):
        model = _model(dtype)
        ref = torch.optim.NAdam(model.parameters(), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
        _train(model, ref, 10, 1)
        assert ref.state[model.weight]["mu_product"].dtype == torch.float32
        ckpt = copy.deepcopy({"model": model.state_dict(), "opt": ref.state_dict()})
        _train(model, ref, 10, 2)

        resumed = _model(dtype)
        resumed.load_state_dict(ckpt["model"])
        opt = et.NAdam(resumed.parameters(), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
        opt.load_state_dict(ckpt["opt"])
        mp = opt.state[resumed.weight]["mu_product"]
        assert mp.dtype == torch.float64 and mp.item() == ckpt["opt"]["state"][0]["mu_product"].item()
        _train(resumed, opt, 10, 2)
        # float32 products in torch against float64 in etakit: close, not equal
        for p, q in zip(model.parameters(), resumed.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)

        # and back: torch takes etakit's float64 mu_product (cast to the parameter dtype, as torch does)
        back = torch.optim.NAdam(model.parameters(), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
        back.load_state_dict(opt.state_dict())
        assert back.state[model.weight]["mu_product"].item() == pytest.approx(mp.item(), rel=1e-7)


def test_torch_drop_in_mu_product_is_a_float64_view_the_kernel_advances():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    w = torch.nn.Parameter(torch.ones(4))
    opt = et.NAdam([w], momentum_decay=0.1)
    for _ in range(3):
        w.grad = torch.ones(4)
        opt.step()
    mp = opt.state[w]["mu_product"]
    assert mp.dtype == torch.float64 and mp.dim() == 0
    assert mp.item() == _mu(1, momentum_decay=0.1) * _mu(2, momentum_decay=0.1) * _mu(3, momentum_decay=0.1)

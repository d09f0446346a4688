"""etakit.torch: drop-in torch.optim optimizers on etakit's kernels (skipped without torch)."""
import copy

import pytest

torch = pytest.importorskip("torch")
import etakit.torch as et  # noqa: E402
from conftest import matrix_only, ready  # noqa: E402
from rule_cases import (CASES, RICHEST, SIGN_RULES, STATE_LAYOUT_DIFFERS, float32_in_reference,  # noqa: E402
                        reference_class, torch_default_dtype)

TORCH_CASES = [(kind, hp) for kind, hps in CASES.items() for hp in hps[:1] + hps[-1:]]


def make_model(dtype, seed=0, bias=True):
    """A small MLP; without biases (weight matrices only) for rules that update matrices only."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16, bias=bias), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3, bias=bias)).to(dtype)


def train(model, opt, steps, seed=1, scheduler=None):
    ready(opt)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 6, generator=g, dtype=next(model.parameters()).dtype)
        y = torch.randn(32, 3, generator=g, dtype=x.dtype)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return model


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("kind,hp", TORCH_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(TORCH_CASES)])
def test_trajectory_matches_the_reference(kind, hp, dtype, tol, monkeypatch):
    if dtype == torch.float32 and (hp.get("maximize") or kind in SIGN_RULES):
        pytest.skip("float32 rounding differences grow without bound (maximised MSE, or a sign of ~0)")
    ref = reference_class(kind, monkeypatch)
    if ref is None:
        pytest.skip(f"the reference implementation of {kind} is not installed")
    if dtype == torch.float64 and float32_in_reference(kind, hp):
        tol = 1e-6    # the reference rounds a scalar to float32 (LAMB's pre_norm): see float32_in_reference
    bias = not matrix_only(kind)
    a, b = make_model(dtype, bias=bias), make_model(dtype, bias=bias)
    with torch_default_dtype(torch, dtype):    # the reference's scalar state (NAdam's mu_product) in dtype
        train(a, ref(a.parameters(), **hp), 60)
    opt = getattr(et, kind)(b.parameters(), **hp)
    train(b, opt, 60)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind,hp", RICHEST)
@pytest.mark.parametrize("direction", ["reference->etakit", "etakit->reference"])
def test_checkpoints_move_both_ways(kind, hp, direction, monkeypatch):
    if kind in STATE_LAYOUT_DIFFERS:
        pytest.skip(STATE_LAYOUT_DIFFERS[kind])
    ref = reference_class(kind, monkeypatch)
    if ref is None:
        pytest.skip(f"the reference implementation of {kind} is not installed")
    src_cls, dst_cls = (ref, getattr(et, kind)) if direction == "reference->etakit" else (getattr(et, kind), ref)
    with torch_default_dtype(torch, torch.float64):   # the reference's scalar state in float64, as etakit's
        _checkpoint_round(src_cls, dst_cls, kind, hp)


def _checkpoint_round(src_cls, dst_cls, kind, hp):
    model = make_model(torch.float64, bias=not matrix_only(kind))
    opt = src_cls(model.parameters(), **hp)
    train(model, opt, 15)
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    if "step" in ckpt["opt"]["state"][0] and src_cls.__module__ == et.__name__:
        assert isinstance(ckpt["opt"]["state"][0]["step"], torch.Tensor)   # as torch.optim (prodigyopt: an int)
    train(model, opt, 15, seed=7)    # the source continues

    resumed = make_model(torch.float64, seed=3, bias=not matrix_only(kind))
    resumed.load_state_dict(ckpt["model"])
    opt2 = dst_cls(resumed.parameters(), **hp)
    opt2.load_state_dict(ckpt["opt"])
    train(resumed, opt2, 15, seed=7)  # the other library continues from the checkpoint
    # the reference rounds a scalar to float32 with some options (LAMB's pre_norm): see float32_in_reference
    tol = 1e-6 if float32_in_reference(kind, hp) else 1e-10
    for p, q in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, rtol=tol, atol=tol)


def test_state_uses_pytorch_layout_and_shares_memory():
    model = make_model(torch.float32)
    opt = et.AdamW(model.parameters(), amsgrad=True)
    train(model, opt, 1)
    p = next(model.parameters())
    st = opt.state[p]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"} and float(st["step"]) == 1.0
    ptr = st["exp_avg"].data_ptr()
    train(model, opt, 2)
    assert st["exp_avg"].data_ptr() == ptr and float(opt.state[p]["step"]) == 3.0
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 3.0 and sd["param_groups"][0]["params"] == [0, 1, 2, 3]
    sd["state"][0]["step"] += 1      # a copy: the optimizer's own count is unchanged
    assert float(opt.state[p]["step"]) == 3.0


def test_lr_scheduler_drives_it():
    a, b = make_model(torch.float64), make_model(torch.float64)
    ta = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    tb = et.SGD(b.parameters(), lr=0.1, momentum=0.9)
    sa = torch.optim.lr_scheduler.OneCycleLR(ta, max_lr=0.2, total_steps=40)
    sb = torch.optim.lr_scheduler.OneCycleLR(tb, max_lr=0.2, total_steps=40)
    train(a, ta, 40, scheduler=sa)
    train(b, tb, 40, scheduler=sb)
    assert tb.param_groups[0]["lr"] == ta.param_groups[0]["lr"]
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-10)


def test_parameters_without_gradient_are_skipped():
    model = make_model(torch.float32)
    frozen = model[0].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = et.Adam(model.parameters(), lr=0.1)
    train(model, opt, 3)
    assert torch.equal(frozen, before) and len(opt.state[frozen]) == 0
    assert float(opt.state[model[2].weight]["step"]) == 3.0


def test_closure_and_zero_grad():
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = et.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss
    for _ in range(20):
        loss = opt.step(closure)
    assert loss.item() < 1e-6


@pytest.mark.parametrize("make,exc,match", [
    (lambda: torch.zeros(3, device="meta", requires_grad=True), ValueError, "on meta"),
    (lambda: torch.zeros(3, dtype=torch.float16, requires_grad=True), TypeError, "float16 is not supported"),
    (lambda: torch.zeros(3, dtype=torch.float64, requires_grad=True).to(torch.int32), TypeError, "int32"),
    (lambda: torch.zeros(3, dtype=torch.complex64, requires_grad=True), TypeError, "complex"),
    (lambda: torch.zeros(4, 3).t().requires_grad_(), ValueError, "not contiguous"),
    (lambda: torch.sparse_coo_tensor([[0]], [1.0], (3,), check_invariants=True).requires_grad_(), ValueError,
     "layout"),
])
def test_unsupported_parameters_are_refused_with_what_is_supported(make, exc, match):
    with pytest.raises(exc, match=match) as info:
        et.Adam([make()])
    assert "supports dense, contiguous float32, float64 or bfloat16 CPU tensors" in str(info.value)


def test_capturable_is_refused_and_foreach_accepted():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="capturable"):
        et.Adam([w], capturable=True)
    et.AdamW([w], foreach=True, fused=True)


def test_bad_hyperparameter_raises_before_writing():
    w = torch.nn.Parameter(torch.ones(3))
    opt = et.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    before = w.detach().clone()
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.step()
    assert torch.equal(w.detach(), before)


def test_replaced_parameter_memory_is_followed():
    w = torch.nn.Parameter(torch.ones(4))
    opt = et.SGD([w], lr=0.5)
    w.grad = torch.ones(4)
    opt.step()
    w.data = torch.full((4,), 10.0)      # new storage: the cached plan must not write the old one
    opt.step()
    assert torch.equal(w.detach(), torch.full((4,), 9.5))


def test_gradient_layouts():
    w = torch.nn.Parameter(torch.zeros(3, 4))
    opt = et.SGD([w], lr=1.0)
    w.grad = torch.arange(12.0).reshape(4, 3).t()          # non-contiguous: read through a copy
    opt.step()
    assert torch.equal(w.detach(), -torch.arange(12.0).reshape(4, 3).t())
    w.grad = w.detach()                                      # the parameter itself
    with pytest.raises(ValueError, match="shares memory"):
        opt.step()
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = et.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("kind", sorted(CASES))
def test_an_empty_parameter_with_a_gradient_changes_nothing_else(kind):
    # an empty tensor's data_ptr is 0 (its numpy view's is not): the step must still run, and run
    # exactly as without the empty parameter
    hp = CASES[kind][0]
    runs = []
    for with_empty in (False, True):
        model = make_model(torch.float64, bias=not matrix_only(kind))
        params = list(model.parameters())
        empty = torch.nn.Parameter(torch.zeros(0, 16, dtype=torch.float64))
        opt = ready(getattr(et, kind)([empty] + params if with_empty else params, **hp))
        g = torch.Generator().manual_seed(1)
        for _ in range(6):
            x = torch.randn(32, 6, generator=g, dtype=torch.float64)
            opt.zero_grad()
            model(x).square().mean().backward()
            empty.grad = torch.zeros_like(empty)
            opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    start = make_model(torch.float64, bias=not matrix_only(kind))
    assert any(not torch.equal(a, b) for a, b in zip(runs[1], start.parameters()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)

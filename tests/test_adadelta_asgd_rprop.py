"""What the generic tests cannot see of Adadelta, ASGD and Rprop: ASGD's per-tensor scalars (advanced once per
step whatever the thread count, started at a scheduled lr's value, carried by checkpoints from torch's float32
default dtype), Rprop's sign cases (zeros, NaN, flips, clamping) against torch bit for bit, and the range text
of fields without a lower bound."""
import copy

import numpy as np
import pytest

import etakit
from etakit._step import RuleSpec
from conftest import make_grads


def test_asgd_scalars_advance_once_per_step_whatever_the_threads(threads):
    n = 3 * etakit._core.parallel_min() + 7
    hp = dict(lr=0.05, lambd=0.1, alpha=0.6, t0=2.0)
    results = []
    for nth in (1, 2, 3):
        etakit.set_num_threads(nth)
        rng = np.random.default_rng(3)
        params = [rng.standard_normal(n), rng.standard_normal(5), np.zeros(0)]
        opt = etakit.ASGD(params, **hp)
        for _ in range(7):
            opt.step(make_grads(rng, params))
        sd = opt.state_dict()["state"]
        for i in range(3):
            eta, mu = sd[i]["eta"], sd[i]["mu"]
            assert eta.dtype == np.float64 and eta.shape == () and mu.dtype == np.float64 and mu.shape == ()
            assert float(eta) == 0.05 / (1.0 + 0.1 * 0.05 * 7) ** 0.6
            assert float(mu) == 1.0 / 5.0
        results.append(params[0].tobytes() + sd[0]["ax"].tobytes())
    assert results[0] == results[1] == results[2]


def test_asgd_failed_step_does_not_advance_the_scalars():
    w = np.ones(3)
    opt = etakit.ASGD([w], lr=0.1, t0=0.0)
    opt.step([np.ones(3)])
    before = opt.state_dict()["state"][0]
    with pytest.raises(ValueError):
        opt.step([np.ones(4)])
    after = opt.state_dict()["state"][0]
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_asgd_eta_starts_at_a_scheduled_lr_as_torch_with_a_scheduler():
    """eta starts at lr's value when the state is created (here at step 3, when the gradient first
    exists), as torch.optim.ASGD under an lr scheduler; later etas follow the schedule too."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)      # torch's eta and mu in float64, as etakit's
    try:
        ws = [torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64)) for _ in range(2)]
        ref = torch.optim.ASGD(ws, lr=0.1, lambd=0.05, t0=4.0)
        sched = torch.optim.lr_scheduler.ExponentialLR(ref, gamma=0.7)
        vs = [torch.nn.Parameter(w.detach().clone()) for w in ws]
        opt = et.ASGD(vs, lr=etakit.schedules.exponential(0.1, 0.7), lambd=0.05, t0=4.0)
        g = torch.Generator().manual_seed(0)
        for k in range(10):
            grads = [torch.randn(5, generator=g, dtype=torch.float64) for _ in ws]
            for a, b, gr in zip(ws, vs, grads):
                a.grad = b.grad = gr.clone()
            if k < 3:
                ws[1].grad = vs[1].grad = None
            ref.step()
            sched.step()
            opt.step()
        for a, b in zip(ws, vs):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
            for name in ("eta", "mu", "ax"):
                torch.testing.assert_close(opt.state[b][name], ref.state[a][name].double(), rtol=1e-12, atol=1e-12)
    finally:
        torch.set_default_dtype(old)


def test_asgd_checkpoint_from_torch_with_float32_scalars():
    """torch keeps eta and mu in its default dtype (float32 here): they load as float64 and the run continues
    (up to the float32 rounding of torch's later etas)."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    assert torch.get_default_dtype() == torch.float32
    w = torch.nn.Parameter(torch.linspace(-1, 1, 7, dtype=torch.float64))
    ref = torch.optim.ASGD([w], lr=0.05, lambd=0.1, t0=2.0)
    g = torch.Generator().manual_seed(1)

    def grads(n):
        return [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(n)]
    for gr in grads(5):
        w.grad = gr
        ref.step()
    assert ref.state[w]["eta"].dtype == torch.float32
    v = torch.nn.Parameter(w.detach().clone())
    opt = et.ASGD([v], lr=0.05, lambd=0.1, t0=2.0)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))     # as a saved checkpoint: no shared tensors
    assert opt.state[v]["eta"].dtype == torch.float64 and float(opt.state[v]["eta"]) == float(ref.state[w]["eta"])
    for gr in grads(5):
        w.grad, v.grad = gr, gr.clone()
        ref.step()
        opt.step()
    torch.testing.assert_close(v, w, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(opt.state[v]["ax"], ref.state[w]["ax"], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rprop_sign_cases_match_torch_bit_for_bit(dtype, maximize):
    """Gradients with exact zeros, NaNs, repeated and flipped signs; step sizes that hit both bounds."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    dt = getattr(torch, dtype)
    rng = np.random.default_rng(7)
    w = torch.nn.Parameter(torch.tensor(rng.standard_normal(64), dtype=dt))
    v = torch.nn.Parameter(w.detach().clone())
    hp = dict(lr=0.01, etas=(0.4, 1.7), step_sizes=(1e-3, 0.05), maximize=maximize)
    ref, opt = torch.optim.Rprop([w], **hp), et.Rprop([v], **hp)
    for k in range(40):
        g = np.sign(rng.standard_normal(64)) * rng.integers(0, 3, 64)    # -2..2 with many zeros
        g[rng.integers(0, 64, 3)] = np.nan if k % 5 == 0 else 0.0
        w.grad = torch.tensor(g, dtype=dt)
        v.grad = w.grad.clone()
        ref.step()
        opt.step()
        assert torch.equal(v, w), f"step {k}"
        for name in ("prev", "step_size"):
            a, b = opt.state[v][name], ref.state[w][name]
            assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0)), f"{name} at step {k}"


def test_rprop_lr_only_sets_the_initial_step_size():
    a, b = np.ones(4), np.ones(4)
    oa, ob = etakit.Rprop([a], lr=0.1), etakit.Rprop([b], lr=0.1)
    oa.step([np.ones(4)])
    ob.step([np.ones(4)])
    oa.param_groups[0]["lr"] = 5.0      # as in torch: the step sizes are state, lr only their start
    for g in ([1.0, -1.0, 0.0, 2.0], [1.0, 1.0, -1.0, 2.0]):
        oa.step([np.array(g)])
        ob.step([np.array(g)])
    assert a.tobytes() == b.tobytes()
    with pytest.raises(TypeError, match="lr cannot follow a schedule"):
        etakit.Rprop([np.ones(2)], lr=etakit.schedules.constant(0.1))


def test_fields_without_bounds_say_so():
    spec = RuleSpec.of(etakit.ASGD)
    ranges = {f["name"]: f["range"] for f in spec.fields}
    assert ranges["t0"] == ranges["alpha"] == "a finite number" and ranges["lambd"] == "a finite number >= 0"
    with pytest.raises(ValueError, match=r"Invalid t0 .*inf \(expected a finite number\)"):
        etakit.ASGD([np.zeros(2)], t0=float("inf"))
    with pytest.raises(ValueError, match=r"Invalid etas\[0\] .*1\.0 \(expected a finite number > 0 and < 1\)"):
        etakit.Rprop([np.zeros(2)], etas=(1.0, 1.2))
    with pytest.raises(ValueError, match=r"Invalid etas\[1\] .*1\.0 \(expected a finite number > 1\)"):
        etakit.Rprop([np.zeros(2)], etas=(0.5, 1.0))

"""The schedules give PyTorch's learning rates (skipped without torch)."""
import numpy as np
import pytest

import etakit
from etakit import schedules as S

torch = pytest.importorskip("torch")
lrs = torch.optim.lr_scheduler


def torch_sequence(make, n, lr=0.1, momentum=0.9, key="lr"):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0][key])
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    return np.array(out)


CASES = [
    (lambda o: lrs.StepLR(o, 7, 0.5), S.step(0.1, 7, 0.5), 200),
    (lambda o: lrs.MultiStepLR(o, [10, 30, 30, 80], 0.3), S.multistep(0.1, [10, 30, 30, 80], 0.3), 200),
    (lambda o: lrs.ExponentialLR(o, 0.97), S.exponential(0.1, 0.97), 200),
    (lambda o: lrs.PolynomialLR(o, total_iters=60, power=2.0), S.polynomial(0.1, 60, 2.0), 200),
    (lambda o: lrs.CosineAnnealingLR(o, T_max=77, eta_min=1e-3), S.cosine(0.1, 77, 1e-3), 78),
    (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=10), S.cosine_restarts(0.1, 10), 300),
    (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=3, eta_min=1e-3),
     S.cosine_restarts(0.1, 5, 3, 1e-3), 300),
    (lambda o: lrs.OneCycleLR(o, max_lr=0.5, total_steps=100), S.one_cycle(0.5, 100), 100),
    (lambda o: lrs.OneCycleLR(o, max_lr=0.5, total_steps=97, pct_start=0.25, anneal_strategy="linear",
                              div_factor=10, final_div_factor=100, three_phase=True),
     S.one_cycle(0.5, 97, 0.25, "linear", 10, 100, True), 97),
    (lambda o: lrs.CyclicLR(o, 0.01, 0.1, step_size_up=10), S.cyclic(0.01, 0.1, 10), 300),
    (lambda o: lrs.CyclicLR(o, 0.01, 0.1, step_size_up=10, step_size_down=30, mode="triangular2"),
     S.cyclic(0.01, 0.1, 10, 30, "triangular2"), 300),
    (lambda o: lrs.CyclicLR(o, 0.01, 0.1, step_size_up=7, mode="exp_range", gamma=0.99),
     S.cyclic(0.01, 0.1, 7, None, "exp_range", 0.99), 300),
]


@pytest.mark.parametrize("make,sched,n", CASES, ids=[repr(c[1])[:40] for c in CASES])
def test_same_learning_rates_as_torch(make, sched, n):
    expected = torch_sequence(make, n)
    np.testing.assert_allclose(sched.values(n), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_momentum_matches_torch(three_phase):
    expected = torch_sequence(lambda o: lrs.OneCycleLR(o, 0.5, total_steps=100, three_phase=three_phase),
                              100, key="momentum")
    np.testing.assert_allclose(S.one_cycle_momentum(100, three_phase=three_phase).values(100), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(mode="max", threshold_mode="abs", threshold=0.05),
    dict(patience=2, cooldown=3, factor=0.5, min_lr=0.004),
    dict(patience=0, threshold=0.0, eps=1e-3, factor=0.9),
])
def test_plateau_with_constant_lr_matches_torch(kw):
    rng = np.random.default_rng(3)
    # improving, then noisy plateaus, then improving again
    metrics = np.concatenate([np.linspace(1, 0.5, 20), 0.5 + 0.01 * rng.standard_normal(60),
                              np.linspace(0.5, 0.2, 10), np.full(40, 0.2)])
    if kw.get("mode") == "max":
        metrics = -metrics
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.1)
    tsched = lrs.ReduceLROnPlateau(topt, **kw)
    opt = etakit.SGD([np.zeros(1)], lr=0.1)
    sched = etakit.ReduceLROnPlateau(opt, **kw)
    mine, theirs = [], []
    for m in metrics:
        opt.step([np.ones(1)])
        sched.step(m)
        tsched.step(float(m))
        mine.append(opt.param_groups[0]["lr"])
        theirs.append(topt.param_groups[0]["lr"])
    assert mine == theirs
    assert len(set(mine)) > 1   # the script does trigger reductions

"""What an adversarial trial broke, and must stay fixed: concurrent steps on one
optimizer, resized or replaced parameters, pickling, malformed checkpoints,
non-finite gradients, rolled-back parameter groups in etakit.torch."""
import copy
import pickle
import threading
import time

import numpy as np
import pytest

import etakit
from etakit import schedules as S


# ---- 1. two threads stepping one optimizer --------------------------------

@pytest.mark.parametrize("n", [1, 40_000])       # serial kernel, and the threaded one
def test_two_threads_stepping_one_optimizer_lose_no_step(n):
    w = np.zeros(n)
    opt = etakit.SGD([w], lr=1.0)
    g = np.ones(n)
    steps = 2000 if n == 1 else 200

    def work():
        for _ in range(steps):
            opt.step([g])

    threads = [threading.Thread(target=work) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and time.perf_counter() - t0 < 60
    assert opt.step_count == 2 * steps
    assert np.all(w == -2 * steps)


def test_two_threads_stepping_one_torch_optimizer_lose_no_step():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    w = torch.nn.Parameter(torch.zeros(40_000, dtype=torch.float64))
    w.grad = torch.ones_like(w)
    opt = et.Adagrad([w], lr=1.0, eps=0.0)

    def work():
        for _ in range(200):
            opt.step()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert float(opt.state[w]["step"]) == 400
    # Adagrad with unit gradients: sum_k 1/sqrt(k) for k = 1..400, every element alike
    expected = -sum(1.0 / np.sqrt(k) for k in range(1, 401))
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12)


# ---- 2. etakit.torch: a refused parameter group is rolled back -------------

def test_torch_add_param_group_that_raises_leaves_no_group():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    w = torch.nn.Parameter(torch.zeros(3))
    opt = et.Adam([w], lr=0.1)
    for bad, exc in [({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))]}, TypeError),
                     ({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1.0}, ValueError),
                     ({"params": [torch.nn.Parameter(torch.zeros(4, 4).t())]}, ValueError)]:
        with pytest.raises(exc):
            opt.add_param_group(bad)
        assert len(opt.param_groups) == 1
    w.grad = torch.ones(3)
    opt.step()
    assert float(w.detach()[0]) == pytest.approx(-0.1)


# ---- 3. a parameter resized behind the optimizer's back ---------------------

@pytest.mark.parametrize("new_size", [6, 100_000])
def test_resized_parameter_is_refused_not_written_through(new_size):
    w = np.zeros(5)
    opt = etakit.Adam([w], lr=0.1)
    opt.step([np.ones(5)])
    w.resize(new_size, refcheck=False)
    before = w.copy()
    with pytest.raises(etakit.StateError, match=r"params\[0\] was resized from 5 to %d elements" % new_size):
        opt.step([np.ones(new_size)])
    assert w.tobytes() == before.tobytes()


# ---- 4. a parameter replaced in param_groups --------------------------------

def test_replaced_parameter_is_the_one_updated():
    w = np.zeros(3)
    opt = etakit.SGD([w], lr=0.5, momentum=0.9)
    opt.step([np.ones(3)])
    new = np.full(3, 10.0)
    opt.param_groups[0]["params"][0] = new          # as torch.optim would use the new tensor
    opt.step([np.ones(3)])
    np.testing.assert_allclose(w, -0.5)              # the old array is left alone
    np.testing.assert_allclose(new, 10.0 - 0.5 * 1.9)   # the momentum state carried over (it is per position)


def test_replacement_with_another_shape_or_a_bad_array_is_refused():
    w = np.zeros(3)
    opt = etakit.Adam([w])
    opt.step([np.ones(3)])
    opt.param_groups[0]["params"][0] = np.zeros(4)
    with pytest.raises(etakit.StateError, match="replaced by an array of shape"):
        opt.step([np.ones(4)])
    opt.param_groups[0]["params"][0] = np.zeros((3, 2))[:, 0]
    with pytest.raises(ValueError, match="not C-contiguous"):
        opt.step([np.ones(3)])
    opt.param_groups[0]["params"][0] = w
    opt.step([np.ones(3)])
    opt.param_groups[0]["params"].append(np.zeros(2))
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step([np.ones(3), np.ones(2)])


# ---- 6. non-finite gradients: the default is documented ---------------------

def test_non_finite_gradients_propagate_by_default_as_in_torch():
    """etakit applies what it is given, as torch.optim does (no check costs a pass);
    a NaN or inf gradient reaches the parameter and the state of that element only."""
    w = np.zeros(4)
    opt = etakit.Adam([w], lr=0.1)
    opt.step([np.array([1.0, np.nan, np.inf, -1.0])])
    assert np.isfinite(w[[0, 3]]).all() and np.isnan(w[1]) and np.isnan(w[2])
    assert "non-finite" in etakit.Optimizer.step.__doc__


# ---- 7. pickling and copying optimizers --------------------------------------

@pytest.mark.parametrize("copier", [lambda o: pickle.loads(pickle.dumps(o)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("kind", ["SGD", "Adam", "Lion"])
def test_a_stepped_optimizer_copies_and_both_continue_identically(kind, copier):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(50)
    lr = S.warmup(S.cosine(0.1, 100), 5)
    opt = getattr(etakit, kind)([{"params": [w]}, {"params": [rng.standard_normal(3)], "lr": 0.01}], lr=lr)
    grads = [[rng.standard_normal(50), rng.standard_normal(3)] for _ in range(10)]
    for g in grads[:5]:
        opt.step(g)
    twin = copier(opt)
    assert twin.step_count == opt.step_count == 5
    for g in grads[5:]:
        opt.step(g)
        twin.step(g)
    for a, b in zip(opt._params, twin._params):
        assert a.tobytes() == b.tobytes()
    assert twin._params[0] is not w


def test_torch_drop_in_pickles_and_deepcopies_after_stepping():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    model = torch.nn.Linear(3, 2).double()
    opt = et.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3, dtype=torch.float64)).sum().backward()
    opt.step()
    for twin in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert twin.state_dict()["state"][0]["step"] == 1.0
        for p in twin.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        twin.step()


# ---- 8. malformed checkpoints ----------------------------------------------

def _stepped_adam():
    w = np.zeros(3)
    opt = etakit.Adam([w], lr=0.1)
    opt.step([np.ones(3)])
    return opt, w


@pytest.mark.parametrize("make,exc,match", [
    (lambda: etakit.SGD([np.zeros(3)], momentum=0.9).state_dict(), ValueError, r"lacks \['betas', 'eps'"),
    (lambda: {**_stepped_adam()[0].state_dict(), "param_groups": [{"params": 2}]}, ValueError,
     r"\['params'\] must be a list"),
    (lambda: {**_stepped_adam()[0].state_dict(), "param_groups": {"params": [0]}}, ValueError,
     "must be a list of group dicts"),
    (lambda: {**_stepped_adam()[0].state_dict(), "step_count": 2**63}, ValueError, "< 2\\*\\*62"),
    (lambda: {**_stepped_adam()[0].state_dict(), "step_count": 2**63 - 1}, ValueError, "< 2\\*\\*62"),
    (lambda: {**_stepped_adam()[0].state_dict(), "state": {0: {"step": 2**63}}}, ValueError, r"\['step'\]"),
    (lambda: {**_stepped_adam()[0].state_dict(), "state": {True: {"step": 1}}}, ValueError, "parameter True"),
    (lambda: {**_stepped_adam()[0].state_dict(), "state": {0: {"exp_avg": np.zeros(3, np.int64)}}}, TypeError,
     "floating-point"),
    (lambda: {**_stepped_adam()[0].state_dict(), "extra": 1}, ValueError, "'extra'"),
])
def test_malformed_state_dict_is_refused_before_anything_changes(make, exc, match):
    opt, w = _stepped_adam()
    sd_before = opt.state_dict()
    bad = make()
    with pytest.raises(exc, match=match):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["step_count"] == sd_before["step_count"] and after["param_groups"] == sd_before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], sd_before["state"][0]["exp_avg"])
    opt.step([np.ones(3)])

"""DoG and L-DoG: what the generic tests do not see.

The reference follows the paper's formulas (a case computed by hand); the
group's scalars (rbar, G, eta) live in param_groups, start with a group's
first step, survive checkpoints and equal the reference's; the layer-wise
form keeps them per tensor; DoG reaches the optimum of a quadratic and of a
logistic regression with no learning rate given; the drop-in for PyTorch
keeps the same state and matches the authors' package (``dog-optimizer``)
when it is installed."""
import math
import pickle

import numpy as np
import pytest

import etakit
from etakit import reference
from etakit import schedules as S
from conftest import ReferenceOptimizer, make_grads, make_params


# ---- the reference, by hand -------------------------------------------------

def test_reference_follows_the_paper_on_a_case_by_hand():
    """Two tensors in one group: the norms are over both, as one vector (Algorithm 1 of the paper)."""
    a, b = np.array([3.0, 0.0]), np.array([4.0])        # ||x0|| = 5
    x0a, x0b = a.copy(), b.copy()
    states, group = [{}, {}], {}
    hp = dict(reps_rel=0.5, lr=1.0, weight_decay=0.0, eps=0.0, init_eta=None, layer_wise=False)

    def step(ga, gb, k):
        kw = reference.group_reductions("dog", [a, b], [ga, gb], states, group, hp)
        reference.dog_step(a, ga, states[0], step=k, **hp, **kw[0])
        reference.dog_step(b, gb, states[1], step=k, **hp, **kw[1])

    # step 1: r_eps = 0.5 (1 + 5) = 3; G = ||g||^2 = 1 + 4 + 4 = 9; eta = 3 / 3 = 1
    step(np.array([1.0, 2.0]), np.array([2.0]), 1)
    assert group == dict(rbar=3.0, G=9.0, eta=1.0)
    np.testing.assert_array_equal(a, [2.0, -2.0])
    np.testing.assert_array_equal(b, [2.0])
    np.testing.assert_array_equal(states[0]["init_buffer"], x0a)
    # step 2: ||x1 - x0|| = sqrt(1 + 4 + 4) = 3, rbar = max(3, 3); G = 9 + 16 = 25; eta = 3 / 5
    step(np.array([0.0, 4.0]), np.array([0.0]), 2)
    assert group == dict(rbar=3.0, G=25.0, eta=0.6)
    np.testing.assert_allclose(a, [2.0, -2.0 - 0.6 * 4.0], rtol=1e-15)
    # step 3: ||x2 - x0|| = sqrt(1 + 4.4^2 + 4) = 5.2 > 3: the distance grows; G = 25 + 0 (a zero gradient)
    step(np.array([0.0, 0.0]), np.array([0.0]), 3)
    d = math.sqrt(1.0 + 4.4 ** 2 + 4.0)
    assert group["rbar"] == pytest.approx(d, rel=1e-15) and group["G"] == 25.0
    assert group["eta"] == pytest.approx(d / 5.0, rel=1e-15)
    assert states[1]["init_buffer"] == x0b and set(states[0]) == {"init_buffer"}


def test_reference_layer_wise_and_init_eta_by_hand():
    # L-DoG: each tensor on its own; init_eta: the first step size, rbar starts at 0, lr is not applied to it
    p, st = np.array([3.0, 4.0]), {}
    reference.dog_step(p, np.array([0.0, 2.0]), st, step=1, lr=0.5, eps=0.0, init_eta=0.25, layer_wise=True)
    np.testing.assert_array_equal(p, [3.0, 3.5])
    assert (float(st["rbar"]), float(st["G"]), float(st["eta"])) == (0.0, 4.0, 0.25)
    # then: rbar = ||x1 - x0|| = 0.5, G = 4 + 4, eta = lr rbar / sqrt(G)
    reference.dog_step(p, np.array([0.0, 2.0]), st, step=2, lr=0.5, eps=0.0, init_eta=0.25, layer_wise=True)
    assert float(st["rbar"]) == 0.5 and float(st["G"]) == 8.0
    assert float(st["eta"]) == 0.5 * 0.5 / math.sqrt(8.0)


# ---- the optimizer ----------------------------------------------------------

def test_group_scalars_are_in_param_groups_and_equal_the_reference(rng):
    params = make_params(rng, np.float64, kind="DoG")
    theirs = [p.copy() for p in params]
    hp2 = dict(lr=0.5, weight_decay=1e-2)
    opt = etakit.DoG([{"params": params[:3]}, {"params": params[3:], **hp2}])
    ref = ReferenceOptimizer("DoG", theirs, [(range(3), {}), (range(3, len(params)), hp2)])
    assert "rbar" not in opt.param_groups[0]           # a new group has none yet
    for _ in range(20):
        grads = make_grads(rng, theirs)
        opt.step(grads)
        ref.step(grads)
    for g, gs in zip(opt.param_groups, ref.group_state):
        assert {k: g[k] for k in ("rbar", "G", "eta")} == gs
    assert set(opt.state_dict()["state"][0]) == {"step", "init_buffer"}
    for a, b in zip(params, theirs):
        np.testing.assert_array_equal(a, b)


def test_layer_wise_is_ldog_and_keeps_its_scalars_per_tensor(rng):
    params = make_params(rng, np.float32, kind="LDoG")
    other = [p.copy() for p in params]
    a, b = etakit.DoG(params, layer_wise=True, weight_decay=1e-2), etakit.LDoG(other, weight_decay=1e-2)
    for _ in range(10):
        grads = make_grads(rng, params)
        a.step(grads)
        b.step(grads)
    for x, y in zip(params, other):
        assert x.tobytes() == y.tobytes()
    st = b.state_dict()
    assert set(st["state"][2]) == {"step", "init_buffer", "rbar", "G", "eta"}
    assert st["state"][2]["rbar"].dtype == np.float64 and st["state"][2]["rbar"].shape == ()
    etas = {float(s["eta"]) for i, s in st["state"].items() if params[i].size}
    assert len(etas) == sum(p.size > 0 for p in params)   # a step size per tensor
    assert not {"rbar", "G", "eta"} & set(b.param_groups[0])   # the group's own stay unset
    assert float(st["state"][0]["G"]) == 0.0                  # an empty tensor is left alone


def test_checkpoint_before_the_first_step_and_a_new_group_start_fresh(rng):
    """A group counts as new while it has no G (or G == 0): it then takes a first step."""
    params = make_params(rng, np.float64, kind="DoG")
    theirs = [p.copy() for p in params]
    opt = etakit.DoG([{"params": params[:3]}])
    blank = opt.state_dict()
    opt2 = etakit.DoG([{"params": params[:3]}])
    opt2.load_state_dict(pickle.loads(pickle.dumps(blank)))
    ref = ReferenceOptimizer("DoG", theirs, [(range(3), {}), (range(3, len(params)), dict(lr=0.5))])
    grads = [make_grads(rng, theirs) for _ in range(10)]
    for k, g in enumerate(grads):
        if k == 4:
            opt2.add_param_group({"params": params[3:], "lr": 0.5})
        opt2.step(g[:3] if k < 4 else g)
    ref.groups = [(range(3), {})]
    ref.group_state = ref.group_state[:1]
    for k, g in enumerate(grads):
        if k == 4:
            ref.groups.append((range(3, len(params)), dict(lr=0.5)))
            ref.group_state.append({})
        ref.step(g)
    for a, b in zip(params, theirs):
        np.testing.assert_array_equal(a, b)
    assert opt2.param_groups[1]["G"] == ref.group_state[1]["G"]


def test_group_scalars_set_by_hand_take_effect_and_are_checked(rng):
    w = np.ones(3)
    opt = etakit.DoG([w])
    opt.step([np.ones(3)])
    opt.param_groups[0]["rbar"] = 10.0     # a larger distance: a larger step
    before = w.copy()
    opt.step([np.ones(3)])
    g = opt.param_groups[0]
    assert g["rbar"] == 10.0 and g["eta"] == 10.0 / math.sqrt(g["G"])
    np.testing.assert_array_equal(w, before - g["eta"])
    before, sd = w.copy(), opt.state_dict()
    opt.param_groups[0]["G"] = "a lot"
    with pytest.raises(TypeError, match=r"param_groups\[0\]: G must be a real number"):
        opt.step([np.ones(3)])
    assert w.tobytes() == before.tobytes() and opt.state_dict()["state"][0]["step"] == sd["state"][0]["step"]


def test_reps_rel_needs_to_be_positive_unless_init_eta_is_given():
    with pytest.raises(ValueError, match="reps_rel must be > 0 unless init_eta is given"):
        etakit.DoG([np.zeros(2)], reps_rel=0.0)
    with pytest.raises(ValueError, match="Invalid init_eta"):
        etakit.DoG([np.zeros(2)], init_eta=0.0)
    w = np.array([1.0, 2.0])
    opt = etakit.LDoG([w], reps_rel=0.0, init_eta=0.5)
    opt.step([np.ones(2)])
    np.testing.assert_array_equal(w, [0.5, 1.5])
    opt.param_groups[0]["init_eta"] = None      # the constraint is checked at every step
    with pytest.raises(ValueError, match="reps_rel"):
        opt.step([np.ones(2)])
    np.testing.assert_array_equal(w, [0.5, 1.5])


def test_zero_gradients_with_eps_zero_do_not_move_and_do_not_start():
    w = np.array([3.0, 4.0])
    opt = etakit.DoG([w], eps=0.0)
    opt.step([np.zeros(2)])          # G == 0: eta = 0 (the authors' code stops on an assertion)
    np.testing.assert_array_equal(w, [3.0, 4.0])
    assert opt.param_groups[0].get("G", 0.0) == 0.0 and opt.param_groups[0].get("eta", 0.0) == 0.0
    opt.step([np.array([1.0, 0.0])])  # the first step, now: rbar = reps_rel (1 + 5)
    assert opt.param_groups[0]["rbar"] == 1e-6 * 6.0 and opt.param_groups[0]["G"] == 1.0


def test_lr_is_a_multiplier_that_follows_a_schedule_to_zero(rng):
    """lr scales the step size; a warmup-cosine to 0 runs to its end (lr = 0 is allowed) and equals
    setting lr by hand before each step."""
    sched = S.warmup_cosine(1.0, warmup_steps=5, total_steps=40)
    params = make_params(rng, np.float64, kind="DoG")
    other = [p.copy() for p in params]
    a, b = etakit.DoG(params, lr=sched), etakit.DoG(other)
    for k in range(41):
        b.param_groups[0]["lr"] = sched(k)
        grads = make_grads(rng, params)
        a.step(grads)
        b.step(grads)
    assert sched(40) == 0.0 and b.param_groups[0]["eta"] == 0.0
    for x, y in zip(params, other):
        assert x.tobytes() == y.tobytes()


# ---- it needs no learning rate -------------------------------------------------

@pytest.mark.parametrize("kind", ["DoG", "LDoG"])
def test_reaches_the_minimum_of_an_ill_conditioned_quadratic(kind):
    rng = np.random.default_rng(0)
    d = 50
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (q * np.geomspace(1.0, 100.0, d)) @ q.T         # condition number 100
    x_star = rng.standard_normal(d)
    x = np.zeros(d)
    opt = getattr(etakit, kind)([x])
    for _ in range(2000):
        opt.step([A @ (x - x_star)])
    f = 0.5 * (x - x_star) @ A @ (x - x_star)
    assert f < 1e-6 * 0.5 * x_star @ A @ x_star


@pytest.mark.parametrize("kind", ["DoG", "LDoG"])
def test_reaches_the_optimum_of_a_logistic_regression(kind):
    """Weights and bias, L2 on the weights (weight_decay in their group), full batch and minibatch:
    within a few percent of the optimum (scipy's L-BFGS), no learning rate given."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    n, d, lam = 1000, 20, 1e-3
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + 0.5 + rng.standard_normal(n) > 0).astype(float)

    def loss(w, b):
        z = X @ w + b
        return np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * w @ w

    def grads(w, b, idx):
        r = 1.0 / (1.0 + np.exp(-(X[idx] @ w + b))) - y[idx]
        return [X[idx].T @ r / len(r), np.array([r.mean()])]

    best = scipy_optimize.minimize(lambda v: loss(v[:-1], v[-1]), np.zeros(d + 1), method="L-BFGS-B",
                                   options=dict(gtol=1e-12, ftol=1e-15, maxiter=10000)).fun
    start = loss(np.zeros(d), 0.0)
    batches = np.random.default_rng(1)
    for batch, steps, within in ((slice(None), 1000, 1e-3), (64, 3000, 0.03)):
        w, b = np.zeros(d), np.zeros(1)
        opt = getattr(etakit, kind)([{"params": [w], "weight_decay": lam}, {"params": [b]}])
        for _ in range(steps):
            idx = batch if isinstance(batch, slice) else batches.integers(0, n, batch)
            opt.step(grads(w, b[0], idx))
        assert (loss(w, b[0]) - best) / (start - best) < within, (batch, loss(w, b[0]), best)


# ---- PyTorch --------------------------------------------------------------

def _mlp(torch, dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(dtype)


def _train(torch, model, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 6, generator=g, dtype=next(model.parameters()).dtype)
        y = torch.randn(32, 3, generator=g, dtype=x.dtype)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["DoG", "LDoG"])
def test_torch_drop_in_state_and_checkpoint(kind):
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    model = _mlp(torch, torch.float64)
    frozen = model[2].bias
    frozen.requires_grad_(False)
    opt = getattr(et, kind)([{"params": [p for p in model.parameters() if p is not frozen]},
                             {"params": [frozen]}], weight_decay=1e-3)
    _train(torch, model, opt, 10)
    st = opt.state[model[0].weight]
    names = {"init_buffer"} | ({"rbar", "G", "eta"} if kind == "LDoG" else set())
    assert set(st) == names and len(opt.state[frozen]) == 0
    g0, g1 = opt.param_groups
    assert ("rbar" in g0) == (kind == "DoG") and "rbar" not in g1    # a group without gradients: untouched
    ckpt = pickle.loads(pickle.dumps({"model": model.state_dict(), "opt": opt.state_dict()}))
    _train(torch, model, opt, 10, seed=7)

    resumed = _mlp(torch, torch.float64, seed=3)
    resumed.load_state_dict(ckpt["model"])
    resumed[2].bias.requires_grad_(False)
    opt2 = getattr(et, kind)([{"params": [p for n, p in resumed.named_parameters() if n != "2.bias"]},
                              {"params": [resumed[2].bias]}])
    opt2.load_state_dict(ckpt["opt"])
    _train(torch, resumed, opt2, 10, seed=7)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert opt2.param_groups[0].get("G") == opt.param_groups[0].get("G")


@pytest.mark.parametrize("kind,hp", [("DoG", dict(weight_decay=1e-2)), ("DoG", dict(init_eta=1e-3)),
                                     ("LDoG", dict(reps_rel=1e-4, eps=1e-6))])
def test_scalars_match_the_authors_package(kind, hp):
    """The generic tests compare parameters with dog-optimizer's; here its rbar and G as well
    (it keeps them in its groups: tensors, one per layer for LDoG)."""
    torch = pytest.importorskip("torch")
    dog = pytest.importorskip("dog")
    import etakit.torch as et
    a, b = _mlp(torch, torch.float64), _mlp(torch, torch.float64)
    ref = getattr(dog, kind)(a.parameters(), **hp)
    opt = getattr(et, kind)(b.parameters(), **hp)
    _train(torch, a, ref, 50)
    _train(torch, b, opt, 50)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)
    theirs = ref.param_groups[0]
    if kind == "DoG":
        ours = opt.param_groups[0]
        np.testing.assert_allclose([ours["rbar"], ours["G"], ours["eta"]],
                                   [float(theirs["rbar"]), float(theirs["G"]), float(theirs["eta"][0])], rtol=1e-9)
    else:
        for j, p in enumerate(b.parameters()):
            st = opt.state[p]
            np.testing.assert_allclose([float(st["rbar"]), float(st["G"]), float(st["eta"])],
                                       [float(theirs["rbar"][j]), float(theirs["G"][j]), float(theirs["eta"][j])],
                                       rtol=1e-9)

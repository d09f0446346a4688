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


# ---- found by an adversarial review --------------------------------------------------------

def test_torch_step_advances_autograd_version_counters():
    """A graph that saved a parameter sees the in-place step, as with torch.optim."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    lin = torch.nn.Linear(3, 1, bias=False)
    opt = et.SGD(lin.parameters(), lr=0.1)
    y = (lin(torch.randn(4, 3, requires_grad=True)) ** 2).sum()
    y.backward(retain_graph=True)
    v = lin.weight._version
    opt.step()
    assert lin.weight._version > v
    with pytest.raises(RuntimeError, match="inplace operation"):
        y.backward()


def test_torch_gradient_or_parameter_of_another_dtype_with_the_same_bytes_is_refused():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    p = torch.nn.Parameter(torch.zeros(4))
    opt = et.SGD([p], lr=1.0)
    p.grad = torch.ones(4)
    opt.step()
    p.grad.data = torch.ones(2, dtype=torch.float64)      # 16 bytes, like 4 float32
    with pytest.raises(etakit.GradientTypeError, match="float64"):
        opt.step()
    assert torch.equal(p.detach(), torch.full((4,), -1.0))
    p.grad = None
    q = torch.nn.Parameter(torch.zeros(4))
    opt = et.SGD([q], lr=1.0)
    q.grad = torch.ones(4)
    opt.step()
    q.data = q.data.view(torch.float64)                  # same pointer, another dtype
    q.grad = torch.ones(2, dtype=torch.float64)
    with pytest.raises(etakit.StateError, match="changed its dtype, size or shape"):
        opt.step()


def test_numpy_parameter_whose_dtype_changes_in_place_is_refused():
    w = np.zeros(4)
    opt = etakit.SGD([w], lr=1.0)
    opt.step([np.ones(4)])
    w.dtype = np.int64
    with pytest.raises(etakit.StateError, match="changed its dtype"):
        opt.step([np.ones(4, np.int64)])


@pytest.mark.parametrize("kind,shape,new", [("Adafactor", (3, 4), (4, 3)), ("LARS", (3, 4), (4, 3)),
                                            ("Muon", (3, 4), (12,))])
def test_parameter_reshaped_in_place_is_refused_for_rules_that_depend_on_its_shape(kind, shape, new):
    w = np.ones(shape)
    opt = getattr(etakit, kind)([w])
    opt.step([np.full(shape, 0.5)])
    before = w.copy()
    w.shape = new
    with pytest.raises(etakit.StateError, match="reshaped"):
        opt.step([np.full(new, 0.5)])
    assert w.tobytes() == before.tobytes()


def test_betas_given_as_a_list_cannot_be_changed_unseen():
    w = np.zeros(2)
    opt = etakit.Adam([w], lr=0.1, betas=[0.9, 0.999])
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)       # kept as a tuple
    opt.param_groups[0]["betas"] = [0.0, 0.999]                 # a new value is seen at the next step
    opt.step([np.ones(2)])
    assert opt.param_groups[0]["betas"] == (0.0, 0.999)
    with pytest.raises(TypeError, match="real number"):
        etakit.SGD([np.zeros(2)], lr=np.array(0.1))             # a 0-d array could change in place unseen


def test_stepping_from_inside_a_schedule_of_the_same_optimizer_is_refused():
    w = np.zeros(4)
    box = {}

    def lr(k):
        if k == 2 and "opt" in box:
            box["opt"].step([np.ones(4)])
        return 0.1

    opt = etakit.Adam([w], lr=lr)
    box["opt"] = opt
    opt.step([np.ones(4)])
    opt.step([np.ones(4)])
    with pytest.raises(RuntimeError, match="already stepping"):
        opt.step([np.ones(4)])
    sd = opt.state_dict()
    assert opt.step_count == 2 and sd["state"][0]["step"] == 2


def test_checkpoint_lacking_a_state_buffer_is_refused():
    w = np.zeros(3)
    opt = etakit.Adam([w])
    for _ in range(3):
        opt.step([np.ones(3)])
    sd = opt.state_dict()
    del sd["state"][0]["exp_avg_sq"]
    with pytest.raises(etakit.StateError, match="lacks \\['exp_avg_sq'\\]"):
        etakit.Adam([np.zeros(3)]).load_state_dict(sd)
    sgd = etakit.SGD([np.zeros(3)], momentum=0.9)             # torch.optim.SGD creates it when missing
    sgd.load_state_dict({"state": {0: {"step": 3}}, "param_groups": sgd.state_dict()["param_groups"]})


def test_torch_checkpoint_of_another_rule_or_with_bad_entries_is_refused():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    p = torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64))
    src = et.Adam([p])
    p.grad = torch.ones_like(p)
    src.step()
    sd = src.state_dict()
    with pytest.raises(ValueError):
        et.Adamax([torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64))]).load_state_dict(sd)
    tgt = et.Adam([torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64))])
    bad = {**sd, "state": {0: {**sd["state"][0], "step": torch.tensor(1.5)}}}
    with pytest.raises(ValueError, match="whole number"):
        tgt.load_state_dict(bad)
    t = {**sd, "state": {0: {**sd["state"][0], "exp_avg": torch.zeros(3, 4, dtype=torch.float64).t()}}}
    tgt.load_state_dict(t)                                     # a transposed (channels-last style) buffer
    assert tgt.state[tgt.param_groups[0]["params"][0]]["exp_avg"].is_contiguous()
    tgt.param_groups[0]["params"][0].grad = torch.ones(4, 3, dtype=torch.float64)
    tgt.step()
    lion = et.Lion([torch.nn.Parameter(torch.ones(3))])
    lsd = lion.state_dict()
    lsd["param_groups"][0]["step"] = -3
    with pytest.raises(ValueError, match="'step'"):
        lion.load_state_dict(lsd)
    ada = et.Adafactor([torch.nn.Parameter(torch.ones(()))])
    asd = ada.state_dict()
    asd["state"] = {0: {"step": torch.tensor(1.0), "col_var": torch.zeros(1)}}
    with pytest.raises(etakit.StateError, match="not state of a parameter"):
        ada.load_state_dict(asd)


def test_plateau_load_validates_and_drives_torch_drop_ins():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    p = etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)], lr=1.0), patience=0, factor=0.5)
    for bad in [{"factor": -1.0}, {"min_lrs": []}, {"best": "x"}, {"mode": "bogus"}, {"patience": -1}]:
        with pytest.raises((TypeError, ValueError)):
            p.load_state_dict(bad)
    assert p.factor == 0.5 and p.mode == "min"
    w = torch.nn.Parameter(torch.zeros(2))
    opt = et.SGD([w], lr=1.0)
    plateau = etakit.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    plateau.step(1.0)
    plateau.step(1.0)
    assert opt.param_groups[0]["lr"] == 0.5


def test_huge_integers_and_crafted_files_give_value_errors(tmp_path):
    with pytest.raises(ValueError, match="too large"):
        etakit.SGD([np.zeros(1)], lr=2**2000)
    with pytest.raises(ValueError):
        etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)]), factor=2**2000)
    # an .npz whose array header claims a terabyte
    import zipfile
    path = tmp_path / "x.npz"
    etakit.save(path, {"w": np.zeros(3)})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in members if n != "__etakit_structure__.npy")
    members[name] = members[name].replace(b"(3,)", b"(1000000000000,)".ljust(4))
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(ValueError, match="claims"):
        etakit.load(path)
    with pytest.raises(OSError, match="/nonexistent/x.npz"):
        etakit.save("/nonexistent/x.npz", {"w": np.zeros(1)})


def test_torch_overlapping_parameters_and_torch_state_in_save_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    base = torch.zeros(10)
    a, b = torch.nn.Parameter(base[:6]), torch.nn.Parameter(base[4:])
    with pytest.raises(ValueError, match="overlap"):
        et.SGD([a, b])
    w = torch.nn.Parameter(torch.zeros(3))
    opt = et.Adam([w])
    w.grad = torch.ones(3)
    opt.step()
    with pytest.raises(TypeError, match="torch.save"):
        etakit.save(tmp_path / "t.npz", opt)

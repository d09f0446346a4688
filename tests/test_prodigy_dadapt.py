"""Prodigy and D-Adaptation: what the generic tests cannot see.

Their step size d is adapted from sums over every tensor of every group and
shared by the groups: groups with lr 0, groups added later, the steps the
reference skips (all-zero gradients), schedules on the lr multiplier,
the reductions over multi-block tensors in several groups for any thread
count, the values groups must share, Prodigy's slice_p (state of every
slice_p-th element) and its p0 kept as a 0-d zero by the reference, and the
per-group scalars in checkpoints."""
import copy
import pickle

import numpy as np
import pytest

import etakit
from conftest import ReferenceOptimizer, make_grads
from rule_cases import CASES

KINDS = ["Prodigy", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad"]
SHARED_LR = ["Prodigy", "DAdaptAdam", "DAdaptSGD"]     # groups take lr 0 or the shared lr

try:
    import torch

    import etakit.torch as et
    from rule_cases import reference_class
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _reference(kind):
    cls = reference_class(kind)
    if cls is None:
        pytest.skip(f"the reference implementation of {kind} is not installed")
    return cls


def _pair(kind, groups, steps, seed=0, dtype=torch.float64 if torch else None, between=None, zero_steps=()):
    """etakit.torch.<kind> and its reference on the same model, parameter groups given as
    [(module index, hyperparameters)]; gradients of a noisy quadratic; ``between(k, opt)`` may
    change either optimizer before step k; the steps in ``zero_steps`` get all-zero gradients."""
    ref_cls = _reference(kind)
    torch.manual_seed(seed)
    shapes = [(5, 4), (4,), (3, 5), (7,)]
    init = [torch.randn(s, dtype=dtype) for s in shapes]
    out = []
    for cls in (ref_cls, getattr(et, kind)):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        opt = cls([{"params": [params[i] for i in idx], **hp} for idx, hp in groups])
        g = torch.Generator().manual_seed(seed + 1)
        for k in range(steps):
            if between is not None:
                between(k, opt, params)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=dtype) + 0.5 * p.detach()
                if k in zero_steps:
                    p.grad.zero_()
            opt.step()
        out.append((params, opt))
    return out


def _close(a, b, rtol=1e-10):
    for p, q in zip(a, b):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=rtol, atol=rtol)


# ---- the semantics of groups, against the reference packages ----------------------------

@needs_torch
@pytest.mark.parametrize("kind", SHARED_LR)
def test_a_group_with_lr_0_matches_the_reference(kind):
    """lr 0 in a group: its statistics stand still, its parameters still move (the reference's
    second loop uses the shared step size)."""
    hp = CASES[kind][-1]
    (a, ra), (b, rb) = _pair(kind, [([0, 1], hp), ([2, 3], {**hp, "lr": 0.0})], 40)
    _close(a, b)
    assert rb.param_groups[1]["d"] == rb.param_groups[0]["d"] == pytest.approx(ra.param_groups[1]["d"], rel=1e-10)


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_a_group_added_later_matches_the_reference(kind):
    """A new group starts with its own per-group scalars (k = 0; DAdaptSGD gives every group the
    first group's count); d stays the first group's."""
    hp = CASES[kind][-1]
    ref_cls = _reference(kind)
    torch.manual_seed(0)
    init = [torch.randn(s, dtype=torch.float64) for s in [(5, 4), (4,), (3, 5), (7,)]]
    out = []
    for cls in (ref_cls, getattr(et, kind)):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        opt = cls([{"params": params[:3], **hp}])
        g = torch.Generator().manual_seed(1)
        for k in range(30):
            if k == 15:
                opt.add_param_group({"params": [params[3]], **hp})
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64) + 0.5 * p.detach()
            opt.step()
        out.append((params, opt))
    (a, ra), (b, rb) = out
    _close(a, b)
    assert rb.param_groups[1]["k"] == ra.param_groups[1]["k"] == (30 if kind == "DAdaptSGD" else 15)
    assert isinstance(rb.param_groups[0]["k"], int)


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_steps_with_all_zero_gradients_match_the_reference(kind):
    """The reference skips the update (and the step count) while its denominator sum is 0;
    DAdaptSGD's divides by zero there: etakit then skips the step."""
    if kind == "DAdaptSGD":
        ref_cls = _reference(kind)
        w, v = torch.nn.Parameter(torch.ones(3, dtype=torch.float64)), torch.nn.Parameter(torch.ones(3))
        ref, opt = ref_cls([w]), et.DAdaptSGD([v])
        w.grad, v.grad = torch.zeros(3, dtype=torch.float64), torch.zeros(3)
        with pytest.raises(ZeroDivisionError):
            ref.step()
        opt.step()
        assert torch.equal(v.detach(), torch.ones(3)) and opt.param_groups[0]["k"] == 0
        (a, _), (b, _) = _pair(kind, [([0, 1, 2, 3], CASES[kind][-1])], 20)     # and it goes on as usual
        _close(a, b)
        return
    hp = {k: v for k, v in CASES[kind][-1].items() if k != "weight_decay"}   # the gradients stay zero
    (a, ra), (b, rb) = _pair(kind, [([0, 1, 2, 3], hp)], 20, zero_steps=(0, 1, 2))
    _close(a, b)
    assert rb.param_groups[0]["k"] == ra.param_groups[0]["k"] == 17


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_lr_multiplier_follows_a_schedule_as_in_the_reference(kind):
    hp = CASES[kind][-1]
    ref_cls = _reference(kind)
    torch.manual_seed(0)
    init = [torch.randn(s, dtype=torch.float64) for s in [(5, 4), (4,)]]
    out = []
    for cls in (ref_cls, getattr(et, kind)):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        opt = cls(params, **hp)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + np.cos(np.pi * min(k, 30) / 30)))
        g = torch.Generator().manual_seed(1)
        # down to lr 0 at the last step (where dadaptation's DAdaptSGD fails: not that one)
        for _ in range(30 if kind == "DAdaptSGD" else 31):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64) + 0.5 * p.detach()
            opt.step()
            sched.step()
        out.append(params)
    _close(*out)


@pytest.mark.parametrize("kind", KINDS)
def test_etakit_schedules_on_lr_are_those_of_a_python_callable(kind):
    hp = dict(CASES[kind][-1])
    base = hp.pop("lr", 1.0)
    sched = etakit.schedules.warmup_cosine(base, 10, 40)
    runs = []
    for lr in (sched, lambda k: float(sched(k))):
        rng = np.random.default_rng(0)
        params = [rng.standard_normal(s) for s in [(40,), (3, 3)]]
        opt = getattr(etakit, kind)(params, lr=lr, **hp)
        for _ in range(40):
            opt.step(make_grads(rng, params))
        runs.append(params)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


# ---- reductions: fixed blocks, fixed order -------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_reductions_over_several_groups_are_bit_identical_for_1_2_3_threads(kind, dtype, threads):
    """Multi-block tensors (above the threading threshold) in two groups, Prodigy with a
    different slice_p in each: the same bits for any thread count, equal to etakit.reference."""
    sizes = [(3 * etakit._core.parallel_min() + 77,), (5,), (4096 * 3 + 1,), (2 * etakit._core.parallel_min(),)]
    hp = CASES[kind][-1]
    second = {"Prodigy": dict(slice_p=7, eps=1e-6), "DAdaptAdam": dict(layer_scale=0.25),
              "DAdaptSGD": {}, "DAdaptAdaGrad": dict(eps=1e-3)}[kind]
    results = []
    for nth in (1, 2, 3):
        etakit.set_num_threads(nth)
        rng = np.random.default_rng(3)
        params = [rng.standard_normal(s).astype(dtype) for s in sizes]
        theirs = [p.copy() for p in params]
        opt = getattr(etakit, kind)([{"params": params[:2]}, {"params": params[2:], **second}], **hp)
        ref = ReferenceOptimizer(kind, theirs, [(range(2), hp), (range(2, 4), {**hp, **second})])
        for _ in range(8):
            grads = make_grads(rng, params)
            opt.step(grads)
            ref.step(grads)
        for a, b in zip(params, theirs):
            assert a.tobytes() == b.tobytes()
        results.append(([p.tobytes() for p in params], dict(opt.param_groups[0])))
    for other in results[1:]:
        assert other[0] == results[0][0]
        assert other[1]["d"] == results[0][1]["d"]


def test_prodigy_strided_sums_are_the_engine_s():
    """slice_p > 1 on a multi-block tensor: s and p0 keep every slice_p-th element; the sums are
    formed per block of the tensor, over the elements the block keeps."""
    rng = np.random.default_rng(1)
    for sp in (2, 3, 11, 4096, 5000):
        n = 3 * 4096 + 17
        p = rng.standard_normal(n)
        q = p.copy()
        opt = etakit.Prodigy([p], slice_p=sp)
        ref = ReferenceOptimizer("Prodigy", [q], [(range(1), dict(slice_p=sp))])
        for _ in range(5):
            g = rng.standard_normal(n)
            opt.step([g])
            ref.step([g])
        assert p.tobytes() == q.tobytes()
        st = opt.state_dict()["state"][0]
        assert st["s"].shape == st["p0"].shape == (-(-n // sp),)
        assert opt.param_groups[0]["d"] == ref.group_state[0]["d"]


# ---- what groups must share, what is refused ---------------------------------------------

def _snapshot(opt):
    """The optimizer's state and per-group scalars, as bytes."""
    names = etakit._step.RuleSpec.of(type(opt)).group_state
    return pickle.dumps((opt.state_dict()["state"], [[g[n] for n in names] for g in opt.param_groups]))


@pytest.mark.parametrize("kind,key,value", [
    ("Prodigy", "lr", 0.5), ("Prodigy", "betas", (0.5, 0.999)), ("Prodigy", "beta3", 0.9),
    ("Prodigy", "d_coef", 2.0), ("Prodigy", "growth_rate", 1.5), ("Prodigy", "decouple", False),
    ("Prodigy", "use_bias_correction", True),
    ("DAdaptAdam", "lr", 0.5), ("DAdaptAdam", "betas", (0.9, 0.99)), ("DAdaptAdam", "growth_rate", 2.0),
    ("DAdaptAdam", "decouple", True), ("DAdaptAdam", "use_bias_correction", True),
    ("DAdaptSGD", "lr", 0.5), ("DAdaptSGD", "momentum", 0.5), ("DAdaptSGD", "weight_decay", 0.1),
    ("DAdaptSGD", "growth_rate", 2.0),
    ("DAdaptAdaGrad", "lr", 0.5), ("DAdaptAdaGrad", "lr", 0.0), ("DAdaptAdaGrad", "momentum", 0.5),
    ("DAdaptAdaGrad", "growth_rate", 2.0),
])
def test_values_the_groups_share_are_refused_when_they_differ(kind, key, value):
    a, b = np.ones(3), np.ones(2)
    opt = getattr(etakit, kind)([{"params": [a]}, {"params": [b], key: value}])
    label = key.replace("[", r"\[")
    with pytest.raises(etakit.HyperparameterError, match=rf"Invalid {label}.* for param_groups\[1\].*every group"):
        opt.step([np.ones(3), np.ones(2)])
    assert not opt.state_dict()["state"] and (a == 1).all() and (b == 1).all()
    # changed between steps: refused at the next step, nothing written
    opt = getattr(etakit, kind)([{"params": [a]}, {"params": [b]}])
    opt.step([np.ones(3), np.ones(2)])
    before, sd = (a.copy(), b.copy()), _snapshot(opt)
    opt.param_groups[1][key] = value
    with pytest.raises(etakit.HyperparameterError, match="every group"):
        opt.step([np.ones(3), np.ones(2)])
    assert (a == before[0]).all() and (b == before[1]).all() and _snapshot(opt) == sd


def test_a_scheduled_lr_that_leaves_the_shared_value_is_refused_at_that_step():
    a, b = np.ones(3), np.ones(2)
    opt = etakit.Prodigy([{"params": [a], "lr": etakit.schedules.constant(1.0)},
                          {"params": [b], "lr": etakit.schedules.step(1.0, step_size=3, gamma=0.5)}])
    for _ in range(3):
        opt.step([np.ones(3), np.ones(2)])
    before = (a.copy(), b.copy())
    with pytest.raises(etakit.HyperparameterError, match=r"param_groups\[1\] \(scheduled values at step 3\)"):
        opt.step([np.ones(3), np.ones(2)])
    assert (a == before[0]).all() and (b == before[1]).all()


@pytest.mark.parametrize("kind", ["Prodigy", "DAdaptAdam", "DAdaptSGD"])
def test_fsdp_in_use_is_refused(kind):
    with pytest.raises(ValueError, match="fsdp_in_use.*fully sharded"):
        getattr(etakit, kind)([np.zeros(2)], fsdp_in_use=True)
    with pytest.raises(TypeError, match="fsdp_in_use must be a bool"):
        getattr(etakit, kind)([np.zeros(2)], fsdp_in_use="yes")
    if torch is not None:
        with pytest.raises(ValueError, match="fsdp_in_use"):
            getattr(et, kind)([torch.nn.Parameter(torch.zeros(2))], fsdp_in_use=True)


@pytest.mark.parametrize("kind", ["DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad"])
def test_log_every_is_accepted_and_ignored_and_d0_checked(kind):
    runs = []
    for log_every in (0, 7):
        w = np.array([3.0, -4.0])
        opt = getattr(etakit, kind)([w], log_every=log_every)
        for _ in range(10):
            opt.step([w.copy()])
        runs.append(w)
    assert runs[0].tobytes() == runs[1].tobytes()
    with pytest.raises(TypeError, match="log_every must be an integer"):
        getattr(etakit, kind)([np.zeros(2)], log_every=0.5)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="Invalid d0"):
            getattr(etakit, kind)([np.zeros(2)], d0=bad)
    with pytest.raises(ValueError, match="Invalid d0"):
        etakit.Prodigy([np.zeros(2)], d0=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_growth_rate_takes_inf_and_nothing_below_or_at_zero(kind):
    getattr(etakit, kind)([np.zeros(2)], growth_rate=float("inf"))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="Invalid growth_rate.*inf included"):
            getattr(etakit, kind)([np.zeros(2)], growth_rate=bad)


def test_slice_p_cannot_change_once_the_state_exists():
    w = np.ones(10)
    opt = etakit.Prodigy([w], slice_p=3)
    opt.step([np.ones(10)])
    before, sd = w.copy(), _snapshot(opt)
    opt.param_groups[0]["slice_p"] = 2
    with pytest.raises(etakit.StateError, match=r"'s' of params\[0\] has 4 elements.*slice_p = 2 would keep 5"):
        opt.step([np.ones(10)])
    assert w.tobytes() == before.tobytes() and _snapshot(opt) == sd
    opt.param_groups[0]["slice_p"] = 3
    opt.step([np.ones(10)])
    if torch is not None:
        v = torch.nn.Parameter(torch.ones(10))
        opt = et.Prodigy([v], slice_p=3)
        v.grad = torch.ones(10)
        opt.step()
        opt.param_groups[0]["slice_p"] = 2
        with pytest.raises(etakit.StateError, match="slice_p cannot change"):
            opt.step()


def test_the_c_entry_points_without_group_state_are_refused():
    w = np.ones(3)
    plan = etakit._core.Plan(etakit._core.rule_id("prodigy"), 1, 1)
    spec = etakit._step.RuleSpec.of(etakit.Prodigy)
    plan.set_hparams(0, spec.pack(etakit.Prodigy([np.zeros(1)]).defaults, "defaults"))
    plan.set_tensor(0, w, tuple(np.zeros(3) for _ in range(4)), 0, 0)
    plan.index_written()
    with pytest.raises(RuntimeError, match="needs group_state"):
        plan.run([np.ones(3)])
    assert (w == 1).all()


# ---- checkpoints ---------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("direction", ["reference->etakit", "etakit->reference"])
def test_prodigy_p0_of_an_all_zero_parameter_moves_both_ways(direction):
    """prodigyopt keeps p0 of a parameter that is all zeros as a 0-d zero; etakit keeps the buffer."""
    ref_cls = _reference("Prodigy")
    src_cls, dst_cls = (ref_cls, et.Prodigy) if direction == "reference->etakit" else (et.Prodigy, ref_cls)

    def model():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
        with torch.no_grad():
            m[0].bias.zero_()                   # as a LayerNorm bias or a zero-initialised layer
        return m

    def train(m, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            x = torch.randn(16, 4, generator=g, dtype=torch.float64)
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), torch.randn(16, 2, generator=g, dtype=torch.float64)).backward()
            opt.step()

    m = model()
    opt = src_cls(m.parameters(), slice_p=2)
    train(m, opt, 10, 1)
    ckpt = copy.deepcopy({"model": m.state_dict(), "opt": opt.state_dict()})
    if src_cls is ref_cls:
        assert ckpt["opt"]["state"][1]["p0"].dim() == 0
    train(m, opt, 10, 2)
    m2 = model()
    m2.load_state_dict(ckpt["model"])
    opt2 = dst_cls(m2.parameters(), slice_p=2)
    opt2.load_state_dict(ckpt["opt"])
    train(m2, opt2, 10, 2)
    _close(m.parameters(), m2.parameters())


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", ["reference->etakit", "etakit->reference"])
def test_a_checkpoint_before_the_first_step_moves_both_ways(kind, direction):
    """The reference's groups lack some per-group scalars until its first step (d_denom, g0_norm):
    etakit starts them over; etakit's groups have them all from the start."""
    ref_cls = _reference(kind)
    src_cls, dst_cls = (ref_cls, getattr(et, kind)) if direction == "reference->etakit" else \
        (getattr(et, kind), ref_cls)
    hp = CASES[kind][-1]
    torch.manual_seed(0)
    w0 = torch.randn(6, dtype=torch.float64)
    runs = []
    sd = None          # the source's state dict, taken in the first pass
    for cls in (src_cls, "resumed"):
        w = torch.nn.Parameter(w0.clone())
        if cls == "resumed":
            opt = dst_cls([w], **hp)
            opt.load_state_dict(copy.deepcopy(sd))
        else:
            opt = cls([w], **hp)
            sd = opt.state_dict()
        g = torch.Generator().manual_seed(1)
        for _ in range(10):
            w.grad = torch.randn(6, generator=g, dtype=torch.float64) + 0.5 * w.detach()
            opt.step()
        runs.append([w])
    _close(*runs)


def test_numpy_checkpoints_keep_the_per_group_scalars():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(5), rng.standard_normal(3)]
    opt = etakit.Prodigy(params)
    for _ in range(20):
        opt.step(make_grads(rng, params))
    sd = opt.state_dict()
    g = sd["param_groups"][0]
    assert g["k"] == 20 and isinstance(g["k"], int) and g["d"] > 1e-6 and g["d_max"] >= g["d"]
    assert {"d_numerator", "d_denom", "d_hat"} <= set(g)
    saved = etakit.Prodigy([p.copy() for p in params])
    saved.load_state_dict(pickle.loads(pickle.dumps(sd)))
    grads = make_grads(rng, params)
    opt.step(grads)
    saved.step(grads)
    assert saved.param_groups[0]["d"] == opt.param_groups[0]["d"]

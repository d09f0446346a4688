"""Schedule-free optimizers: what the generic tests (which step in train mode) do not see.

train()/eval() switching (a C pass: the rule's side phases) against etakit.reference bit for bit and
against the schedulefree package; stepping after eval -> train; a step in eval mode refused; checkpoints
taken in eval mode moving both ways; the group's scalars (k, lr_max, weight_sum, scheduled_lr,
train_mode) exactly as the reference keeps them; lr schedules with the reference's warmup."""
import copy
import pickle

import numpy as np
import pytest

import etakit
from etakit import reference
from etakit import schedules as S
from conftest import ReferenceOptimizer, make_grads, make_params, ready
from rule_cases import CASES

KINDS = ["ScheduleFreeAdamW", "ScheduleFreeSGD", "ScheduleFreeRAdam"]
GROUP_KEYS = ("k", "lr_max", "weight_sum", "scheduled_lr", "train_mode")


def _beta1(hp):
    return hp["momentum"] if "momentum" in hp else hp["betas"][0]


class ReferenceModel(ReferenceOptimizer):
    """etakit.reference driven as the optimizer is, modes included."""

    def __init__(self, kind, params, groups):
        super().__init__(kind, params, groups)
        self.modes = [False] * len(groups)

    def switch(self, train):
        for g, (idx, hp) in enumerate(self.groups):
            if self.modes[g] != train:
                for i in idx:
                    reference.schedulefree_switch(self.params[i], self.state[i], train=train,
                                                  beta1=_beta1({**self.defaults, **hp}))
            self.modes[g] = train


def _two_groups(kind, hp, params):
    # the second group: half the lr, and a beta1 below 2/3, where eval's lerp weight 1 - 1/beta1 is large
    hp2 = dict(hp, lr=hp.get("lr", etakit.OPTIMIZERS[kind]([np.zeros(1)]).defaults["lr"]) * 0.5)
    if kind == "ScheduleFreeSGD":
        hp2["momentum"] = 0.5
    else:
        hp2["betas"] = (0.5, hp.get("betas", (0.9, 0.999))[1])
    return [(range(3), hp), (range(3, len(params)), hp2)]


def _script(opt, model, rng, params, moves):
    """Apply the moves ("step", "eval", "train") to the optimizer and the model."""
    for move in moves:
        if move == "step":
            grads = make_grads(rng, params)
            opt.step(grads)
            model.step(grads)
        else:
            getattr(opt, move)()
            model.switch(move == "train")


MOVES = ["train"] + ["step"] * 7 + ["eval", "eval", "train", "train"] + ["step"] * 5 + ["eval", "train", "step",
                                                                                            "step", "eval"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_modes_match_reference_bit_for_bit(kind, dtype, rng):
    hp = CASES[kind][-1]
    params = make_params(rng, dtype, kind=kind)
    mine, theirs = [p.copy() for p in params], [p.copy() for p in params]
    groups = _two_groups(kind, hp, params)
    opt = getattr(etakit, kind)([{"params": [mine[i] for i in idx], **g} for idx, g in groups])
    model = ReferenceModel(kind, theirs, groups)
    _script(opt, model, rng, theirs, MOVES)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_array_equal(a, b, err_msg=f"{kind} param {i}")
    sd = opt.state_dict()
    for i, st in enumerate(model.state):
        for name, arr in st.items():
            np.testing.assert_array_equal(sd["state"][i][name], arr, err_msg=f"state {name} of param {i}")
    for g, gs in zip(opt.param_groups, model.group_state):
        assert {k: g[k] for k in GROUP_KEYS if k != "train_mode"} == {k: gs[k] for k in GROUP_KEYS if k != "train_mode"}
        assert g["train_mode"] is False and type(g["k"]) is int


@pytest.mark.parametrize("kind", KINDS)
def test_eval_is_the_average_and_train_undoes_it(kind, rng):
    """x = (y - (1 - beta1) z) / beta1, and train() brings y back (to rounding)."""
    params = make_params(rng, np.float64, kind=kind)
    opt = ready(getattr(etakit, kind)(params, **CASES[kind][-1]))
    for _ in range(10):
        opt.step(make_grads(rng, params))
    y = [p.copy() for p in params]
    z = [st["z"] for st in opt.state_dict()["state"].values()]
    beta1 = _beta1(opt.param_groups[0])
    opt.eval()
    for p, yi, zi in zip(params, y, z):
        np.testing.assert_allclose(p, (yi - (1 - beta1) * zi) / beta1, rtol=1e-12, atol=1e-12)
    opt.train()
    for p, yi in zip(params, y):
        np.testing.assert_allclose(p, yi, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_step_in_eval_mode_is_refused_and_changes_nothing(kind):
    w = np.ones(5)
    opt = getattr(etakit, kind)([w], **CASES[kind][-1])
    assert opt.param_groups[0]["train_mode"] is False          # as the reference: a new optimizer is in eval mode
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step([np.ones(5)])
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["k"] == 0 and (w == 1).all()
    opt.train()
    opt.step([np.ones(5)])
    opt.eval()
    before, sd = w.copy(), opt.state_dict()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step([np.ones(5)])
    assert w.tobytes() == before.tobytes() and opt.param_groups[0]["k"] == 1
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["z"], sd["state"][0]["z"])


def test_switch_before_any_step_only_sets_the_mode():
    w = np.arange(3.0)
    opt = etakit.ScheduleFreeAdamW([w])
    opt.eval()
    opt.train()
    opt.eval()
    assert (w == np.arange(3.0)).all() and opt.param_groups[0]["train_mode"] is False
    assert opt.state_dict()["state"] == {}


@pytest.mark.parametrize("kind", KINDS)
def test_threads_and_simd_variants_give_the_same_bits_with_switches(kind, threads, simd):
    def run():
        rng = np.random.default_rng(3)
        params = make_params(rng, np.float32, kind=kind)
        opt = getattr(etakit, kind)(params, **CASES[kind][-1])
        for move in MOVES:
            opt.step(make_grads(rng, params)) if move == "step" else getattr(opt, move)()
        return [p.tobytes() for p in params]

    results = []
    for n in (1, 2, 3):
        etakit.set_num_threads(n)
        results.append(run())
    for variant in etakit._core.simd_available():
        simd(variant)
        results.append(run())
    assert all(r == results[0] for r in results[1:])


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_checkpoint_in_eval_mode_resumes_bit_identically(kind, rng, tmp_path):
    params = make_params(rng, np.float64, kind=kind)
    opt = ready(getattr(etakit, kind)(params, **CASES[kind][-1]))
    for _ in range(12):
        opt.step(make_grads(rng, params))
    opt.eval()
    path = tmp_path / "ckpt.npz"
    etakit.save(path, {"optimizer": opt, "model": params})
    grads = [make_grads(rng, params) for _ in range(8)]
    opt.train()
    for g in grads:
        opt.step(g)
    opt.eval()

    ckpt = etakit.load(path)
    resumed = [np.array(p) for p in ckpt["model"]]
    opt2 = getattr(etakit, kind)(resumed)
    opt2.load_state_dict(ckpt["optimizer"])
    g0 = opt2.param_groups[0]
    assert g0["train_mode"] is False and type(g0["k"]) is int and g0["k"] == 12
    with pytest.raises(RuntimeError, match="eval mode"):
        opt2.step(grads[0])
    opt2.train()
    for g in grads:
        opt2.step(g)
    opt2.eval()
    for a, b in zip(params, resumed):
        assert a.tobytes() == b.tobytes()
    opt3 = pickle.loads(pickle.dumps(opt2))
    assert opt3.param_groups[0]["k"] == 20


def test_lr_schedule_times_the_warmup_equals_setting_it_by_hand(rng):
    """A schedule gives lr at the optimizer's step count; the warmup factor multiplies it (the
    reference multiplies the lr in its group by it the same way)."""
    sched = S.cosine(0.05, 40, min_lr=1e-3)
    params = make_params(rng, np.float64)
    by_hand = [p.copy() for p in params]
    a = ready(etakit.ScheduleFreeAdamW(params, lr=sched, warmup_steps=10))
    b = ready(etakit.ScheduleFreeAdamW(by_hand, lr=0.0, warmup_steps=10))
    for k in range(40):
        g = make_grads(rng, params)
        b.param_groups[0]["lr"] = sched(k)
        a.step(g)
        b.step(g)
        assert a.param_groups[0]["scheduled_lr"] == b.param_groups[0]["scheduled_lr"] == \
            sched(k) * min(1.0, (k + 1) / 10)
    for x, y in zip(params, by_hand):
        assert x.tobytes() == y.tobytes()
    assert a.param_groups[0]["lr_max"] == b.param_groups[0]["lr_max"] == max(
        sched(k) * min(1.0, (k + 1) / 10) for k in range(40))


def test_out_of_range_arguments_name_the_argument():
    w = [np.zeros(2)]
    with pytest.raises(ValueError, match="weight_lr_power"):
        etakit.ScheduleFreeAdamW(w, weight_lr_power=-1.0)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        etakit.ScheduleFreeRAdam(w, betas=(0.0, 0.999))     # eval divides by beta1
    with pytest.raises(ValueError, match="momentum"):
        etakit.ScheduleFreeSGD(w, momentum=1.0)             # the reference's own check: (0, 1)
    with pytest.raises(TypeError, match="warmup_steps"):
        etakit.ScheduleFreeSGD(w, warmup_steps=2.5)
    with pytest.raises(TypeError, match="cannot follow a schedule"):
        etakit.ScheduleFreeAdamW(w, r=S.constant(1.0))


def test_a_bad_hyperparameter_refuses_the_switch_and_changes_nothing():
    w = np.ones(4)
    opt = ready(etakit.ScheduleFreeAdamW([w], lr=0.1))
    opt.step([np.ones(4)])
    opt.step([-np.ones(4)])
    before = w.copy()
    opt.param_groups[0]["betas"] = (1.5, 0.999)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        opt.eval()
    assert w.tobytes() == before.tobytes() and opt.param_groups[0]["train_mode"] is True


# ---- against the schedulefree package, through etakit.torch ----------------------------------------------

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")
import etakit.torch as et  # noqa: E402
from test_torch_adapter import make_model, train  # noqa: E402


def _pair(kind, hp, dtype=torch.float64):
    ref_cls = getattr(schedulefree, etakit.OPTIMIZERS[kind].reference_impl.rpartition(".")[2])
    a, b = make_model(dtype), make_model(dtype)
    return a, ref_cls(a.parameters(), **hp), b, getattr(et, kind)(b.parameters(), **hp)


def _same(a, b, tol=1e-10):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=tol, atol=tol)


def _same_groups(ref, opt):
    for g, h in zip(ref.param_groups, opt.param_groups):
        for key in GROUP_KEYS:
            assert h[key] == g[key] and type(h[key]) is type(g[key]), key


@pytest.mark.parametrize("kind", KINDS)
def test_torch_modes_match_the_package(kind):
    a, ref, b, opt = _pair(kind, CASES[kind][-1])
    for o in (ref, opt):
        o.train()
    for round_ in range(3):
        train(a, ref, 10, seed=round_)
        train(b, opt, 10, seed=round_)
        _same(a, b)
        for o in (ref, opt):
            o.eval()
            o.eval()        # a second eval() changes nothing
        _same(a, b)
        _same_groups(ref, opt)
        for o in (ref, opt):
            o.train()
        _same(a, b)
        _same_groups(ref, opt)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_step_in_eval_mode_is_refused(kind):
    a, ref, b, opt = _pair(kind, CASES[kind][0])
    b(torch.ones(2, 6, dtype=torch.float64)).sum().backward()
    before = [p.detach().clone() for p in b.parameters()]
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), before)) and len(opt.state) == 0
    a(torch.ones(2, 6, dtype=torch.float64)).sum().backward()
    with pytest.raises(Exception, match="not in train mode"):     # the reference refuses it too
        ref.step()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", ["reference->etakit", "etakit->reference"])
def test_checkpoint_in_eval_mode_moves_both_ways(kind, direction):
    hp = CASES[kind][-1]
    a, ref, b, opt = _pair(kind, hp)
    src_model, src = (a, ref) if direction == "reference->etakit" else (b, opt)
    dst_cls = type(opt) if direction == "reference->etakit" else type(ref)
    src.train()
    train(src_model, src, 15)
    src.eval()                                       # the parameters hold x: what is saved
    ckpt = copy.deepcopy({"model": src_model.state_dict(), "opt": src.state_dict()})
    assert ckpt["opt"]["param_groups"][0]["train_mode"] is False
    src.train()
    train(src_model, src, 15, seed=7)
    src.eval()

    resumed = make_model(torch.float64, seed=3)
    resumed.load_state_dict(ckpt["model"])
    dst = dst_cls(resumed.parameters(), **hp)
    dst.load_state_dict(ckpt["opt"])
    dst.train()                                      # x -> y, from the loaded z
    train(resumed, dst, 15, seed=7)
    dst.eval()
    _same(src_model, resumed)
    _same_groups(src, dst)


def test_torch_groups_added_later_and_parameters_without_gradients_follow_the_package():
    """A group added after train() starts in eval mode in the reference (its defaults); a parameter
    without a gradient gets no state and is never switched.  etakit does as the reference does."""
    hp = dict(lr=1e-2, betas=(0.8, 0.99))
    a, ref, b, opt = _pair("ScheduleFreeAdamW", hp)
    for m in (a, b):
        m[2].bias.requires_grad_(False)
    extra = [torch.nn.Parameter(torch.ones(4, dtype=torch.float64)) for _ in range(2)]
    for o in (ref, opt):
        o.train()
    train(a, ref, 5)
    train(b, opt, 5)
    for o, p in zip((ref, opt), extra):
        o.add_param_group({"params": [p], "lr": 0.1})
        assert o.param_groups[1]["train_mode"] is False
    for step in range(5):
        for o, p in zip((ref, opt), extra):
            p.grad = torch.full((4,), 0.5 + step, dtype=torch.float64)
        train(a, ref, 1, seed=10 + step)
        train(b, opt, 1, seed=10 + step)
    for o in (ref, opt):
        o.eval()
        o.train()
        o.eval()
    _same(a, b)
    torch.testing.assert_close(extra[1], extra[0], rtol=1e-10, atol=1e-10)
    assert len(opt.state[b[2].bias]) == 0 and torch.equal(a[2].bias, b[2].bias)
    _same_groups(ref, opt)


def test_torch_lr_scheduler_and_warmup_follow_the_package():
    hp = dict(lr=0.05, warmup_steps=8, weight_decay=1e-3)
    a, ref, b, opt = _pair("ScheduleFreeSGD", hp)
    sa = torch.optim.lr_scheduler.StepLR(ref, step_size=10, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    for o in (ref, opt):
        o.train()
    train(a, ref, 40, scheduler=sa)
    train(b, opt, 40, scheduler=sb)
    _same(a, b)
    _same_groups(ref, opt)


def test_torch_foreach_is_accepted_and_ignored():
    a, ref, b, opt = _pair("ScheduleFreeAdamW", dict(lr=1e-2))
    c = make_model(torch.float64)
    opt2 = et.ScheduleFreeAdamW(c.parameters(), lr=1e-2, foreach=False)
    for o in (ref, opt, opt2):
        o.train()
    train(b, opt, 10)
    train(c, opt2, 10)
    train(a, ref, 10)
    _same(b, c, tol=0)
    _same(a, b)


def test_torch_step_without_any_gradient_advances_the_groups_as_the_package():
    a, ref, b, opt = _pair("ScheduleFreeAdamW", dict(lr=1e-2, warmup_steps=3))
    for o in (ref, opt):
        o.train()
    train(a, ref, 2)
    train(b, opt, 2)
    for o in (ref, opt):
        o.zero_grad()
        o.step()            # no parameter has a gradient
    _same_groups(ref, opt)
    assert opt.param_groups[0]["k"] == 3
    train(a, ref, 2)
    train(b, opt, 2)
    _same(a, b)
    _same_groups(ref, opt)

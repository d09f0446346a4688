"""Optimizers driven by schedules: same trajectory as setting the values by
hand, exact resume, plateau reductions on top of a schedule, failure paths."""
import pickle

import numpy as np
import pytest

import etakit
from etakit import schedules as S
from conftest import make_grads, make_params, run_trajectory

LR = S.warmup(S.cosine(0.05, 60, min_lr=1e-3), 10)
MOM = S.one_cycle_momentum(70)
WD = S.linear(1e-2, 0.0, 50)

CASES = [
    ("SGD", dict(lr=LR, momentum=MOM, weight_decay=WD), {"lr": LR, "momentum": MOM, "weight_decay": WD}),
    ("SGD", dict(lr=LR, momentum=0.9, nesterov=True), {"lr": LR}),
    ("Adam", dict(lr=LR, betas=(MOM, 0.999), weight_decay=WD), {"lr": LR, "betas": MOM, "weight_decay": WD}),
    ("AdamW", dict(lr=LR, weight_decay=WD, amsgrad=True), {"lr": LR, "weight_decay": WD}),
    ("RMSprop", dict(lr=LR, momentum=MOM, centered=True), {"lr": LR, "momentum": MOM}),
    ("Adagrad", dict(lr=LR, weight_decay=WD), {"lr": LR, "weight_decay": WD}),
    ("Adam", dict(lr=lambda k: 0.01 / (1 + k)), {"lr": lambda k: 0.01 / (1 + k)}),
    ("Muon", dict(lr=LR, momentum=MOM, weight_decay=WD), {"lr": LR, "momentum": MOM, "weight_decay": WD}),
]


def by_hand(kind, kw, scheds, steps, seed, dtype):
    """The same run, with the scheduled values written into param_groups before each step."""
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype, kind=kind)
    fixed = {k: (v if k not in scheds else (0.0 if k != "betas" else (0.0, v[1]))) for k, v in kw.items()}
    if "momentum" in scheds or (kind == "SGD" and kw.get("nesterov")):
        fixed.setdefault("momentum", 0.9)
    opt = getattr(etakit, kind)(params, **fixed)
    for k in range(steps):
        g = opt.param_groups[0]
        for key, s in scheds.items():
            if key == "betas":
                g["betas"] = (s(k), kw["betas"][1])
            else:
                g[key] = s(k)
        opt.step(make_grads(rng, params))
    return params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw,scheds", CASES, ids=[f"{c[0]}-{'-'.join(c[2])}" for c in CASES])
def test_scheduled_equals_set_by_hand(kind, kw, scheds, dtype):
    a, opt = run_trajectory(kind, kw, dtype, 1, steps=80)
    b = by_hand(kind, kw, scheds, 80, 1, dtype)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert opt.step_count == 80


@pytest.mark.parametrize("kind,kw,scheds", CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_resume_mid_schedule_is_bit_identical(kind, kw, scheds):
    rng = np.random.default_rng(4)
    params = make_params(rng, np.float32)
    opt = getattr(etakit, kind)(params, **kw)
    for _ in range(25):
        opt.step(make_grads(rng, params))
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    assert sd["step_count"] == 25 and sd["param_groups"][0]["lr"]["type"] == "warmup"
    saved = [p.copy() for p in params]
    grads = [make_grads(rng, params) for _ in range(40)]
    for g in grads:
        opt.step(g)
    fresh = getattr(etakit, kind)(saved, lr=0.0)   # schedule and step count come from the state dict
    fresh.load_state_dict(sd)
    assert fresh.current_lr() == [LR(25)]
    for g in grads:
        fresh.step(g)
    for x, y in zip(params, saved):
        assert x.tobytes() == y.tobytes()


def test_current_lr_per_group_follows_the_schedule():
    opt = etakit.SGD([{"params": [np.zeros(2)], "lr": S.step(1.0, 2, 0.5)}, {"params": [np.zeros(1)]}], lr=0.3)
    seen = []
    for _ in range(5):
        seen.append(opt.current_lr())
        opt.step([np.ones(2), np.ones(1)])
    assert seen == [[1.0, 0.3], [1.0, 0.3], [0.5, 0.3], [0.5, 0.3], [0.25, 0.3]]


def test_scheduled_value_out_of_range_raises_and_changes_nothing():
    w = np.ones(3)
    opt = etakit.Adam([w], lr=0.1, betas=(S.linear(0.9, 1.0, 6), 0.999))
    for _ in range(6):   # beta1 reaches 1.0 at k = 6
        opt.step([np.ones(3)])
    before, sd = w.copy(), opt.state_dict()
    with pytest.raises(ValueError, match=r"param_groups\[0\] \(scheduled values at step 6\).*betas\[0\]"):
        opt.step([np.ones(3)])
    assert w.tobytes() == before.tobytes() and opt.step_count == 6
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])


def test_python_callable_returning_garbage_raises():
    with pytest.raises(TypeError, match="lr schedule returned 'fast' at step 0"):
        etakit.SGD([np.zeros(1)], lr=lambda k: "fast")
    w = np.zeros(1)
    opt = etakit.SGD([w], lr=lambda k: 0.1 if k < 1 else "fast")
    opt.step([np.ones(1)])
    with pytest.raises(TypeError, match="lr schedule returned 'fast' at step 1"):
        opt.step([np.ones(1)])
    assert w[0] == -0.1 and opt.step_count == 1


def test_plateau_scales_a_schedule_and_survives_a_checkpoint():
    base = S.warmup(S.cosine(0.1, 200), 20)
    w = np.zeros(1)
    opt = etakit.SGD([w], lr=base)
    plateau = etakit.ReduceLROnPlateau(opt, factor=0.5, patience=2, min_lr=1e-3)
    for k in range(30):
        opt.step([np.ones(1)])
        plateau.step(1.0)   # never improves after the first call
    # reductions after calls 4, 7, ..., 28: 9 halvings, floored at min_lr
    expected = max(0.5 ** 9 * base(30), min(1e-3, base(30)))
    assert opt.current_lr() == [pytest.approx(expected, rel=1e-12)]
    assert opt.param_groups[0]["lr"]._name == "plateau_scaled"
    sd, psd = opt.state_dict(), plateau.state_dict()
    opt2 = etakit.SGD([w.copy()], lr=0.0)
    opt2.load_state_dict(pickle.loads(pickle.dumps(sd)))
    plateau2 = etakit.ReduceLROnPlateau(opt2, factor=0.5, patience=2, min_lr=1e-3)
    plateau2.load_state_dict(psd)
    for _ in range(5):
        for o, p in ((opt, plateau), (opt2, plateau2)):
            o.step([np.ones(1)])
            p.step(1.0)
    assert opt.current_lr() == opt2.current_lr()


def test_plateau_never_lifts_a_warmup():
    base = S.warmup(S.constant(0.1), 100)
    s = S.plateau_scaled(base, 0.01, min_lr=0.05)
    assert s(0) == 0.0 and s(10) == base(10) and s(1000) == 0.05


@pytest.mark.parametrize("kw,exc,match", [
    (dict(factor=1.0), ValueError, r"factor must be in \(0, 1\)"),
    (dict(mode="up"), ValueError, "mode"),
    (dict(threshold_mode="pct"), ValueError, "threshold_mode"),
    (dict(patience=-1), ValueError, "patience"),
    (dict(min_lr=[0.1, 0.2]), ValueError, "one per group"),
])
def test_plateau_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        etakit.ReduceLROnPlateau(etakit.SGD([np.zeros(1)]), **kw)


def test_plateau_refuses_to_scale_a_python_callable():
    opt = etakit.SGD([np.zeros(1)], lr=lambda k: 0.1)
    plateau = etakit.ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    with pytest.raises(TypeError, match="Python-callable"):
        plateau.step(1.0)

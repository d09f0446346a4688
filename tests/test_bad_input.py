"""Bad input raises a clear TypeError/ValueError, and changes nothing."""
import copy

import numpy as np
import pytest

import etakit

F32 = np.float32


def snapshot(opt, params):
    sd = opt.state_dict()
    return [p.copy() for p in params], copy.deepcopy(sd)


def assert_unchanged(opt, params, snap, groups=True):
    before_params, before_sd = snap
    for p, q in zip(params, before_params):
        assert p.tobytes() == q.tobytes()
    sd = opt.state_dict()
    if groups:
        assert sd["param_groups"] == before_sd["param_groups"]
    assert sd["state"].keys() == before_sd["state"].keys()
    for i in sd["state"]:
        assert sd["state"][i].keys() == before_sd["state"][i].keys()
        for k, v in sd["state"][i].items():
            assert np.array_equal(v, before_sd["state"][i][k])


@pytest.fixture(params=["fresh", "stepped"])
def setup(request):
    """An optimizer with two groups, before its first step or after three."""
    rng = np.random.default_rng(1)
    params = [rng.standard_normal((4, 3)).astype(F32), rng.standard_normal(5).astype(F32),
              rng.standard_normal(7).astype(F32)]
    opt = etakit.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 1e-2}], amsgrad=True)
    if request.param == "stepped":
        for _ in range(3):
            opt.step([np.ones_like(p) for p in params])
    return opt, params


def good_grads(params):
    return [np.full_like(p, 0.5) for p in params]


BAD_GRADS = {
    "too few": (lambda ps, opt: good_grads(ps)[:2], ValueError, "expected 3 gradients, got 2|expected 3 gradients"),
    "too many": (lambda ps, opt: good_grads(ps) + [np.zeros(1, F32)], ValueError, "expected 3 gradients"),
    "None": (lambda ps, opt: [good_grads(ps)[0], None, good_grads(ps)[2]], TypeError, r"grads\[1\] is None"),
    "list not array": (lambda ps, opt: [good_grads(ps)[0], [0.0] * 5, good_grads(ps)[2]], TypeError,
                       r"grads\[1\] must be a numpy.ndarray, got list"),
    "dtype": (lambda ps, opt: [g.astype(np.float64) if i == 2 else g for i, g in enumerate(good_grads(ps))],
              TypeError, r"grads\[2\] has dtype float64, expected float32"),
    "byte order": (lambda ps, opt: [g.astype(">f4") if i == 0 else g for i, g in enumerate(good_grads(ps))],
                   TypeError, r"grads\[0\] has dtype >f4"),
    "shape": (lambda ps, opt: [np.zeros((3, 4), F32)] + good_grads(ps)[1:], ValueError,
              r"grads\[0\] has shape \(3, 4\), expected \(4, 3\)"),
    "non-contiguous": (lambda ps, opt: [np.zeros((3, 4), F32).T] + good_grads(ps)[1:], ValueError,
                       r"grads\[0\] is not C-contiguous"),
    "aliases a parameter": (lambda ps, opt: [ps[0]] + good_grads(ps)[1:], ValueError,
                            r"grads\[0\] shares memory with param_groups\[0\]\['params'\]\[0\]"),
    "aliases another parameter": (lambda ps, opt: good_grads(ps)[:2] + [ps[2]], ValueError,
                                  r"grads\[2\] shares memory with param_groups\[1\]"),
    "bare array": (lambda ps, opt: good_grads(ps)[0], TypeError, "grads must be a list or tuple"),
}


@pytest.mark.parametrize("case", BAD_GRADS)
def test_bad_gradients_raise_and_change_nothing(case, setup):
    opt, params = setup
    make, exc, match = BAD_GRADS[case]
    snap = snapshot(opt, params)
    with pytest.raises(exc, match=match):
        opt.step(make(params, opt))
    assert_unchanged(opt, params, snap)
    opt.step(good_grads(params))   # and the optimizer still works


def test_gradient_aliasing_optimizer_state_is_refused():
    w = np.zeros(4)
    opt = etakit.SGD([w], lr=0.1, momentum=0.9)
    opt.step([np.ones(4)])
    # the plan's buffers are private; reach one through a view of the state
    buf = opt._state[0]["momentum_buffer"]
    with pytest.raises(ValueError, match="optimizer state 'momentum_buffer'"):
        opt.step([buf])


def test_partially_overlapping_gradient_is_refused():
    base = np.zeros(10, F32)
    w = base[:6]
    opt = etakit.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([base[4:10]])


def test_hyperparameter_made_invalid_between_steps_raises_and_changes_nothing(setup):
    opt, params = setup
    snap = snapshot(opt, params)
    for key, value, exc, match in [("lr", -1.0, ValueError, "Invalid lr for param_groups"),
                                   ("lr", float("nan"), ValueError, "Invalid lr"),
                                   ("betas", (0.9, 1.0), ValueError, r"betas\[1\]"),
                                   ("eps", "tiny", TypeError, "eps must be a real number"),
                                   ("amsgrad", "yes", TypeError, "amsgrad must be a bool"),
                                   ("maximize", 2, TypeError, "maximize must be a bool")]:
        group = opt.param_groups[1]
        old = group[key]
        group[key] = value
        with pytest.raises(exc, match=match):
            opt.step(good_grads(params))
        assert_unchanged(opt, params, snap, groups=False)   # the user's edit is still there
        group[key] = old
    opt.step(good_grads(params))


def test_first_step_with_bad_gradient_allocates_no_state():
    w = np.zeros(3)
    opt = etakit.Adam([w])
    with pytest.raises(ValueError):
        opt.step([np.zeros(4)])
    assert opt.state_dict()["state"] == {}


CTOR = {
    "empty list": (lambda: etakit.SGD([]), ValueError, "empty parameter list"),
    "empty group": (lambda: etakit.SGD([{"params": []}]), ValueError, "empty parameter list"),
    "bare array": (lambda: etakit.SGD(np.zeros(3)), TypeError, "wrap it in a list"),
    "not iterable": (lambda: etakit.SGD(3), TypeError, "params must be a list"),
    "integer": (lambda: etakit.SGD([np.zeros(3, np.int64)]), TypeError, r"params\[0\] has dtype int64"),
    "float16": (lambda: etakit.Adam([np.zeros(3, np.float16)]), TypeError, "float32, float64 or bfloat16"),
    "list param": (lambda: etakit.Adam([[1.0, 2.0]]), TypeError, r"params\[0\] must be a numpy.ndarray"),
    "non-contiguous": (lambda: etakit.Adam([np.zeros(3), np.zeros((4, 4))[:, 1]]), ValueError,
                       r"params\[1\] is not C-contiguous"),
    "read-only": (lambda: etakit.Adam([np.broadcast_to(np.zeros(1), (3,))]), ValueError, "read-only|C-contiguous"),
    "read-only flag": (lambda: etakit.Adam([_readonly(np.zeros(3))]), ValueError, r"params\[0\] is read-only"),
    "same twice": (lambda: etakit.Adam([_SHARED, np.zeros(2), _SHARED]), ValueError,
                   r"params\[0\] and params\[2\] are the same array"),
    "overlapping views": (lambda: etakit.Adam([_BASE[:6], _BASE[5:]]), ValueError, "overlap in memory"),
    "same across groups": (lambda: etakit.Adam([{"params": [_SHARED]}, {"params": [_SHARED]}]), ValueError,
                           r"param_groups\[0\]\['params'\]\[0\] and param_groups\[1\]\['params'\]\[0\]"),
    "group without params": (lambda: etakit.Adam([{"lr": 1.0}]), ValueError, "no 'params'"),
    "mixed": (lambda: etakit.Adam([np.zeros(1), {"params": [np.zeros(1)]}]), TypeError, "mixes"),
    "negative lr": (lambda: etakit.SGD([np.zeros(1)], lr=-0.1), ValueError, "Invalid lr for defaults"),
    "NaN lr": (lambda: etakit.Adam([np.zeros(1)], lr=float("nan")), ValueError, "Invalid lr"),
    "inf eps": (lambda: etakit.Adam([np.zeros(1)], eps=float("inf")), ValueError, "Invalid eps"),
    "negative eps": (lambda: etakit.RMSprop([np.zeros(1)], eps=-1e-8), ValueError, "Invalid eps"),
    "negative momentum": (lambda: etakit.SGD([np.zeros(1)], momentum=-0.9), ValueError, "Invalid momentum"),
    "negative weight decay": (lambda: etakit.AdamW([np.zeros(1)], weight_decay=-1e-2), ValueError,
                              "Invalid weight_decay"),
    "beta1 = 1": (lambda: etakit.Adam([np.zeros(1)], betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    "beta2 < 0": (lambda: etakit.Adam([np.zeros(1)], betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    "betas triple": (lambda: etakit.Adam([np.zeros(1)], betas=(0.9, 0.99, 0.9)), TypeError, "pair"),
    "nesterov without momentum": (lambda: etakit.SGD([np.zeros(1)], nesterov=True), ValueError,
                                  "Nesterov momentum requires momentum > 0"),
    "nesterov with dampening": (lambda: etakit.SGD([np.zeros(1)], momentum=0.9, dampening=0.1, nesterov=True),
                                ValueError, "dampening == 0"),
    "dampening > 1": (lambda: etakit.SGD([np.zeros(1)], dampening=1.5), ValueError, "Invalid dampening"),
    "alpha > 1": (lambda: etakit.RMSprop([np.zeros(1)], alpha=1.5), ValueError, "Invalid alpha"),
    "negative lr_decay": (lambda: etakit.Adagrad([np.zeros(1)], lr_decay=-1.0), ValueError, "Invalid lr_decay"),
    "negative accumulator": (lambda: etakit.Adagrad([np.zeros(1)], initial_accumulator_value=-1.0), ValueError,
                             "Invalid initial_accumulator_value"),
    "bool lr": (lambda: etakit.SGD([np.zeros(1)], lr=True), TypeError, "lr must be a real number"),
    "group override invalid": (lambda: etakit.Adam([{"params": [np.zeros(1)], "lr": -1}]), ValueError,
                               r"Invalid lr for param_groups\[0\]"),
    # (the **options each __init__ declares for type checkers takes no keyword of its own)
    "unknown keyword": (lambda: etakit.AdamW([np.zeros(1)], lr=0.1, betas2=0.9), TypeError,
                        r"AdamW.__init__\(\) got an unexpected keyword argument 'betas2'"),
    "keyword named options": (lambda: etakit.SGD([np.zeros(1)], options={}), TypeError,
                              "unexpected keyword argument 'options'"),
}
_SHARED = np.zeros(3)
_BASE = np.zeros(10)


def _readonly(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("case", CTOR)
def test_bad_construction_raises(case):
    make, exc, match = CTOR[case]
    with pytest.raises(exc, match=match):
        make()


def test_parameter_made_read_only_later_is_refused_before_writing():
    w = np.zeros(3)
    opt = etakit.SGD([w], lr=0.1)
    opt.step([np.ones(3)])
    w.flags.writeable = False
    with pytest.raises(ValueError, match="has become read-only"):
        opt.step([np.ones(3)])
    np.testing.assert_allclose(w, -0.1)


BAD_LOAD = {
    "group count": (lambda sd: {**sd, "param_groups": sd["param_groups"] * 2}, ValueError, "2 parameter groups"),
    "param count": (lambda sd: {**sd, "param_groups": [{**sd["param_groups"][0], "params": [0, 1]}]},
                    ValueError, "has 2 parameters"),
    "bad hyperparameter": (lambda sd: {**sd, "param_groups": [{**sd["param_groups"][0], "lr": -1.0}]},
                           ValueError, "Invalid lr for loaded param_groups"),
    "shape": (lambda sd: {**sd, "state": {0: {**sd["state"][0], "exp_avg": np.zeros(4)}}}, ValueError,
              r"state\[0\]\['exp_avg'\] has shape \(4,\)"),
    "unknown entry": (lambda sd: {**sd, "state": {0: {**sd["state"][0], "momentum": np.zeros(3)}}}, ValueError,
                      "unknown entry 'momentum'"),
    "bad index": (lambda sd: {**sd, "state": {5: sd["state"][0]}}, ValueError, "parameter 5"),
    "bad step": (lambda sd: {**sd, "state": {0: {**sd["state"][0], "step": -1}}}, ValueError, "integer >= 0"),
    "not a dict": (lambda sd: [sd], ValueError, "must be a dict"),
}


@pytest.mark.parametrize("case", BAD_LOAD)
def test_bad_state_dict_is_refused_and_changes_nothing(case):
    w = np.zeros(3)
    opt = etakit.Adam([w], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    snap = snapshot(opt, [w])
    make, exc, match = BAD_LOAD[case]
    with pytest.raises(exc, match=match):
        opt.load_state_dict(make(sd))
    assert_unchanged(opt, [w], snap)

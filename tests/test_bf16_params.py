"""bfloat16 parameters (ml_dtypes.bfloat16 arrays, torch.bfloat16 tensors): every one-pass rule's step is
the float32 step on the decoded values, written back to nearest, stochastically or with Kahan
compensation (etakit.reference.bf16_param_step), bit for bit, over threads, with the loop's passes and
low-precision state; checkpoints; refusals that write nothing."""
import copy

import numpy as np
import pytest

import etakit
from etakit import reference as R
from etakit._step import RuleSpec
from etakit.errors import GradientTypeError, StateError
from rule_cases import RICHEST

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = [0, 1, 257, 4099, 70001]       # empty, one, odd, odd above a block, above the threading threshold
LOWP = [(k, h) for k, h in RICHEST if RuleSpec.of(getattr(etakit, k)).lowp]
ROUNDING = {"kahan": {}, "nearest": dict(kahan=False), "stochastic": dict(stochastic_rounding=True, sr_seed=11)}


def bits(a):
    return np.asarray(a).view(np.uint16)


def _data(seed, sizes=SIZES, steps=4):
    rng = np.random.default_rng(seed)
    ps = [(1.0 + rng.random(n)).astype(np.float32).astype(BF16) for n in sizes]
    gs = [[rng.standard_normal(n).astype(np.float32).astype(BF16) for n in sizes] for _ in range(steps)]
    return ps, gs


def _write_back(mode, x, old, comp, seed, step):
    if mode == "kahan":
        return R.bf16_kahan(x, old, comp)
    if mode == "stochastic":
        return R.bf16_round_stochastic(x, seed, step, R.PARAM_SR_SLOT), comp
    return R.bf16_round(x).reshape(x.shape), comp


# (stochastic rounding is for bfloat16 state and parameters: int8 state refuses it)
STATE_MODES = [(s, m) for s in ("float32", "bfloat16", "int8") for m in ROUNDING if (s, m) != ("int8", "stochastic")]


@pytest.mark.parametrize("state_dtype,mode", STATE_MODES)
@pytest.mark.parametrize("kind,hp", LOWP, ids=[k for k, _ in LOWP])
def test_every_one_pass_rule_is_the_float32_step_then_the_write_back(kind, hp, state_dtype, mode):
    if state_dtype == "int8" and hp.get("centered"):
        hp = {**hp, "centered": False}      # centered RMSprop refuses 8-bit state
    lowp = dict(state_dtype=state_dtype, min_8bit_size=0) if state_dtype != "float32" else {}
    ps, gs = _data(1)
    twin = [p.astype(np.float32) for p in ps]
    opt = getattr(etakit, kind)(ps, **hp, **lowp, **ROUNDING[mode])
    # the float32 twin keeps the same state (and stochastic stream for bfloat16 state)
    sr = dict(stochastic_rounding=True, sr_seed=11) if mode == "stochastic" and state_dtype == "bfloat16" else {}
    ref = getattr(etakit, kind)(twin, **hp, **lowp, **sr)
    comps = [np.zeros(p.shape, np.uint16) for p in ps]
    for k, g in enumerate(gs, start=1):
        olds = [bits(p).copy() for p in ps]
        for t, p in zip(twin, ps):
            t[...] = p.astype(np.float32)
        opt.step(g)
        ref.step([x.astype(np.float32) for x in g])
        for i, (t, p) in enumerate(zip(twin, ps)):
            new, comps[i] = _write_back(mode, t, olds[i], comps[i], R.tensor_seed(11, i), k)
            np.testing.assert_array_equal(bits(p), np.asarray(new).reshape(p.shape), err_msg=f"step {k} tensor {i}")
    mine, theirs = opt.state_dict()["state"], ref.state_dict()["state"]
    for i in range(len(SIZES)):
        for name, v in theirs[i].items():
            assert np.asarray(mine[i][name]).tobytes() == np.asarray(v).tobytes(), (i, name)
        if mode == "kahan":
            assert mine[i]["kahan_comp"].dtype == BF16
            np.testing.assert_array_equal(bits(mine[i]["kahan_comp"]), comps[i])
        else:
            assert "kahan_comp" not in mine[i]


@pytest.mark.parametrize("mode", list(ROUNDING))
def test_adamw_against_reference_bf16_param_step(mode):
    ps, gs = _data(2, [5000, 70001])
    opt = etakit.AdamW(ps, lr=1e-3, weight_decay=0.1, state_dtype="bfloat16", **ROUNDING[mode])
    ref = [bits(p).copy() for p in _data(2, [5000, 70001])[0]]
    states = [{}, {}]
    comps = [np.zeros(r.shape, np.uint16) if mode == "kahan" else None for r in ref]
    slots = tuple(s["name"] for s in etakit._core.rule_info("adam")["slots"])
    nonneg = tuple(s["name"] for s in etakit._core.rule_info("adam")["slots"] if s["nonneg"])
    for k, g in enumerate(gs, start=1):
        opt.step(g)
        for i in range(2):
            R.bf16_param_step("adam", ref[i], bits(g[i]), states[i], step=k, kahan_comp=comps[i],
                              stochastic_rounding=mode == "stochastic", seed=R.tensor_seed(11 if mode == "stochastic"
                                                                                              else 0, i),
                              state_dtype="bfloat16", slots=slots, nonneg=nonneg, lr=1e-3, weight_decay=0.1,
                              decoupled_weight_decay=True)
    for p, r in zip(ps, ref):
        np.testing.assert_array_equal(bits(p), r)


@pytest.mark.parametrize("mode", ["kahan", "stochastic"])
def test_threads_bit_identical(mode):
    out = []
    for threads in (1, 2, 3):
        ps, gs = _data(3, [70001, 9000])
        etakit.set_num_threads(threads)
        try:
            opt = etakit.Adam(ps, lr=1e-3, global_clipnorm=50.0, **ROUNDING[mode])
            for g in gs:
                opt.step(g)
        finally:
            etakit.set_num_threads(2)
        out.append([bits(p).tobytes() for p in ps] + [np.asarray(v).tobytes() for e in
                                                       opt.state_dict()["state"].values() for v in e.values()])
    assert out[0] == out[1] == out[2]


@pytest.mark.parametrize("kind", ["Adam", "Rprop"])
def test_clipping_and_loss_scale_read_the_gradients_as_float32(kind):
    # Adam folds the factor into its gradient sign; Rprop reads a scaled copy of each block
    hp = dict(LOWP)[kind]
    ps, gs = _data(4, [3000, 5000])
    twin = [p.astype(np.float32) for p in ps]
    opt = getattr(etakit, kind)(ps, **hp, global_clipnorm=1.0, kahan=False)
    ref = getattr(etakit, kind)(twin, **hp)
    for k, g in enumerate(gs, start=1):
        for t, p in zip(twin, ps):
            t[...] = p.astype(np.float32)
        g32 = [x.astype(np.float32) for x in g]
        norm, bad = R.global_grad_norm(g32, grad_scale=4.0)
        opt.step(g, grad_scale=4.0)
        ref.step(R.scale_grads(g32, R.grad_multiplier(norm, 1.0, 4.0)))
        assert bad is None and opt.last_grad_norm == norm
        for t, p in zip(twin, ps):
            np.testing.assert_array_equal(bits(p), R.bf16_round(t).reshape(t.shape))


def test_kahan_and_stochastic_rounding_keep_updates_that_rounding_to_nearest_loses():
    # 1000 steps of +1e-4 on 1.0: each is 1/78 of a bfloat16 ulp there (2**-7)
    out = {}
    for mode in ROUNDING:
        w = np.ones(4096, BF16)
        opt = etakit.SGD([w], lr=1e-4, maximize=True, **ROUNDING[mode])
        g = np.ones(4096, BF16)
        for _ in range(1000):
            opt.step([g])
        out[mode] = w.astype(np.float32)
        if mode == "kahan":
            total = out[mode] + opt.state_dict()["state"][0]["kahan_comp"].astype(np.float32)
            np.testing.assert_allclose(total, 1.1, atol=2**-8)
    assert (out["nearest"] == 1.0).all()                     # every update lost
    assert abs(float(out["kahan"].mean()) - 1.1) <= 2**-7    # within an ulp of 1 + 1000 * 1e-4
    assert abs(float(out["stochastic"].mean()) - 1.1) < 2e-3  # unbiased on average over 4096 elements


def test_training_quality_close_to_float32_parameters():
    # least squares: bfloat16 parameters with Kahan reach the float32 loss within 1%; to nearest they stall
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    y = X @ rng.standard_normal(64).astype(np.float32) + 3.0

    def train(dtype, **kw):
        w = np.zeros(64, dtype)
        b = np.zeros(1, dtype)
        opt = etakit.Adam([w, b], lr=3e-3, **kw)
        for _ in range(1500):
            r = X @ w.astype(np.float32) + b.astype(np.float32)[0] - y
            opt.step([(X.T @ r / len(y)).astype(dtype), np.array([r.mean()], np.float32).astype(dtype)])
        r = X @ w.astype(np.float32) + b.astype(np.float32)[0] - y
        return float(np.mean(r * r))

    full, kahan, nearest = train(np.float32), train(BF16), train(BF16, kahan=False)
    assert kahan < full * 1.01 + 1e-3, (kahan, full)
    assert nearest > 10 * kahan, (nearest, kahan)


def test_checkpoints_resume_and_convert(tmp_path):
    ps, gs = _data(5, [300, 5000])
    opt = etakit.AdamW(ps, lr=1e-3, state_dtype="int8", min_8bit_size=0)
    for g in gs[:2]:
        opt.step(g)
    etakit.save(tmp_path / "ck.npz", opt.state_dict())
    sd = etakit.load(tmp_path / "ck.npz")
    assert sd["state"][1]["kahan_comp"].dtype.itemsize == 2     # (np.load gives bfloat16 back as 2-byte voids)
    qs = [p.copy() for p in ps]
    again = etakit.AdamW(qs, lr=1e-3, state_dtype="int8", min_8bit_size=0)
    again.load_state_dict(sd)
    for g in gs[2:]:
        opt.step(g)
        again.step(g)
    assert all(bits(p).tobytes() == bits(q).tobytes() for p, q in zip(ps, qs))
    # into float32 parameters: the moments load (converted to float32), the compensation is dropped
    f32 = [p.astype(np.float32) for p in ps]
    full = etakit.AdamW(f32, lr=1e-3)
    full.load_state_dict(copy.deepcopy(opt.state_dict()))
    for g_ in full.param_groups:        # the checkpoint's groups asked for int8 state
        g_["state_dtype"] = "float32"
    full.step([g.astype(np.float32) for g in gs[0]])
    assert sorted(full.state_dict()["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    assert full.state_dict()["state"][0]["exp_avg"].dtype == np.float32
    # a float32 checkpoint into bfloat16 parameters: float32 state, a new compensation
    back = etakit.AdamW([p.copy() for p in ps], lr=1e-3)
    back.load_state_dict(full.state_dict())
    back.step(gs[0])
    st = back.state_dict()["state"][0]
    assert st["exp_avg"].dtype == np.float32 and st["kahan_comp"].dtype == BF16


def _one():
    w = np.ones(5000, BF16)
    return w, [np.ones(5000, BF16)]


@pytest.mark.parametrize("make,err,match", [
    (lambda w: etakit.LAMB([w]), TypeError, "LAMB updates float32 or float64 parameters only"),
    (lambda w: etakit.Adam([w], kahan=True, stochastic_rounding=True), ValueError, "choose one"),
    (lambda w: etakit.Adam([w], kahan="yes"), TypeError, "kahan must be None, True or False"),
    (lambda w: etakit.Adam([w.astype(np.float32)], stochastic_rounding=True), ValueError, "has neither"),
    (lambda w: etakit.Adam([w.astype(np.float64)], state_dtype="bfloat16"), TypeError, "needs float32"),
])
def test_bad_options_are_refused(make, err, match):
    with pytest.raises(err, match=match):
        make(_one()[0])


def test_refusals_write_nothing():
    w, g = _one()
    before = bits(w).copy()
    with pytest.raises(ValueError, match="EMA of bfloat16 parameters"):
        etakit.Adam([w], ema_decay=0.9).step(g)
    opt = etakit.Adam([w])
    with pytest.raises(ValueError, match="accumulate: bfloat16"):
        opt.accumulate(g)
    with pytest.raises(GradientTypeError, match="dtype float32, expected bfloat16"):
        opt.step([g[0].astype(np.float32)])
    np.testing.assert_array_equal(bits(w), before)
    opt.step(g)
    sd = opt.state_dict()
    good = copy.deepcopy(sd)
    sd["state"][0]["kahan_comp"] = np.zeros(7, BF16)
    with pytest.raises(StateError, match="expected bfloat16 of shape"):
        opt.load_state_dict(sd)
    kept = opt.state_dict()                       # the refused load changed nothing
    for name, v in good["state"][0].items():
        assert np.asarray(kept["state"][0][name]).tobytes() == np.asarray(v).tobytes(), name
    twin_w = w.copy()
    twin = etakit.Adam([twin_w])
    twin.load_state_dict(good)
    opt.step(g)                                   # and it steps on as the optimizer it was
    twin.step(g)
    assert bits(w).tobytes() == bits(twin_w).tobytes()


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("state_dtype,mode", STATE_MODES)
def test_torch_drop_in_equals_numpy(mode, state_dtype):
    import etakit.torch as et
    lowp = dict(state_dtype=state_dtype, min_8bit_size=0) if state_dtype != "float32" else {}
    ps, gs = _data(6, [300, 9000])
    ts = [torch.from_numpy(bits(p).astype(np.int16)).view(torch.bfloat16).clone().requires_grad_() for p in ps]
    mine = et.AdamW(ts, lr=1e-3, **lowp, **ROUNDING[mode])
    ref = etakit.AdamW(ps, lr=1e-3, **lowp, **ROUNDING[mode])
    for g in gs:
        for t, x in zip(ts, g):
            t.grad = torch.from_numpy(bits(x).astype(np.int16)).view(torch.bfloat16)
        mine.step()
        ref.step(g)
    for t, p in zip(ts, ps):
        assert t.detach().view(torch.int16).numpy().view(np.uint16).tobytes() == bits(p).tobytes()
    assert ("kahan_comp" in mine.state[ts[0]]) == (mode == "kahan")
    # a checkpoint (through a copy, as from a file) resumes bit for bit; the state stays float32
    sd = copy.deepcopy(mine.state_dict())
    us = [t.detach().clone().requires_grad_() for t in ts]
    again = et.AdamW(us, lr=1e-3, **lowp, **ROUNDING[mode])
    again.load_state_dict(sd)
    if state_dtype == "float32":
        assert again.state[us[1]]["exp_avg"].dtype == torch.float32
    for t, u, x in zip(ts, us, gs[0]):
        t.grad = u.grad = torch.from_numpy(bits(x).astype(np.int16)).view(torch.bfloat16)
    mine.step()
    again.step()
    assert all(torch.equal(t, u) for t, u in zip(ts, us))


def test_torch_trajectory_against_torch_adamw_on_a_float32_copy():
    # rounding to nearest: each step is torch.optim.AdamW's float32 step from the bfloat16 values, rounded
    import etakit.torch as et
    torch.manual_seed(0)
    w = torch.randn(4099).bfloat16().requires_grad_()
    master = w.detach().float().clone().requires_grad_()
    mine = et.AdamW([w], lr=1e-2, weight_decay=0.1, kahan=False)
    ref = torch.optim.AdamW([master], lr=1e-2, weight_decay=0.1, fused=True)
    for _ in range(20):
        g = torch.randn(4099).bfloat16()
        w.grad = g
        master.grad = g.float()
        with torch.no_grad():
            master.copy_(w.float())
        mine.step()
        ref.step()
        # torch's float32 step, rounded: the same bfloat16 value for all but a few elements (torch's fused
        # kernel may differ in the last float32 bit, which can move a rounding tie), and within an ulp
        same = float((w.detach() == master.detach().bfloat16()).float().mean())
        assert same > 0.999, same
        assert torch.allclose(w.detach().float(), master.detach(), rtol=2**-8, atol=0)


def test_torch_refusals():
    import etakit.torch as et
    w = torch.ones(10, dtype=torch.bfloat16, requires_grad=True)
    with pytest.raises(TypeError, match="LAMB updates float32 or float64 parameters only"):
        et.LAMB([w])
    with pytest.raises(TypeError, match="float16 is not supported"):
        et.Adam([torch.ones(3, dtype=torch.float16, requires_grad=True)])
    opt = et.Adam([w], ema_decay=0.9)
    w.grad = torch.ones(10, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="EMA of bfloat16 parameters"):
        opt.step()
    assert torch.equal(w, torch.ones(10, dtype=torch.bfloat16))


# ---- regressions from an adversarial trial -----------------------------------------------------------

def test_ema_cannot_come_in_by_add_param_group_or_a_checkpoint():
    f = np.zeros(3, np.float32)
    opt = etakit.Adam([f], ema_decay=0.9)
    with pytest.raises(ValueError, match="add_param_group with ema_decay set: the EMA of bfloat16"):
        opt.add_param_group({"params": [np.ones(3, BF16)]})
    assert len(opt.param_groups) == 1
    opt.step([np.ones(3, np.float32)])          # still steps
    src = etakit.Adam([np.zeros(3, np.float32)], ema_decay=0.9)
    src.step([np.ones(3, np.float32)])
    w = np.ones(3, BF16)
    dst = etakit.Adam([w])
    with pytest.raises(ValueError, match=r"loaded loop\['ema'\]: the EMA of bfloat16"):
        dst.load_state_dict(src.state_dict())
    dst.step([np.ones(3, BF16)])


def test_a_refused_first_step_leaves_no_compensation():
    w = np.ones(10, BF16)
    opt = etakit.Adam([w], global_clipnorm=1.0)
    g = np.ones(10, BF16)
    g[0] = np.nan
    with pytest.raises(etakit.NonFiniteGradientError):
        opt.step([g])
    assert opt.state_dict()["state"] == {}
    opt.nonfinite = "skip"
    opt.step([g])
    assert opt.state_dict()["state"] == {}


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e39])
def test_a_non_finite_compensation_is_refused(value):
    w = np.ones(10, BF16)
    opt = etakit.Adam([w])
    opt.step([np.ones(10, BF16)])
    sd = opt.state_dict()
    sd["state"][0]["kahan_comp"] = np.full(10, value)
    with pytest.raises(StateError, match="holds inf or NaN"):
        opt.load_state_dict(sd)


def test_a_stochastic_rounding_checkpoint_loads_into_float32_parameters():
    src = etakit.Adam([np.ones(10, BF16)], stochastic_rounding=True, sr_seed=5)
    src.step([np.ones(10, BF16)])
    dst = etakit.Adam([np.ones(10, np.float32)])
    dst.load_state_dict(src.state_dict())
    assert "stochastic_rounding" not in dst.param_groups[0] and "sr_seed" not in dst.param_groups[0]
    dst.step([np.ones(10, np.float32)])


def test_lookahead_round_trips_bfloat16_slow_weights_through_a_file(tmp_path):
    la = etakit.Lookahead(etakit.Adam([np.ones(10, BF16)]), k=2)
    la.step([np.ones(10, BF16)])
    etakit.save(tmp_path / "la.npz", la.state_dict())
    w = np.ones(10, BF16)
    la2 = etakit.Lookahead(etakit.Adam([w]), k=2)
    la2.load_state_dict(etakit.load(tmp_path / "la.npz"))
    la.step([np.ones(10, BF16)])
    la2.step([np.ones(10, BF16)])
    assert bits(w).tobytes() == bits(la.optimizer.param_groups[0]["params"][0]).tobytes()


def test_sharded_optimizer_refuses_bfloat16_parameters():
    MPI = pytest.importorskip("mpi4py.MPI")
    from etakit.distributed import ShardedOptimizer
    with pytest.raises(TypeError, match="bfloat16 parameters are not supported"):
        ShardedOptimizer(etakit.AdamW([np.ones(10, BF16)]), MPI.COMM_SELF)


def test_torch_checkpoints_and_dtype_changes_around_bfloat16():
    import etakit.torch as et
    w = torch.ones(10, dtype=torch.bfloat16, requires_grad=True)
    opt = et.Adam([w], lr=1e-2, stochastic_rounding=True)
    w.grad = torch.ones(10, dtype=torch.bfloat16)
    opt.step()
    v = torch.ones(10, requires_grad=True)
    o32 = et.Adam([v], lr=1e-2)
    o32.load_state_dict(copy.deepcopy(opt.state_dict()))        # compensation dropped, rounding flag too
    assert "kahan_comp" not in o32.state[v] and "stochastic_rounding" not in o32.param_groups[0]
    v.grad = torch.ones(10)
    o32.step()
    # a model moved back to float32 after bfloat16 steps: the compensation goes, the moments stay
    u = torch.ones(10, dtype=torch.bfloat16, requires_grad=True)
    ou = et.Adam([u], lr=1e-2)
    u.grad = torch.ones(10, dtype=torch.bfloat16)
    ou.step()
    u.data = u.data.float()
    u.grad = torch.ones(10)
    ou.step()
    assert "kahan_comp" not in ou.state[u] and ou.state[u]["exp_avg"].dtype == torch.float32
    with pytest.raises(ValueError, match="add_param_group with ema_decay set"):
        et.Adam([torch.ones(2, requires_grad=True)], ema_decay=0.9).add_param_group(
            {"params": [torch.ones(2, dtype=torch.bfloat16, requires_grad=True)]})
    # float32 to float64 in place: a StateError that says so
    x = torch.ones(10, requires_grad=True)
    ox = et.Adam([x])
    x.grad = torch.ones(10)
    ox.step()
    x.data = torch.ones(10, dtype=torch.float64)
    x.grad = torch.ones(10, dtype=torch.float64)
    with pytest.raises(StateError, match="is float32 and the parameter float64"):
        ox.step()

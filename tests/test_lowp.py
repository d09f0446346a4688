"""Low-precision optimizer state (state_dtype="bfloat16" / "int8"): the kernels
against etakit.reference.lowp_step bit for bit, 1/2/3 threads, odd, empty and
above-threshold sizes, the maps against bitsandbytes, checkpoints that convert,
and refusals that write nothing."""
import numpy as np
import pytest

import etakit
from etakit import _core
from etakit import reference as R

ml_dtypes = pytest.importorskip("ml_dtypes")

SIZES = [0, 1, 257, 4099, 70001]       # empty, one, odd, odd above 4096, above the threading threshold
RULES = {   # class, rule, keyword arguments, reference keyword arguments
    "SGD": (etakit.SGD, "sgd", dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.9, nesterov=True)),
    "Adam": (etakit.Adam, "adam", dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, weight_decay=0.1)),
    "AdamW": (etakit.AdamW, "adam", dict(lr=1e-2, amsgrad=True),
              dict(lr=1e-2, amsgrad=True, weight_decay=1e-2, decoupled_weight_decay=True)),
    "Lion": (etakit.Lion, "lion", dict(lr=1e-3, weight_decay=0.1), dict(lr=1e-3, weight_decay=0.1)),
    # (not centered: with 8-bit state, square_avg - grad_avg**2 may come out negative, and its sqrt NaN)
    "RMSprop": (etakit.RMSprop, "rmsprop", dict(lr=1e-3, momentum=0.5), dict(lr=1e-3, momentum=0.5)),
    "Adagrad": (etakit.Adagrad, "adagrad", dict(lr=1e-2, initial_accumulator_value=0.1),
                dict(lr=1e-2, initial_accumulator_value=0.1)),
}


def _info(rule):
    slots = _core.rule_info(rule)["slots"]
    return tuple(s["name"] for s in slots), tuple(s["name"] for s in slots if s["nonneg"])


def _run(name, sizes, state_dtype, sr=False, steps=6, threads=None, seed=0):
    cls, rule, kw, _ = RULES[name]
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    opt = cls([{"params": ws[:2]}, {"params": ws[2:], "lr": kw.get("lr", 1e-3) / 2}] if len(ws) > 2 else ws,
              state_dtype=state_dtype, stochastic_rounding=sr, min_8bit_size=0, **kw)
    if threads:
        etakit.set_num_threads(threads)
    try:
        grads = []
        for k in range(steps):
            g = [(rng.standard_normal(n) * (1e-3 if k % 2 else 1.0)).astype(np.float32) for n in sizes]
            grads.append(g)
            opt.step(g)
    finally:
        if threads:
            etakit.set_num_threads(2)
    return ws, opt, grads


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("state_dtype,sr", [("bfloat16", False), ("bfloat16", True), ("int8", False)])
def test_against_reference_bit_for_bit(name, state_dtype, sr):
    cls, rule, kw, ref_kw = RULES[name]
    ws, opt, grads = _run(name, SIZES, state_dtype, sr)
    slots, nonneg = _info(rule)
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    states = [{} for _ in SIZES]
    for k, g in enumerate(grads, start=1):
        for i, (p, gi) in enumerate(zip(ps, g)):
            hk = dict(ref_kw)
            if i >= 2:
                hk["lr"] = ref_kw.get("lr", 1e-3) / 2
            R.lowp_step(rule, p, gi, states[i], step=k, state_dtype=state_dtype, nonneg=nonneg, slots=slots,
                        stochastic_rounding=sr, seed=R.tensor_seed(0, i),
                        initial={"sum": 0.1} if rule == "adagrad" else None, **hk)
    sd = opt.state_dict()["state"]
    for i in range(len(SIZES)):
        np.testing.assert_array_equal(ws[i], ps[i])
        for name_, a in states[i].items():
            if np.ndim(a) == 0:
                continue
            mine = np.asarray(sd[i][name_])
            assert mine.dtype == (np.uint8 if state_dtype == "int8" and not name_.endswith("_absmax") else
                                  np.float32 if name_.endswith("_absmax") else ml_dtypes.bfloat16)
            np.testing.assert_array_equal(mine.view(np.uint8), np.asarray(a).view(np.uint8), err_msg=name_)


# bfloat16 only (with 8-bit state a centered variance may come out negative): options that reach every state
# slot and branch of the fused bfloat16 loops (csrc/kernels_variant.h)
RULES_BF16 = {
    "RMSprop-centered": (etakit.RMSprop, "rmsprop", dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=0.1),
                         dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=0.1)),
    "SGD-maximize": (etakit.SGD, "sgd", dict(lr=0.1, momentum=0.9, dampening=0.2, maximize=True),
                     dict(lr=0.1, momentum=0.9, dampening=0.2, maximize=True)),
    "Adam-amsgrad-maximize": (etakit.Adam, "adam", dict(lr=1e-2, amsgrad=True, maximize=True),
                              dict(lr=1e-2, amsgrad=True, maximize=True)),
}


@pytest.mark.parametrize("name", list(RULES_BF16))
@pytest.mark.parametrize("sr", [False, True])
def test_bfloat16_options_bit_for_bit(name, sr, monkeypatch):
    monkeypatch.setitem(RULES, name, RULES_BF16[name])
    test_against_reference_bit_for_bit(name, "bfloat16", sr)


# every branch of the one-pass 8-bit Adam (csrc/lowp.h, adam_q8): weight-decay modes, amsgrad, maximize
RULES_Q8_ADAM = {
    "Adam-amsgrad-maximize-L2": (etakit.Adam, "adam", dict(lr=1e-2, amsgrad=True, maximize=True, weight_decay=0.1),
                                 dict(lr=1e-2, amsgrad=True, maximize=True, weight_decay=0.1)),
    "Adam-plain": (etakit.Adam, "adam", dict(lr=1e-2), dict(lr=1e-2)),
    "AdamW-plain": (etakit.AdamW, "adam", dict(lr=1e-2, weight_decay=0.1),
                    dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
}


@pytest.mark.parametrize("name", list(RULES_Q8_ADAM))
def test_int8_adam_options_bit_for_bit(name, monkeypatch):
    monkeypatch.setitem(RULES, name, RULES_Q8_ADAM[name])
    test_against_reference_bit_for_bit(name, "int8", False)


def test_int8_adam_with_non_finite_gradients_bit_for_bit():
    """A NaN and an infinity in the gradients: their blocks' scales become NaN and inf, which the
    codecs' vector paths do not take (the bucket search does), and the next steps read them back."""
    rng = np.random.default_rng(8)
    n = 5000
    w = rng.standard_normal(n).astype(np.float32)
    mine, ref = w.copy(), w.copy()
    opt = etakit.Adam([mine], lr=1e-2, amsgrad=True, state_dtype="int8")
    slots, nonneg = _info("adam")
    st = {}
    for k in range(1, 4):
        g = rng.standard_normal(n).astype(np.float32)
        if k == 2:
            g[300], g[1000] = np.nan, np.inf
        opt.step([g])
        with np.errstate(invalid="ignore", over="ignore"):
            R.lowp_step("adam", ref, g, st, step=k, state_dtype="int8", nonneg=nonneg, slots=slots, lr=1e-2,
                        amsgrad=True)
    np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32))
    got = opt.state_dict()["state"][0]
    for name_, a in st.items():
        if np.ndim(a):
            np.testing.assert_array_equal(np.asarray(got[name_]).view(np.uint8), np.asarray(a).view(np.uint8),
                                          err_msg=name_)


@pytest.mark.parametrize("state_dtype,sr", [("bfloat16", False), ("bfloat16", True), ("int8", False)])
def test_threads_bit_identical(state_dtype, sr):
    runs = [_run("Adam", [100003, 5], state_dtype, sr, steps=3, threads=t) for t in (1, 2, 3)]
    for ws, opt, _ in runs[1:]:
        for a, b in zip(ws, runs[0][0]):
            np.testing.assert_array_equal(a, b)
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                if k != "step":
                    np.testing.assert_array_equal(np.asarray(v).view(np.uint8),
                                                  np.asarray(runs[0][1].state_dict()["state"][i][k]).view(np.uint8))


@pytest.mark.parametrize("name,state_dtype,sr", [("AdamW", "bfloat16", True), ("AdamW", "int8", False),
                                                 ("RMSprop", "int8", False), ("Adagrad", "int8", False)])
def test_simd_variants_bit_identical(name, state_dtype, sr, simd):
    """Every SIMD variant the CPU runs (the 8-bit codecs differ most: gathers, byte permutes) gives the
    baseline's bits, on sizes that leave vector tails and a partial last block."""
    runs = {}
    for variant in _core.simd_available():
        simd(variant)
        runs[variant] = _run(name, [70001, 300, 17], state_dtype, sr, steps=3)
    ws0, opt0, _ = runs["baseline"]
    for variant, (ws, opt, _) in runs.items():
        for a, b in zip(ws, ws0):
            np.testing.assert_array_equal(a, b, err_msg=variant)
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                if k != "step":
                    np.testing.assert_array_equal(np.asarray(v).view(np.uint8),
                                                  np.asarray(opt0.state_dict()["state"][i][k]).view(np.uint8),
                                                  err_msg=f"{variant} {k}")


def test_q8_codec_every_variant_on_special_values(simd):
    """The codecs of every variant against the reference: zeros, subnormals, the maps' values, thresholds
    and their neighbours, magnitudes over 40 decades, and blocks with a NaN or an infinity."""
    rng = np.random.default_rng(5)
    vals = [np.float32(0), np.float32(-0.0), np.float32(1e-45), np.float32(-1e-45), np.float32(1.0)]
    for signed in (True, False):
        t = R.q8_thresholds(R.dynamic_map(signed))
        vals += list(R.dynamic_map(signed)) + list(t) + list(np.nextafter(t, np.float32(0)))
    x = np.array(vals, dtype=np.float32)
    x = np.concatenate([x, -x, (rng.standard_normal(4000) * 10.0 ** rng.uniform(-38, 2, 4000)).astype(np.float32)])
    x = x[rng.permutation(x.size)]
    x[::256] = 1.0                              # a scale of 1 in most blocks: the values themselves are coded
    x[2 * 256 + 7], x[3 * 256 + 9], x[4 * 256 + 1] = np.nan, np.inf, -np.inf
    for variant in _core.simd_available():
        simd(variant)
        for signed in (True, False):
            y = x if signed else np.abs(x)
            c, a = _core.q8_encode(y, signed)
            c2, a2 = R.q8_quantize(y, signed)
            np.testing.assert_array_equal(c, c2, err_msg=f"{variant} {signed}")
            np.testing.assert_array_equal(a.view(np.uint32), a2.view(np.uint32), err_msg=f"{variant} {signed}")
            with np.errstate(invalid="ignore"):     # 0 * inf in the blocks with an infinite scale
                np.testing.assert_array_equal(_core.q8_decode(c, a, signed), R.q8_dequantize(c, a, signed))


def test_codecs_match_reference():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(9999) * 10.0 ** rng.integers(-8, 3, 9999)).astype(np.float32)
    x[:4] = [0.0, -0.0, np.inf, -np.inf]
    np.testing.assert_array_equal(_core.bf16_encode(x), R.bf16_round(x))
    finite = x[np.isfinite(x)]
    np.testing.assert_array_equal(R.bf16_round(finite).view(ml_dtypes.bfloat16), finite.astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(_core.bf16_encode(x, True, 7, 3, 2, 5), R.bf16_round_stochastic(x, 7, 3, 2, 5))
    for signed in (True, False):
        y = x[np.isfinite(x)] if signed else np.abs(x[np.isfinite(x)])
        c, a = _core.q8_encode(y, signed)
        c2, a2 = R.q8_quantize(y, signed)
        np.testing.assert_array_equal(c, c2)
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_array_equal(_core.q8_map(signed), R.dynamic_map(signed))


def test_stochastic_rounding_is_unbiased():
    x = np.full(200000, 1.0 + 2.0 ** -10, dtype=np.float32)       # a quarter of the way to the next bfloat16
    r = R.bf16_decode(R.bf16_round_stochastic(x, 1, 1, 0))
    assert abs(r.astype(np.float64).mean() - float(x[0])) < 2e-5
    assert set(np.unique(r)) == {np.float32(1.0), np.float32(1.0 + 2.0 ** -7)}


def test_maps_match_bitsandbytes_and_its_dequantization():
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    for signed in (True, False):
        np.testing.assert_array_equal(R.dynamic_map(signed), F.create_dynamic_map(signed=signed).numpy())
    w = np.random.default_rng(2).standard_normal(5000).astype(np.float32)
    opt = etakit.Adam([w], lr=1e-2, state_dtype="int8")
    for _ in range(3):
        opt.step([np.random.default_rng(3).standard_normal(5000).astype(np.float32)])
    st = opt.state_dict()["state"][0]
    for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        qs = F.QuantState(absmax=torch.from_numpy(st[name + "_absmax"]), code=F.create_dynamic_map(signed=signed),
                          blocksize=256, dtype=torch.float32, shape=torch.Size([5000]))
        theirs = F.dequantize_blockwise(torch.from_numpy(st[name]), quant_state=qs).numpy()
        np.testing.assert_array_equal(theirs, R.q8_dequantize(st[name], st[name + "_absmax"], signed))


def test_small_tensors_stay_float32_and_default_unchanged():
    w, v = np.ones(100, np.float32), np.ones(5000, np.float32)
    opt = etakit.Adam([w, v], state_dtype="int8")
    opt.step([np.ones(100, np.float32), np.ones(5000, np.float32)])
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].dtype == np.float32 and sd["state"][1]["exp_avg"].dtype == np.uint8
    plain = etakit.Adam([np.ones(3, np.float32)])
    assert "state_dtype" not in plain.param_groups[0]


def test_trajectory_close_to_float32():
    """A small least-squares problem: bfloat16 and 8-bit Adam end within a stated tolerance of float32."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((256, 64)).astype(np.float32)
    b = A @ rng.standard_normal(64).astype(np.float32)
    losses = {}
    for sd in ("float32", "bfloat16", "int8"):
        x = np.zeros(64 * 80, np.float32)          # 64 used, padded to 5120 so that int8 applies
        opt = etakit.Adam([x], lr=0.05, state_dtype=sd)
        for _ in range(300):
            r = A @ x[:64] - b
            g = np.zeros_like(x)
            g[:64] = A.T @ r / len(b)
            opt.step([g])
        losses[sd] = float(np.mean((A @ x[:64] - b) ** 2))
    scale = float(np.mean(b ** 2))      # the loss at x = 0
    assert losses["float32"] < 1e-8 * scale
    for sd in ("bfloat16", "int8"):     # measured: 7e-10 and 7e-9 of the start
        assert losses[sd] < 1e-7 * scale, losses


@pytest.mark.parametrize("src,dst", [("bfloat16", "float32"), ("float32", "bfloat16"), ("int8", "float32"),
                                     ("float32", "int8"), ("int8", "bfloat16")])
def test_checkpoint_converts(src, dst):
    ws, opt, _ = _run("Adam", [5000], src, steps=3)
    sd = opt.state_dict()
    want = {n: R.bf16_decode(np.asarray(a).view(np.uint16)) if src == "bfloat16" else
            R.q8_dequantize(a, sd["state"][0][n + "_absmax"], n == "exp_avg") if src == "int8" else a
            for n, a in sd["state"][0].items() if n in ("exp_avg", "exp_avg_sq")}
    w = ws[0].copy()
    other = etakit.Adam([w], lr=1e-2, weight_decay=0.1, state_dtype=dst, min_8bit_size=0)
    sd2 = {**sd, "param_groups": [{**g, "state_dtype": dst} for g in sd["param_groups"]]}
    other.load_state_dict(sd2)
    got = other.state_dict()["state"][0]
    for n, a in want.items():
        mine = got[n]
        if dst == "float32":
            np.testing.assert_array_equal(mine, a)
        elif dst == "bfloat16":
            assert mine.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(mine.view(np.uint16), R.bf16_round(a))
        else:
            codes, absmax = R.q8_quantize(a, n == "exp_avg")
            np.testing.assert_array_equal(mine, codes)
            np.testing.assert_array_equal(got[n + "_absmax"], absmax)
    other.step([np.ones(5000, np.float32)])      # and it steps


def test_same_format_checkpoint_round_trips_exactly():
    ws, opt, grads = _run("Adam", [5000], "int8", steps=3)
    w2 = ws[0].copy()
    opt2 = etakit.Adam([w2], lr=1e-2, weight_decay=0.1, state_dtype="int8", min_8bit_size=0)
    opt2.load_state_dict(opt.state_dict())
    g = np.random.default_rng(9).standard_normal(5000).astype(np.float32)
    opt.step([g]), opt2.step([g])
    np.testing.assert_array_equal(ws[0], w2)


def test_changing_state_dtype_converts():
    ws, opt, _ = _run("Adam", [5000], "float32", steps=2)
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    opt.step([np.ones(5000, np.float32)])
    assert opt.state_dict()["state"][0]["exp_avg"].dtype == ml_dtypes.bfloat16


def _int8_checkpoint():
    ws, opt, _ = _run("Adam", [5000], "int8", steps=2)
    return opt.state_dict()


@pytest.mark.parametrize("tamper,err", [
    (lambda e: e.pop("exp_avg_absmax"), "without their scales"),
    (lambda e: e.__setitem__("exp_avg_absmax", e["exp_avg_absmax"][:-1]), "one scale per 256"),
    (lambda e: e.__setitem__("exp_avg_absmax", e["exp_avg_absmax"].astype(np.float64)), "expected float32"),
    (lambda e: e["exp_avg_absmax"].__setitem__(0, -1.0), "negative scale"),
    (lambda e: e["exp_avg_absmax"].__setitem__(0, -np.inf), "negative scale"),
    (lambda e: e.__setitem__("exp_avg", e["exp_avg"].astype(np.int16)), "int16"),
    (lambda e: e.__setitem__("exp_avg", e["exp_avg"][:-1]), "shape"),
    (lambda e: e.__setitem__("exp_avg", e["exp_avg"].astype(np.float32)), "scales 'exp_avg', which is float32"),
])
def test_tampered_checkpoint_refused_nothing_written(tamper, err):
    sd = _int8_checkpoint()
    tamper(sd["state"][0])
    w = np.zeros(5000, np.float32)
    opt = etakit.Adam([w], state_dtype="int8")
    opt.step([np.ones(5000, np.float32)])
    before = opt.state_dict()
    with pytest.raises((ValueError, TypeError), match=err):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    for k, v in before["state"][0].items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(after["state"][0][k]))
    assert before["param_groups"] == after["param_groups"]


@pytest.mark.parametrize("kw,exc,match", [
    (dict(state_dtype="float16"), ValueError, "Invalid state_dtype"),
    (dict(state_dtype=1), ValueError, "Invalid state_dtype"),
    (dict(state_dtype="int8", stochastic_rounding=True), ValueError, "applies to bfloat16 state and"),
    (dict(state_dtype="bfloat16", stochastic_rounding=1), TypeError, "must be a bool"),
    (dict(state_dtype="int8", min_8bit_size=-1), ValueError, "min_8bit_size"),
])
def test_bad_options_refused(kw, exc, match):
    with pytest.raises(exc, match=match):
        etakit.Adam([np.zeros(3, np.float32)], **kw)


def test_refusals():
    with pytest.raises(TypeError, match=r"needs float32 \(or bfloat16\) parameters"):
        etakit.Adam([np.zeros(3)], state_dtype="bfloat16")
    with pytest.raises(ValueError, match="cannot keep bfloat16 state"):
        etakit.LAMB([np.zeros(3, np.float32)], state_dtype="bfloat16")
    w = np.zeros(3, np.float32)
    opt = etakit.Adam([w])
    opt.param_groups[0]["state_dtype"] = "bf16"
    with pytest.raises(ValueError, match="Invalid state_dtype"):
        opt.step([np.ones(3, np.float32)])
    assert not w.any() and not opt.state_dict()["state"]


def test_8bit_second_moment_never_rounds_to_zero():
    """A positive second moment far below its block's largest one used to round to code 0 while the
    first moment did not: the step was m / eps, thousands of times lr.  It now takes the smallest
    positive code, and every step stays within a few lr, as with float32 state."""
    g1 = np.full(4096, 1e-4, np.float32)
    g1[0] = 1.0
    g2 = np.zeros(4096, np.float32)
    g2[0] = 1.0
    moves = {}
    for dt in ("float32", "int8"):
        w = np.zeros(4096, np.float32)
        opt = etakit.Adam([w], lr=1e-3, state_dtype=dt)
        opt.step([g1])
        before = w.copy()
        opt.step([g2])
        moves[dt] = float(np.abs(w - before).max())
        if dt == "int8":
            assert not np.any((opt.state_dict()["state"][0]["exp_avg_sq"] == 0))
    assert moves["int8"] <= 2e-3 and moves["float32"] <= 2e-3, moves


def test_bfloat16_checkpoint_through_etakit_save_and_np_savez(tmp_path):
    """numpy saves ml_dtypes.bfloat16 as raw 2-byte voids: loading takes them back as bfloat16."""
    w = np.zeros(10, np.float32)
    opt = etakit.Adam([w], lr=1e-2, state_dtype="bfloat16")
    opt.step([np.ones(10, np.float32)])
    etakit.save(tmp_path / "c.npz", opt)
    other = etakit.Adam([w.copy()], lr=1e-2, state_dtype="bfloat16")
    other.load_state_dict(etakit.load(tmp_path / "c.npz"))
    a, b = opt.state_dict()["state"][0], other.state_dict()["state"][0]
    assert b["exp_avg"].dtype == a["exp_avg"].dtype
    assert a["exp_avg"].tobytes() == b["exp_avg"].tobytes() and a["exp_avg_sq"].tobytes() == b["exp_avg_sq"].tobytes()


def test_a_nan_gradient_leaves_a_checkpoint_that_loads():
    w = np.zeros(8192, np.float32)
    opt = etakit.Adam([w], lr=1e-2, state_dtype="int8")
    g = np.ones(8192, np.float32)
    g[3] = np.nan
    opt.step([g])
    sd = opt.state_dict()
    assert np.isnan(sd["state"][0]["exp_avg_absmax"][0])
    other = etakit.Adam([w.copy()], lr=1e-2, state_dtype="int8")
    other.load_state_dict(sd)
    assert other.state_dict()["state"][0]["exp_avg"].tobytes() == sd["state"][0]["exp_avg"].tobytes()


def test_centered_rmsprop_refuses_int8_state():
    with pytest.raises(ValueError, match="centered RMSprop cannot keep int8"):
        etakit.RMSprop([np.zeros(8192, np.float32)], centered=True, state_dtype="int8")
    etakit.RMSprop([np.zeros(8192, np.float32)], centered=True, state_dtype="bfloat16")


def test_a_refused_step_does_not_convert_the_state():
    w = np.zeros(8192, np.float32)
    opt = etakit.Adam([w], lr=1e-2, state_dtype="int8")
    opt.step([np.ones(8192, np.float32)])
    before = {k: np.array(v) for k, v in opt.state_dict()["state"][0].items()}
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    with pytest.raises(etakit.GradientError):
        opt.step([np.ones(8191, np.float32)])
    after = opt.state_dict()["state"][0]
    assert set(after) == set(before)
    assert all(np.asarray(after[k]).dtype == before[k].dtype and np.asarray(after[k]).tobytes() == before[k].tobytes()
               for k in before)
    opt.step([np.ones(8192, np.float32)])         # and the change takes effect with the next good step
    assert opt.state_dict()["state"][0]["exp_avg"].dtype.itemsize == 2


def test_sr_seed_streams():
    """stochastic rounding from a user seed: the reference's bits (tensor_seed(sr_seed, index)), the
    same for 1 and 3 threads and after a checkpoint resumes; another seed, other bits."""
    rng = np.random.default_rng(6)
    sizes = [70001, 300]
    w0 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(4)]

    def run(seed, threads=2, split=False):
        ws = [w.copy() for w in w0]
        opt = etakit.Adam(ws, lr=1e-2, state_dtype="bfloat16", stochastic_rounding=True, sr_seed=seed)
        etakit.set_num_threads(threads)
        try:
            for k, g in enumerate(grads):
                if split and k == 2:        # resume from a checkpoint half way
                    sd = opt.state_dict()
                    ws = [w.copy() for w in ws]
                    opt = etakit.Adam(ws, lr=1e-2, state_dtype="bfloat16")
                    opt.load_state_dict(sd)
                opt.step(g)
        finally:
            etakit.set_num_threads(2)
        return ws, opt.state_dict()["state"]

    ws, st = run(2**64 - 5)
    ref_p = [w.copy() for w in w0]
    ref_s = [{} for _ in sizes]
    slots, nonneg = _info("adam")
    for k, g in enumerate(grads, start=1):
        for i in range(len(sizes)):
            R.lowp_step("adam", ref_p[i], g[i], ref_s[i], step=k, state_dtype="bfloat16", nonneg=nonneg,
                        slots=slots, stochastic_rounding=True, seed=R.tensor_seed(2**64 - 5, i), lr=1e-2)
    for i in range(len(sizes)):
        np.testing.assert_array_equal(ws[i], ref_p[i])
        np.testing.assert_array_equal(st[i]["exp_avg"].view(np.uint16), ref_s[i]["exp_avg"])
    for other in (run(2**64 - 5, threads=1), run(2**64 - 5, threads=3), run(2**64 - 5, split=True)):
        for a, b in zip(other[0], ws):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(run(7)[1][0]["exp_avg"].view(np.uint16), st[0]["exp_avg"].view(np.uint16))


@pytest.mark.parametrize("kw,match", [(dict(sr_seed=3), "set stochastic_rounding=True"),
                                      (dict(stochastic_rounding=True, sr_seed=-1), "Invalid sr_seed"),
                                      (dict(stochastic_rounding=True, sr_seed=2**64), "Invalid sr_seed"),
                                      (dict(stochastic_rounding=True, sr_seed=True), "Invalid sr_seed"),
                                      (dict(stochastic_rounding=True, sr_seed=1.5), "Invalid sr_seed")])
def test_bad_sr_seed(kw, match):
    with pytest.raises(ValueError, match=match):
        etakit.Adam([np.zeros(3, np.float32)], state_dtype="bfloat16", **kw)


@pytest.mark.parametrize("name,why", [("Prodigy", "pass of its own"), ("DAdaptAdam", "pass of its own"),
                                      ("DAdaptSGD", "x0"), ("DAdaptAdaGrad", "x0"), ("DoG", "init_buffer"),
                                      ("LDoG", "init_buffer"), ("ScheduleFreeSGD", "iterate"),
                                      ("ScheduleFreeAdamW", "iterate"), ("ScheduleFreeRAdam", "iterate")])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_learning_rate_free_rules_refuse_low_precision_state_with_the_reason(name, why, state_dtype):
    with pytest.raises(ValueError, match=f"cannot keep {state_dtype} state: .*{why}"):
        getattr(etakit, name)([np.zeros(8192, np.float32)], state_dtype=state_dtype)

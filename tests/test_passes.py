"""The training loop's other passes fused with the step: global-norm clipping,
the non-finite policy, the EMA of the parameters and gradient accumulation
(etk_step_opts; etakit._passes)."""
import math

import numpy as np
import pytest

import etakit
from etakit import reference
from etakit._passes import ema_decay_at
from conftest import make_grads, make_params, ready
from rule_cases import RICHEST


def _twins(kind, hp, dtype, seed, **loop):
    rng = np.random.default_rng(seed)
    a = make_params(rng, dtype, kind=kind)
    b = [p.copy() for p in a]
    fused = ready(getattr(etakit, kind)(a, **hp, **loop))
    plain = ready(getattr(etakit, kind)(b, **hp))
    return rng, a, b, fused, plain


def _state_bytes(opt):
    sd = opt.state_dict()
    return [(i, k, np.asarray(v).tobytes()) for i, e in sorted(sd["state"].items()) for k, v in sorted(e.items())]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,hp", RICHEST)
def test_clipping_and_ema_equal_the_reference_passes_around_a_plain_step(kind, hp, dtype):
    # the fused step is the plain step on the gradients the reference clips, then the reference lerp
    max_norm, decay = 3.0, 0.9
    rng, a, b, fused, plain = _twins(kind, hp, dtype, 1, global_clipnorm=max_norm, ema_decay=decay, ema_warmup=True)
    ema = [p.copy() for p in b]
    for step in range(1, 8):
        g = make_grads(rng, a)
        if step % 3 == 0:
            g = [x * dtype(0.01) for x in g]        # below max_norm: not clipped
        norm, bad = reference.global_grad_norm(g)
        fused.step(g)
        plain.step(reference.scale_grads(g, reference.grad_multiplier(norm, max_norm)))
        w = 1.0 - ema_decay_at(step, decay, warmup=True)
        ema = [reference.ema_lerp(e, p, w) for e, p in zip(ema, b)]
        assert bad is None and fused.last_grad_norm == norm
        for x, y in zip(a, b):
            assert x.tobytes() == y.tobytes()
        for x, y in zip(fused.ema, ema):
            assert x.tobytes() == y.tobytes()
    assert _state_bytes(fused) == _state_bytes(plain)


@pytest.mark.parametrize("kind,hp", [r for r in RICHEST if r[0] in ("Adam", "LAMB", "Adafactor", "Muon", "Lion")])
def test_max_norm_and_loss_scale_equal_the_reference(kind, hp):
    rng, a, b, fused, plain = _twins(kind, hp, np.float32, 2, global_clipnorm=0.5, norm_type=math.inf)
    for _ in range(4):
        g = make_grads(rng, a)
        scaled = [x * np.float32(1024.0) for x in g]
        norm, _ = reference.global_grad_norm(scaled, norm_inf=True, grad_scale=1024.0)
        fused.step(scaled, grad_scale=1024.0)
        plain.step(reference.scale_grads(scaled, reference.grad_multiplier(norm, 0.5, 1024.0)))
        assert fused.last_grad_norm == norm
        for x, y in zip(a, b):
            assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("kind,hp", [r for r in RICHEST if r[0] in ("AdamW", "LAMB", "Adafactor", "Prodigy")])
def test_fused_passes_are_bit_identical_across_thread_counts(kind, hp, threads):
    out = []
    for n in (1, 2, 3):
        etakit.set_num_threads(n)
        rng = np.random.default_rng(3)
        params = make_params(rng, np.float32, kind=kind)
        opt = ready(getattr(etakit, kind)(params, **hp, global_clipnorm=1.0, ema_decay=0.99))
        norms = []
        for _ in range(5):
            opt.step(make_grads(rng, params))
            norms.append(opt.last_grad_norm)
        out.append((b"".join(p.tobytes() for p in params + opt.ema), norms))
    assert out[0] == out[1] == out[2]


def _snapshot(opt, params):
    return ([p.tobytes() for p in params], _state_bytes(opt), opt.step_count,
            None if opt.ema is None else [e.tobytes() for e in opt.ema])


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("kind", ["AdamW", "SGD", "LAMB", "Prodigy", "Muon"])
def test_skip_leaves_everything_bit_identical(kind, first, bad_value):
    hp = dict(RICHEST)[kind]
    rng = np.random.default_rng(4)
    params = make_params(rng, np.float32, kind=kind)
    opt = ready(getattr(etakit, kind)(params, **hp, nonfinite="skip", ema_decay=0.9))
    if not first:
        opt.step(make_grads(rng, params))
    for t in range(len(params)):
        if params[t].size == 0:
            continue
        g = make_grads(rng, params)
        g[t].reshape(-1)[g[t].size // 2] = bad_value
        before = _snapshot(opt, params)
        skipped = opt.skipped_steps
        opt.step(g)
        assert _snapshot(opt, params) == before
        assert opt.skipped_steps == skipped + 1
    opt.step(make_grads(rng, params))         # a finite step still steps
    assert opt.step_count == (1 if first else 2)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_raise_names_the_tensor_and_writes_nothing(clip):
    rng = np.random.default_rng(5)
    params = make_params(rng, np.float64, kind="Adam")
    opt = etakit.Adam(params, lr=0.1, global_clipnorm=clip, nonfinite="raise", ema_decay=0.5)
    opt.step(make_grads(rng, params))
    g = make_grads(rng, params)
    g[3][1, 2, 3] = np.nan
    before = _snapshot(opt, params)
    with pytest.raises(etakit.NonFiniteGradientError, match=r"params\[3\]") as e:
        opt.step(g)
    assert e.value.index == 3 and isinstance(e.value, ValueError)
    assert _snapshot(opt, params) == before


def test_default_policy_raises_with_clipping_and_ignores_without():
    g = [np.array([1.0, np.inf])]
    with pytest.raises(etakit.NonFiniteGradientError):
        etakit.SGD([np.zeros(2)], lr=0.1, global_clipnorm=1.0).step(g)
    w = np.zeros(2)
    opt = etakit.SGD([w], lr=0.1)
    opt.step(g)                                # as torch.optim: the inf reaches its element
    assert opt.last_grad_norm is None and np.isneginf(w[1]) and w[0] == -0.1
    opt = etakit.SGD([np.zeros(2)], lr=0.1, global_clipnorm=1.0, nonfinite="ignore")
    opt.step(g)
    assert math.isinf(opt.last_grad_norm)


def test_clipping_matches_torch_clip_grad_norm_then_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    shapes = [(5, 7), (7,), (3, 4, 5)]
    ours = [rng.standard_normal(s) for s in shapes]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in ours]
    opt = etakit.AdamW(ours, lr=1e-2, weight_decay=0.1, global_clipnorm=1.5)
    topt = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1)
    for _ in range(20):
        g = [rng.standard_normal(s) * 2 for s in shapes]
        for t, x in zip(theirs, g):
            t.grad = torch.tensor(x)
        tn = torch.nn.utils.clip_grad_norm_(theirs, 1.5)
        topt.step()
        opt.step(g)
        assert opt.last_grad_norm == pytest.approx(float(tn), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def _timm_v3(decay, warmup, gamma, power, min_decay, after):
    """A numpy transcription of timm ModelEmaV3.get_decay(step) and its lerp update."""
    def get_decay(step):
        step = max(0, step - after - 1)
        if step <= 0:
            return 0.0
        if warmup:
            d = 1 - (1 + step / gamma) ** -power
            return max(min(d, decay), min_decay)
        return decay

    def update(ema, p, step):
        w = 1.0 - get_decay(step)
        return ema + w * (p - ema)
    return update


@pytest.mark.parametrize("opts", [dict(ema_decay=0.99), dict(ema_decay=0.999, ema_warmup=True),
                                  dict(ema_decay=0.95, ema_warmup=True, ema_warmup_gamma=2.0, ema_warmup_power=0.75,
                                       ema_min_decay=0.3, ema_update_after_step=3)])
def test_ema_follows_timm_model_ema_v3(opts):
    update = _timm_v3(opts["ema_decay"], opts.get("ema_warmup", False), opts.get("ema_warmup_gamma", 1.0),
                      opts.get("ema_warmup_power", 2 / 3), opts.get("ema_min_decay", 0.0),
                      opts.get("ema_update_after_step", 0))
    rng = np.random.default_rng(7)
    w = rng.standard_normal(50)
    ema = w.copy()
    opt = etakit.SGD([w], lr=0.1, momentum=0.9, **opts)
    for step in range(1, 40):
        opt.step([rng.standard_normal(50)])
        ema = update(ema, w, step)
        np.testing.assert_allclose(opt.ema[0], ema, rtol=1e-12, atol=1e-15)


def test_swap_and_context_manager_and_refusals():
    w = np.arange(3.0)
    opt = etakit.Adam([w], lr=0.1, ema_decay=0.9)
    with pytest.raises(RuntimeError, match="no EMA"):
        opt.swap_ema()
    for _ in range(3):
        opt.step([np.ones(3)])
    own, avg = w.copy(), opt.ema[0].copy()
    with pytest.raises(ZeroDivisionError):
        with opt.ema_weights():
            assert w.tobytes() == avg.tobytes()
            with pytest.raises(RuntimeError, match="swap"):
                opt.step([np.ones(3)])
            raise ZeroDivisionError     # an error inside the block: the parameters are restored
    assert w.tobytes() == own.tobytes() and opt.ema[0].tobytes() == avg.tobytes()
    opt.swap_ema()
    sd = opt.state_dict()                       # saved as (params, EMA), whatever the swap
    opt.swap_ema()
    np.testing.assert_array_equal(sd["loop"]["ema"][0], avg)


def test_state_dict_carries_ema_and_skips_and_resumes_bit_identically(tmp_path):
    rng = np.random.default_rng(8)
    params = make_params(rng, np.float32, kind="AdamW")
    opt = etakit.AdamW(params, lr=1e-2, global_clipnorm=1.0, nonfinite="skip", ema_decay=0.9, ema_warmup=True)
    for _ in range(3):
        opt.step(make_grads(rng, params))
    g = make_grads(rng, params)
    g[2][0] = np.nan
    opt.step(g)
    etakit.save(tmp_path / "c.npz", {"opt": opt})
    copy = [p.copy() for p in params]
    opt2 = etakit.AdamW(copy, lr=1e-2, global_clipnorm=1.0, nonfinite="skip", ema_decay=0.9, ema_warmup=True)
    opt2.load_state_dict(etakit.load(tmp_path / "c.npz")["opt"])
    assert opt2.skipped_steps == 1 and opt2.step_count == 3
    for _ in range(3):
        g = make_grads(rng, params)
        opt.step(g)
        opt2.step([x.copy() for x in g])
    for a, b in zip(params + opt.ema, copy + opt2.ema):
        assert a.tobytes() == b.tobytes()
    bad = opt.state_dict()
    bad["loop"]["ema"][1] = np.zeros(3, np.float32)
    before = _snapshot(opt2, copy)
    with pytest.raises(etakit.StateError, match=r"loop\['ema'\]\[1\]"):
        opt2.load_state_dict(bad)
    assert _snapshot(opt2, copy) == before


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(global_clipnorm=-1.0), ValueError, "global_clipnorm"),
    (dict(global_clipnorm=float("nan")), ValueError, "global_clipnorm"),
    (dict(global_clipnorm="1"), TypeError, "global_clipnorm"),
    (dict(norm_type=3), ValueError, "norm_type"),
    (dict(nonfinite="warn"), ValueError, "nonfinite"),
    (dict(ema_decay=1.5), ValueError, "ema_decay"),
    (dict(ema_warmup=1), TypeError, "ema_warmup"),
    (dict(ema_update_after_step=-1), ValueError, "ema_update_after_step"),
])
def test_bad_loop_options_are_refused(kwargs, err, match):
    with pytest.raises(err, match=match):
        etakit.Adam([np.zeros(2)], **kwargs)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_grad_scale_is_refused_before_anything_is_written(scale):
    w = np.zeros(2)
    opt = etakit.Adam([w])
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step([np.ones(2)], grad_scale=scale)
    assert opt.step_count == 0 and not w.any()


def test_accumulate_steps_on_the_weighted_mean():
    rng = np.random.default_rng(9)
    params = make_params(rng, np.float32, kind="AdamW")
    twin = [p.copy() for p in params]
    opt = etakit.AdamW(params, lr=1e-2, global_clipnorm=1.0)
    ref = etakit.AdamW(twin, lr=1e-2, global_clipnorm=1.0)
    for _ in range(3):
        micro = [make_grads(rng, params) for _ in range(4)]
        weights = [1.0, 2.0, 4.0, 1.0]              # their total, 8, divides exactly
        for g, wt in zip(micro, weights):
            opt.accumulate(g, weight=wt)
        total = [sum(np.float32(wt) * g[i] for g, wt in zip(micro, weights)) for i in range(len(params))]
        opt.step()
        ref.step(total, grad_scale=8.0)
        for a, b in zip(params, twin):
            assert a.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="accumulate"):
        opt.step()
    with pytest.raises(ValueError, match="expected"):
        opt.accumulate([np.zeros(1, np.float32)])


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_fused_passes_with_low_precision_state(state_dtype):
    rng = np.random.default_rng(10)
    a = [rng.standard_normal(s).astype(np.float32) for s in [(5000,), (37,), (3, 4096)]]
    b = [p.copy() for p in a]
    kw = dict(lr=1e-2, state_dtype=state_dtype, min_8bit_size=1)
    fused = etakit.AdamW(a, **kw, global_clipnorm=2.0, ema_decay=0.9)
    plain = etakit.AdamW(b, **kw)
    ema = [p.copy() for p in b]
    for step in range(1, 5):
        g = make_grads(rng, a)
        fused.step(g)
        plain.step(reference.scale_grads(g, reference.grad_multiplier(reference.global_grad_norm(g)[0], 2.0)))
        ema = [reference.ema_lerp(e, p, 1.0 - ema_decay_at(step, 0.9)) for e, p in zip(ema, b)]
        for x, y in zip(a + fused.ema, b + ema):
            assert x.tobytes() == y.tobytes()


# ---- regressions found by trying the passes as a new user would ----------------------------
@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_a_refused_accumulation_is_spent_and_training_goes_on(policy):
    w = np.zeros(3)
    opt = etakit.SGD([w], lr=1.0, global_clipnorm=10.0, nonfinite=policy)
    opt.accumulate([np.array([1.0, np.nan, 1.0])])
    if policy == "raise":
        with pytest.raises(etakit.NonFiniteGradientError):
            opt.step()
    else:
        opt.step()
    opt.accumulate([np.ones(3)])
    opt.step()
    assert opt.step_count == 1 and (w == -1.0).all()


def test_a_step_on_given_gradients_ends_an_accumulation():
    w = np.zeros(1)
    opt = etakit.SGD([w], lr=1.0)
    opt.accumulate([np.array([100.0])])
    opt.step([np.array([1.0])])
    opt.accumulate([np.array([2.0])])
    opt.step()
    assert w[0] == -3.0


@pytest.mark.parametrize("kind", ["ScheduleFreeSGD", "ScheduleFreeAdamW", "ScheduleFreeRAdam"])
def test_schedule_free_skip_leaves_the_group_scalars(kind):
    ws = [np.linspace(-1, 1, 5) for _ in range(2)]
    opts = [getattr(etakit, kind)([w], nonfinite="skip") for w in ws]
    for o in opts:
        o.train()
    bad = np.ones(5)
    bad[2] = np.nan
    for k in range(3):
        for o in opts:
            o.step([np.full(5, 0.3 + k)])
    opts[0].step([bad])
    assert opts[0].skipped_steps == 1
    for k in range(3):
        for o in opts:
            o.step([np.full(5, 0.5 - k)])
    assert ws[0].tobytes() == ws[1].tobytes()
    assert opts[0].param_groups[0]["k"] == opts[1].param_groups[0]["k"]


def test_schedule_free_modes_are_refused_while_the_ema_is_swapped_in():
    w = np.linspace(-1, 1, 4)
    o = etakit.ScheduleFreeSGD([w], lr=0.1, ema_decay=0.5)
    o.train()
    o.step([np.ones(4)])
    with o.ema_weights():
        with pytest.raises(RuntimeError, match="swap"):
            o.eval()
    assert o.param_groups[0]["train_mode"]


def test_add_param_group_extends_the_ema_and_the_accumulation():
    o = etakit.SGD([np.zeros(3)], lr=1.0, ema_decay=0.5)
    o.step([np.ones(3)])
    new = np.full(1, 7.0)
    o.add_param_group({"params": [new]})
    o.step([np.ones(3), np.ones(1)])
    assert o.ema[1][0] == 6.5                 # started as a copy (7), then halfway to 6
    a = etakit.SGD([np.zeros(3)], lr=1.0)
    a.accumulate([np.ones(3)])
    a.step()
    p = np.zeros(2)
    a.add_param_group({"params": [p]})
    a.accumulate([np.ones(3), np.ones(2)])
    a.step()
    assert (p == -1.0).all()


def test_max_norm_clipping_of_an_inf_gradient_under_ignore_matches_torch_semantics():
    g = [np.array([1.0, 2.0, np.inf, 3.0]), np.array([0.5, 0.5])]
    ref = [x.copy() for x in g]
    norm = etakit.clip_grad_norm_(ref, 1.0, norm_type=float("inf"))
    a, b = np.ones(4), np.ones(2)
    o = etakit.SGD([a, b], lr=0.1, global_clipnorm=1.0, norm_type=float("inf"), nonfinite="ignore")
    o.step(g)
    assert math.isinf(norm) and math.isinf(o.last_grad_norm)
    np.testing.assert_array_equal(a, 1.0 - 0.1 * ref[0])
    np.testing.assert_array_equal(b, [1.0, 1.0])
    n2, _ = reference.global_grad_norm([np.array([1.0, np.inf]), np.array([np.nan])], norm_inf=True)
    assert math.isnan(n2)                   # a NaN anywhere: NaN, as torch's max


def test_lookahead_does_not_count_a_skipped_step():
    def run(bad):
        w = np.zeros(2)
        la = etakit.Lookahead(etakit.SGD([w], lr=1.0, nonfinite="skip"), k=2, alpha=0.5)
        la.step([np.ones(2)])
        if bad:
            la.step([np.array([np.nan, 1.0])])
        la.step([np.ones(2)])
        return w
    assert run(False).tobytes() == run(True).tobytes()


def test_ema_options_are_live_properties():
    w = np.zeros(1)
    o = etakit.SGD([w], lr=1.0, ema_decay=0.999)
    o.ema_warmup = True
    o.ema_update_after_step = 1
    for _ in range(3):
        o.step([np.ones(1)])
    # updates 1 and 2 copy (update_after_step 1), update 3 warms up: decay 1 - 2 ** (-2/3)
    w3 = 2.0 ** (-2.0 / 3.0)
    assert o.ema[0][0] == pytest.approx(-2.0 + w3 * (-3.0 + 2.0), rel=1e-12)
    with pytest.raises(ValueError, match="ema_min_decay"):
        o.ema_min_decay = 2.0
    o.ema_warmup = np.True_


def test_unscaling_that_overflows_float32_is_a_non_finite_gradient():
    w = np.zeros(2, np.float32)
    o = etakit.Adam([w], lr=1e-3, nonfinite="skip")
    o.step([np.array([3e38, 1.0], np.float32)], grad_scale=0.25)
    assert o.skipped_steps == 1 and not w.any()
    with pytest.raises(etakit.NonFiniteGradientError, match="grad_scale"):
        etakit.Adam([w], nonfinite="raise").step([np.array([3e38, 1.0], np.float32)], grad_scale=0.25)
    o.step([np.array([1e30, 1.0], np.float32)], grad_scale=0.25)     # finite when unscaled: steps
    assert o.step_count == 1 and o.skipped_steps == 1


def test_messages_say_what_was_not_finite():
    o = etakit.SGD([np.zeros(3)], lr=1.0, global_clipnorm=1.0)
    with pytest.raises(etakit.NonFiniteGradientError, match="overflowed") as e:
        o.step([np.array([1e200, 1e200, 3.0])])     # finite elements, their sum of squares overflows
    assert e.value.index is None
    with pytest.raises(TypeError, match="max_norm"):
        etakit.clip_grad_norm_([np.ones(2)], "a")
    o.step([np.ones(3)])
    assert o.last_grad_norm == pytest.approx(math.sqrt(3))
    with pytest.raises(etakit.NonFiniteGradientError):
        o.step([np.array([np.nan, 1.0, 1.0])])
    assert math.isnan(o.last_grad_norm)


def test_a_first_step_refused_leaves_no_state():
    w = np.zeros(3)
    o = etakit.Adam([w], lr=0.1, global_clipnorm=1.0, ema_decay=0.9)
    with pytest.raises(etakit.NonFiniteGradientError):
        o.step([np.array([1.0, np.inf, 0.0])])
    assert o.state_dict()["state"] == {} and o.ema is None and "loop" not in o.state_dict()
    o.step([np.ones(3)])
    assert o.step_count == 1 and o.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("weight,err", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                        (float("nan"), ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_accumulate_weight_is_refused_before_anything_is_gathered(weight, err):
    w = np.zeros(2)
    opt = etakit.SGD([w], lr=1.0)
    opt.accumulate([np.ones(2)])
    with pytest.raises(err, match="weight"):
        opt.accumulate([np.full(2, 5.0)], weight=weight)
    with pytest.raises(TypeError, match="grads"):
        opt.accumulate(np.ones(2))
    with pytest.raises(ValueError, match="float32"):
        opt.accumulate([np.ones(2, np.float32)])
    opt.step()
    assert (w == -1.0).all()

"""Adafactor: what the generic tests (tests/rule_cases.py) cannot see.

The generic tests step small tensors, whose matrices are each one tile of
the kernel.  Here: matrices cut into many tiles in both directions and
batches of small matrices (bit-identical to etakit.reference, across
threads and SIMD variants, and close to torch.optim.Adafactor), the state
layout of every kind of parameter (scalars, vectors, batched and empty
matrices), eps[0] None, update clipping, learning-rate schedules, and the
messages for bad values."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import etakit
from etakit import reference
from etakit import schedules as S

try:
    import torch
except ImportError:     # the comparisons with torch.optim.Adafactor are skipped
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# (300, 600): 2 x 3 tiles; (3, 9000): one row of 36 tiles; (9000, 3): a column of
# 3 tiles; (2000, 3, 3): 2000 one-tile matrices, many to a unit; (2, 300, 270):
# a batch of 2 x 2 tiles; (257, 257): edge tiles of one row and one column;
# (1, 5), (5, 1), (7,), (): the degenerate shapes.
SHAPES = [(300, 600), (3, 9000), (9000, 3), (2000, 3, 3), (2, 300, 270), (257, 257), (1, 5), (5, 1), (7,), ()]
HP = [dict(), dict(lr=0.05, beta2_decay=-0.5, eps=(1e-6, 1e-2), d=1.25, weight_decay=0.1, maximize=True)]


def _params(rng, dtype, shapes=SHAPES):
    return [np.asarray(rng.standard_normal(s)).astype(dtype) for s in shapes]


def _grads(rng, params):
    return [np.asarray(rng.standard_normal(p.shape) + 0.3 * p).astype(p.dtype) for p in params]


def _run(hp, dtype, steps, seed=0, shapes=SHAPES):
    """etakit.Adafactor and etakit.reference on the same seeded gradients, two groups."""
    rng = np.random.default_rng(seed)
    mine = _params(rng, dtype, shapes)
    theirs = [p.copy() for p in mine]
    half = len(mine) // 2
    hp2 = {**hp, "lr": hp.get("lr", 1e-2) * 0.5}
    opt = etakit.Adafactor([{"params": mine[:half]}, {"params": mine[half:], **hp2}], **hp)
    states = [{} for _ in theirs]
    defaults = opt.defaults
    for k in range(1, steps + 1):
        grads = _grads(rng, theirs)
        opt.step(grads)
        for i, (p, g) in enumerate(zip(theirs, grads)):
            reference.adafactor_step(p, g, states[i], step=k, **{**defaults, **(hp if i < half else hp2)})
    return opt, mine, theirs, states


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hp", HP)
def test_tiled_and_batched_matrices_match_the_reference_bit_for_bit(hp, dtype):
    opt, mine, theirs, states = _run(hp, dtype, steps=6)
    sd = opt.state_dict()["state"]
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_array_equal(a, b, err_msg=f"param {i} of shape {SHAPES[i]}")
        assert set(sd[i]) == set(states[i]) | {"step"}
        for name, arr in states[i].items():
            np.testing.assert_array_equal(sd[i][name], arr, err_msg=f"{name} of param {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_matrices_are_bit_identical_across_threads_and_simd_variants(dtype, threads, simd):
    def run():
        rng = np.random.default_rng(1)
        ps = _params(rng, dtype)
        opt = etakit.Adafactor(ps, **HP[1])
        for _ in range(3):
            opt.step(_grads(rng, ps))
        return ps
    etakit.set_num_threads(1)
    simd("baseline")
    base = run()
    for variant in etakit._core.simd_available():
        simd(variant)
        for n in (1, 2, 3, 5):
            etakit.set_num_threads(n)
            for i, (a, b) in enumerate(zip(base, run())):
                assert a.tobytes() == b.tobytes(), f"{variant}, {n} threads: param {i} of shape {SHAPES[i]} differs"


# ------------------------------------------------------------- against PyTorch

TORCH_SHAPES = [(30, 260), (3, 2, 4, 5), (16, 3, 3, 3), (600, 3), (4, 1), (1, 4), (9,), ()]


def _against_torch(hp, dtype, steps=100, grads_fn=None, shapes=TORCH_SHAPES, seed=0):
    rng = np.random.default_rng(seed)
    mine = _params(rng, dtype, shapes)
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in mine]
    opt = etakit.Adafactor(mine, **hp)
    ref = torch.optim.Adafactor(theirs, **hp)
    for k in range(steps):
        if grads_fn is None:
            grads = [np.asarray(rng.standard_normal(s) + 0.5 * t.detach().numpy()).astype(dtype)
                     for s, t in zip(shapes, theirs)]
        else:
            grads = grads_fn(k, rng, [t.detach().numpy() for t in theirs])
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        ref.step()
        opt.step(grads)
    return opt, ref, mine, theirs


def _assert_close(opt, ref, mine, theirs, dtype):
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    for i, (a, t) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, t.detach().numpy(), **tol, err_msg=f"param {i} of shape {tuple(t.shape)}")
    ours = opt.state_dict()["state"]
    for i, t in enumerate(theirs):
        names = {k for k in ref.state[t] if k != "step"}
        assert names == set(ours[i]) - {"step"}
        for name in names:
            np.testing.assert_allclose(ours[i][name], ref.state[t][name].double().numpy(), **tol,
                                       err_msg=f"{name} of param {i}")


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", [dict(), dict(lr=0.05, weight_decay=0.1), dict(eps=(None, 0.1), d=2.0),
                                dict(lr=0.03, beta2_decay=-0.6, eps=(1e-5, 1e-2), d=1.25, weight_decay=0.05,
                                     maximize=True)])
def test_batched_tiled_and_conv_shapes_follow_pytorch(hp, dtype):
    _assert_close(*_against_torch(hp, dtype), dtype)


def _spiky(k, rng, params):
    """Small gradients, then a spike: the update's RMS jumps far above 1."""
    scale = 100.0 if k in (30, 31, 60) else 0.01
    return [np.asarray(scale * rng.standard_normal(p.shape) + 0.01 * p).astype(p.dtype) for p in params]


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_update_clipping_follows_pytorch_when_active(dtype):
    clipped = _against_torch(dict(d=1.0), dtype, steps=70, grads_fn=_spiky)
    _assert_close(*clipped, dtype)
    loose = _against_torch(dict(d=1e6), dtype, steps=70, grads_fn=_spiky)
    _assert_close(*loose, dtype)
    # the clipping acted: the same run without it ends elsewhere
    assert any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(clipped[2], loose[2]) if a.size)


def _with_zero_rows(k, rng, params):
    """Gradients with all-zero rows and columns: eps[0] decides their update."""
    out = []
    for p in params:
        g = np.asarray(rng.standard_normal(p.shape) + 0.5 * p)
        if g.ndim >= 2:
            g[..., ::3, :] = 0.0
            g[..., :, 1::4] = 0.0
        elif g.ndim == 1:
            g[::2] = 0.0
        out.append(g.astype(p.dtype))
    return out


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("eps1", [None, 1e-3, 0.0])
def test_eps1_follows_pytorch_where_it_matters(eps1, dtype):
    _assert_close(*_against_torch(dict(eps=(eps1, 1e-3)), dtype, steps=40, grads_fn=_with_zero_rows), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps1_none_is_the_machine_epsilon_of_the_dtype(dtype):
    results = []
    for eps1 in (None, float(np.finfo(dtype).eps)):
        rng = np.random.default_rng(3)
        ps = _params(rng, dtype, TORCH_SHAPES)
        opt = etakit.Adafactor(ps, eps=(eps1, 1e-3))
        for k in range(20):
            opt.step(_with_zero_rows(k, rng, ps))
        results.append(ps)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()
    assert etakit.Adafactor([np.zeros(2)]).param_groups[0]["eps"] == (None, 1e-3)


@needs_torch
def test_lr_follows_a_schedule_as_pytorch_with_the_same_lr_each_step():
    sched = S.warmup(S.cosine(0.05, 60), 10)
    shapes = TORCH_SHAPES
    rng = np.random.default_rng(5)
    mine = _params(rng, np.float64, shapes)
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in mine]
    opt = etakit.Adafactor(mine, lr=sched, weight_decay=0.1)
    ref = torch.optim.Adafactor(theirs, lr=sched(0), weight_decay=0.1)
    for k in range(60):
        ref.param_groups[0]["lr"] = sched(k)
        grads = [np.asarray(rng.standard_normal(s) + 0.5 * t.detach().numpy()) for s, t in zip(shapes, theirs)]
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        ref.step()
        opt.step(grads)
    for a, t in zip(mine, theirs):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-9, atol=1e-12)


@needs_torch
def test_drop_in_with_a_torch_lr_scheduler_and_conv_layers():
    import etakit.torch as et

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()

    a, b = model(), model()
    ta, tb = torch.optim.Adafactor(a.parameters(), lr=0.02), et.Adafactor(b.parameters(), lr=0.02)
    sa = torch.optim.lr_scheduler.StepLR(ta, 5, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(tb, 5, gamma=0.5)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x, y = torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g,
                                                                                       dtype=torch.float64)
        for m, opt, sch in ((a, ta, sa), (b, tb, sb)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
            sch.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-10)
    conv = b[0].weight
    assert set(tb.state[conv]) == {"step", "row_var", "col_var"}
    assert tuple(tb.state[conv]["row_var"].shape) == (4, 2, 3, 1) and tuple(tb.state[conv]["col_var"].shape) == (
        4, 2, 1, 3)
    assert set(tb.state[b[0].bias]) == {"step", "variance"}


@needs_torch
def test_checkpoint_from_pytorch_continues_identically():
    import copy

    import etakit.torch as et
    shapes = [(5, 7), (2, 3, 4), (6,), ()]     # (PyTorch divides by zero on an empty parameter)
    rng = np.random.default_rng(2)
    init = _params(rng, np.float64, shapes)
    src = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    opt = torch.optim.Adafactor(src, lr=0.05, weight_decay=0.1)

    def step(ps, o, seed):
        r = np.random.default_rng(seed)
        for p in ps:
            p.grad = torch.from_numpy(np.asarray(r.standard_normal(tuple(p.shape))))
        o.step()
    for k in range(5):
        step(src, opt, k)
    ckpt = copy.deepcopy(opt.state_dict())
    dst = [torch.tensor(p.detach().numpy().copy(), requires_grad=True) for p in src]
    mine = et.Adafactor(dst, lr=0.05, weight_decay=0.1)
    mine.load_state_dict(ckpt)
    for k in range(5, 10):
        step(src, opt, k)
        step(dst, mine, k)
    for i, (p, q) in enumerate(zip(src, dst)):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-10)
        for name, v in opt.state[p].items():
            torch.testing.assert_close(mine.state[q][name].to(v.dtype), v, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------- state and errors

def test_state_layout_of_every_kind_of_parameter():
    shapes = [(), (5,), (4, 3), (2, 3, 4), (2, 2, 3, 3), (0,), (0, 4), (4, 0), (2, 0, 3)]
    ps = [np.ones(s) for s in shapes]
    before = [p.copy() for p in ps]
    opt = etakit.Adafactor(ps)
    opt.step([np.full(s, 0.5) for s in shapes])
    sd = opt.state_dict()["state"]
    for i, s in enumerate(shapes):
        names = set(sd[i]) - {"step"}
        if len(s) >= 2:
            assert names == {"row_var", "col_var"}, s
            assert sd[i]["row_var"].shape == s[:-1] + (1,) and sd[i]["col_var"].shape == s[:-2] + (1, s[-1])
        else:
            assert names == {"variance"} and sd[i]["variance"].shape == s
    for p, b in zip(ps, before):
        if p.size:
            assert (p < b).all()
    # a constant gradient: every row and column mean is 0.25
    np.testing.assert_array_equal(sd[2]["row_var"], np.full((4, 1), 0.25))
    np.testing.assert_array_equal(sd[3]["col_var"], np.full((2, 1, 4), 0.25))
    opt2 = etakit.Adafactor([np.ones(s) for s in shapes])
    opt2.load_state_dict(opt.state_dict())
    with pytest.raises(etakit.StateError, match=r"row_var.*expected \(4, 1\)"):
        bad = opt.state_dict()
        bad["state"][2]["row_var"] = np.zeros((1, 4))
        opt2.load_state_dict(bad)


@pytest.mark.parametrize("value,exc,match", [
    ((float("nan"), 1e-3), ValueError, r"Invalid eps\[0\].*None or a finite number >= 0"),
    ((-1e-3, 1e-3), ValueError, r"Invalid eps\[0\].*None or a finite number >= 0"),
    ((None, None), TypeError, r"eps\[1\] must be a real number"),
    (("tiny", 1e-3), TypeError, r"eps\[0\] must be a real number"),
    (1e-3, TypeError, r"eps must be a pair \(eps1, eps2\)"),
])
def test_bad_eps_is_refused_with_its_name(value, exc, match):
    with pytest.raises(exc, match=match):
        etakit.Adafactor([np.zeros(3)], eps=value)


def test_ranges_are_pytorch_s():
    with pytest.raises(ValueError, match=r"Invalid beta2_decay.*a finite number <= 0"):
        etakit.Adafactor([np.zeros(3)], beta2_decay=0.5)
    with pytest.raises(ValueError, match=r"Invalid d.*>= 1"):
        etakit.Adafactor([np.zeros(3)], d=0.5)
    etakit.Adafactor([np.zeros(3)], beta2_decay=0.0, d=1.0, eps=(0.0, 0.0), lr=0.0)
    with pytest.raises(TypeError, match="eps.*cannot follow a schedule"):
        etakit.Adafactor([np.zeros(3)], eps=(S.constant(1e-3), 1e-3))
    with pytest.raises(TypeError, match="positional"):    # maximize is keyword-only, as in PyTorch
        etakit.Adafactor([np.zeros(3)], 1e-2, -0.8, (None, 1e-3), 1.0, 0.0, True)


def test_blocked_lane_sum_is_the_kernels_order():
    rng = np.random.default_rng(0)
    for n in (0, 1, 15, 17, 4095, 4096, 4097, 3 * 4096 + 33):
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
        total = 0.0
        for b in range(0, n, 4096):
            lanes = [0.0] * 16
            for i, v in enumerate(x[b:b + 4096].tolist()):
                lanes[i % 16] += v
            s = 0.0
            for v in lanes:
                s += v
            total += s
        assert reference.blocked_lane_sum(x) == total
        assert math.isclose(reference.blocked_lane_sum(x), float(np.sum(x)), rel_tol=1e-12, abs_tol=1e-300) or n == 0


matrices = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(matrices, min_size=1, max_size=3), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([None, 0.0, 1e-4]), st.booleans(), st.integers(0, 2**32 - 1))
def test_any_shape_matches_the_reference(shapes, dtype, eps1, maximize, seed):
    rng = np.random.default_rng(seed)
    ps = _params(rng, dtype, shapes)
    qs = [p.copy() for p in ps]
    hp = dict(lr=0.05, eps=(eps1, 1e-3), maximize=maximize, weight_decay=0.01)
    opt = etakit.Adafactor(ps, **hp)
    states = [{} for _ in qs]
    with np.errstate(all="ignore"):
        for k in range(1, 4):
            grads = _grads(rng, qs)
            opt.step(grads)
            for p, g, s in zip(qs, grads, states):
                reference.adafactor_step(p, g, s, step=k, **{**opt.defaults, **hp})
    for a, b in zip(ps, qs):
        np.testing.assert_array_equal(a, b)

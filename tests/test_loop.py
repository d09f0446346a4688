"""The training loop's other passes (etakit.loop, and their etakit.torch versions): clip_grad_norm_ against
torch.nn.utils.clip_grad_norm_, param_groups_weight_decay against timm's rule, Lookahead against
pytorch_optimizer's, GradientAccumulator."""
import copy
import math
import os

import numpy as np
import pytest

import etakit
from etakit import loop, reference

INF = float("inf")
NORM_TYPES = [2.0, 1.0, INF, 3.0, 0.5, 0.0, -1.0, -INF]


def grad_list(dtype, seed=0, sizes=((0,), (1,), (17,), (3, 7, 11), (2 * loop.BLOCK + 5,), (3,))):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in sizes]


# ---- the deterministic reduction ------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 15, 16, 4095, 4096, 4097, loop._CHUNK_BLOCKS * loop.BLOCK + 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_sum_is_the_engines_order(n, dtype):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    x64 = x.astype(np.float64)
    assert loop._blocked_sum(x, 2.0) == reference.blocked_lane_sum(x64 * x64)
    assert loop._blocked_sum(x, 1.0) == reference.blocked_lane_sum(np.abs(x64))
    assert loop._blocked_sum(x, 3.0) == reference.blocked_lane_sum(np.abs(x64) ** 3.0)


def test_norm_does_not_depend_on_threads(threads):
    g = grad_list(np.float32, sizes=((3 * loop.BLOCK + 1,), (5,)))
    old = etakit.get_num_threads()
    try:
        norms = set()
        for t in (1, 2, 3):
            etakit.set_num_threads(t)
            norms.add(etakit.grad_norm(g))
    finally:
        etakit.set_num_threads(old)
    assert len(norms) == 1


# ---- numpy clip_grad_norm_ against torch ---------------------------------------------
torch = None


def _torch():
    return pytest.importorskip("torch")


def torch_clip(grads, max_norm, norm_type, error_if_nonfinite=False):
    t = _torch()
    ps = []
    for g in grads:
        p = t.nn.Parameter(t.zeros(g.shape, dtype=t.from_numpy(g).dtype))
        p.grad = t.from_numpy(g.copy())
        ps.append(p)
    total = t.nn.utils.clip_grad_norm_(ps, max_norm, norm_type, error_if_nonfinite=error_if_nonfinite)
    return float(total), [p.grad.numpy() for p in ps]


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_matches_torch_float64(norm_type, max_norm):
    sizes = ((1,), (17,), (3, 7, 11), (2 * loop.BLOCK + 5,), (3,))
    if norm_type < 0:    # a zero element makes a negative-order norm 0; keep the clipping in play
        sizes = ((1,), (17,), (3,))
    g = grad_list(np.float64, sizes=sizes)
    want_total, want = torch_clip(g, max_norm, norm_type)
    total = etakit.clip_grad_norm_(g, max_norm, norm_type)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, want_total, rtol=1e-12)
    for a, b in zip(g, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, INF])
def test_clip_matches_torch_float32(norm_type):
    g = grad_list(np.float32, seed=1, sizes=((1,), (17,), (3, 7, 11), (2 * loop.BLOCK + 5,)))
    want_total, want = torch_clip(g, 0.25, norm_type)
    exact = np.linalg.norm(np.concatenate([a.ravel() for a in g]).astype(np.float64), norm_type)
    total = etakit.clip_grad_norm_(g, 0.25, norm_type)
    np.testing.assert_allclose(total, exact, rtol=1e-13)      # formed in float64
    np.testing.assert_allclose(total, want_total, rtol=1e-5)   # torch sums in float32
    for a, b in zip(g, want):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)


def test_clip_empty_and_none():
    assert etakit.clip_grad_norm_([], 1.0) == 0.0
    g = [np.zeros(0), np.zeros((0, 3))]
    assert etakit.clip_grad_norm_(g, 1.0) == 0.0
    assert etakit.clip_grad_norm_(g, 1.0, INF) == 0.0     # torch raises here; an empty max is 0 (norms >= 0)
    with pytest.raises(ValueError, match=r"grads\[0\] is empty"):
        etakit.clip_grad_norm_(g, 1.0, -1.0)
    # a single array, as torch takes a single tensor
    a = np.array([3.0, 4.0])
    assert etakit.clip_grad_norm_(a, 1.0) == 5.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("norm_type", [2.0, INF, 1.0])
@pytest.mark.parametrize("where", [0, 2])
def test_clip_nonfinite_as_torch(bad, norm_type, where):
    g = grad_list(np.float64, sizes=((5,), (2, 3), (7,)))
    g[where][1] = bad
    want_total, want = torch_clip(g, 1.0, norm_type)
    total = etakit.clip_grad_norm_(g, 1.0, norm_type)
    assert (math.isnan(total) and math.isnan(want_total)) or total == want_total
    for a, b in zip(g, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_if_nonfinite_raises_like_torch_and_writes_nothing(bad):
    t = _torch()
    g = grad_list(np.float32, sizes=((5,), (3,)))
    g[1][2] = bad
    before = [a.copy() for a in g]
    with pytest.raises(RuntimeError) as ours:
        etakit.clip_grad_norm_(g, 1.0, error_if_nonfinite=True)
    for a, b in zip(g, before):
        np.testing.assert_array_equal(a, b)
    p = t.nn.Parameter(t.zeros(3)); p.grad = t.from_numpy(g[1].copy())
    with pytest.raises(RuntimeError) as theirs:
        t.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)


def test_clip_bad_input_writes_nothing():
    a = np.ones(3)
    ro = np.ones(3); ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[1\] is read-only"):
        etakit.clip_grad_norm_([a, ro], 0.1)
    np.testing.assert_array_equal(a, 1.0)
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype int64"):
        etakit.clip_grad_norm_([a, np.ones(3, dtype=np.int64)], 0.1)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a numpy array"):
        etakit.clip_grad_norm_([[1.0]], 0.1)
    with pytest.raises(TypeError, match="norm_type"):
        etakit.clip_grad_norm_([a], 0.1, norm_type="two")
    np.testing.assert_array_equal(a, 1.0)


def test_clip_then_step_matches_torch():
    t = _torch()
    rng = np.random.default_rng(5)
    ws = [rng.standard_normal(s) for s in [(4, 3), (3,), (50,)]]
    tw = [t.nn.Parameter(t.from_numpy(w.copy())) for w in ws]
    opt = etakit.AdamW(ws, lr=1e-2)
    topt = t.optim.AdamW(tw, lr=1e-2)
    for _ in range(5):
        gs = [rng.standard_normal(w.shape) * 3 for w in ws]
        for p, g in zip(tw, gs):
            p.grad = t.from_numpy(g.copy())
        tn = t.nn.utils.clip_grad_norm_(tw, 1.0)
        n = etakit.clip_grad_norm_(gs, 1.0)
        opt.step(gs); topt.step()
        np.testing.assert_allclose(n, float(tn), rtol=1e-12)
    for w, p in zip(ws, tw):
        np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-12, atol=1e-14)


# ---- etakit.torch.clip_grad_norm_ --------------------------------------------------------
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_clip_matches_torch(norm_type, dtype):
    t = _torch()
    import etakit.torch as et
    sizes = [(1,), (17,), (3, 7, 11), (2 * loop.BLOCK + 5,)]
    if norm_type < 0:
        sizes = [(1,), (17,), (3,)]
    gen = t.Generator().manual_seed(3)
    grads = [t.randn(s, generator=gen, dtype=getattr(t, dtype)) for s in sizes]

    def params():
        ps = [t.nn.Parameter(t.zeros_like(g)) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        ps.append(t.nn.Parameter(t.zeros(2)))    # no gradient: skipped
        return ps
    a, b = params(), params()
    want = t.nn.utils.clip_grad_norm_(a, 0.5, norm_type)
    got = et.clip_grad_norm_(b, 0.5, norm_type)
    assert isinstance(got, t.Tensor) and got.dtype == want.dtype and got.shape == want.shape
    rtol = 1e-12 if dtype == "float64" else 1e-5    # torch sums float32 norms in float32
    np.testing.assert_allclose(got.item(), want.item(), rtol=rtol)
    for p, q in zip(a[:-1], b[:-1]):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=rtol * 2, atol=0)
    assert b[-1].grad is None


def test_torch_clip_edge_cases_as_torch():
    t = _torch()
    import etakit.torch as et
    # no gradients at all; a single tensor; mixed dtypes promote
    assert et.clip_grad_norm_([t.nn.Parameter(t.ones(2))], 1.0).equal(t.tensor(0.0))
    assert et.clip_grad_norm_([], 1.0).equal(t.tensor(0.0))
    p = t.nn.Parameter(t.zeros(2)); p.grad = t.tensor([3.0, 4.0])
    assert et.clip_grad_norm_(p, 10.0).item() == pytest.approx(5.0)
    q = t.nn.Parameter(t.zeros(1, dtype=t.float64)); q.grad = t.ones(1, dtype=t.float64)
    assert et.clip_grad_norm_([p, q], 10.0).dtype == t.float64
    # torch's errors for empty gradients under inf and negative orders
    for order in (INF, -1.0, -INF):
        e = t.nn.Parameter(t.zeros(0)); e.grad = t.zeros(0)
        with pytest.raises(RuntimeError):
            t.nn.utils.clip_grad_norm_([e], 1.0, order)
        with pytest.raises(RuntimeError, match="empty"):
            et.clip_grad_norm_([e], 1.0, order)
    # non-finite: same scaled gradients, same error
    for bad in (float("nan"), INF):
        g = t.tensor([bad, 1.0, 2.0])
        a = t.nn.Parameter(t.zeros(3)); a.grad = g.clone()
        b = t.nn.Parameter(t.zeros(3)); b.grad = g.clone()
        ta, tb = t.nn.utils.clip_grad_norm_([a], 1.0), et.clip_grad_norm_([b], 1.0)
        assert ta.isnan().item() == tb.isnan().item() and (ta.isnan().item() or ta.item() == tb.item())
        assert t.equal(a.grad.isnan(), b.grad.isnan())
        before = b.grad.clone()
        b.grad = g.clone(); before = g.clone()
        with pytest.raises(RuntimeError, match="non-finite"):
            et.clip_grad_norm_([b], 1.0, error_if_nonfinite=True)
        assert t.equal(b.grad.isnan(), before.isnan()) and t.equal(b.grad[1:], before[1:])


def test_torch_clip_half_precision_gradients():
    t = _torch()
    import etakit.torch as et
    g = t.randn(100, generator=t.Generator().manual_seed(0)).to(t.bfloat16)
    a = t.nn.Parameter(t.zeros(100, dtype=t.bfloat16)); a.grad = g.clone()
    b = t.nn.Parameter(t.zeros(100, dtype=t.bfloat16)); b.grad = g.clone()
    ta, tb = t.nn.utils.clip_grad_norm_([a], 1.0), et.clip_grad_norm_([b], 1.0)
    assert tb.dtype == t.bfloat16
    np.testing.assert_allclose(tb.float().item(), ta.float().item(), rtol=1e-2)


# ---- param_groups_weight_decay ---------------------------------------------------------
def timm_rule(named, weight_decay, no_decay=()):
    """timm's param_groups_weight_decay, transcribed: returns the two name lists."""
    skip = set(no_decay)
    no, dec = [], []
    for name, p in named:
        if not getattr(p, "requires_grad", True):
            continue
        (no if (p.ndim <= 1 or name.endswith(".bias") or name in skip) else dec).append(name)
    return no, dec


def test_weight_decay_groups_numpy():
    named = [("embed.weight", np.zeros((5, 4))), ("ln.weight", np.ones(4)), ("fc.bias", np.zeros((3, 1))),
             ("fc.weight", np.zeros((3, 4))), ("pos", np.zeros((1, 4))), ("cls_token", np.zeros((1, 1, 4))),
             ("scalar", np.zeros(()))]
    groups = etakit.param_groups_weight_decay(named, weight_decay=0.1, no_decay=["pos"])
    ids = {id(p): n for n, p in named}
    no, dec = timm_rule(named, 0.1, ["pos"])
    assert [ids[id(p)] for p in groups[0]["params"]] == no == ["ln.weight", "fc.bias", "pos", "scalar"]
    assert [ids[id(p)] for p in groups[1]["params"]] == dec
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.1
    for p in groups[0]["params"] + groups[1]["params"]:
        assert any(p is q for _, q in named)              # the arrays themselves, not copies
    named[0][1].fill(1.0)
    groups = etakit.param_groups_weight_decay([(n, p) for n, p in named if p.ndim > 0])
    opt = etakit.AdamW(groups, lr=0.1)
    opt.step([np.ones_like(p) for g in groups for p in g["params"]])
    # the decayed embedding moved by lr * wd * w more than the undecayed bias
    assert named[0][1][0, 0] == pytest.approx(1.0 - 0.1 * 1e-5 - 0.1, abs=1e-9)


def test_weight_decay_groups_edge_cases():
    with pytest.raises(ValueError, match="no parameter"):
        etakit.param_groups_weight_decay([])
    only = etakit.param_groups_weight_decay([("b", np.zeros(3))])
    assert len(only) == 1 and only[0]["weight_decay"] == 0.0
    etakit.SGD(only)                                     # usable: no empty group
    with pytest.raises(TypeError, match="no_decay"):
        etakit.param_groups_weight_decay([], no_decay="pos")
    with pytest.raises(TypeError, match=r"named_params\[0\]"):
        etakit.param_groups_weight_decay([np.zeros(3)])


def test_weight_decay_groups_torch():
    t = _torch()
    import etakit.torch as et

    class Net(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = t.nn.Linear(4, 3)
            self.norm = t.nn.LayerNorm(3)
            self.frozen = t.nn.Linear(3, 3)
            self.frozen.requires_grad_(False)
            self.pos = t.nn.Parameter(t.zeros(1, 3))

    net = Net()
    for arg in (net, net.named_parameters()):
        groups = etakit.param_groups_weight_decay(arg, weight_decay=0.05, no_decay=("pos",))
        names = {id(p): n for n, p in net.named_parameters()}
        no, dec = timm_rule(net.named_parameters(), 0.05, ("pos",))
        assert [names[id(p)] for p in groups[0]["params"]] == no
        assert [names[id(p)] for p in groups[1]["params"]] == dec == ["fc.weight"]
    opt = et.AdamW(groups, lr=1e-3)
    topt = t.optim.AdamW(etakit.param_groups_weight_decay(net, 0.05, ("pos",)), lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in topt.param_groups]


# ---- Lookahead ---------------------------------------------------------------------------
def _po():
    _torch()
    return pytest.importorskip("pytorch_optimizer")


@pytest.mark.parametrize("kind,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("AdamW", dict(lr=1e-2)),
                                     ("Lion", dict(lr=1e-3))])
@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8), (1, 0.2), (2, 0.99), (4, 0.0)])
def test_lookahead_matches_pytorch_optimizer(kind, kw, k, alpha):
    t = _torch()
    po = _po()
    import etakit.torch as et
    rng = np.random.default_rng(7)
    shapes = [(4, 3), (3,), (0,), (11,)]
    w0 = [rng.standard_normal(s) for s in shapes]
    ws = [w.copy() for w in w0]
    tw = [t.nn.Parameter(t.from_numpy(w.copy())) for w in w0]
    ew = [t.nn.Parameter(t.from_numpy(w.copy())) for w in w0]
    ours = etakit.Lookahead(getattr(etakit, kind)(ws, **kw), k=k, alpha=alpha)
    ref_cls = getattr(t.optim, kind, None) or getattr(po, kind)
    theirs = po.Lookahead(ref_cls(tw, **kw), k=k, alpha=alpha)
    drop_in = et.Lookahead(getattr(et, kind)(ew, **kw), k=k, alpha=alpha)
    for _ in range(13):
        gs = [rng.standard_normal(s) for s in shapes]
        for p, q, g in zip(tw, ew, gs):
            p.grad = t.from_numpy(g.copy())
            q.grad = t.from_numpy(g.copy())
        theirs.step(); drop_in.step(); ours.step(gs)
        for w, p, q in zip(ws, tw, ew):
            np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-12, atol=1e-15)
            # torch's vectorised lerp may fuse a multiply-add: the two front ends agree to an ulp or so
            np.testing.assert_allclose(q.detach().numpy(), w, rtol=1e-14, atol=1e-16)
    assert ours._counters == drop_in._counters == [g["counter"] for g in theirs.param_groups]


def test_lookahead_numpy_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    shapes = [(3, 2), (5,)]
    w = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(12)]
    la = etakit.Lookahead(etakit.AdamW(w, lr=1e-2), k=3, alpha=0.6)
    for g in grads[:7]:
        la.step(g)
    path = os.path.join(tmp_path, "la.npz")
    etakit.save(path, {"opt": la.state_dict(), "w": w})
    for g in grads[7:]:
        la.step(g)
    ck = etakit.load(path)
    w2 = [a.copy() for a in ck["w"]]
    la2 = etakit.Lookahead(etakit.AdamW(w2, lr=1e-2), k=3, alpha=0.6)
    la2.load_state_dict(ck["opt"])
    for g in grads[7:]:
        la2.step(g)
    for a, b in zip(w, w2):
        np.testing.assert_array_equal(a, b)
    assert la2.state_dict()["lookahead"]["counters"] == la.state_dict()["lookahead"]["counters"] == [0]


def test_lookahead_numpy_bad_arguments_and_bad_checkpoints():
    w = np.zeros(3)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be >= 1"):
            etakit.Lookahead(etakit.SGD([w]), k=k)
    with pytest.raises(TypeError, match="k must be an int"):
        etakit.Lookahead(etakit.SGD([w]), k=2.0)
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            etakit.Lookahead(etakit.SGD([w]), alpha=alpha)
    with pytest.raises(TypeError, match="etakit optimizer"):
        etakit.Lookahead([w])
    la = etakit.Lookahead(etakit.SGD([w], lr=0.1), k=2)
    la.step([np.ones(3)])
    sd = la.state_dict()
    bad = {"optimizer": sd["optimizer"], "lookahead": {**sd["lookahead"], "slow": {0: np.zeros(4)}}}
    with pytest.raises(ValueError, match=r"\['slow'\]\[0\]: expected float64 \(3,\)"):
        la.load_state_dict(bad)
    bad = {"optimizer": sd["optimizer"], "lookahead": {**sd["lookahead"], "counters": [1, 0]}}
    with pytest.raises(ValueError, match="counters"):
        la.load_state_dict(bad)
    with pytest.raises(ValueError):
        la.load_state_dict(sd["optimizer"])
    # a failed inner step changes nothing here either
    before = la.state_dict()
    with pytest.raises(ValueError):
        la.step([np.ones(4)])
    after = la.state_dict()
    assert after["lookahead"]["counters"] == before["lookahead"]["counters"]
    assert la.current_lr() == [0.1]                 # the inner optimizer's attributes


def test_lookahead_add_param_group_and_groups_count_separately():
    a, b = np.zeros(2), np.zeros(2)
    la = etakit.Lookahead(etakit.SGD([a], lr=1.0), k=2, alpha=0.5)
    la.step([np.ones(2)])
    la.add_param_group({"params": [b], "lr": 1.0})
    la.step([np.ones(2), np.ones(2)])      # group 0 syncs (its 2nd step), group 1 not yet
    np.testing.assert_array_equal(a, -1.0)
    np.testing.assert_array_equal(b, -1.0)
    la.step([np.ones(2), np.ones(2)])
    np.testing.assert_array_equal(b, -1.0)  # slow 0, fast -2: halfway
    assert la._counters == [1, 0]


def test_lookahead_alpha_one_is_the_inner_optimizer():
    rng = np.random.default_rng(3)
    w = rng.standard_normal(6)
    v = w.copy()
    la = etakit.Lookahead(etakit.Adam([w], lr=0.1), k=2, alpha=1.0)
    plain = etakit.Adam([v], lr=0.1)
    for _ in range(5):
        g = rng.standard_normal(6)
        la.step([g]); plain.step([g])
    np.testing.assert_array_equal(w, v)


def test_lookahead_torch_scheduler_and_pytorch_optimizer_checkpoint():
    t = _torch()
    po = _po()
    import etakit.torch as et
    gen = t.Generator().manual_seed(1)
    w0 = [t.randn(4, 3, generator=gen, dtype=t.float64), t.randn(3, generator=gen, dtype=t.float64)]
    grads = [[t.randn(w.shape, generator=gen, dtype=t.float64) for w in w0] for _ in range(9)]
    # torch's lr schedulers drive the wrapper (its param_groups are the inner optimizer's)
    ws = [t.nn.Parameter(w.clone()) for w in w0]
    la = et.Lookahead(et.AdamW(ws, lr=1e-2), k=3)
    sched = t.optim.lr_scheduler.StepLR(la, step_size=2, gamma=0.5)
    for gs in grads[:4]:
        for p, g in zip(ws, gs):
            p.grad = g.clone()
        la.step(); sched.step()
    assert la.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-3)
    assert la.state_dict()["lookahead_counters"] == [1]
    # a pytorch_optimizer checkpoint loads (counters from its groups, slow weights by (group, index))
    wp = [t.nn.Parameter(w.clone()) for w in w0]
    theirs = po.Lookahead(t.optim.AdamW(wp, lr=1e-2), k=3, alpha=0.5)
    for gs in grads[:4]:
        for p, g in zip(wp, gs):
            p.grad = g.clone()
        theirs.step()
    we = [t.nn.Parameter(w.detach().clone()) for w in wp]
    mine = et.Lookahead(et.AdamW(we, lr=1e-2), k=3, alpha=0.5)
    mine.load_state_dict(copy.deepcopy(theirs.state_dict()))   # torch's state dicts share the live tensors
    assert mine._counters == [1]
    for gs in grads[4:]:
        for p, q, g in zip(wp, we, gs):
            p.grad = g.clone(); q.grad = g.clone()
        theirs.step(); mine.step()
    for p, q in zip(wp, we):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-12)


def test_lookahead_torch_resume_is_exact():
    t = _torch()
    import etakit.torch as et
    gen = t.Generator().manual_seed(4)
    w0 = [t.randn(5, generator=gen), t.randn(2, 2, generator=gen)]
    grads = [[t.randn(w.shape, generator=gen) for w in w0] for _ in range(10)]

    def steps(opt, ws, gs_list):
        for gs in gs_list:
            for p, g in zip(ws, gs):
                p.grad = g.clone()
            opt.step()
    wa = [t.nn.Parameter(w.clone()) for w in w0]
    a = et.Lookahead(et.Adam(wa, lr=1e-2), k=4, alpha=0.3)
    steps(a, wa, grads[:6])
    sd = copy.deepcopy(a.state_dict())
    wb = [t.nn.Parameter(w.detach().clone()) for w in wa]
    steps(a, wa, grads[6:])
    b = et.Lookahead(et.Adam(wb, lr=1e-2), k=4, alpha=0.3)
    b.load_state_dict(sd)
    steps(b, wb, grads[6:])
    for p, q in zip(wa, wb):
        assert t.equal(p, q)
    with pytest.raises(ValueError, match="k must be >= 1"):
        et.Lookahead(et.Adam(wb), k=0)
    with pytest.raises(ValueError, match="alpha"):
        et.Lookahead(et.Adam(wb), alpha=2.0)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        et.Lookahead(etakit.Adam([np.zeros(2)]))
    bad = {**sd, "lookahead_state": {(0, 0): sd["lookahead_state"][(0, 0)]}}
    with pytest.raises(ValueError, match="slow_params for parameter 1"):
        b.load_state_dict(bad)
    assert isinstance(b, t.optim.Optimizer)


# ---- GradientAccumulator ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_accumulator(dtype, mode):
    rng = np.random.default_rng(0)
    shapes = [(0,), (3, 4), (17,)]
    params = [np.zeros(s, dtype=dtype) for s in shapes]
    acc = etakit.GradientAccumulator(params, mode=mode)
    micro = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(3)]
    for m in micro:
        acc.add(m)
    assert acc.count == 3
    for i, g in enumerate(acc.grads()):
        want = micro[0][i] + micro[1][i] + micro[2][i]
        if mode == "mean":
            want = want / dtype(3)
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, want)
    opt = etakit.SGD(params, lr=1.0)
    opt.step(acc.grads())
    acc.zero()
    assert acc.count == 0 and all((g == 0).all() for g in acc.grads())


def test_accumulator_bad_input_adds_nothing():
    acc = etakit.GradientAccumulator([np.zeros(2), np.zeros(3)])
    acc.add([np.ones(2), np.ones(3)])
    with pytest.raises(ValueError, match=r"grads\[1\]: expected float64 \(3,\)"):
        acc.add([np.ones(2), np.ones(4)])
    with pytest.raises(ValueError, match="has 1 arrays"):
        acc.add([np.ones(2)])
    assert acc.count == 1
    np.testing.assert_array_equal(acc.grads()[0], 1.0)
    with pytest.raises(ValueError, match="mode"):
        etakit.GradientAccumulator([np.zeros(2)], mode="avg")
    with pytest.raises(TypeError, match="float32 or float64"):
        etakit.GradientAccumulator([np.zeros(2, dtype=np.float16)])


@pytest.mark.parametrize("mode,micro", [("mean", 1), ("mean", 3), ("sum", 1), ("sum", 3)])
def test_accumulated_gradients_keep_an_in_place_clip(mode, micro):
    # grads() hands out the same buffers every time: a clip applied to them is what the step gets
    w = np.zeros(2)
    opt = etakit.SGD([w], lr=1.0)
    acc = etakit.GradientAccumulator([w], mode=mode)
    for _ in range(micro):
        acc.add([np.array([3.0, 4.0])])
    etakit.clip_grad_norm_(acc.grads(), 1.0)
    opt.step(acc.grads())
    assert np.linalg.norm(w) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="call zero"):
        acc.add([np.ones(2)])
    acc.zero()
    acc.add([np.array([3.0, 4.0])])
    np.testing.assert_array_equal(acc.grads()[0], [3.0, 4.0])


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_torch_norm_and_clip_of_complex_gradients_match_torch(dtype):
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    dt = getattr(torch, dtype)
    g = [torch.tensor([3 + 4j, 1 - 2j], dtype=dt), torch.tensor([2.0j], dtype=dt)]
    ours, theirs = et.get_total_norm(g), torch.nn.utils.get_total_norm(g)
    assert ours.dtype == theirs.dtype and torch.allclose(ours, theirs)
    p = [torch.nn.Parameter(x.clone()) for x in g]
    q = [torch.nn.Parameter(x.clone()) for x in g]
    for a, b, x in zip(p, q, g):
        a.grad, b.grad = x.clone(), x.clone()
    assert torch.allclose(et.clip_grad_norm_(p, 1.0), torch.nn.utils.clip_grad_norm_(q, 1.0))
    assert all(torch.allclose(a.grad, b.grad) for a, b in zip(p, q))


def test_an_etakit_torch_lookahead_checkpoint_resumes_in_pytorch_optimizer():
    torch = pytest.importorskip("torch")
    po = pytest.importorskip("pytorch_optimizer")
    import copy

    import etakit.torch as et
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    la = et.Lookahead(et.AdamW([p], lr=0.1), k=3, alpha=0.5)
    for _ in range(4):
        p.grad = torch.randn(5, dtype=torch.float64)
        la.step()
    sd = la.state_dict()
    q = torch.nn.Parameter(p.detach().clone())
    theirs = po.Lookahead(et.AdamW([q], lr=0.1), k=3, alpha=0.5)
    theirs.load_state_dict(copy.deepcopy(sd))
    r = torch.nn.Parameter(p.detach().clone())
    ours = et.Lookahead(et.AdamW([r], lr=0.1), k=3, alpha=0.5)
    ours.load_state_dict(copy.deepcopy(sd))
    for _ in range(5):
        g = torch.randn(5, dtype=torch.float64)
        q.grad, r.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
    torch.testing.assert_close(q, r, rtol=1e-14, atol=1e-15)


def test_weight_decay_groups_take_wildcards_and_refuse_nothing_to_group():
    named = [("pos_embed", np.zeros((4, 3))), ("blocks.0.w", np.zeros((3, 3))), ("head.w", np.zeros((3, 2)))]
    groups = etakit.param_groups_weight_decay(named, 0.1, no_decay=["pos_*"])
    assert [len(g["params"]) for g in groups] == [1, 2] and groups[0]["params"][0] is named[0][1]
    gen = iter(named)
    etakit.param_groups_weight_decay(gen, 0.1)
    with pytest.raises(ValueError, match="no parameter"):
        etakit.param_groups_weight_decay(gen, 0.1)          # the generator is spent
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        etakit.param_groups_weight_decay(named, -1.0)


def test_torch_lookahead_passes_train_and_eval_through():
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    p = torch.nn.Parameter(torch.ones(3))
    la = et.Lookahead(et.ScheduleFreeSGD([p], lr=0.1), k=2)
    la.train()
    for _ in range(3):
        p.grad = torch.ones(3)
        la.step()
    y = p.detach().clone()
    la.eval()
    assert la.optimizer.param_groups[0]["train_mode"] is False and not torch.equal(p, y)
    with pytest.raises(AttributeError, match="has no train"):
        et.Lookahead(et.SGD([p], lr=0.1)).train()

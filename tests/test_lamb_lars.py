"""LAMB and LARS: what the generic tests cannot see.

The reductions (the engine's blocked lane sums), LAMB's pre_norm over all
the tensors of a step (across groups, skipping parameters without a
gradient), the trust ratios' special cases (zero norms), rectify's steps
without an update, LARS on multi-block matrices and on vectors, and the
cross-field check of n_sma_threshold."""
import math

import numpy as np
import pytest

import etakit
from conftest import ReferenceOptimizer, make_grads
from etakit import reference

try:
    import pytorch_optimizer as po
    import torch

    import etakit.torch as et
except ImportError:
    torch = None
needs_reference = pytest.mark.skipif(torch is None, reason="torch and pytorch_optimizer are not installed")


def _lane_sum_spec(x):
    """The engine's reduction as plain loops: lanes per block, lanes in order, blocks in order."""
    x = np.asarray(x, dtype=np.float64).ravel().tolist()
    total = 0.0
    for lo in range(0, len(x), reference.BLOCK):
        acc = [0.0] * reference.LANES
        for i, v in enumerate(x[lo:lo + reference.BLOCK]):
            acc[i % reference.LANES] += v
        s = 0.0
        for a in acc:
            s += a
        total += s
    return total


@pytest.mark.parametrize("n", [0, 1, 17, 4096, 4097, 3 * 4096 + 100])
def test_blocked_lane_sum_is_the_engine_s_order(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))   # wide range: the order shows
    assert reference.blocked_lane_sum(x) == _lane_sum_spec(x)
    assert reference.blocked_lane_sum(np.full(n, -0.0)) == 0.0


def _pair(kind, groups, dtype, sizes, steps=30, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in sizes]
    mine, theirs = [p.copy() for p in params], [p.copy() for p in params]
    spans, start = [], 0
    for n, hp in groups:
        spans.append((range(start, start + n), hp))
        start += n
    opt = getattr(etakit, kind)([{"params": mine[i.start:i.stop], **hp} for i, hp in spans])
    ref = ReferenceOptimizer(kind, theirs, spans)
    for _ in range(steps):
        grads = make_grads(rng, theirs)
        opt.step(grads)
        ref.step(grads)
    return mine, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pre_norm_is_the_joint_norm_of_the_groups_with_pre_norm(dtype):
    big = (2 * etakit._core.parallel_min() + 5,)
    groups = [(2, dict(pre_norm=True, lr=1e-2)), (1, dict(pre_norm=False, lr=1e-2)),
              (2, dict(pre_norm=True, max_grad_norm=2.0, maximize=True))]
    mine, theirs = _pair("LAMB", groups, dtype, [(3, 4), big, (7,), (0,), (5, 1)])
    for a, b in zip(mine, theirs):
        assert a.tobytes() == b.tobytes()
    # the norm spans the groups: without pre_norm in the last group, the first is scaled differently
    groups[2] = (2, dict(pre_norm=False))
    other, _ = _pair("LAMB", groups, dtype, [(3, 4), big, (7,), (0,), (5, 1)])
    assert other[0].tobytes() != mine[0].tobytes() and other[2].tobytes() == mine[2].tobytes()


@pytest.fixture
def float64_global_norm(monkeypatch):
    """pytorch_optimizer.Lamb's pre_norm with its global gradient norm in float64 (it uses float32)."""
    import pytorch_optimizer.optimizer.lamb as lamb_module

    def norm_sq(groups):
        s = torch.zeros(1, dtype=torch.float64)
        for g in groups:
            for p in g["params"]:
                if p.grad is not None:
                    s += p.grad.double().pow(2).sum()
        return s
    monkeypatch.setattr(lamb_module, "get_global_gradient_norm", norm_sq)


def _torch_pair(kind, hp, shapes, steps=40, frozen=(), zero=(), seed=0, groups=None):
    """etakit.torch.<kind> and the reference implementation on the same float64 parameters and gradients."""
    rng = np.random.default_rng(seed)
    init = [np.zeros(s) if i in zero else rng.standard_normal(s) for i, s in enumerate(shapes)]
    a = [torch.tensor(x, requires_grad=i not in frozen) for i, x in enumerate(init)]
    b = [torch.tensor(x, requires_grad=i not in frozen) for i, x in enumerate(init)]

    def build(cls, ps):
        if groups is None:
            return cls(ps, **hp)
        return cls([{"params": ps[i:j], **g} for (i, j), g in groups], **hp)
    ref = build(getattr(po, {"LAMB": "Lamb", "LARS": "LARS"}[kind]), a)
    opt = build(getattr(et, kind), b)
    for _ in range(steps):
        grads = [rng.standard_normal(s) + 0.5 * x.detach().numpy() for s, x in zip(shapes, a)]
        for i, (x, y, g) in enumerate(zip(a, b, grads)):
            if i not in frozen:
                x.grad = torch.tensor(g)
                y.grad = torch.tensor(g)
        ref.step()
        opt.step()
    return a, b


SHAPES = [(4, 3), (7,), (2, 3, 2), (1,)]


@needs_reference
@pytest.mark.parametrize("hp", [dict(pre_norm=True, lr=1e-2),
                                dict(pre_norm=True, lr=1e-2, max_grad_norm=0.3, rectify=True),
                                dict(pre_norm=True, lr=1e-2, maximize=True, weight_decay=0.1)])
def test_pre_norm_matches_the_reference_with_its_norm_in_float64(hp, float64_global_norm):
    """With the reference's global norm formed in float64, pre_norm agrees to 1e-9 (over two groups,
    with a parameter without gradient, which neither counts)."""
    a, b = _torch_pair("LAMB", hp, SHAPES, frozen=(1,), groups=[((0, 2), {}), ((2, 4), dict(lr=3e-3))])
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-12)


@needs_reference
@pytest.mark.parametrize("kind,hp", [
    ("LAMB", dict(lr=1e-2)), ("LAMB", dict(lr=1e-2, rectify=True, degenerated_to_sgd=True)),
    ("LAMB", dict(lr=1e-2, weight_decay=0.1, weight_decouple=False)),
    ("LARS", dict(lr=1e-2, weight_decay=0.0)), ("LARS", dict(lr=1e-2, weight_decay=1e-2, trust_coefficient=0.1)),
])
def test_zero_parameters_take_a_trust_ratio_of_one(kind, hp):
    """A zero-initialised tensor (a bias, say) has ||p|| == 0: trust ratio 1, as the reference."""
    a, b = _torch_pair(kind, hp, [(4, 3), (3,), (2, 5)], zero=(0, 1, 2), steps=20)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,hp", [("LAMB", dict(lr=1e-2)), ("LARS", dict(lr=1e-2, weight_decay=0.0))])
def test_zero_gradients_take_a_trust_ratio_of_one(kind, hp):
    p = np.random.default_rng(1).standard_normal((3, 4))
    q = p.copy()
    opt = getattr(etakit, kind)([p], **hp)
    ref = ReferenceOptimizer(kind, [q], [(range(1), hp)])
    for _ in range(3):
        opt.step([np.zeros_like(p)])
        ref.step([np.zeros_like(p)])
    assert np.isfinite(p).all() and p.tobytes() == q.tobytes()


def test_rectify_without_update_only_decays():
    """Below the rectification threshold (no degenerated_to_sgd) the reference skips the update but
    has already decayed the parameters; lr == 0 skips it too."""
    p0 = np.random.default_rng(2).standard_normal(10)
    for lr, steps in ((1e-2, 4), (0.0, 1)):
        p = p0.copy()
        opt = etakit.LAMB([p], lr=lr, rectify=True, weight_decay=0.1, fixed_decay=True)
        for _ in range(steps):   # n_sma < 5 for the first steps with beta2 = 0.999
            opt.step([np.ones(10)])
        want = p0.copy()
        for _ in range(steps):
            want *= 1.0 - 0.1
        assert p.tobytes() == want.tobytes()
        assert opt.state_dict()["state"][0]["exp_avg"].any()


def test_n_sma_threshold_below_4_is_refused_with_rectify():
    with pytest.raises(ValueError, match="n_sma_threshold.*rectify needs n_sma_threshold >= 4"):
        etakit.LAMB([np.zeros(2)], rectify=True, n_sma_threshold=3)
    if torch is not None:
        with pytest.raises(ValueError, match="n_sma_threshold"):
            et.LAMB([torch.zeros(2, requires_grad=True)], rectify=True, n_sma_threshold=0)
    etakit.LAMB([np.zeros(2)], n_sma_threshold=3)        # unused without rectify
    etakit.LAMB([np.zeros(2)], rectify=True, n_sma_threshold=4)
    w = np.ones(2)
    opt = etakit.LAMB([w], rectify=True)
    opt.step([np.ones(2)])
    before = w.copy()
    opt.param_groups[0]["n_sma_threshold"] = 2
    with pytest.raises(ValueError, match="n_sma_threshold"):
        opt.step([np.ones(2)])
    assert w.tobytes() == before.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lars_multi_block_matrix_across_threads(dtype, threads):
    """The trust ratio of a matrix several blocks long, split across threads, is the reference's."""
    shape = (3, etakit._core.parallel_min() + 7)
    hp = dict(lr=1e-2, weight_decay=1e-2, trust_coefficient=0.02, nesterov=True, momentum=0.8)
    results = []
    for nth in (1, 2, 3):
        etakit.set_num_threads(nth)
        mine, theirs = _pair("LARS", [(2, hp)], dtype, [shape, (5, 2)], steps=10)
        for a, b in zip(mine, theirs):
            assert a.tobytes() == b.tobytes()
        results.append(mine)
    assert all(a.tobytes() == b.tobytes() for r in results[1:] for a, b in zip(results[0], r))


def test_lars_vectors_take_plain_sgd_steps():
    """Scalars and vectors: no weight decay, no trust ratio (momentum from a zero buffer)."""
    b, w, s = np.array([1.0, -2.0, 3.0]), np.array([[1.0, -2.0, 3.0]]), np.array(1.5)
    opt = etakit.LARS([b, w, s], lr=0.1, weight_decay=0.5, momentum=0.5, trust_coefficient=0.1)
    g = np.array([0.5, 0.5, -1.0])
    opt.step([g.copy(), g[None].copy(), np.array(2.0)])
    np.testing.assert_array_equal(b, [1.0 - 0.1 * 0.5, -2.0 - 0.1 * 0.5, 3.0 + 0.1])
    assert s == 1.5 - 0.1 * 2.0
    assert not np.array_equal(w[0], b)           # the matrix has a trust ratio


def test_lamb_trust_ratio_clamps_the_weight_norm_at_10():
    p = np.full(400, 1.0)       # ||p|| = 20
    opt = etakit.LAMB([p], lr=1e-2)
    opt.step([np.ones(400)])
    u = 0.1 / (math.sqrt(0.001) + 1e-6)       # every element of m / (sqrt(v) + eps)
    ratio = 10.0 / (math.sqrt(400 * u * u) + 1e-6)
    np.testing.assert_allclose(p, 1.0 - 0.1 * ratio * u, rtol=1e-14)

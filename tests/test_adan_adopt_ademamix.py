"""What the generic tests cannot see of Adan, ADOPT and AdEMAMix: Adan's global gradient clip (over
groups, and against the reference given a double-precision norm), ADOPT's first step and clip_lambda,
AdEMAMix's warmups and the cross-field check, their Optional arguments, and the references' other
(per-parameter) code path."""
import copy

import numpy as np
import pytest

import etakit
from conftest import ReferenceOptimizer, make_grads, make_params
from rule_cases import CASES, reference_class


# ---- Adan: the clip by max_grad_norm -------------------------------------

def test_adan_clips_by_the_norm_over_every_clipping_group(rng):
    """The norm is taken over the groups with max_grad_norm > 0 together; a group without it is neither
    clipped nor counted."""
    params = make_params(rng, np.float64)
    ours, theirs = [p.copy() for p in params], [p.copy() for p in params]
    hps = [dict(lr=1e-2, max_grad_norm=5.0), dict(lr=1e-2), dict(lr=2e-2, max_grad_norm=5.0)]
    split = [(0, 2), (2, 4), (4, len(params))]
    opt = etakit.Adan([{"params": ours[a:b], **hp} for (a, b), hp in zip(split, hps)])
    ref = ReferenceOptimizer("Adan", theirs, [(range(a, b), hp) for (a, b), hp in zip(split, hps)])
    for _ in range(10):
        grads = make_grads(rng, theirs)
        norm = np.sqrt(sum(float(np.sum(grads[i] ** 2)) for i in [0, 1, 4, 5]))
        assert norm > 5.0                           # the clip acts
        extra = etakit.reference.call_reductions("adan", grads, [hps[0]] * 2 + [hps[1]] * 2 + [hps[2]] * 2)
        assert extra[2] == {} and extra[0]["grad_sq_sum"] == extra[5]["grad_sq_sum"]
        np.testing.assert_allclose(extra[0]["grad_sq_sum"], norm ** 2, rtol=1e-12)
        opt.step(grads)
        ref.step(grads)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def _adan_with_double_norm():
    """pytorch_optimizer.Adan with its global gradient norm in double (it rounds it to float32)."""
    torch = pytest.importorskip("torch")
    ref = reference_class("Adan")
    if ref is None:
        pytest.skip("pytorch_optimizer is not installed")

    class Adan64(ref):
        @torch.no_grad()
        def get_global_gradient_norm(self):
            if self.defaults["max_grad_norm"] == 0.0:
                return 1.0
            sq = sum(float(p.grad.double().square().sum()) for g in self.param_groups for p in g["params"]
                     if p.grad is not None)
            x = self.defaults["max_grad_norm"] / (sq ** 0.5 + self.defaults["eps"])
            return torch.tensor(min(x, 1.0), dtype=torch.float64)
    return torch, Adan64


@pytest.mark.parametrize("foreach", [None, False])
def test_adan_clip_matches_the_reference_given_a_double_norm(foreach):
    """With the clip active, etakit differs from pytorch_optimizer.Adan only by the precision of the norm:
    given the norm in double, the trajectories agree to rounding, over two groups and both of its code paths."""
    torch, Adan64 = _adan_with_double_norm()
    rng = np.random.default_rng(3)
    shapes = [(4, 3), (7,), (2, 3, 2), (1,)]
    mine = [rng.standard_normal(s) for s in shapes]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in mine]
    hp = dict(lr=1e-2, betas=(0.9, 0.9, 0.99), weight_decay=0.05, max_grad_norm=1.0, maximize=True)
    opt = etakit.Adan([{"params": mine[:2]}, {"params": mine[2:], "lr": 3e-2}], **hp)
    ref = Adan64([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 3e-2}], foreach=foreach, **hp)
    for _ in range(50):
        grads = [rng.standard_normal(s) + 0.5 * t.detach().numpy() for s, t in zip(shapes, theirs)]
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        with torch.no_grad():
            ref.step()
        opt.step(grads)
    for a, t in zip(mine, theirs):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adan_previous_grad_on_the_first_step(rng):
    """The first step starts from previous_grad = -grad (so the difference is 0); a loaded previous_grad is used."""
    w = np.array([1.0, -2.0, 3.0])
    opt = etakit.Adan([w], lr=0.1)
    g = np.array([0.5, -1.0, 2.0])
    opt.step([g])
    st = opt.state_dict()["state"][0]
    np.testing.assert_array_equal(st["previous_grad"], -g)
    np.testing.assert_array_equal(st["exp_avg_diff"], 0.0)
    opt.step([2 * g])
    np.testing.assert_allclose(opt.state_dict()["state"][0]["exp_avg_diff"], (1 - 0.92) * g)


# ---- ADOPT ---------------------------------------------------------------

def test_adopt_first_step_moves_only_by_a_decoupled_decay():
    w, v = np.array([1.0, -2.0]), np.array([1.0, -2.0])
    g = np.array([0.5, -3.0])
    etakit.ADOPT([w], lr=0.1).step([g])
    np.testing.assert_array_equal(w, [1.0, -2.0])
    opt = etakit.ADOPT([v], lr=0.1, weight_decay=0.5, weight_decouple=True)
    opt.step([g])
    np.testing.assert_array_equal(v, [0.95, -1.9])
    st = opt.state_dict()["state"][0]
    np.testing.assert_array_equal(st["exp_avg"], 0.0)
    np.testing.assert_array_equal(st["exp_avg_sq"], g * g)


def test_adopt_clip_lambda():
    """True clips to +-step**0.25, None (or False) does not; a Python function is refused with what works."""
    def two_steps(**kw):
        w = np.zeros(1)
        opt = etakit.ADOPT([w], lr=1.0, betas=(0.0, 0.5), **kw)
        opt.step([np.array([1e-3])])
        opt.step([np.array([1.0])])     # normalised: 1 / 1e-3 = 1000
        return w[0]
    assert two_steps() == -2 ** 0.25
    assert two_steps(clip_lambda=None) == two_steps(clip_lambda=False) == pytest.approx(-1000.0)
    with pytest.raises(TypeError, match="clip_lambda must be True .* or None"):
        etakit.ADOPT([np.zeros(1)], clip_lambda=lambda step: step ** 0.25)
    opt = etakit.ADOPT([np.zeros(1)])
    opt.param_groups[0]["clip_lambda"] = "yes"
    with pytest.raises(TypeError, match="clip_lambda must be a bool or None"):
        opt.step([np.ones(1)])


def test_adopt_checkpoint_from_the_reference_keeps_clip_lambda():
    """pytorch_optimizer keeps clip_lambda on the optimizer, not in its groups: a drop-in loading its
    checkpoint keeps its own."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    ref_cls = reference_class("ADOPT")
    if ref_cls is None:
        pytest.skip("pytorch_optimizer is not installed")
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2).double()
    ref = ref_cls(model.parameters(), lr=1e-2, clip_lambda=None)
    x = torch.randn(16, 5, dtype=torch.float64)
    for _ in range(3):
        ref.zero_grad()
        model(x).square().mean().backward()
        ref.step()
    sd = ref.state_dict()
    assert "clip_lambda" not in sd["param_groups"][0]
    twin = copy.deepcopy(model)
    mine = et.ADOPT(twin.parameters(), lr=1e-2, clip_lambda=None)
    mine.load_state_dict(copy.deepcopy(sd))
    assert mine.param_groups[0]["clip_lambda"] is None
    for opt, m in ((ref, model), (mine, twin)):
        for _ in range(5):
            opt.zero_grad()
            (m(x) * 100).square().mean().backward()     # large normalised gradients: a clip would show
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-10)


# ---- AdEMAMix -------------------------------------------------------------

def test_ademamix_warmups_are_the_reference_s():
    ref = reference_class("AdEMAMix")
    if ref is None:
        pytest.skip("pytorch_optimizer is not installed")
    betas = (0.8, 0.99, 0.9999)
    for t in (None, 1.0, 37.0, 1000.0):
        for step in (1, 2, 10, 36, 37, 38, 500, 5000):
            a, b3 = etakit.reference.ademamix_alpha_beta3(step, 4.0, betas, t)
            assert a == ref.schedule_alpha(t, step, 4.0)
            assert b3 == ref.schedule_beta3(t, step, betas[0], betas[2])


def test_ademamix_warmup_needs_positive_beta1_and_beta3():
    with pytest.raises(ValueError, match=r"Invalid t_alpha_beta3.*log\(beta1\) and log\(beta3\)"):
        etakit.AdEMAMix([np.zeros(2)], betas=(0.0, 0.999, 0.9999), t_alpha_beta3=100.0)
    with pytest.raises(ValueError, match="Invalid t_alpha_beta3"):
        etakit.AdEMAMix([np.zeros(2)], betas=(0.9, 0.999, 0.0), t_alpha_beta3=100.0)
    etakit.AdEMAMix([np.zeros(2)], betas=(0.0, 0.999, 0.0))       # no warmup, no logarithms
    # a scheduled beta1 that reaches 0 is refused at that step, before anything is written
    w = np.ones(2)
    opt = etakit.AdEMAMix([w], betas=(etakit.schedules.linear(0.9, 0.0, 2), 0.999, 0.9999), t_alpha_beta3=10.0)
    opt.step([np.ones(2)])
    opt.step([np.ones(2)])
    before = w.copy()
    with pytest.raises(ValueError, match="t_alpha_beta3"):
        opt.step([np.ones(2)])
    np.testing.assert_array_equal(w, before)


def test_ademamix_t_alpha_beta3_none_is_no_warmup(rng):
    params = make_params(rng, np.float32)
    a, b = [p.copy() for p in params], [p.copy() for p in params]
    oa = etakit.AdEMAMix(a, lr=1e-2, t_alpha_beta3=None)
    ob = etakit.AdEMAMix(b, lr=1e-2, t_alpha_beta3=0.0)
    for _ in range(5):
        g = make_grads(rng, params)
        oa.step(g)
        ob.step(g)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert oa.param_groups[0]["t_alpha_beta3"] is None
    with pytest.raises(TypeError, match="t_alpha_beta3 must be a real number or None"):
        etakit.AdEMAMix([np.zeros(1)], t_alpha_beta3="soon")


# ---- all three -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Adan", "ADOPT", "AdEMAMix"])
def test_defaults_save_and_load(kind, tmp_path):
    """The groups hold plain values (None, True), which etakit.save writes without pickle."""
    w = np.ones(3)
    opt = getattr(etakit, kind)([w])
    for _ in range(2):
        opt.step([np.full(3, 0.5)])
    path = tmp_path / "ckpt.npz"
    etakit.save(path, opt.state_dict())
    opt2 = getattr(etakit, kind)([w.copy()])
    opt2.load_state_dict(etakit.load(path))
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


@pytest.mark.parametrize("kind", ["Adan", "ADOPT", "AdEMAMix"])
def test_the_reference_s_per_parameter_path_agrees(kind):
    """pytorch_optimizer has a foreach and a per-parameter path; the generic tests meet the first."""
    torch = pytest.importorskip("torch")
    import etakit.torch as et
    ref_cls = reference_class(kind)
    if ref_cls is None:
        pytest.skip("pytorch_optimizer is not installed")
    hp = CASES[kind][-1]
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    b = copy.deepcopy(a)
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    for model, opt in ((a, ref_cls(a.parameters(), foreach=False, **hp)), (b, et.__dict__[kind](b.parameters(), **hp))):
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)

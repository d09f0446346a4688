"""lr_find as a new user meets it (issue 9): each case gets a sensible suggestion or a clear LRFindWarning,
and training at the suggestion does not diverge."""
import math
import warnings

import numpy as np
import pytest

import etakit
from etakit import LRFindWarning


def find(loss_and_grad, params, **kw):
    """lr_find with its warnings recorded: (result, [warning messages])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = etakit.lr_find(loss_and_grad, params, progress=False, **kw)
    msgs = [str(w.message) for w in caught if issubclass(w.category, LRFindWarning)]
    others = [w for w in caught if not issubclass(w.category, LRFindWarning)]
    assert not others, others
    assert len(msgs) == len(res.notes)
    return res, msgs


def quiet(loss_and_grad, params, **kw):
    """lr_find that must not warn."""
    res, msgs = find(loss_and_grad, params, **kw)
    assert not msgs, msgs
    return res


def norm2(seed=0, d=10, shift=0.0, noise=None):
    """x @ x + shift; ``noise(rng, loss)`` perturbs the loss lr_find sees (not the gradient)."""
    rng = np.random.default_rng(seed + 100)

    def f(ps):
        x, = ps
        loss = float(x @ x) + shift
        return (noise(rng, loss) if noise else loss), [2 * x]
    return f, [np.random.default_rng(seed).standard_normal(d)]


class Quadratic:
    """0.5 x^T A x with eigenvalues geometric from L/cond to L (rotated), optional gradient noise."""

    def __init__(self, L, cond, noise=0.0, d=20, eig=None, seed=0):
        eig = np.geomspace(L / cond, L, d) if eig is None else np.asarray(eig, dtype=np.float64)
        q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((len(eig),) * 2))
        self.A, self.L, self.noise, self.seed = (q * eig) @ q.T, float(eig.max()), noise, seed
        self.x0 = np.random.default_rng(seed).standard_normal(len(eig))

    def loss(self, x):
        return 0.5 * float(x @ (self.A @ x))

    def sampler(self, seed):
        rng = np.random.default_rng(seed)

        def f(ps):
            x, = ps
            g = self.A @ x
            if self.noise:
                g = g + self.noise * rng.standard_normal(len(x))
            return self.loss(x), [g]
        return f

    def train(self, optimizer, lr, steps=300, **kw):
        """The loss after ``steps`` steps at the constant rate ``lr`` (inf if it blew up)."""
        x = self.x0.copy()
        opt = optimizer([x], lr=lr, **kw)
        f = self.sampler(self.seed + 1)
        with np.errstate(all="ignore"):
            for _ in range(steps):
                loss, g = f([x])
                if not math.isfinite(loss):
                    return math.inf
                opt.step(g)
            final = self.loss(x)
        return final if math.isfinite(final) else math.inf


# ---- the cases of the issue ------------------------------------------------------------

@pytest.mark.parametrize("num_steps", [100, 400, 2000])
def test_more_sweep_steps_do_not_push_past_the_edge(num_steps):
    """eig = linspace(1, 100, 100): 2/L = 0.02; a 400..2000-step sweep used to suggest 0.031-0.033."""
    p = Quadratic(100, 100, d=100, eig=np.linspace(1, 100, 100))
    res = quiet(p.sampler(0), [p.x0.copy()], optimizer=etakit.SGD, num_steps=num_steps)
    assert 0.002 < res.suggestion < 2 / p.L, res.confirm_runs
    assert p.train(etakit.SGD, res.suggestion) < 1e-3 * p.loss(p.x0)


def test_groups_keep_their_ratio_and_group_0_stays_below_its_limit():
    """[{a}, {b, lr: 0.1}] on sum(p @ p): SGD's limit is 1.0 for a (10.0 for b); it used to suggest 1.57."""
    a0, b0 = np.random.default_rng(0).standard_normal(5), np.random.default_rng(1).standard_normal(5)

    def f(ps):
        return float(ps[0] @ ps[0] + ps[1] @ ps[1]), [2 * ps[0], 2 * ps[1]]
    sugg = []
    for num_steps in (100, 400):
        a, b = a0.copy(), b0.copy()
        res = quiet(f, [{"params": [a]}, {"params": [b], "lr": 0.1}], optimizer=etakit.SGD, num_steps=num_steps)
        assert a.tobytes() == a0.tobytes() and b.tobytes() == b0.tobytes()
        g0, g1 = res.group_suggestions
        assert 0.05 < g0 < 1.0 and g1 == pytest.approx(0.1 * g0)
        opt = etakit.SGD([{"params": [a], "lr": g0}, {"params": [b], "lr": g1}], lr=g0)
        for _ in range(200):
            loss, g = f([a, b])
            opt.step(g)
        assert f([a, b])[0] < 0.5 * f([a0, b0])[0]
        sugg.append(g0)
    assert max(sugg) / min(sugg) < 2.0         # stable across sweep lengths


def test_a_loss_shifted_negative_is_read_like_the_unshifted_one():
    """x @ x - 100 used to get 6e-06 against 0.153 for x @ x."""
    plain = quiet(*norm2(), optimizer=etakit.SGD).suggestion
    shifted = quiet(*norm2(shift=-100.0), optimizer=etakit.SGD).suggestion
    assert plain < 1.0 and 1 / 1.5 < shifted / plain < 1.5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind,sigma", [("lognormal", 1.0), ("additive", 2.0), ("additive", 4.0)])
def test_noise_as_large_as_the_loss_does_not_collapse_the_suggestion(kind, sigma, seed):
    """Multiplicative lognormal sigma=1 or additive sigma >= 2 used to give 3.5e-5 .. 2.9e-4 (noiseless: 0.19)."""
    clean = quiet(*norm2(seed), optimizer=etakit.SGD).suggestion
    if kind == "lognormal":
        def noise(rng, loss):
            return loss * rng.lognormal(0.0, sigma)
    else:
        def noise(rng, loss):
            return loss + sigma * rng.standard_normal()
    res, msgs = find(*norm2(seed, noise=noise), optimizer=etakit.SGD)
    assert not msgs, msgs
    assert 1 / 4 < res.suggestion / clean < 4, (res.suggestion, clean, res.confirm_runs)
    assert res.suggestion < 1.0                 # SGD's limit on x @ x


def test_five_steps_warn_and_do_not_return_end_lr():
    res, msgs = find(*norm2(), optimizer=etakit.SGD, num_steps=5)
    assert any("coarse" in m for m in msgs)
    assert res.suggestion != res.settings["end_lr"] and 0.0 < res.suggestion < 1.0


def test_nan_at_the_first_step_gives_nan_a_warning_and_a_plot(tmp_path):
    pytest.importorskip("matplotlib")
    x0 = np.ones(4)
    x = x0.copy()
    res, msgs = find(lambda ps: (math.nan, [np.ones(4)]), [x], optimizer=etakit.SGD)
    assert math.isnan(res.suggestion) and res.curve == "no finite loss" and res.stop_reason == "non-finite"
    assert len(msgs) == 1 and "not finite" in msgs[0]
    assert x.tobytes() == x0.tobytes()
    res.plot(path=tmp_path / "nan.png")
    assert (tmp_path / "nan.png").stat().st_size > 0


def test_a_constant_loss_gives_nan_and_a_warning(tmp_path):
    pytest.importorskip("matplotlib")
    res, msgs = find(lambda ps: (3.0, [np.ones(4)]), [np.ones(4)], optimizer=etakit.SGD)
    assert math.isnan(res.suggestion) and res.curve == "flat"
    assert any("did not change" in m for m in msgs)
    res.plot(path=tmp_path / "flat.png")


def test_a_loss_rising_from_the_first_step_says_so():
    """start_lr = 1e-7 is already unstable at L = 1e8 (limit 2e-8): a rate below start_lr, with notes."""
    p = Quadratic(1e8, 10.0)
    res, msgs = find(p.sampler(0), [p.x0.copy()], optimizer=etakit.SGD)
    assert res.curve == "rising"
    assert any("rose from the first step" in m for m in msgs) and any("below start_lr" in m for m in msgs)
    assert 0 < res.suggestion < 2 / p.L
    assert p.train(etakit.SGD, res.suggestion) < p.loss(p.x0)


def test_a_gradient_of_the_wrong_sign_gives_nan_and_warnings():
    res, msgs = find(lambda ps: (float(ps[0] @ ps[0]), [-2 * ps[0]]), [np.ones(4)], optimizer=etakit.SGD)
    assert math.isnan(res.suggestion) and res.curve == "rising"
    assert any("rose from the first step" in m for m in msgs) and any("no confirmation run passed" in m for m in msgs)


# ---- never diverges ----------------------------------------------------------------------

SAFE = {  # optimizer, its kwargs, its stability limit on a quadratic with top curvature L (None: no closed form)
    "SGD": (etakit.SGD, {}, lambda L: 2 / L),
    "SGD momentum 0.9": (etakit.SGD, {"momentum": 0.9}, lambda L: 2 * (1 + 0.9) / L),
    "Adam": (etakit.Adam, {}, None),
    "RMSprop": (etakit.RMSprop, {}, None),
}


@pytest.mark.parametrize("noise", [0.0, 0.5], ids=["exact", "noisy"])
@pytest.mark.parametrize("L,cond", [(1.0, 1.0), (100.0, 100.0), (1e4, 1e4), (1e4, 10.0)])
@pytest.mark.parametrize("name", list(SAFE))
def test_training_at_the_suggestion_does_not_diverge(name, L, cond, noise):
    optimizer, kw, limit = SAFE[name]
    p = Quadratic(L, cond, noise=noise)
    x = p.x0.copy()
    res = quiet(p.sampler(0), [x], optimizer=optimizer, **kw)
    assert x.tobytes() == p.x0.tobytes()
    assert res.curve == "decreasing" and res.confirm_runs and res.confirm_runs[-1]["ok"] is not None
    lr = res.suggestion
    assert math.isfinite(lr) and lr > 0
    if limit is not None:
        assert lr < limit(L), (lr, limit(L), res.confirm_runs)
    final = p.train(optimizer, lr, steps=300, **kw)
    assert final < 0.5 * p.loss(p.x0), (lr, final, p.loss(p.x0), res.confirm_runs)


# ---- restoring and counting ---------------------------------------------------------------

def test_parameters_restored_bit_for_bit_and_extra_steps_counted():
    rng = np.random.default_rng(5)
    a0 = rng.standard_normal((3, 4)).astype(np.float32)
    b0 = rng.standard_normal(7)
    a, b = a0.copy(), b0.copy()
    calls = [0]

    def f(ps):
        calls[0] += 1
        return (float(np.sum(ps[0].astype(np.float64) ** 2)) + float(ps[1] @ ps[1]),
                [2 * ps[0], 2 * ps[1]])
    res = quiet(f, [{"params": [a]}, {"params": [b], "lr": 0.5}], optimizer=etakit.Adam)
    assert a.tobytes() == a0.tobytes() and b.tobytes() == b0.tobytes()
    assert res.extra_steps == sum(r["steps"] for r in res.confirm_runs) > 0
    assert calls[0] == len(res.lrs) + res.extra_steps
    assert res.to_dict()["extra_steps"] == res.extra_steps and f"+{res.extra_steps}" in repr(res)


def test_confirm_steps_zero_suggests_the_unconfirmed_candidate():
    res = quiet(*norm2(), optimizer=etakit.SGD, confirm_steps=0)
    assert res.extra_steps == 0 and not res.confirm_runs and res.suggestion == res.candidate


def test_noise_ten_times_the_loss_gives_a_sensible_suggestion_or_a_warning():
    """A drop the sweep owes to noise is not progress: confirmation runs that cannot lower the loss
    measurably fail, and the result is a warning, not a rate four decades too low."""
    for seed in range(4):
        rng = np.random.default_rng(seed)

        def lg(ps):   # called in this iteration only
            x = ps[0]
            return float(x @ x) + 10 * rng.standard_normal(), [2 * x + rng.standard_normal(x.shape)]  # noqa: B023
        res, msgs = find(lg, [np.ones(10)], optimizer=etakit.Adam)
        if math.isnan(res.suggestion):
            assert any("noise" in m for m in msgs)
        else:
            assert 0.01 < res.suggestion < 1.0, (seed, res.suggestion, res.confirm_runs)


def test_a_curve_still_falling_at_end_lr_says_so():
    res, msgs = find(*norm2(), optimizer=etakit.SGD, start_lr=1e-7, end_lr=1e-5)
    assert res.suggestion < 1e-5 and any("still falling at end_lr" in m for m in msgs)
    _, msgs = find(*norm2(), optimizer=etakit.SGD)
    assert not any("still falling" in m for m in msgs)


def test_a_start_lr_too_large_for_the_loss_suggests_lowering_it():
    res, msgs = find(lambda ps: (1e30 * float(ps[0] @ ps[0]), [2e30 * ps[0]]), [np.ones(5)], optimizer=etakit.SGD)
    assert math.isnan(res.suggestion) and any("lower it" in m for m in msgs)

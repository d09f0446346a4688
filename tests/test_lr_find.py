"""The LR range test: stability on known curvature, stopping, restoring, modes, groups, plots."""
import numpy as np
import pytest

import etakit

PNG = b"\x89PNG\r\n\x1a\n"


def quadratic(L, d=30, noise=0.0, seed=0):
    """0.5 x^T A x with eigenvalues up to L (optionally noisy gradients)."""
    rng = np.random.default_rng(seed)
    eig = np.linspace(L / 50, L, d)

    def loss_and_grad(ps):
        x, = ps
        g = eig * x + noise * rng.standard_normal(d)
        return 0.5 * float(x @ (eig * x)), [g]
    return loss_and_grad


@pytest.mark.parametrize("L", [0.5, 4.0, 100.0])
@pytest.mark.parametrize("noise,steps", [(0.1, 100), (0.0, 200)])
def test_suggestion_is_stable_and_not_absurdly_low_on_a_quadratic(L, noise, steps):
    """Minibatch-like gradient noise with the default sweep; a deterministic
    quadratic needs a finer sweep (see lr_find's notes: its edge only shows
    once the converged top direction has grown back)."""
    x = np.ones(30)
    res = etakit.lr_find(quadratic(L, noise=noise), [x], optimizer=etakit.SGD, start_lr=1e-6, end_lr=100.0,
                         num_steps=steps, progress=False)
    assert res.stop_reason == "diverged" and len(res.lrs) < steps
    assert 2 / L / 100 < res.suggestion < 2 / L, res.suggestions
    assert res.suggestion == res.suggestions["robust"]


def test_stops_on_nan_and_restores_exactly():
    x0 = np.random.default_rng(1).standard_normal(10)
    x = x0.copy()
    calls = []

    def f(ps):
        calls.append(1)
        big = np.abs(ps[0]).max() > 1e3
        return (float("nan") if big else float(ps[0] @ ps[0])), [2 * ps[0]]
    res = etakit.lr_find(f, [x], optimizer=etakit.SGD, start_lr=1e-3, end_lr=1e3, diverge=1e9, progress=False)
    assert res.stop_reason == "non-finite"
    assert np.isnan(res.losses[-1]) and np.isnan(res.smoothed_losses[-1])
    assert len(res.lrs) < 100 and len(res.lrs) + res.extra_steps == len(calls)   # confirmation runs counted
    assert x.tobytes() == x0.tobytes()
    assert np.isfinite(res.suggestion) and res.suggestion < 1.0   # SGD on |x|^2 diverges above lr = 1


def test_restores_even_when_the_loss_function_raises():
    x0 = np.arange(5.0)
    x = x0.copy()
    n = [0]

    def f(ps):
        n[0] += 1
        if n[0] == 10:
            raise RuntimeError("data loader failed")
        return float(ps[0] @ ps[0]), [2 * ps[0]]
    with pytest.raises(RuntimeError, match="data loader"):
        etakit.lr_find(f, [x], progress=False)
    assert x.tobytes() == x0.tobytes()


def test_restore_false_keeps_the_trained_parameters():
    x = np.ones(4)
    etakit.lr_find(quadratic(1.0, d=4), [x], optimizer=etakit.SGD, start_lr=1e-3, end_lr=1.0, num_steps=20,
                   restore=False, progress=False)
    assert not np.array_equal(x, np.ones(4))


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_sweep_modes(mode):
    # a linear loss falls all the way to end_lr; 11 linear steps are coarse
    with pytest.warns(etakit.LRFindWarning, match="still falling|coarse") as caught:
        res = etakit.lr_find(lambda ps: (float(ps[0].sum()), [np.ones(3)]), [np.zeros(3)], optimizer=etakit.SGD,
                             start_lr=1e-3, end_lr=1.0, num_steps=11, mode=mode, progress=False)
    assert any("still falling" in str(w.message) for w in caught)
    assert any("coarse" in str(w.message) for w in caught) == (mode == "linear")
    assert res.stop_reason == "completed" and len(res.lrs) == 11   # a linear loss never diverges
    assert res.lrs[0] == pytest.approx(1e-3) and res.lrs[-1] == pytest.approx(1.0)
    if mode == "exp":
        np.testing.assert_allclose(res.lrs[1:] / res.lrs[:-1], 10 ** 0.3)
    else:
        np.testing.assert_allclose(np.diff(res.lrs), 0.0999)


def test_groups_are_swept_together_keeping_their_ratios():
    a, b = np.zeros(2), np.zeros(3)
    with pytest.warns(etakit.LRFindWarning, match="still falling"):     # a linear loss
        res = etakit.lr_find(lambda ps: (float(ps[0].sum() + ps[1].sum()), [np.ones(2), np.ones(3)]),
                             [{"params": [a]}, {"params": [b], "lr": 0.1}], optimizer=etakit.SGD, start_lr=1e-3,
                             end_lr=1.0, num_steps=10, restore=False, progress=False)
    total = res.lrs.sum()
    np.testing.assert_allclose(a, -total)
    np.testing.assert_allclose(b, -0.1 * total)
    assert res.group_suggestions == pytest.approx([res.suggestion, 0.1 * res.suggestion])


def test_a_spike_in_the_first_steps_neither_stops_nor_moves_the_suggestion():
    def run(spike):
        f = quadratic(4.0, noise=0.05, seed=3)
        t = [0]

        def g(ps):
            loss, grads = f(ps)
            t[0] += 1
            return (loss * 100 if spike and t[0] == 6 else loss), grads
        return etakit.lr_find(g, [np.ones(30)], optimizer=etakit.SGD, start_lr=1e-5, end_lr=100.0, progress=False)
    clean, spiked = run(False), run(True)
    assert len(spiked.lrs) == len(clean.lrs)
    assert spiked.suggestion == pytest.approx(clean.suggestion, rel=0.5)


def test_optimizer_factory_and_kwargs():
    seen = {}

    def factory(params, lr):
        seen["lr"] = lr
        return etakit.Adam(params, lr=lr, betas=(0.8, 0.9))
    res = etakit.lr_find(quadratic(1.0), [np.ones(30)], optimizer=factory, num_steps=20, progress=False)
    assert seen["lr"] == 1.0 and len(res.lrs) == 20
    res = etakit.lr_find(quadratic(1.0), [np.ones(30)], optimizer=etakit.RMSprop, num_steps=20, progress=False,
                         momentum=0.5)
    assert res.settings["optimizer"] == "RMSprop"


@pytest.mark.parametrize("kw,exc,match", [
    (dict(start_lr=1.0, end_lr=0.1), ValueError, "start_lr"),
    (dict(start_lr=0.0), ValueError, "start_lr must be a finite number > 0"),
    (dict(num_steps=3), ValueError, "num_steps"),
    (dict(mode="log"), ValueError, "mode"),
    (dict(smooth=1.0), ValueError, "smooth"),
    (dict(diverge=1.0), ValueError, "diverge"),
    (dict(optimizer="adam"), TypeError, "optimizer must be"),
    (dict(optimizer=lambda p, lr: object()), TypeError, "not an etakit optimizer"),
])
def test_bad_arguments(kw, exc, match):
    x = np.ones(3)
    with pytest.raises(exc, match=match):
        etakit.lr_find(lambda ps: (0.0, [np.zeros(3)]), [x], progress=False, **kw)
    assert np.array_equal(x, np.ones(3))


def test_plot_and_to_dict(tmp_path):
    res = etakit.lr_find(quadratic(4.0, noise=0.05), [np.ones(30)], optimizer=etakit.SGD, start_lr=1e-5,
                         end_lr=100.0, progress=True)   # tqdm stays quiet when stderr is not a terminal
    ax = res.plot(path=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == PNG
    assert ax.get_xscale() == "log" and "learning rate" in ax.get_xlabel() and ax.get_ylabel() == "loss"
    assert any("suggestion" in t.get_text() for t in ax.get_legend().get_texts())
    d = res.to_dict()
    assert d["suggestion"] == res.suggestion and len(d["lrs"]) == len(res.lrs)
    assert set(d["suggestions"]) >= {"robust", "valley", "steepest", "minimum"}
    assert "suggestion=" in repr(res)

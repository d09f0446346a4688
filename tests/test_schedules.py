"""Schedules against independent closed forms, PyTorch's schedulers, and themselves."""
import math
import pickle

import numpy as np
import pytest

import etakit
from etakit import schedules as S

pi, cos = math.pi, math.cos


def cosine_ref(lr, T, m, k):
    return m if k >= T else m + (lr - m) * (1 + cos(pi * k / T)) / 2


def restarts_ref(lr, T0, mult, m, decay, k):
    i, T = 0, T0
    while k >= T:
        k -= T
        T *= mult
        i += 1
    return m + (lr * decay ** i - m) * (1 + cos(pi * k / T)) / 2


def one_cycle_ref(a, b, c, T, pct, lin, three, k):
    k = min(k, T - 1)
    ann = (lambda s, e, p: (e - s) * p + s) if lin else (lambda s, e, p: e + (s - e) / 2 * (cos(pi * p) + 1))
    if three:
        phases = [(pct * T - 1, a, b), (2 * pct * T - 2, b, a), (T - 1, a, c)]
    else:
        phases = [(pct * T - 1, a, b), (T - 1, b, c)]
    start = 0
    for i, (end, s, e) in enumerate(phases):
        if k <= end or i == len(phases) - 1:
            return ann(s, e, (k - start) / (end - start))
        start = end


def cyclic_ref(lo, hi, up, down, mode, gamma, k):
    total = up + down
    cyc = math.floor(1 + k / total)
    x = 1 + k / total - cyc
    sf = x / (up / total) if x <= up / total else (x - 1) / (up / total - 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cyc - 1), "exp_range": gamma ** k}[mode]
    return lo + (hi - lo) * sf * scale


CASES = [
    (S.constant(0.3), lambda k: 0.3),
    (S.linear(1.0, 0.1, 50), lambda k: 0.1 if k >= 50 else 1.0 + (0.1 - 1.0) * k / 50),
    (S.step(0.1, 7, 0.5), lambda k: 0.1 * 0.5 ** (k // 7)),
    (S.multistep(0.1, [10, 30, 30, 80], 0.3), lambda k: 0.1 * 0.3 ** sum(m <= k for m in [10, 30, 30, 80])),
    (S.exponential(0.1, 0.97), lambda k: 0.1 * 0.97 ** k),
    (S.polynomial(0.1, 60, 2.0), lambda k: 0.1 * (1 - min(k, 60) / 60) ** 2.0),
    (S.polynomial(0.1, 60, 0.5, end_lr=0.01), lambda k: (0.1 - 0.01) * (1 - min(k, 60) / 60) ** 0.5 + 0.01),
    (S.cosine(0.1, 77, 1e-3), lambda k: cosine_ref(0.1, 77, 1e-3, k)),
    (S.cosine_restarts(0.1, 10), lambda k: restarts_ref(0.1, 10, 1, 0.0, 1.0, k)),
    (S.cosine_restarts(0.1, 5, 3, 1e-3, 0.7), lambda k: restarts_ref(0.1, 5, 3, 1e-3, 0.7, k)),
    (S.one_cycle(0.5, 100), lambda k: one_cycle_ref(0.02, 0.5, 0.02 / 1e4, 100, 0.3, False, False, k)),
    (S.one_cycle(0.5, 97, pct_start=0.25, anneal="linear", div_factor=10, final_div_factor=100, three_phase=True),
     lambda k: one_cycle_ref(0.05, 0.5, 0.05 / 100, 97, 0.25, True, True, k)),
    (S.one_cycle_momentum(100, three_phase=True), lambda k: one_cycle_ref(0.95, 0.85, 0.95, 100, 0.3, False, True, k)),
    (S.cyclic(0.01, 0.1, 10), lambda k: cyclic_ref(0.01, 0.1, 10, 10, "triangular", 1.0, k)),
    (S.cyclic(0.01, 0.1, 10, 30, "triangular2"), lambda k: cyclic_ref(0.01, 0.1, 10, 30, "triangular2", 1.0, k)),
    (S.cyclic(0.01, 0.1, 7, None, "exp_range", 0.99), lambda k: cyclic_ref(0.01, 0.1, 7, 7, "exp_range", 0.99, k)),
    (S.inverse_sqrt(0.1, 20), lambda k: 0.1 * (k / 20 if k < 20 else 1 / math.sqrt((k + 0) / 20))),
    (S.inverse_sqrt(0.1, 20, timescale=50), lambda k: 0.1 * (k / 20 if k < 20 else 1 / math.sqrt((k + 30) / 50))),
    (S.warmup_cosine(0.1, 10, 110),
     lambda k: 0.1 * (k / 10 if k < 10 else 0.5 * (1 + cos(pi * min(1, (k - 10) / 100))))),
    (S.warmup_cosine(0.1, 10, 110, min_lr=0.01, start_lr=0.001),
     lambda k: (0.001 + (0.1 - 0.001) * k / 10 if k < 10
                else 0.01 + 0.09 * 0.5 * (1 + cos(pi * min(1, (k - 10) / 100))))),
    (S.wsd(0.1, 10, 50, 40), lambda k: 0.1 * k / 10 if k < 10 else 0.1 if k < 60 else 0.1 * max(0, 1 - (k - 60) / 40)),
    (S.wsd(0.1, 10, 50, 40, "cosine", 0.01),
     lambda k: (0.1 * k / 10 if k < 10 else 0.1 if k < 60
                else 0.01 + 0.09 * 0.5 * (1 + cos(pi * min(1, (k - 60) / 40))))),
    (S.wsd(0.1, 0, 50, 40, "1-sqrt"), lambda k: 0.1 if k < 50 else 0.1 * (1 - math.sqrt(min(1, (k - 50) / 40)))),
    (S.piecewise_constant([10, 40], [0.1, 0.05, 0.01]), lambda k: 0.1 if k < 10 else 0.05 if k < 40 else 0.01),
    (S.join([S.linear(0.0, 0.1, 10), S.cosine(0.1, 50), S.constant(1e-3)], [10, 60]),
     lambda k: k / 100 if k < 10 else cosine_ref(0.1, 50, 0, k - 10) if k < 60 else 1e-3),
    (S.warmup(S.step(0.1, 10, 0.5), 20, start_lr=0.01),
     lambda k: 0.01 + (0.1 - 0.01) * k / 20 if k < 20 else 0.1 * 0.5 ** ((k - 20) // 10)),
    (0.5 * S.cosine(0.2, 40), lambda k: 0.5 * cosine_ref(0.2, 40, 0, k)),
    (S.exponential(0.1, 0.9) / 4, lambda k: 0.25 * 0.1 * 0.9 ** k),
]
IDS = [repr(s)[:40] for s, _ in CASES]
STEPS = list(range(0, 130)) + [299, 300, 301, 1000, 12345, 10**7]


@pytest.mark.parametrize("sched,closed_form", CASES, ids=IDS)
def test_matches_closed_form(sched, closed_form):
    for k in STEPS:
        expected = closed_form(k)
        assert sched(k) == pytest.approx(expected, rel=1e-12, abs=1e-15), f"k={k}"


@pytest.mark.parametrize("sched,closed_form", CASES, ids=IDS)
def test_values_equal_scalar_calls_exactly(sched, closed_form):
    n = 3 * etakit._core.parallel_min() + 7   # threaded fill
    v = sched.values(n)
    assert v.dtype == np.float64 and v.shape == (n,)
    idx = np.r_[0:200, n - 50:n]
    np.testing.assert_array_equal(v[idx], [sched(int(k)) for k in idx])
    tail = sched.values(5, start=10**6)
    np.testing.assert_array_equal(tail, [sched(10**6 + i) for i in range(5)])
    assert sched.values(0).shape == (0,)


@pytest.mark.parametrize("sched,closed_form", CASES, ids=IDS)
def test_serialisation_and_repr_round_trip(sched, closed_form):
    d = sched.to_dict()
    back = S.from_dict(pickle.loads(pickle.dumps(d)))
    assert back == sched and hash(back) == hash(sched)
    assert S.parse(repr(sched)) == sched
    np.testing.assert_array_equal(back.values(300), sched.values(300))


BAD = [
    (lambda: S.cosine(0.1, 0), ValueError, "total_steps must be an integer >= 1"),
    (lambda: S.cosine(-0.1, 10), ValueError, "lr must be >= 0"),
    (lambda: S.cosine(float("nan"), 10), ValueError, "finite"),
    (lambda: S.step(0.1, 2.5), TypeError, "step_size must be an integer"),
    (lambda: S.multistep(0.1, [30, 10]), ValueError, "milestones must be sorted"),
    (lambda: S.multistep(0.1, [10, -1]), ValueError, r"milestones\[1\]"),
    (lambda: S.one_cycle(0.1, 100, pct_start=1.0), ValueError, r"pct_start must be in \(0, 1\)"),
    (lambda: S.one_cycle(0.1, 100, anneal="exp"), ValueError, "anneal must be one of"),
    (lambda: S.cyclic(0.1, 1.0, mode="sine"), ValueError, "mode must be one of"),
    (lambda: S.wsd(0.1, 10, 10, 0), ValueError, "decay_steps"),
    (lambda: S.wsd(0.1, 10, 10, 10, decay="exp"), ValueError, "decay must be one of"),
    (lambda: S.warmup_cosine(0.1, 100, 50), ValueError, "total_steps"),
    (lambda: S.piecewise_constant([10, 10], [1, 2, 3]), ValueError, "strictly increasing"),
    (lambda: S.piecewise_constant([10], [1, 2, 3]), ValueError, "values"),
    (lambda: S.join([S.constant(1.0)], [10]), ValueError, "schedules"),
    (lambda: S.join([S.constant(1.0), 0.5], [10]), TypeError, r"schedules\[1\] must be an etakit schedule"),
    (lambda: S.warmup(0.1, 10), TypeError, "schedule must be an etakit schedule"),
    (lambda: S.constant(0.1)(-1), ValueError, "k must be >= 0"),
    (lambda: S.constant(0.1)(1.5), TypeError, "integer step count"),
    (lambda: S.constant(0.1).values(-3), ValueError, "steps must be >= 0"),
    (lambda: S.from_dict({"type": "nope"}), ValueError, "not a schedule dict"),
    (lambda: S.from_dict({"type": "cosine", "lr": 0.1}), ValueError, "total_steps"),
]


@pytest.mark.parametrize("make,exc,match", BAD)
def test_bad_arguments_raise(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("text,match", [
    ("__import__('os').system('true')", "not allowed"),
    ("__import__('os')", "unknown schedule '__import__'"),
    ("cosine(0.1, 10).values", "not allowed"),
    ("cosine(**{'lr': 0.1})", "not allowed"),
    ("[1, 2]", "not a schedule"),
    ("cosine(0.1,", "cannot parse"),
    ("cosine(lr=0.1, total_steps=10, foo=1)", "unexpected keyword"),
    ("cosine(0.1, 10) + 1", "not allowed"),
])
def test_parser_is_safe_and_explains(text, match):
    with pytest.raises(ValueError, match=match):
        S.parse(text)

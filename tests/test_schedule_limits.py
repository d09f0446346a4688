"""Schedules at the edges: step counts near 2**63, pickling, and the resource bounds of parse / from_dict."""
import copy
import pickle
import time

import numpy as np
import pytest

from etakit import schedules as S
from test_schedules import CASES

BIG = 2**63 - 1

COMPOSED = [s for s, _ in CASES] + [
    S.plateau_scaled(S.warmup(S.cosine(0.1, 100), 10), scale=0.01, min_lr=1e-4),
    3 * S.join([S.constant(1.0), 0.5 * S.cosine(1.0, 10), S.step(1.0, 3) / 2], [5, 20]),
    S.inverse_sqrt(0.1, 0),
    S.cyclic(0.1, 1.0, 5, 7, mode="exp_range", gamma=0.9),
]


# ---- item 5: step counts up to 2**63 - 1 ---------------------------------

@pytest.mark.parametrize("sched", COMPOSED, ids=[repr(s)[:40] for s in COMPOSED])
def test_values_up_to_the_largest_step_count(sched):
    v = sched.values(5, start=BIG - 4)
    assert np.all(np.isfinite(v))
    np.testing.assert_array_equal(v, [sched(BIG - 4 + i) for i in range(5)])
    with pytest.raises(ValueError, match=r"start \+ steps - 1 = 9223372036854775809 is past"):
        sched.values(5, start=BIG - 2)


def test_cosine_past_int64_is_refused_not_wrapped():
    # used to return [0, 0, 0.1, 0.1, 0.1]: k0 + i wrapped to a negative count in C
    s = S.cosine(0.1, 100)
    np.testing.assert_array_equal(s.values(2, start=BIG - 1), [0.0, 0.0])
    with pytest.raises(ValueError, match="past the largest step count"):
        s.values(5, start=2**63 - 2)
    assert s.values(0, start=BIG).shape == (0,)


@pytest.mark.parametrize("call,exc,match", [
    (lambda s: s(2**63), ValueError, r"k must be <= 2\*\*63 - 1"),
    (lambda s: s(10**30), ValueError, r"k must be <= 2\*\*63 - 1"),
    (lambda s: s(-1), ValueError, "k must be >= 0"),
    (lambda s: s(-(2**70)), ValueError, "k must be >= 0"),
    (lambda s: s(np.uint64(2**63)), ValueError, r"k must be <= 2\*\*63 - 1"),
    (lambda s: s.values(2**63), ValueError, r"steps must be <= 2\*\*63 - 1"),
    (lambda s: s.values(2**62, start=2**62 + 1), ValueError, "past the largest step count"),
    (lambda s: s.values(3, start=2**63), ValueError, r"start must be <= 2\*\*63 - 1"),
    (lambda s: s.values(3, start=-1), ValueError, "start must be >= 0"),
    (lambda s: s(1e3), TypeError, "integer step count"),
])
def test_bad_step_counts_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(S.cosine(0.1, 100))


def test_boundaries_above_2_53_are_exact():
    # 2**62 - 1 rounds to 2**62 as a double; the C code compares integers
    b = 2**62
    w = S.warmup(S.step(1.0, 1, 0.5), b)
    assert w(b - 1) <= 1.0 and w(b) == 1.0 and w(b + 1) == 0.5
    j = S.join([S.constant(1.0), S.step(1.0, 1, 0.5)], [b])
    assert (j(b - 1), j(b), j(b + 1), j(BIG)) == (1.0, 1.0, 0.5, 0.0)
    p = S.piecewise_constant([b], [1.0, 0.5])
    assert (p(b - 1), p(b)) == (1.0, 0.5)
    m = S.multistep(1.0, [b], 0.5)
    assert (m(b - 1), m(b)) == (1.0, 0.5)


def test_integral_parameters_are_bounded():
    with pytest.raises(ValueError, match=r"total_steps must be an integer <= 2\*\*62"):
        S.cosine(0.1, 999999999999999999999)
    with pytest.raises(ValueError, match="lr must be finite"):
        S.cosine(10**400, 10)      # used to raise OverflowError from float()
    assert S.step(1.0, 2**62)(BIG) == 0.1


# ---- item 7: pickle and deepcopy -------------------------------------------

@pytest.mark.parametrize("sched", COMPOSED, ids=[repr(s)[:40] for s in COMPOSED])
def test_every_schedule_pickles_and_deepcopies(sched):
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(sched, protocol=protocol))
        assert back == sched and repr(back) == repr(sched) and type(back) is type(sched)
        np.testing.assert_array_equal(back.values(500), sched.values(500))
    for back in (copy.deepcopy(sched), copy.copy(sched), copy.deepcopy({"lr": [sched, sched]})["lr"][1]):
        assert back == sched
        np.testing.assert_array_equal(back.values(500), sched.values(500))


def test_plateau_reduced_schedule_in_an_optimizer_group_pickles():
    import etakit

    opt = etakit.SGD([np.zeros(3)], lr=S.warmup(S.cosine(0.1, 100), 10))
    plateau = etakit.ReduceLROnPlateau(opt, patience=0)
    for m in (1.0, 2.0, 3.0):
        opt.step([np.ones(3)])
        plateau.step(m)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, S.Schedule) and lr._name == "plateau_scaled"
    back = pickle.loads(pickle.dumps(lr))
    assert back == lr
    np.testing.assert_array_equal(back.values(200), lr.values(200))


# ---- item 9: parse and from_dict are bounded -------------------------------

@pytest.mark.parametrize("text,match", [
    ("multistep(0.1, [0] * 30000000)", (r"\* multiplies a schedule or a number by a number, got list \* int "
                                        r"\(at column 16\)")),
    ("cosine('a' * 1000000000, 10)", r"got str \* int \(at column 8\)"),
    ("1/0 * cosine(0.1,10)", r"division by zero \(at column 1\)"),
    ("cosine(0.1, 10) / 0", r"divisor must be > 0.*\(at column 1\)"),
    ("2 * " * 10000 + "cosine(0.1, 10)", r"too long: 40015 characters, the limit is 20000 \(at column 20001\)"),
    ("2*" * 5000 + "cosine(0.1, 10)", r"\(at column"),
    ("cosine(0.1, 10)" + " * 2" * 150, r"nested too deeply: more than 100 levels \(at column \d+\)"),
    ("[" * 300 + "]" * 300, r"cannot parse.*\(at column"),
    ("-" * 19000 + "1", r"cannot parse.*\(at column 1\)"),
    ("multistep(0.1, [" + "-0," * 6000 + "0])", r"too large: more than 10000 elements \(at column \d+\)"),
    ("cosine(0.1, 999999999999999999999)", r"total_steps must be an integer <= 2\*\*62.*\(at column 1\)"),
    ("cosine(0.1, 99999999999 * 99999999999)", r"number too large.*\(at column 13\)"),
    ("  cosine(0.1, 0)", r"total_steps must be an integer >= 1, got 0 \(at column 3\)"),
    ("warmup(\n  cosine(0.1, 0), 10)", r"\(at line 2, column 3\)"),
    ("0.5 * cosine(0.1, 10) + 1", r"not allowed.*\(at column 1\)"),
    ("cosine(0.1, 10, lr=1)", r"multiple values for argument 'lr' \(at column 1\)"),
    ("cosine(lr=0.1, lr=0.2, total_steps=3)", r"keyword argument repeated: lr \(at column 16\)"),
    ("cosine(*[0.1, 10])", r"not allowed.*\(at column 8\)"),
    ("0.5", r"not a schedule expression \(it gives a float\) \(at column 1\)"),
    ("", r"empty schedule expression \(at column 1\)"),
    ("cosine(0.1,", r"cannot parse.*\(at column 7\)"),
    ("é * nope(1)", r"unknown schedule 'nope'.*\(at column 5\)"),
    ("cosine('" + "x" * 2000 + "', 10)", r"string of 2000 characters.*\(at column 8\)"),
    ("-cosine(0.1, 10)", r"unary - needs a number, got Schedule \(at column 1\)"),
    ("cosine(0.1, 10) * cosine(0.1, 10)", r"got Schedule \* Schedule \(at column 1\)"),
    ("cosine(0.1, 1e400)", r"total_steps must be an integer.*\(at column 1\)"),
    ("a\0b", r"cannot parse"),
])
def test_parse_is_bounded_and_gives_the_column(text, match):
    t0 = time.process_time()
    with pytest.raises(ValueError, match=match):
        S.parse(text)
    assert time.process_time() - t0 < 2.0   # CPU time: the bound holds on a loaded machine


@pytest.mark.parametrize("arg", [0.1, None, b"cosine(0.1, 10)", ["cosine(0.1, 10)"]])
def test_parse_needs_a_string(arg):
    with pytest.raises(TypeError, match="a schedule expression must be a str"):
        S.parse(arg)


def test_parse_reads_what_it_should():
    assert S.parse("  warmup(cosine(0.1, 10),\n 5)  ") == S.warmup(S.cosine(0.1, 10), 5)
    np.testing.assert_array_equal(S.parse("2 * 3 * cosine(0.1, 10) / 4").values(20),
                                  (1.5 * S.cosine(0.1, 10)).values(20))
    assert S.parse("cosine(-(-0.1), +10)") == S.cosine(0.1, 10)
    big = S.piecewise_constant(list(range(1, 1001)), [1.0] * 1001)
    assert S.parse(repr(big)) == big


def _nested_warmups(n):
    s = S.constant(1.0)
    for _ in range(n):
        s = S.warmup(s, 1)
    return s


def test_schedule_size_and_depth_are_bounded_so_pickle_always_reads_back():
    deepest = _nested_warmups(S.MAX_DEPTH - 1)
    assert pickle.loads(pickle.dumps(deepest)) == deepest
    with pytest.raises(ValueError, match="nested too deeply"):
        S.warmup(deepest, 1)
    t0 = time.process_time()
    with pytest.raises(ValueError, match="milestones has more than 1000000 entries"):
        S.multistep(0.1, [0] * 30_000_000)
    with pytest.raises(ValueError, match="milestones has more than 1000000 entries"):
        S.multistep(0.1, iter(range(30_000_000)))
    assert time.process_time() - t0 < 2.0   # CPU time: the bound holds on a loaded machine


@pytest.mark.parametrize("make", [
    lambda n: S.piecewise_constant(list(range(1, n + 1)), [1.0] * (n + 1)),
    lambda n: S.join([S.constant(1.0)] * (n + 1), list(range(1, n + 1))),
    lambda n: 2 * S.warmup(S.join([S.multistep(1.0, list(range(n)))] * 3, [1, 2]), 4),
])
def test_every_schedule_within_the_size_limit_reads_back(make, monkeypatch):
    monkeypatch.setattr(S, "MAX_ITEMS", 1000)
    n = 1
    while True:
        try:
            s = make(n + 1)
        except ValueError as e:
            assert "too large" in str(e)
            break
        n += 1
    s = make(n)                     # the largest of its kind
    assert S.from_dict(s.to_dict()) == s and pickle.loads(pickle.dumps(s)) == s
    d = s.to_dict()
    d["extra"] = [0.0] * (1000 - s._size)     # 1001 items: refused before anything is built
    with pytest.raises(ValueError, match="too large: more than 1000 items"):
        S.from_dict(d)


def test_from_dict_is_bounded():
    d = {"type": "constant", "lr": 1.0}
    for _ in range(200):
        d = {"type": "warmup", "schedule": d, "warmup_steps": 1}
    with pytest.raises(ValueError, match=r"nested too deeply: more than 64 levels \(at d\['schedule'\]"):
        S.from_dict(d)
    cyclic = {"type": "warmup", "warmup_steps": 1}
    cyclic["schedule"] = cyclic
    with pytest.raises(ValueError, match="nested too deeply"):
        S.from_dict(cyclic)
    # shared references: a few KB in memory, 10**12 items as a tree
    leaf = {"type": "constant", "lr": 1.0}
    for _ in range(6):
        leaf = {"type": "join", "schedules": [leaf] * 100, "boundaries": list(range(1, 100))}
    t0 = time.process_time()
    with pytest.raises(ValueError, match="too large: more than 1000000 items"):
        S.from_dict(leaf)
    assert time.process_time() - t0 < 2.0   # CPU time: the bound holds on a loaded machine


@pytest.mark.parametrize("junk,exc,match", [
    (None, TypeError, "from_dict needs a schedule dict"),
    ("cosine(0.1, 10)", TypeError, "from_dict needs a schedule dict"),
    ({"type": "nope"}, ValueError, r"not a schedule dict .*at d:"),
    ({"type": "cosine", "lr": 0.1}, ValueError, "missing a required argument: 'total_steps'"),
    ({"type": "cosine", "lr": 0.1, "total_steps": 10, "foo": 1}, ValueError, "unexpected keyword argument 'foo'"),
    ({"type": "cosine", 1: 0.1}, ValueError, "keys must be strings, got 1 in d"),
    ({"type": "cosine", "lr": object(), "total_steps": 3}, TypeError, r"d\['lr'\] is a object"),
    ({"type": "cosine", "lr": "0.1", "total_steps": 3}, TypeError, r"lr must be a real number.*\(at d\)"),
    ({"type": "warmup", "schedule": {"type": "cosine", "lr": -1.0, "total_steps": 3}, "warmup_steps": 1},
     ValueError, r"lr must be >= 0.*\(at d\['schedule'\]\)"),
    ({"type": "join", "schedules": [{"type": "constant", "lr": 1}, {"type": "x"}], "boundaries": [1]},
     ValueError, r"not a schedule dict.*d\['schedules'\]\[1\]|schedules\[1\] must be an etakit schedule"),
    ({"type": "one_cycle", "max_lr": 1.0, "total_steps": 10, "anneal": "c" * 5000}, ValueError,
     "string of 5000 characters"),
])
def test_from_dict_junk_raises_value_or_type_error(junk, exc, match):
    with pytest.raises(exc, match=match):
        S.from_dict(junk)


def test_repr_of_a_scaled_scale_parses_back_to_the_same_schedule():
    s = S.scale(S.scale(S.constant(1.0), 0.5), 0.25)    # found by the fuzz test: repr was "0.25 * 0.5 * ..."
    assert repr(s) == "0.125 * constant(lr=1.0)"         # factors fold into one scale node
    assert S.parse(repr(s)) == s


def test_repeated_scaling_folds_instead_of_nesting():
    """A multiplicative scheduler (ExponentialLR on an etakit schedule) scales every step."""
    s = S.cosine(0.1, 10_000)
    for _ in range(10_000):
        s = s * 0.999
    assert s.to_dict()["schedule"] == S.cosine(0.1, 10_000).to_dict()
    assert s(0) == pytest.approx(0.1 * 0.999 ** 10_000, rel=1e-9)

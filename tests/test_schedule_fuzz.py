"""Fuzzing schedules.parse and schedules.from_dict: random expression trees built from the
registry with random argument values, and junk.  Whatever the input, only ValueError or
TypeError may escape, and every call stays within a time and a memory budget."""
import inspect
import math
import pickle
import time
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etakit import schedules as S

SECONDS, BYTES = 2.0, 50 * 2**20   # CPU seconds: the bound holds on a loaded machine
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = sorted(S._REGISTRY)
PARAMS = {n: list(inspect.signature(f).parameters) for n, f in S._REGISTRY.items()}
COMPOSITE = {"join", "warmup", "scale", "plateau_scaled"}

# ---- argument values: mostly plausible, sometimes hostile ------------------
ints = st.one_of(st.integers(-3, 300), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2**62, 2**63, 2**64]))
floats = st.one_of(st.floats(-1.0, 2.0), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1e-300, 1e300]))
strings = st.one_of(st.sampled_from(["cos", "linear", "triangular", "triangular2", "exp_range", "cosine", "1-sqrt"]),
                    st.text(max_size=8))
scalars = st.one_of(ints, floats, strings, st.booleans(), st.none())
values = st.one_of(scalars, st.lists(st.one_of(ints, floats), max_size=6),
                   st.lists(st.integers(0, 400), max_size=6).map(sorted))


def _literal(v):
    """Source text for a value (repr, except the non-finite floats, which have no literal)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "1e999" if v > 0 else "-1e999" if v < 0 else "(1e999 * 0)"
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return repr(v)


@st.composite
def leaf_call(draw):
    """(text, dict) of one registry call with random arguments, positional or by keyword."""
    name = draw(st.sampled_from([n for n in NAMES if n not in COMPOSITE]))
    params = PARAMS[name]
    n = draw(st.integers(0, len(params) + 1))
    args = [draw(values) for _ in range(n)]
    npos = draw(st.integers(0, n))
    keys = params[npos:n] + [draw(st.sampled_from(["lr", "steps", "bogus"])) for _ in range(max(0, n - len(params)))]
    text = f"{name}(" + ", ".join([_literal(a) for a in args[:npos]] +
                                  [f"{k}={_literal(a)}" for k, a in zip(keys, args[npos:])]) + ")"
    d = {"type": name}
    d.update(zip(params, args[:npos]))
    d.update(zip(keys, args[npos:]))
    return text, d


def _extend(children):
    return st.one_of(
        st.tuples(children, st.integers(-2, 50), floats).map(
            lambda t: (f"warmup({t[0][0]}, {t[1]}, start_lr={_literal(t[2])})",
                       {"type": "warmup", "schedule": t[0][1], "warmup_steps": t[1], "start_lr": t[2]})),
        st.tuples(children, floats).map(
            lambda t: (f"{_literal(t[1])} * {t[0][0]}", {"type": "scale", "schedule": t[0][1], "factor": t[1]})),
        st.tuples(children, st.one_of(floats, ints)).map(
            lambda t: (f"({t[0][0]}) / {_literal(t[1])}", {"type": "scale", "schedule": t[0][1],
                                                           "factor": 1 / t[1] if t[1] else t[1]})),
        st.tuples(children, floats, floats).map(
            lambda t: (f"plateau_scaled({t[0][0]}, {_literal(t[1])}, {_literal(t[2])})",
                       {"type": "plateau_scaled", "schedule": t[0][1], "scale": t[1], "min_lr": t[2]})),
        st.tuples(st.lists(children, min_size=1, max_size=4), st.lists(st.integers(-1, 100), max_size=4)).map(
            lambda t: (f"join([{', '.join(c[0] for c in t[0])}], {t[1]!r})",
                       {"type": "join", "schedules": [c[1] for c in t[0]], "boundaries": t[1]})),
    )


trees = st.recursive(leaf_call(), _extend, max_leaves=8)

# junk: text from the expression alphabet, any text, and hostile fragments
ALPHABET = "()[]{}*/+-=,.:'\"0123456789e_ \n\tabcdegilmnoprstuwxyz"
FRAGMENTS = ["cosine(", "0.1", ", ", ")", "[0] * 9999", "'a' * 99999", "1/0", "*", "(", "[", "-", "lambda: 0",
             "__import__('os')", "2**999", "10**10**10", "join([", "], [", "warmup(", "x.y", "f'{1}'", "\\x00",
             "999999999999999999999", "1e999", "nan", "not 1", "1 if 1 else 2", "{1: 2}", "...", "é"]
junk_text = st.one_of(st.text(ALPHABET, max_size=60), st.text(max_size=30),
                      st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join))
json_like = st.recursive(st.one_of(scalars, st.integers()),
                         lambda ch: st.one_of(st.lists(ch, max_size=4),
                                              st.dictionaries(st.one_of(st.sampled_from(["type", "lr", "schedule"]),
                                                                        st.text(max_size=4), st.integers()),
                                                              ch, max_size=4)),
                         max_leaves=12)
junk_dicts = st.one_of(
    json_like,
    st.builds(lambda t, rest: {"type": t, **rest}, st.sampled_from(NAMES + ["nope", ""]),
              st.dictionaries(st.sampled_from(sorted({p for ps in PARAMS.values() for p in ps}) + ["x"]),
                              json_like, max_size=5)),
)


def bounded(fn, arg):
    """fn(arg) under the time and memory budget; returns the result, or None on ValueError/TypeError."""
    tracemalloc.start()
    t0 = time.process_time()
    try:
        return fn(arg)
    except (ValueError, TypeError) as e:
        assert str(e), "an error without a message"
        return None
    finally:
        dt = time.process_time() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert dt < SECONDS, f"{fn.__name__}({arg!r:.200}) took {dt:.2f} s"
        assert peak < BYTES, f"{fn.__name__}({arg!r:.200}) allocated {peak / 2**20:.0f} MB"


def check_schedule(s):
    """A schedule that was accepted works: evaluates, serialises and pickles to an equal one."""
    assert isinstance(s, S.Schedule)
    v = s.values(20)
    assert v.shape == (20,) and v[3] == s(3)
    assert S.from_dict(s.to_dict()) == s
    back = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(back.values(20), v)
    assert S.parse(repr(s)) == s


@FUZZ
@given(trees)
def test_parse_and_from_dict_of_random_trees(tree):
    text, d = tree
    a = bounded(S.parse, text)
    b = bounded(S.from_dict, d)
    for s in (a, b):
        if s is not None:
            check_schedule(s)


@FUZZ
@given(junk_text)
def test_parse_of_junk(text):
    s = bounded(S.parse, text)
    if s is not None:
        check_schedule(s)


@FUZZ
@given(junk_dicts)
def test_from_dict_of_junk(d):
    s = bounded(S.from_dict, d)
    if s is not None:
        check_schedule(s)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["[0] * {n}", "'a' * {n}", "cosine(0.1, 10)" + " * 2" * 3 + " * {n}", "-" * 50 + "{n}",
                        "multistep(0.1, [" + "0, " * 3000 + "{n}])", "(" * 90 + "{n}" + ")" * 90,
                        "2" + " * 2" * 3000 + " * {n}"]),
       st.integers(0, 10**9))
def test_parse_of_amplifying_expressions(template, n):
    s = bounded(S.parse, template.format(n=n))
    if s is not None:
        check_schedule(s)

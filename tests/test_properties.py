"""Property tests: any shape, any valid hyperparameters (drawn from each rule's C table), agree with the reference."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import etakit
from conftest import ReferenceOptimizer, matrix_only, ready, shape_of
from etakit._step import RuleSpec

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)
matrices = hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=9)   # for matrix-only rules
dtypes = st.sampled_from([np.float32, np.float64])


def _field(f):
    """Values inside a field's range (the C table's), kept moderate where it is unbounded."""
    if f["kind"] == "flag":
        return st.booleans()
    if f["kind"] == "int":
        return st.integers(int(f["lo"]), int(min(f["hi"], f["lo"] + 10)))
    if f["lo"] == -np.inf:      # unbounded below (ASGD's t0, Adafactor's beta2_decay): a window at the top
        lo, hi = min(f["hi"], 1.0) - 2.0, min(f["hi"], 1.0)
    else:
        lo, hi = f["lo"], min(f["hi"], f["lo"] + 1.0)
    values = st.floats(lo, hi, exclude_min=f["lo_open"] and lo == f["lo"], exclude_max=f["hi_open"] and hi == f["hi"])
    return st.one_of(st.none(), values) if f["optional"] else values


def _group(kind):
    """A strategy for the hyperparameters of optimizer ``kind``, derived from its rule's table."""
    cls = etakit.OPTIMIZERS[kind]
    spec = RuleSpec.of(cls)
    parts = {}
    for f, (key, j) in zip(spec.fields, spec.sources):
        if key in cls._implied:
            continue
        parts.setdefault(key, []).append((j, st.sampled_from(list(spec.choices[key])) if key in spec.choices
                                          else _field(f)))
    out = {}
    for key, items in parts.items():
        out[key] = items[0][1] if items[0][0] is None else st.tuples(*[s for _, s in sorted(items, key=lambda t: t[0])])
    return st.fixed_dictionaries(out)


def _valid(kind, hp):
    try:
        etakit.OPTIMIZERS[kind]([np.zeros(shape_of(kind, 1))], **hp)
        return True
    except ValueError:          # a constraint across fields (nesterov needs momentum)
        return False


@st.composite
def problems(draw):
    kind = draw(st.sampled_from(sorted(etakit.OPTIMIZERS)))
    hp = draw(_group(kind).filter(lambda h: _valid(kind, h)))
    dtype = draw(dtypes)
    shp = draw(st.lists(matrices if matrix_only(kind) else shapes, min_size=1, max_size=4))
    return kind, hp, dtype, shp, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(problems())
def test_any_shape_and_hyperparameters_match_reference(problem):
    kind, hp, dtype, shp, seed = problem
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shp]
    theirs = [p.copy() for p in params]
    opt = ready(getattr(etakit, kind)(params, **hp))
    ref = ReferenceOptimizer(kind, theirs, [(range(len(params)), hp)])
    with np.errstate(all="ignore"):   # extreme draws may overflow; both sides must agree anyway
        for _ in range(5):
            grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
            opt.step(grads)
            ref.step(grads)
    for a, b in zip(params, theirs):
        np.testing.assert_array_equal(a, b)
